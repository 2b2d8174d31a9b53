"""Files, images and voice: the records of uploads and who may download them
(docs/protocol.md "Files, images and voice"; skyeim/message/files.py).

Revision ID: 0002
Revises: 0001
Two new tables, nothing else changes: ``files`` (one row per upload) and
``file_grants`` (the 1:1 users and groups a file was sent to). A database at
0001 gains them with ``python -m skyeim.admin migrate``; going down drops them
(the uploads' bytes in Files.Dir stay, unreachable).
"""
import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "files",
        sa.Column("file_id", sa.String(64), primary_key=True),
        sa.Column("owner_id", sa.BigInteger, nullable=False),
        sa.Column("size", sa.BigInteger, nullable=False),
        sa.Column("mime", sa.String(127), nullable=False),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("width", sa.Integer, nullable=True),
        sa.Column("height", sa.Integer, nullable=True),
        sa.Column("thumbnail", sa.Boolean, nullable=False),
        sa.Column("created_at", sa.BigInteger, nullable=False),
    )
    op.create_table(
        "file_grants",
        sa.Column("file_id", sa.String(64), nullable=False),
        sa.Column("grantee_kind", sa.SmallInteger, nullable=False),
        sa.Column("grantee_id", sa.BigInteger, nullable=False),
        sa.PrimaryKeyConstraint("file_id", "grantee_kind", "grantee_id", name="pk_file_grants"),
    )


def downgrade() -> None:
    op.drop_table("file_grants")
    op.drop_table("files")
