"""Alembic's env.py for the three stores. Never imported: Alembic runs it for
every command that skyeim.migrations (or the admin tool) issues, with the
connection of a transaction that already holds the store's lock in
``config.attributes``; nothing here connects or commits."""
from alembic import context

from skyeim.migrations import include_name, store_tables, version_table

config = context.config
store = config.attributes["store"]
metadata = config.attributes.get("target_metadata")
context.configure(
    connection=config.attributes["connection"],
    target_metadata=metadata,
    version_table=version_table(store),
    # the three stores may share a database: each sees only its own tables
    include_name=include_name(store_tables(store, metadata)),
    compare_type=True,
    # SQLite alters a table by copying it: autogenerate writes batch operations
    render_as_batch=True,
)
with context.begin_transaction():
    context.run_migrations()
