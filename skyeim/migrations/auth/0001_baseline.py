"""Schema 0001 of the Auth store: the tables create_all made before
versioned migrations, frozen here (skyeim/migrations says why).

Revision ID: 0001
"""
import sqlalchemy as sa
from alembic import op

revision, down_revision, branch_labels, depends_on = "0001", None, None, None


def schema() -> sa.MetaData:
    md = sa.MetaData()
    sa.Table(
        "users", md,
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"),
                  primary_key=True, autoincrement=True),
        sa.Column("username", sa.String(32), nullable=False),
        sa.Column("username_lower", sa.String(32), nullable=False, unique=True),
        sa.Column("password_hash", sa.String(255), nullable=False),
        sa.Column("created_at", sa.BigInteger, nullable=False),
    )
    sa.Table(
        "token_generations", md,
        sa.Column("user_id", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("gen", sa.BigInteger, nullable=False),
        sa.Column("revoked_at", sa.BigInteger, nullable=False),
        sa.Index("token_generations_by_time", "revoked_at", "user_id"),
    )
    return md


def upgrade() -> None:
    schema().create_all(op.get_bind())


def downgrade() -> None:       # drops the store's tables: only ever wanted on an empty database
    schema().drop_all(op.get_bind())
