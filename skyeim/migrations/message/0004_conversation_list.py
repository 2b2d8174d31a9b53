"""The conversation list: per user, one row per 1:1 conversation (its last
message's time and seq) and the user's muted/pinned flags per conversation
(docs/protocol.md "Conversation list"), indexed in list order.

Revision ID: 0004
Revises: 0003 (written after 0001; merged after files and recall/edit)
Existing conversations are filled in from ``conversations`` and their last
message, for both users of each pair.
"""
import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "user_conversations",
        sa.Column("user_id", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("kind", sa.SmallInteger, primary_key=True, autoincrement=False),
        sa.Column("peer_id", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("last_at", sa.BigInteger, nullable=False),
        sa.Column("last_seq", sa.BigInteger, nullable=False),
        sa.Column("pinned", sa.SmallInteger, nullable=False),
        sa.Column("muted", sa.SmallInteger, nullable=False),
    )
    op.create_index("ix_user_conversations_list", "user_conversations",
                    ["user_id", "kind", "pinned", "last_at", "peer_id"])
    for me, peer in (("user_lo", "user_hi"), ("user_hi", "user_lo")):
        op.execute(
            "INSERT INTO user_conversations (user_id, kind, peer_id, last_at, last_seq, pinned, muted) "
            f"SELECT c.{me}, 0, c.{peer}, m.created_at, c.last_seq, 0, 0 FROM conversations c "
            "JOIN messages m ON m.user_lo = c.user_lo AND m.user_hi = c.user_hi "
            "AND m.seq = c.last_seq")
    if op.get_bind().dialect.name == "postgresql":
        # the planner's statistics of the filled table now, not at autovacuum's next round:
        # without them a list page's plan is several times slower (docs/performance.md)
        op.execute("ANALYZE user_conversations")


def downgrade() -> None:
    op.drop_index("ix_user_conversations_list", table_name="user_conversations")
    op.drop_table("user_conversations")
