"""Group administration: a member's mute (docs/protocol.md "Group administration").

Revision ID: 0004
Revises: 0003 (requests and blocks, merged first)
``group_members.muted_until`` (ms, NULL when not muted). Roles need no schema
change: ``role`` (8 characters) now also holds ``admin``.
"""
import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("group_members") as batch:
        batch.add_column(sa.Column("muted_until", sa.BigInteger, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("group_members") as batch:
        batch.drop_column("muted_until")
