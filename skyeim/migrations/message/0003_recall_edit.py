"""Recall, edit and delete-for-me of 1:1 messages (docs/protocol.md, "Recall, edit, delete").

Revision ID: 0003
Revises: 0002 (files; both were written after 0001, files merged first)
``messages`` gets ``recalled_at`` and ``edited_at`` (ms), and ``changed_at``
(ms, the later of the two) with a partial index per conversation, so that a
sync asks "what changed since T" without reading unchanged rows.
``hidden_messages`` lists the messages a user deleted for themselves.
"""
import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("messages") as batch:
        batch.add_column(sa.Column("recalled_at", sa.BigInteger, nullable=True))
        batch.add_column(sa.Column("edited_at", sa.BigInteger, nullable=True))
        batch.add_column(sa.Column("changed_at", sa.BigInteger, nullable=True))
    changed = sa.text("changed_at IS NOT NULL")
    op.create_index("ix_messages_changed", "messages", ["user_lo", "user_hi", "changed_at"],
                    postgresql_where=changed, sqlite_where=changed)
    op.create_table(
        "hidden_messages",
        sa.Column("user_id", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("from_user_id", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("msg_id", sa.String(64), primary_key=True),
        sa.Column("peer_id", sa.BigInteger, nullable=False),
        sa.Column("hidden_at", sa.BigInteger, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("hidden_messages")
    op.drop_index("ix_messages_changed", table_name="messages")
    with op.batch_alter_table("messages") as batch:
        batch.drop_column("changed_at")
        batch.drop_column("edited_at")
        batch.drop_column("recalled_at")
