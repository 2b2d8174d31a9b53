"""Schema 0001 of the Message store: the tables create_all made before
versioned migrations, frozen here (skyeim/migrations says why).

Revision ID: 0001
"""
import sqlalchemy as sa
from alembic import op

revision, down_revision, branch_labels, depends_on = "0001", None, None, None


def schema() -> sa.MetaData:
    md = sa.MetaData()
    row_id = sa.BigInteger().with_variant(sa.Integer, "sqlite")   # SQLite: the rowid
    messages = sa.Table(
        "messages", md,
        sa.Column("id", row_id, primary_key=True, autoincrement=True),
        sa.Column("from_user_id", sa.BigInteger, nullable=False),
        sa.Column("to_user_id", sa.BigInteger, nullable=False),
        sa.Column("user_lo", sa.BigInteger, nullable=False),
        sa.Column("user_hi", sa.BigInteger, nullable=False),
        sa.Column("msg_id", sa.String(64), nullable=False),
        sa.Column("content", sa.LargeBinary, nullable=False),      # UTF-8
        sa.Column("content_type", sa.SmallInteger, nullable=False),
        sa.Column("created_at", sa.BigInteger, nullable=False),
        sa.Column("seq", sa.BigInteger, nullable=False),
        sa.Column("delivered_at", sa.BigInteger, nullable=True),
        sa.Column("read_at", sa.BigInteger, nullable=True),
        sa.UniqueConstraint("from_user_id", "msg_id", name="uq_messages_sender_msg_id"),
        sa.UniqueConstraint("user_lo", "user_hi", "seq", name="uq_messages_conversation_seq"),
    )
    unread = messages.c.read_at.is_(None)
    sa.Index("ix_messages_unread_by_recipient", messages.c.to_user_id, messages.c.id,
             postgresql_where=unread, sqlite_where=unread)
    sa.Index("ix_messages_unread_by_pair", messages.c.to_user_id, messages.c.from_user_id,
             messages.c.id, postgresql_where=unread, sqlite_where=unread)
    sa.Table(
        "conversations", md,
        sa.Column("user_lo", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("user_hi", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("last_seq", sa.BigInteger, nullable=False),
    )
    sa.Table(
        "group_messages", md,
        sa.Column("id", row_id, primary_key=True, autoincrement=True),
        sa.Column("group_id", sa.BigInteger, nullable=False),
        sa.Column("seq", sa.BigInteger, nullable=False),
        sa.Column("from_user_id", sa.BigInteger, nullable=False),
        sa.Column("msg_id", sa.String(64), nullable=False),
        sa.Column("content", sa.LargeBinary, nullable=False),
        sa.Column("content_type", sa.SmallInteger, nullable=False),
        sa.Column("created_at", sa.BigInteger, nullable=False),
        sa.UniqueConstraint("from_user_id", "msg_id", name="uq_group_messages_sender_msg_id"),
        sa.UniqueConstraint("group_id", "seq", name="uq_group_messages_group_seq"),
    )
    sa.Table(
        "group_seqs", md,
        sa.Column("group_id", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("last_seq", sa.BigInteger, nullable=False),
    )
    return md


def upgrade() -> None:
    schema().create_all(op.get_bind())


def downgrade() -> None:       # drops the store's tables: only ever wanted on an empty database
    schema().drop_all(op.get_bind())
