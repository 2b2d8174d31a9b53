"""Friend requests and blocks (docs/protocol.md "Friend requests and blocking").

Revision ID: 0003
Revises: 0002
Two tables: ``friend_requests`` (pending, keyed by (from, to), indexed by
recipient for "my incoming requests") and ``blocks`` (keyed by (user, blocked)).
"""
import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "friend_requests",
        sa.Column("from_user_id", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("to_user_id", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("created_at", sa.BigInteger, nullable=False),
    )
    op.create_index("ix_friend_requests_to", "friend_requests", ["to_user_id", "created_at"])
    op.create_table(
        "blocks",
        sa.Column("user_id", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("blocked_id", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("created_at", sa.BigInteger, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("blocks")
    op.drop_index("ix_friend_requests_to", table_name="friend_requests")
    op.drop_table("friend_requests")
