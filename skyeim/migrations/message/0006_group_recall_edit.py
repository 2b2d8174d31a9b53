"""Recall and edit of group messages (docs/protocol.md "Recall, edit, delete").

Revision ID: 0006
Revises: 0005 (mentions in groups)
``group_messages`` gets ``recalled_at``, ``edited_at`` and ``changed_at`` (ms, the
later of the two), as ``messages`` got them in 0003, with a partial index
(group_id, changed_at) so that a group sync asks "what changed since T" without
reading unchanged rows.
"""
import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("group_messages") as batch:
        batch.add_column(sa.Column("recalled_at", sa.BigInteger, nullable=True))
        batch.add_column(sa.Column("edited_at", sa.BigInteger, nullable=True))
        batch.add_column(sa.Column("changed_at", sa.BigInteger, nullable=True))
    changed = sa.text("changed_at IS NOT NULL")
    op.create_index("ix_group_messages_changed", "group_messages", ["group_id", "changed_at"],
                    postgresql_where=changed, sqlite_where=changed)


def downgrade() -> None:
    op.drop_index("ix_group_messages_changed", table_name="group_messages")
    with op.batch_alter_table("group_messages") as batch:
        batch.drop_column("changed_at")
        batch.drop_column("edited_at")
        batch.drop_column("recalled_at")
