"""Which databases the admin tool works on: the stores' DataSources, read from
the services' own YAML files (``-f etc/message.yaml ...`` or ``--config-dir etc``)."""
from __future__ import annotations

import importlib
import os
from dataclasses import dataclass

import sqlalchemy as sa

from skyeim import config, migrations
from skyeim.db import open_engine

DEFAULT_CONFIG_DIR = "etc"
# the modules whose tables make up each store's models
_MODELS = {"message": ("skyeim.message.store", "skyeim.message.groups", "skyeim.message.files"),
           "friend": ("skyeim.friend.store", "skyeim.friend.groups"),
           "auth": ("skyeim.auth.store",)}


class AdminError(Exception):
    """A refusal or failure the tool reports in one line (exit 1)."""


@dataclass(frozen=True)
class Store:
    """One store of the running system: its name, the file that configures it
    and its database."""
    name: str
    config_path: str
    url: sa.URL

    @property
    def where(self) -> str:
        return migrations.describe(self.url)

    @property
    def is_sqlite(self) -> bool:
        return self.url.get_backend_name() == "sqlite"

    @property
    def sqlite_path(self) -> str:
        return self.url.database or ""

    def engine(self, statement_timeout_ms: int = 0) -> sa.Engine:
        """An engine as the service's (SQLite pragmas, BEGIN IMMEDIATE), one
        connection; PostgreSQL without the services' statement timeout by default."""
        return open_engine(self.url, pool_size=1, statement_timeout_ms=statement_timeout_ms)


def find_stores(files: list[str], config_dir: str | None) -> list[Store]:
    """The stores configured by ``files``, or by DIR/message.yaml, DIR/friend.yaml
    and DIR/auth.yaml (DIR: ``config_dir``, default etc/), in the order message,
    friend, auth. Raises config.ConfigError for a file that is missing or wrong."""
    if files and config_dir:
        raise config.ConfigError("give -f FILE ... or --config-dir DIR, not both")
    if not files:
        folder = config_dir or DEFAULT_CONFIG_DIR
        files = [os.path.join(folder, f"{name}.yaml") for name in migrations.STORES]
    found: dict[str, Store] = {}
    for path in files:
        store = _store_of(path)
        cls = config.AuthServiceConfig if store == "auth" else config.ServiceConfig
        cfg = config.load(cls, path)
        if store in found:
            raise config.ConfigError(f"{path}: a second file for the {store} store "
                                     f"(after {found[store].config_path})")
        found[store] = Store(store, path, sa.make_url(cfg.database_url))
    return sorted(found.values(), key=lambda s: migrations.STORES.index(s.name))


def first_line(text: object) -> str:
    """The first non-blank line of an error's text (a tool's stderr, a driver's message)."""
    lines = [ln for ln in str(text).strip().splitlines() if ln.strip()]
    return lines[0] if lines else "(no message)"


def models(store: str) -> sa.MetaData:
    """The store's tables as this release's code defines them."""
    modules = [importlib.import_module(m) for m in _MODELS[store]]
    return modules[0].metadata


def _store_of(path: str) -> str:
    """A service file's store: the store's name starts the file's name
    (message.yaml, friend-eu.yaml, auth.yaml ...)."""
    base = os.path.basename(path)
    for name in migrations.STORES:
        if base.startswith(name):
            return name
    raise config.ConfigError(f"{path}: the file's name must start with the store's: "
                             f"message, friend or auth (e.g. etc/message.yaml)")
