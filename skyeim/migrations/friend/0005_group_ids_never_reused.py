"""Group ids are never given again on SQLite (docs/operations.md "Upgrades").

Revision ID: 0005
Revises: 0004

Without AUTOINCREMENT, SQLite gives a new row the highest rowid plus one, so a
group created after the newest group was dismissed got the dismissed group's id,
and with it that group's history in the Message store. The table is rebuilt with
AUTOINCREMENT; SQLite's counter starts at the highest id now in the table (an id
dismissed before this upgrade above every group still there is unknown to this
store, and may be given once more). PostgreSQL's sequence never went back: no change.
"""
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def _rebuild_groups(autoincrement: bool) -> None:
    if op.get_bind().dialect.name != "sqlite":
        return
    with op.batch_alter_table("groups", recreate="always",
                              table_kwargs={"sqlite_autoincrement": autoincrement}):
        pass


def upgrade() -> None:
    _rebuild_groups(True)


def downgrade() -> None:
    _rebuild_groups(False)
