"""Databases written by commit 5118138 (the last release that only ran
``create_all``), for tests/test_migrations.py; and the script that made them.

tests/fixtures/5118138/ holds:
* ``message.db``, ``friend.db``, ``auth.db``: the SQLite files of a standalone
  system of that commit, filled through its API by ``fill`` below;
* ``postgresql.sql``: ``pg_dump`` (plain SQL) of one PostgreSQL database that
  the same commit's three services shared, filled the same way; loaded with
  psql (``load_postgresql``), as pg_dump's own restore instructions say;
* ``expected-sqlite.json``, ``expected-postgresql.json``: what that system
  answered through its API (``observe``) just before it stopped.

To make them again (needs git with commit 5118138, PostgreSQL and the test
requirements), from the repository root:

    .venv/bin/python tests/support/fixture_5118138.py

It extracts the commit's tree (``git archive``) into a temporary directory
and runs its wsserver.py there, so the files are written by that code alone.
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path
from typing import Any, Iterator

import sqlalchemy as sa

from chat_load import until
from harness import REPO, Client, System, User

COMMIT = "5118138"
FIXTURE = REPO / "tests" / "fixtures" / COMMIT
STORES = ("message", "friend", "auth")
PASSWORDS = {name: f"{name}-password-{COMMIT}" for name in ("alice", "bob", "carol", "dave", "erin")}
CHANGED = ("dave", f"dave-new-password-{COMMIT}")     # dave changed his password (a revocation)


def passwords_now() -> dict[str, str]:
    """Each user's password after the fill."""
    return {**PASSWORDS, CHANGED[0]: CHANGED[1]}


def observe(system: System, passwords: dict[str, str]) -> dict[str, Any]:
    """Everything the users can read through the gateway's API, by username:
    login ids, friends, groups with members and messages, every conversation.
    Reads only (presence, which says who is connected now, is left out)."""
    users = {name: system.login(name, pw) for name, pw in sorted(passwords.items())}
    names = {u.id: name for name, u in users.items()}
    view: dict[str, Any] = {"userIds": {name: u.id for name, u in users.items()}}
    for name, user in users.items():
        mine: dict[str, Any] = {"friends": [f["username"] for f in _get(system, user, "/api/friends")["friends"]]}
        groups = _get(system, user, "/api/groups")["groups"]
        mine["groups"] = groups
        for g in groups:
            gid = g["groupId"]
            members = _get(system, user, f"/api/groups/{gid}/members", limit=200)["members"]
            mine[f"group {gid} members"] = [{k: v for k, v in m.items() if k != "online"} for m in members]
            mine[f"group {gid} messages"] = _get(system, user, f"/api/groups/{gid}/messages", limit=200)
        for peer_id, peer in names.items():
            if peer != name:
                mine[f"chat with {peer}"] = _get(system, user, "/api/messages", peerId=peer_id, limit=200)
        view[name] = mine
    return view


def load_postgresql(url: str, dump: Path = FIXTURE / "postgresql.sql") -> None:
    """Load the PostgreSQL fixture into the (empty) database at the SQLAlchemy ``url``."""
    u = sa.make_url(url)
    env = {**os.environ, "PGPASSWORD": u.password or "", "PGCONNECT_TIMEOUT": "10"}
    subprocess.run(["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-h", u.host or "127.0.0.1",
                    "-p", str(u.port or 5432), "-U", u.username or "postgres", "-d", u.database,
                    "-f", str(dump)], env=env, check=True, capture_output=True, timeout=120)


def copy_sqlite(dest: Path) -> dict[str, Path]:
    """Copies of the SQLite fixture files in ``dest``: {store: path}."""
    dest.mkdir(parents=True, exist_ok=True)
    return {s: Path(shutil.copyfile(FIXTURE / f"{s}.db", dest / f"{s}.db")) for s in STORES}


def expected(backend: str) -> dict[str, Any]:
    return json.loads((FIXTURE / f"expected-{backend}.json").read_text(encoding="utf-8"))


# -- making the fixture -------------------------------------------------------------

class OldSystem(System):
    """A harness System that runs another tree's code (the commit's)."""

    def __init__(self, tmp: Path, tree: Path, **overrides: Any):
        self.tree = tree
        super().__init__(tmp, **overrides)

    def _spawn(self, name: str, argv: list[str]) -> subprocess.Popen:
        log_file = open(self.tmp / f"{name}.{self.starts}.log", "wb")
        self._log_files.append(log_file)
        self.log_paths[name] = self.tmp / f"{name}.{self.starts}.log"
        proc = subprocess.Popen(argv, cwd=self.tree, stdout=log_file, stderr=subprocess.STDOUT,
                                env={**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONPATH": str(self.tree)})
        self.procs[name] = proc
        return proc


def fill(system: System) -> None:
    """Users, friendships, two groups (one whose owner left), 1:1 chats sent,
    delivered and read, group messages and a read cursor: through the API."""
    for name, pw in PASSWORDS.items():
        r = system.api("POST", "/api/register", json_body={"username": name, "password": pw})
        assert r.status_code == 200, r.text
    u = {name: system.login(name, pw) for name, pw in PASSWORDS.items()}
    r = system.api("POST", "/api/password", json_body={"username": "dave", "oldPassword": PASSWORDS["dave"],
                                                       "newPassword": CHANGED[1]})
    assert r.status_code == 200, r.text
    u["dave"] = system.login("dave", CHANGED[1])
    for a, b in (("alice", "bob"), ("alice", "carol"), ("bob", "carol"), ("dave", "erin")):
        system.befriend(u[a], u[b])
    team = _post(system, u["alice"], "/api/groups", {"name": "team", "memberIds": [u["bob"].id, u["carol"].id]})
    _post(system, u["bob"], f"/api/groups/{team['groupId']}/members", {"userIds": [u["dave"].id]})
    club = _post(system, u["carol"], "/api/groups", {"name": "book club ☕",
                                                    "memberIds": [u["alice"].id, u["erin"].id]})
    _post(system, u["carol"], f"/api/groups/{club['groupId']}/leave", {})

    alice, bob = system.connect(u["alice"]), system.connect(u["bob"])
    first = [_chat(alice, u["bob"], f"fx-alice-bob-{i}", f"hi bob #{i}", delivered=True) for i in range(3)]
    _chat(alice, u["bob"], "fx-alice-bob-img", "https://example.invalid/cat.png", delivered=True, content_type=2)
    for i in range(2):
        _chat(bob, u["alice"], f"fx-bob-alice-{i}", f"hello alice #{i}", delivered=True)
    bob.read(u["alice"], first[:2])                   # two of alice's read, the rest delivered
    until(alice, lambda f: f["type"] == "read")
    for i in range(2):                                # carol is offline: sent, not delivered
        _chat(alice, u["carol"], f"fx-alice-carol-{i}", f"carol, #{i} naïve ✓", delivered=False)
    for i, who in enumerate((alice, alice, bob)):
        who.send("groupchat", {"groupId": team["groupId"], "msgId": f"fx-team-{i}", "content": f"team #{i}"})
        until(who, lambda f: f["type"] == "ack" and f["data"].get("msgId") == f"fx-team-{i}")
    bob.send("group_read", {"groupId": team["groupId"], "seq": 2})
    time.sleep(0.5)                                   # the cursor is stored before we read it back
    alice.close()
    bob.close()
    dave = system.connect(u["dave"])                  # a NUL and emoji survive the byte column
    _chat(dave, u["erin"], "fx-dave-erin-0", "nul:\u0000 emoji:\U0001F600", delivered=False)
    dave.send("groupchat", {"groupId": team["groupId"], "msgId": "fx-team-dave", "content": "from dave"})
    until(dave, lambda f: f["type"] == "ack" and f["data"].get("msgId") == "fx-team-dave")
    dave.close()


def _chat(client: Client, to: User, msg_id: str, content: str, *, delivered: bool,
          content_type: int = 1) -> str:
    client.chat(to, content, msg_id=msg_id, content_type=content_type)
    until(client, lambda f: f["type"] == "ack" and f["data"]["msgId"] == msg_id
           and f["data"]["status"] == ("delivered" if delivered else "sent"))
    return msg_id


def _get(system: System, user: User, path: str, **params: Any) -> Any:
    r = system.api("GET", path, user, params=params)
    assert r.status_code == 200, f"GET {path}: {r.status_code} {r.text}"
    return r.json()


def _post(system: System, user: User, path: str, body: dict) -> Any:
    r = system.api("POST", path, user, json_body=body)
    assert r.status_code == 200, f"POST {path}: {r.status_code} {r.text}"
    return r.json()


@contextlib.contextmanager
def _commit_tree() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix=f"skyeim-{COMMIT}-") as tmp:
        archive = Path(tmp) / "tree.tar"
        subprocess.run(["git", "-C", str(REPO), "archive", "--format=tar", "-o", str(archive), COMMIT],
                       check=True, timeout=60)
        tree = Path(tmp) / "tree"
        with tarfile.open(archive) as tar:
            tar.extractall(tree, filter="data")
        yield tree


def _run_old_system(tree: Path, tmp: Path, data_source: str | None) -> dict[str, Any]:
    overrides = {} if data_source is None else {s: {"DataSource": data_source} for s in STORES}
    system = OldSystem(tmp, tree, **overrides)
    system.start()
    try:
        fill(system)
        return observe(system, passwords_now())
    finally:
        system.stop()


def main() -> int:
    from service_harness import database_url
    FIXTURE.mkdir(parents=True, exist_ok=True)
    with _commit_tree() as tree, tempfile.TemporaryDirectory() as tmp:
        sqlite_dir = Path(tmp) / "sqlite"
        view = _run_old_system(tree, sqlite_dir, None)
        for s in STORES:
            shutil.copyfile(sqlite_dir / f"{s}.db", FIXTURE / f"{s}.db")
            assert not (sqlite_dir / f"{s}.db-wal").exists(), "the service did not close its database"
        (FIXTURE / "expected-sqlite.json").write_text(json.dumps(view, indent=1, ensure_ascii=False) + "\n")
        with database_url("postgresql", Path(tmp), "fixture") as url:
            view = _run_old_system(tree, Path(tmp) / "pg", url)
            u = sa.make_url(url)
            dump = subprocess.run(["pg_dump", "--no-owner", "--no-privileges", "-h", u.host, "-p", str(u.port or 5432),
                                   "-U", u.username, "-d", u.database], check=True, capture_output=True,
                                  text=True, timeout=120).stdout
            (FIXTURE / "postgresql.sql").write_text(dump)
        (FIXTURE / "expected-postgresql.json").write_text(json.dumps(view, indent=1, ensure_ascii=False) + "\n")
    print(f"wrote {FIXTURE}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
