"""Schema 0001 of the Friend store: the tables create_all made before
versioned migrations, frozen here (skyeim/migrations says why).

Revision ID: 0001
"""
import sqlalchemy as sa
from alembic import op

revision, down_revision, branch_labels, depends_on = "0001", None, None, None


def schema() -> sa.MetaData:
    md = sa.MetaData()
    sa.Table(
        "friendships", md,
        sa.Column("user_id", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("friend_id", sa.BigInteger, primary_key=True, autoincrement=False),
    )
    sa.Table(
        "groups", md,
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"),
                  primary_key=True, autoincrement=True),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("owner_id", sa.BigInteger, nullable=False),
        sa.Column("created_at", sa.BigInteger, nullable=False),
    )
    members = sa.Table(
        "group_members", md,
        sa.Column("group_id", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("user_id", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("role", sa.String(8), nullable=False),
        sa.Column("read_seq", sa.BigInteger, nullable=False),
        sa.Column("joined_at", sa.BigInteger, nullable=False),
    )
    sa.Index("ix_group_members_user", members.c.user_id, members.c.group_id)
    return md


def upgrade() -> None:
    schema().create_all(op.get_bind())


def downgrade() -> None:       # drops the store's tables: only ever wanted on an empty database
    schema().drop_all(op.get_bind())
