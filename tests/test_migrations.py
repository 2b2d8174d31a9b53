"""Schema migrations of the Message, Friend and Auth stores (skyeim/migrations,
docs/operations.md "Upgrades"), on SQLite and PostgreSQL.

- The migrations make exactly the tables the models define (Alembic's check):
  a table changed without a migration fails here.
- The first revision is the schema commit 5118138 made with create_all.
- A database written by 5118138 (tests/fixtures/5118138) is upgraded: users
  log in with their passwords, friendships, groups, members, read cursors and
  messages are as that release served them, and seqs go on.
- A service never changes a schema that holds data by itself: an older one is
  refused with one line naming the command, as are unknown ones.
- Services that start at once on one database do not race.
"""
from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Iterator

import pytest
import sqlalchemy as sa
from alembic import command

from fixture_5118138 import (CHANGED, PASSWORDS, STORES, copy_sqlite, expected, load_postgresql,
                             observe, passwords_now)
from chat_load import sent_ack
from harness import System
from schema_harness import (postgresql_schema, run_admin, run_service_once, service_config,
                            sqlite_schema, start_at_once)
from service_harness import database_url
from skyeim import migrations
from skyeim.admin.stores import models
from skyeim.db import make_sqlite_directory, open_engine

BACKENDS = ("sqlite", "postgresql")


@contextlib.contextmanager
def databases(backend: str, tmp_path: Path, name: str) -> Iterator[dict[str, str]]:
    """Empty databases for the three stores: one SQLite file each, or one
    PostgreSQL database that they share (as the cluster layout does)."""
    if backend == "sqlite":
        yield {s: f"sqlite:///{tmp_path / name / s}.db" for s in STORES}
        return
    with database_url("postgresql", tmp_path, name) as url:
        yield {s: url for s in STORES}


@contextlib.contextmanager
def connection(url: str) -> Iterator[sa.Connection]:
    """A connection in one transaction, committed at the end, as the admin tool opens them."""
    make_sqlite_directory(sa.make_url(url))
    engine = open_engine(sa.make_url(url), pool_size=1, statement_timeout_ms=0)
    try:
        with engine.begin() as conn:
            yield conn
    finally:
        engine.dispose()


def fixture_5118138(backend: str, tmp_path: Path, urls: dict[str, str]) -> None:
    """Put the 5118138 databases where ``urls`` point (the SQLite files in tmp_path)."""
    if backend == "sqlite":
        copy_sqlite(tmp_path)
    else:
        load_postgresql(urls["message"])


# -- the migrations and the models --------------------------------------------------

@pytest.mark.parametrize("backend", BACKENDS)
def test_the_migrations_make_exactly_the_models_tables_both_ways(backend, tmp_path):
    with databases(backend, tmp_path, "check") as urls:
        for store in STORES:
            with connection(urls[store]) as conn:
                assert migrations.migrate(conn, store, "test") == (None, migrations.head(store), False)
            with connection(urls[store]) as conn:
                assert migrations.differences(conn, store, models(store)) == [], (
                    f"the {store} models and migrations disagree: write a migration "
                    f"(python -m skyeim.admin revision {store} -m ...)")
            # every revision down, to no tables at all, and up again
            with connection(urls[store]) as conn:
                for rev in reversed(migrations.revisions(store)[:-1]):
                    assert migrations.migrate(conn, store, "test", rev)[1] == rev
                    assert migrations.current(conn, store) == rev
                command.downgrade(migrations.alembic_config(store, conn), "base")
                assert not migrations.store_tables(store, models(store)) & set(
                    sa.inspect(conn).get_table_names())
            with connection(urls[store]) as conn:
                assert migrations.migrate(conn, store, "test") == (None, migrations.head(store), False)
                assert migrations.differences(conn, store, models(store)) == []


def test_the_check_sees_a_table_changed_without_a_migration(tmp_path):
    url = f"sqlite:///{tmp_path / 'message.db'}"
    with connection(url) as conn:
        migrations.migrate(conn, "message", "test")
    changed = sa.MetaData(info=models("message").info)
    for table in models("message").tables.values():
        table.to_metadata(changed)
    changed.tables["messages"].append_column(sa.Column("not_migrated", sa.BigInteger, nullable=True))
    with connection(url) as conn:
        diffs = migrations.differences(conn, "message", changed)
    assert [d[0] for d in diffs] == ["add_column"] and diffs[0][3].name == "not_migrated"
    # and the admin tool's check finds an index made by hand
    with connection(url) as conn:
        conn.exec_driver_sql("CREATE INDEX ix_by_hand ON messages (created_at)")
    (tmp_path / "message.yaml").write_text(f"Name: message\nPort: 10301\nDataSource: {url}\n")
    done = run_admin("check", "-f", str(tmp_path / "message.yaml"))
    assert done.returncode == 1, done
    assert "differs from this release's models: remove_index ix_by_hand" in done.stdout


def test_the_first_revision_is_the_schema_5118138_made_sqlite(tmp_path):
    for store in STORES:
        fresh = tmp_path / f"{store}.db"
        with connection(f"sqlite:///{fresh}") as conn:
            migrations.migrate(conn, store, "test", migrations.BASELINE)
        old = Path(__file__).parent / "fixtures" / "5118138" / f"{store}.db"
        assert sqlite_schema(fresh) == sqlite_schema(old), store


def test_the_first_revision_is_the_schema_5118138_made_postgresql(tmp_path):
    with database_url("postgresql", tmp_path, "old") as old, \
            database_url("postgresql", tmp_path, "new") as new:
        load_postgresql(old)
        for store in STORES:
            with connection(new) as conn:
                migrations.migrate(conn, store, "test", migrations.BASELINE)
        assert postgresql_schema(new) == postgresql_schema(old)


# -- upgrading a database of commit 5118138 ------------------------------------------

@pytest.mark.parametrize("backend", BACKENDS)
def test_a_5118138_database_is_upgraded_with_everything_intact(backend, tmp_path):
    with databases(backend, tmp_path, "upgrade") as urls:
        fixture_5118138(backend, tmp_path, urls)
        system = System(tmp_path, standalone=False, **{
            s: {"DataSource": urls[s]} for s in STORES if backend == "postgresql"})
        configs = str(tmp_path)

        # what status says, and the friend service refusing in one line
        done = run_admin("status", "--config-dir", configs)
        assert done.returncode == 1, done
        lines = dict(line.split(" ", 1) for line in done.stdout.splitlines())
        # a store whose head is still 0001 is recorded at the first start; a newer one
        # (message, friend) needs the admin tool's migrate, named in one line
        for store in STORES:
            head = migrations.head(store)
            if head == migrations.BASELINE:
                assert "made by an earlier release: recorded as schema 0001 at the service's " \
                    "first start" in lines[store]
            else:
                assert (f"recorded as schema 0001, then this release needs {head}: run python -m "
                        f"skyeim.admin migrate -f {system.paths[store]}") in lines[store]
        friend_head = migrations.head("friend")
        refused = run_service_once("friend", system.paths["friend"])
        assert refused.returncode != 0 and "Traceback" not in refused.stderr
        assert error_lines(refused) == [
            f"error: {system.paths['friend']}: {migrations.describe(system.config['friend']['DataSource'])} "
            f"is at schema 0001 of "
            f"the friend store, this release needs {friend_head}: back it up, then run python -m skyeim.admin "
            f"migrate -f {system.paths['friend']}"]

        done = run_admin("migrate", "--config-dir", configs)
        assert done.returncode == 0, done
        stamped = "recorded as 0001 (made by an earlier release)"
        assert [ln.split(": ", 1)[1] for ln in done.stdout.splitlines()] == [
            stamped if migrations.head(store) == migrations.BASELINE
            else f"{stamped}, then 0001 -> {migrations.head(store)}" for store in STORES]
        assert run_admin("check", "--config-dir", configs).returncode == 0

        system.start()
        try:
            assert observe(system, passwords_now()) == expected(backend)
            _old_passwords_and_seqs_go_on(system)
        finally:
            system.stop()

        # and back: the friend store down to 0001 (its data stays), refused, up again
        done = run_admin("migrate", "-f", str(system.paths["friend"]), "--to", "0001")
        assert done.returncode == 0 and done.stdout.rstrip().endswith(f"{friend_head} -> 0001"), done
        assert run_service_once("friend", system.paths["friend"]).returncode != 0
        assert run_admin("migrate", "--config-dir", configs).returncode == 0
        system.start()
        try:
            view = observe(system, passwords_now())
            assert view["alice"]["group 1 members"] == expected(backend)["alice"]["group 1 members"]
            assert view["carol"]["friends"] == ["alice", "bob"]
        finally:
            system.stop()


def _old_passwords_and_seqs_go_on(system: System) -> None:
    old = expected("sqlite")            # the same ids and seqs in both fixtures
    r = system.api("POST", "/api/login", json_body={"username": CHANGED[0], "password": PASSWORDS[CHANGED[0]]})
    assert r.status_code == 401, "dave's password before his change must stay refused"
    alice, bob = system.login("alice", PASSWORDS["alice"]), system.login("bob", PASSWORDS["bob"])
    a, b = system.connect(alice), system.connect(bob)
    last = old["alice"]["chat with bob"]["messages"][0]["seq"]
    a.chat(bob, "after the upgrade", msg_id="after-upgrade-1")
    assert sent_ack(a, "after-upgrade-1")["seq"] == last + 1
    a.chat(bob, "hi bob #0", msg_id="fx-alice-bob-0")           # a resend of a 5118138 message
    ack = sent_ack(a, "fx-alice-bob-0")
    assert ack["seq"] == 1 and ack.get("duplicate") is True
    team = old["alice"]["groups"][0]
    a.send("groupchat", {"groupId": team["groupId"], "msgId": "after-upgrade-g", "content": "still here"})
    assert sent_ack(a, "after-upgrade-g")["seq"] == team["lastSeq"] + 1
    history = system.history(bob, alice)["messages"]
    assert [m["seq"] for m in history] == list(range(last + 1, 0, -1))
    assert len({m["msgId"] for m in history}) == len(history)
    b.close()
    a.close()


# -- start-up on other schemas ------------------------------------------------------------

@pytest.mark.parametrize("backend", BACKENDS)
def test_services_that_start_at_once_on_an_empty_database_make_the_schema_once(backend, tmp_path):
    with databases(backend, tmp_path, "race") as urls:
        services = start_at_once(["message", "message", "friend", "auth"], urls, tmp_path)
        try:
            logs = [s.log() for s in services]
        finally:
            for s in services:
                assert s.stop() == 0
        assert not any("Traceback" in log for log in logs), logs
        created = [line for log in logs[:2] for line in log.splitlines()
                   if f"created the message store's schema {migrations.head('message')}" in line]
        assert len(created) == 1, logs
        for store in STORES:
            with connection(urls[store]) as conn:
                assert conn.exec_driver_sql(
                    f"SELECT version_num FROM {migrations.version_table(store)}").scalars().all() == [
                    migrations.head(store)]


@pytest.mark.parametrize("backend", BACKENDS)
def test_services_that_start_at_once_on_a_5118138_database_record_it_once(backend, tmp_path):
    with databases(backend, tmp_path, "stamp") as urls:
        if backend == "sqlite":
            urls = {s: f"sqlite:///{p}" for s, p in copy_sqlite(tmp_path).items()}
        else:
            load_postgresql(urls["message"])
        # auth's head is 0001: recorded once; message's is newer: both refuse, nothing changed
        services = start_at_once(["auth", "auth", "message", "message"], urls, tmp_path,
                                 expect_exit={"message"})
        try:
            logs = [s.log() for s in services]
        finally:
            for s in services:
                s.stop()
        assert not any("Traceback" in log for log in logs), logs
        stamped = [line for log in logs[:2] for line in log.splitlines()
                   if "recorded the auth store (made by an earlier release) as schema 0001" in line]
        assert len(stamped) == 1, logs
        for log in logs[2:]:
            assert f"this release needs {migrations.head('message')}: back it up, then run " \
                "python -m skyeim.admin migrate" in log, log
        with connection(urls["auth"]) as conn:
            assert migrations.current(conn, "auth") == "0001"
        with connection(urls["message"]) as conn:
            assert migrations.current(conn, "message") is None      # left as it was


def test_a_schema_newer_than_this_release_is_refused(tmp_path):
    url = f"sqlite:///{tmp_path / 'message.db'}"
    with connection(url) as conn:
        migrations.migrate(conn, "message", "test")
        conn.exec_driver_sql(f"UPDATE {migrations.version_table('message')} SET version_num = '9999'")
    path = tmp_path / "message.yaml"
    path.write_text(f"Name: message\nPort: 10301\nDataSource: {url}\n")
    refused = run_service_once("message", path)
    assert refused.returncode != 0 and len(error_lines(refused)) == 1, refused.stderr
    assert error_lines(refused)[0].startswith(
        f"error: {path}: {tmp_path / 'message.db'} is at schema 9999 of the message store, "
        f"which this release does not know (it knows up to {migrations.head('message')}): run the "
        f"release that wrote it")
    done = run_admin("migrate", "-f", str(path))
    assert done.returncode == 1 and "which this release does not know" in done.stderr
    assert "which this release does not know" in run_admin("status", "-f", str(path)).stdout


def test_tables_that_match_no_revision_are_refused_and_left_alone(tmp_path):
    db = tmp_path / "message.db"
    with connection(f"sqlite:///{db}") as conn:      # a hand-made messages table
        conn.exec_driver_sql("CREATE TABLE messages (id INTEGER PRIMARY KEY, body TEXT)")
        conn.exec_driver_sql("INSERT INTO messages (body) VALUES ('keep me')")
    path = tmp_path / "message.yaml"
    path.write_text(f"Name: message\nPort: 10301\nDataSource: sqlite:///{db}\n")
    refused = run_service_once("message", path)
    assert refused.returncode != 0 and len(error_lines(refused)) == 1, refused.stderr
    assert (f"{db} has message tables without a version table that are not schema 0001 ("
            in refused.stderr and "not touching it; see docs/operations.md#upgrades" in refused.stderr)
    assert run_admin("migrate", "-f", str(path)).returncode == 1
    with connection(f"sqlite:///{db}") as conn:
        assert conn.exec_driver_sql("SELECT body FROM messages").scalars().all() == ["keep me"]
        assert migrations.current(conn, "message") is None


def test_an_auth_database_from_before_revocation_gets_its_table_and_is_recorded(tmp_path):
    """A create_all database that lacks a table of schema 0001 (token_generations
    came late) gets it, as create_all gave it, and is then recorded as 0001."""
    db = tmp_path / "auth.db"
    users = migrations.baseline_schema("auth").tables["users"]
    with connection(f"sqlite:///{db}") as conn:
        users.create(conn)
    cfg = service_config("auth", f"sqlite:///{db}")
    services = start_at_once(["auth"], {"auth": cfg["DataSource"]}, tmp_path)
    r = services[0].session.post(services[0].url + "/v1/users", json={"username": "zoe", "password": "zoe-password"})
    log = services[0].log()
    services[0].stop()
    assert r.status_code == 200, r.text
    assert "created the auth store's missing tables token_generations" in log
    with connection(f"sqlite:///{db}") as conn:
        assert migrations.current(conn, "auth") == "0001"
        assert migrations.differences(conn, "auth", models("auth")) == []



def test_a_friend_store_upgraded_to_0005_never_gives_a_dismissed_groups_id_again(tmp_path):
    """SQLite without AUTOINCREMENT gave a new group the newest dismissed group's id;
    0005 rebuilds ``groups`` with it, keeping the groups that are there."""
    url = f"sqlite:///{tmp_path / 'friend.db'}"
    add = "INSERT INTO groups (name, owner_id, created_at) VALUES ('g', 1, 0)"
    with connection(url) as conn:
        migrations.migrate(conn, "friend", "test", "0004")
        for _ in range(3):
            conn.exec_driver_sql(add)
        conn.exec_driver_sql("DELETE FROM groups WHERE id = 3")
        conn.exec_driver_sql(add)
        assert [r[0] for r in conn.exec_driver_sql("SELECT id FROM groups")] == [1, 2, 3]  # the bug
    with connection(url) as conn:
        assert migrations.migrate(conn, "friend", "test")[1] == migrations.head("friend")
        conn.exec_driver_sql("DELETE FROM groups WHERE id = 3")
        conn.exec_driver_sql(add)
        assert [r[0] for r in conn.exec_driver_sql("SELECT id FROM groups")] == [1, 2, 4]

def error_lines(done) -> list[str]:
    """A refusing program's stderr without its log lines (each starts with the time):
    the one line a person reads, and nothing else (no traceback)."""
    lines = done.stderr.splitlines()
    assert "Traceback" not in done.stderr, done.stderr
    return [line for line in lines if not line[:4].isdigit()]
