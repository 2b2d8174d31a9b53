"""Backups (python -m skyeim.admin backup / restore; docs/operations.md "Backups").

A backup taken while users chat (the four processes of the supervisord
layout, on SQLite and on PostgreSQL) holds every message acked `sent` before
it began, by (fromUserId, msgId), with gap-free seqs; restored into a fresh
data directory (or database) it serves: login, history, and new chats and
group messages get the next seq. Restore refuses to overwrite data without
--force, and a damaged backup without touching anything.
"""
from __future__ import annotations

import contextlib
import json
import time
from pathlib import Path
from typing import Iterator

import pytest
import sqlalchemy as sa

from chat_load import ChatLoad, sent_ack
from harness import PASSWORD, System
from schema_harness import run_admin
from service_harness import database_url
from skyeim import migrations

STORES = ("message", "friend", "auth")
ACKED_BEFORE_BACKUP = 150      # messages acked before the backup starts (at least)
LOAD_WARMUP_TIMEOUT = 60.0     # s to reach that
LOAD_AFTER_BACKUP = 1.0        # s the load goes on after the backup ended


@contextlib.contextmanager
def data_sources(backend: str, tmp_path: Path, name: str) -> Iterator[dict]:
    """Config overrides for a System: SQLite files in its directory (the
    default), or one fresh PostgreSQL database for the three stores."""
    if backend == "sqlite":
        yield {}
        return
    with database_url("postgresql", tmp_path, name) as url:
        yield {s: {"DataSource": url} for s in STORES}


def stored_keys(url: str) -> tuple[set, set, dict, dict]:
    """(fromUserId, msgId) of every 1:1 and group message in a Message store,
    and each conversation's and group's seqs."""
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            chats = conn.exec_driver_sql("SELECT from_user_id, msg_id, user_lo, user_hi, seq FROM messages").all()
            groups = conn.exec_driver_sql("SELECT from_user_id, msg_id, group_id, seq FROM group_messages").all()
            last_chat = {(r[0], r[1]): r[2] for r in conn.exec_driver_sql(
                "SELECT user_lo, user_hi, last_seq FROM conversations")}
            last_group = dict(conn.exec_driver_sql("SELECT group_id, last_seq FROM group_seqs").all())
    finally:
        engine.dispose()
    seqs: dict = {}
    for r in chats:
        seqs.setdefault(("chat", r[2], r[3]), []).append(r[4])
    for r in groups:
        seqs.setdefault(("group", r[2]), []).append(r[3])
    last = {("chat", lo, hi): n for (lo, hi), n in last_chat.items()}
    last.update({("group", g): n for g, n in last_group.items()})
    return {(r[0], r[1]) for r in chats}, {(r[0], r[1]) for r in groups}, seqs, last


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_a_backup_under_chat_load_restores_every_message_acked_before_it(backend, tmp_path):
    backup_dir = tmp_path / "backup"
    with data_sources(backend, tmp_path, "live") as live_db, \
            data_sources(backend, tmp_path, "restored") as fresh_db:
        live = System(tmp_path / "live", standalone=False, **live_db).start()
        load = None
        try:
            users = live.users(*[f"chat{i}" for i in range(6)])
            partners = [(users[i], users[i ^ 1]) for i in range(6)]     # three pairs, both ways
            for a, b in zip(users[::2], users[1::2]):
                live.befriend(a, b)
            group = live.api("POST", "/api/groups", users[0],
                             json_body={"name": "load", "memberIds": [u.id for u in users[1:]]}).json()
            load = ChatLoad(live, partners, group["groupId"]).start()
            deadline = time.monotonic() + LOAD_WARMUP_TIMEOUT
            while load.count() < ACKED_BEFORE_BACKUP and time.monotonic() < deadline:
                time.sleep(0.05)
            began = time.monotonic()
            done = run_admin("backup", str(backup_dir), "--config-dir", str(live.tmp))
            ended = time.monotonic()
            time.sleep(LOAD_AFTER_BACKUP)
            load.stop()
            assert done.returncode == 0, done
            assert not load.errors, load.errors[:5]
            before = load.acked_before(began)
            during = len(load.acked_before(ended)) - len(before)
            print(f"\n{backend}: {len(before)} messages acked before the backup, {during} during its "
                  f"{ended - began:.2f} s, {load.count()} in all")
            assert len(before) >= ACKED_BEFORE_BACKUP
            assert load.count() > len(load.acked_before(ended)), "the load did not go on after the backup"
        finally:
            if load is not None:
                load.stop()
            live.stop()

        manifest = json.loads((backup_dir / "manifest.json").read_text())
        assert manifest["format"] == "skyeim-backup/1" and manifest["version"]
        assert {s: e["revision"] for s, e in manifest["stores"].items()} == {
            s: migrations.head(s) for s in STORES}

        fresh = System(tmp_path / "restored", standalone=False, **fresh_db)
        done = run_admin("restore", str(backup_dir), "--config-dir", str(fresh.tmp))
        assert done.returncode == 0, done

        chats, group_msgs, seqs, last = stored_keys(fresh.config["message"]["DataSource"])
        missing = [a for a in before if (a.from_user_id, a.msg_id) not in (
            group_msgs if a.group_id else chats)]
        assert not missing, f"{len(missing)} of {len(before)} acked messages are not in the backup: {missing[:3]}"
        for key, got in seqs.items():       # one snapshot: seqs 1..n and the counters agree
            assert sorted(got) == list(range(1, len(got) + 1)), key
            assert last[key] == len(got), key

        fresh.start()
        try:
            _the_restored_system_serves(fresh, users, group["groupId"], seqs)
        finally:
            fresh.stop()


def _the_restored_system_serves(system: System, users, group_id: int, seqs: dict) -> None:
    a, b = system.login(users[0].username, PASSWORD), system.login(users[1].username, PASSWORD)
    lo, hi = sorted((a.id, b.id))
    last_chat, last_group = len(seqs[("chat", lo, hi)]), len(seqs[("group", group_id)])
    page = system.history(a, b, limit=5)["messages"]
    assert page[0]["seq"] == last_chat
    client = system.connect(a)
    client.chat(b, "after the restore", msg_id="after-restore")
    ack = sent_ack(client, "after-restore")
    assert ack["seq"] == last_chat + 1 and not ack.get("duplicate")
    client.send("groupchat", {"groupId": group_id, "msgId": "after-restore-g", "content": "back"})
    assert sent_ack(client, "after-restore-g")["seq"] == last_group + 1
    client.close()


def test_restore_refuses_data_and_damage_and_force_overwrites(tmp_path):
    source = System(tmp_path / "source", standalone=False).start()
    try:
        alice = source.register_user("alice")
    finally:
        source.stop()
    assert run_admin("backup", str(tmp_path / "b"), "--config-dir", str(source.tmp)).returncode == 0
    again = run_admin("backup", str(tmp_path / "b"), "--config-dir", str(source.tmp))
    assert again.returncode == 1 and "not an empty directory" in again.stderr

    other = System(tmp_path / "other", standalone=False).start()     # holds a user of its own
    try:
        bob = other.register_user("bob")
    finally:
        other.stop()
    refused = run_admin("restore", str(tmp_path / "b"), "--config-dir", str(other.tmp))
    assert refused.returncode == 1 and refused.stderr.count("\n") == 1, refused
    assert "holds 1 users of the auth store: restore refuses to overwrite it" in refused.stderr
    other.start()
    try:
        other.login(bob.username)                 # untouched
    finally:
        other.stop()

    manifest = tmp_path / "b" / "manifest.json"
    (tmp_path / "b" / "auth.db").write_bytes(b"\0" * 100)
    damaged = run_admin("restore", str(tmp_path / "b"), "--config-dir", str(tmp_path / "source"), "--force")
    assert damaged.returncode == 1 and "does not match its checksum" in damaged.stderr
    assert manifest.exists()

    assert run_admin("backup", str(tmp_path / "c"), "--config-dir", str(source.tmp)).returncode == 0
    forced = run_admin("restore", str(tmp_path / "c"), "--config-dir", str(other.tmp), "--force")
    assert forced.returncode == 0, forced
    other.start()
    try:
        assert other.login(alice.username).id == alice.id
        r = other.api("POST", "/api/login", json_body={"username": bob.username, "password": PASSWORD})
        assert r.status_code == 401             # overwritten, as asked
    finally:
        other.stop()
