"""Mentions in group messages (docs/protocol.md "Mentions in groups").

Revision ID: 0005
Revises: 0004 (the conversation list, merged first)
``group_messages.mentions``: the mentioned user ids as text ("3,7"; NULL for
none), returned with the message. ``group_mentions`` (user_id, group_id, seq):
one row per mention, so a member's count since its read cursor is a range of
the primary key.
"""
import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("group_messages") as batch:
        batch.add_column(sa.Column("mentions", sa.Text, nullable=True))
    op.create_table(
        "group_mentions",
        sa.Column("user_id", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("group_id", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("seq", sa.BigInteger, primary_key=True, autoincrement=False),
    )


def downgrade() -> None:
    op.drop_table("group_mentions")
    with op.batch_alter_table("group_messages") as batch:
        batch.drop_column("mentions")
