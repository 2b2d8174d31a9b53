#!/usr/bin/env python3
"""Stand-in Message, Friend and Auth services: what a team writes when it replaces
a SkyeIM service with its own, from PROTOCOL.md section 6 alone.

    python tests/support/standins.py message --port 10401 [--internal-secret S] [--db FILE]
    python tests/support/standins.py friend  --port 10402 [--internal-secret S] [--db FILE]
    python tests/support/standins.py auth    --port 10403 --access-secret S [--access-expire 3600]

Each is a small Flask app with its own SQLite storage (one connection behind a
lock; ``:memory:`` unless ``--db`` names a file, which survives a restart). It
implements exactly the section 6 endpoints and ``GET /healthz``: no batch calls,
no groups, no sync (``/v1/messages/conversation``), no revocations; those answer
404 like any unknown path, or 405 where the path fits a section 6 route of another
method (``POST /v1/friends/lists`` is the path of ``GET /v1/friends/<userId>``).
It imports nothing from skyeim, on purpose: it stands for someone else's code.
Every request is logged as one line ``request METHOD PATH STATUS``.

Switches for tests (tests/support/standin_harness.py drives them):
- ``--control FILE``: a JSON file read at each request, ``{"mode": "ok" | "fail" |
  "hang", "paths": ["/v1/"]}``: requests whose path starts with one of ``paths``
  answer 500 (``fail``) or hang until the mode changes (``hang``, at most
  ``--hang-max`` seconds, then 500).
- ``--bug NAME`` (repeatable): a deliberate contract violation (see ``BUGS``), so
  that the contract checker's tests have something to find.
"""
from __future__ import annotations

import argparse
import hashlib
import hmac
import json
import logging
import re
import secrets
import signal
import sqlite3
import sys
import threading
import time
from typing import Any, Callable

import jwt
from flask import Flask, current_app, jsonify, request
from werkzeug.exceptions import HTTPException
from werkzeug.serving import make_server

MAX_ID = 2**63 - 1
MSG_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
USERNAME = re.compile(r"[A-Za-z0-9_.-]{3,32}")
DIGITS = re.compile(r"[0-9]{1,19}")
MAX_CONTENT = 65536            # characters; the gateway's own limit is lower
MAX_KEYS = 1000                # messages in one delivered / read call
MAX_LOOKUP = 200               # ids in one users lookup
MAX_BODY = 1 << 20             # bytes of a request body
DEFAULT_LIMIT, MAX_LIMIT = 50, 200

BUGS = {
    "string-ids": "user ids in answers are strings",
    "no-idempotency": "a resend of (fromUserId, msgId) stores a second message",
    "history-oldest-first": "history is answered oldest first",
    "seconds-timestamps": "createdAt is in seconds",
    "bad-json-500": "a body that is not JSON answers 500",
    "ignore-secret": "X-Internal-Secret is not checked",
    "one-way-friends": "a friendship is stored in one direction only",
    "case-sensitive-usernames": "usernames differing only in case are different users",
}

log = logging.getLogger("standin")


class Refused(Exception):
    def __init__(self, status: int, code: str, message: str):
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


def bad(message: str) -> Refused:
    return Refused(400, "bad_request", message)


def now_ms() -> int:
    return time.time_ns() // 1_000_000


class Store:
    """One SQLite connection for the whole process, used under a lock."""

    def __init__(self, path: str, schema: str):
        self.lock = threading.Lock()
        self.conn = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self.conn.executescript(schema)

    def run(self, fn: Callable[[sqlite3.Connection], Any]) -> Any:
        with self.lock:
            self.conn.execute("BEGIN IMMEDIATE")
            try:
                result = fn(self.conn)
            except BaseException:
                self.conn.execute("ROLLBACK")
                raise
            self.conn.execute("COMMIT")
            return result

    def close(self) -> None:
        with self.lock:
            self.conn.close()


# -- what every stand-in shares --------------------------------------------------

def base_app(name: str, args: argparse.Namespace) -> Flask:
    app = Flask(f"standin-{name}")
    app.config["MAX_CONTENT_LENGTH"] = MAX_BODY
    app.json.sort_keys = False
    bugs = set(args.bug or [])
    app.config["BUGS"] = bugs

    @app.before_request
    def _switches_and_secret():
        answer = _control_switch(args.control, args.hang_max)
        if answer is not None:
            return answer
        if request.path == "/healthz" or not args.internal_secret or "ignore-secret" in bugs:
            return None
        got = request.headers.get("X-Internal-Secret", "").encode()
        if not hmac.compare_digest(got, args.internal_secret.encode()):
            return _error(401, "unauthorized", "missing or wrong X-Internal-Secret")
        return None

    @app.after_request
    def _log_request(resp):
        print(f"request {request.method} {request.path} {resp.status_code}", flush=True)
        return resp

    @app.errorhandler(Refused)
    def _refused(e: Refused):
        return _error(e.status, e.code, e.message)

    @app.errorhandler(HTTPException)
    def _http(e: HTTPException):
        codes = {404: "not_found", 405: "method_not_allowed", 413: "too_large"}
        return _error(e.code or 500, codes.get(e.code, "bad_request"), e.description or e.name)

    @app.errorhandler(Exception)
    def _internal(e: Exception):
        log.exception("unhandled error in %s %s", request.method, request.path)
        return _error(500, "internal", "internal error")

    @app.get("/healthz")
    def healthz():
        return {"ok": True}

    return app


def _error(status: int, code: str, message: str):
    resp = jsonify(code=code, message=message)
    resp.status_code = status
    return resp


def _control_switch(path: str | None, hang_max: float):
    """The test switch of --control: None to serve the request normally."""
    def mode() -> str:
        try:
            with open(path, encoding="utf-8") as f:
                control = json.load(f)
        except (OSError, ValueError):
            return "ok"
        prefixes = control.get("paths") or ["/v1/"]
        return control.get("mode", "ok") if request.path.startswith(tuple(prefixes)) else "ok"

    if not path:
        return None
    current = mode()
    if current == "hang":
        deadline = time.monotonic() + hang_max
        while current == "hang" and time.monotonic() < deadline:
            time.sleep(0.05)
            current = mode()
        if current == "hang":
            return _error(500, "internal", "hung until --hang-max")
    if current == "fail":
        return _error(500, "internal", "switched to fail")
    return None


def json_object() -> dict:
    try:
        data = request.get_json(silent=True)
    except RecursionError:          # nested deeper than the parser goes
        data = None
    if not isinstance(data, dict):
        if "bad-json-500" in current_app.config["BUGS"]:
            raise RuntimeError("the body is not a JSON object")
        raise bad("the body must be a JSON object")
    return data


def user_id(value: Any, key: str) -> int:
    if type(value) is not int or not 1 <= value <= MAX_ID:
        raise bad(f"{key} must be an integer from 1 to 2^63-1")
    return value


def query_id(key: str, required: bool = True) -> int | None:
    raw = request.args.get(key)
    if raw is None or raw == "":
        if required:
            raise bad(f"{key} is required")
        return None
    value = int(raw) if DIGITS.fullmatch(raw) else 0
    return user_id(value, key)


def path_id(raw: str, key: str) -> int:
    return user_id(int(raw) if DIGITS.fullmatch(raw) else 0, key)


def limit() -> int:
    raw = request.args.get("limit")
    if raw is None or raw == "":
        return DEFAULT_LIMIT
    if not DIGITS.fullmatch(raw) or int(raw) < 1:
        raise bad("limit must be a positive integer")
    return min(int(raw), MAX_LIMIT)


def msg_id(value: Any, key: str) -> str:
    if not isinstance(value, str) or not MSG_ID.fullmatch(value):
        raise bad(f"{key} must be 1 to 64 characters of A-Z a-z 0-9 _ -")
    return value


def out_id(value: int) -> int | str:
    """A user id as this stand-in answers it (a string with the string-ids bug)."""
    return str(value) if "string-ids" in current_app.config["BUGS"] else value


# -- Message service --------------------------------------------------------------

MESSAGE_SCHEMA = """
CREATE TABLE IF NOT EXISTS messages (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    msg_id TEXT NOT NULL, from_user_id INTEGER NOT NULL, to_user_id INTEGER NOT NULL,
    content TEXT NOT NULL, content_type INTEGER NOT NULL, created_at INTEGER NOT NULL,
    lo INTEGER NOT NULL, hi INTEGER NOT NULL, seq INTEGER NOT NULL,
    delivered_at INTEGER, read_at INTEGER);
CREATE UNIQUE INDEX IF NOT EXISTS messages_sender_msg ON messages (from_user_id, msg_id, id);
CREATE INDEX IF NOT EXISTS messages_unread ON messages (to_user_id, read_at, id);
CREATE UNIQUE INDEX IF NOT EXISTS messages_conversation ON messages (lo, hi, seq);
"""
COLUMNS = "id, msg_id, from_user_id, to_user_id, content, content_type, created_at, seq, " \
          "delivered_at, read_at"


def chat_message(row: tuple, bugs: set) -> dict:
    _, mid, sender, recipient, content, ctype, created, seq, _, _ = row
    return {"msgId": mid, "fromUserId": out_id(sender), "toUserId": out_id(recipient),
            "content": content, "contentType": ctype,
            "createdAt": created // 1000 if "seconds-timestamps" in bugs else created, "seq": seq}


def status_of(row: tuple) -> str:
    return "read" if row[9] is not None else "delivered" if row[8] is not None else "sent"


def message_app(args: argparse.Namespace) -> Flask:
    app = base_app("message", args)
    bugs = app.config["BUGS"]
    store = Store(args.db, MESSAGE_SCHEMA)

    @app.post("/v1/messages")
    def send():
        body = json_object()
        mid = msg_id(body.get("msgId"), "msgId")
        sender = user_id(body.get("fromUserId"), "fromUserId")
        recipient = user_id(body.get("toUserId"), "toUserId")
        if sender == recipient:
            raise bad("toUserId must differ from fromUserId")
        content = body.get("content")
        if not isinstance(content, str) or not 1 <= len(content) <= MAX_CONTENT:
            raise bad(f"content must be a string of 1 to {MAX_CONTENT} characters")
        ctype = 1 if body.get("contentType") is None else body["contentType"]
        if type(ctype) is not int or ctype not in (1, 2, 3, 4):
            raise bad("contentType must be 1, 2, 3 or 4")

        def store_it(db: sqlite3.Connection):
            if "no-idempotency" not in bugs:
                row = db.execute(f"SELECT {COLUMNS} FROM messages WHERE from_user_id = ? "
                                 "AND msg_id = ?", (sender, mid)).fetchone()
                if row is not None:
                    return row, True
            lo, hi = min(sender, recipient), max(sender, recipient)
            (last,) = db.execute("SELECT COALESCE(MAX(seq), 0) FROM messages WHERE lo = ? AND hi = ?",
                                 (lo, hi)).fetchone()
            cur = db.execute("INSERT INTO messages (msg_id, from_user_id, to_user_id, content, "
                             "content_type, created_at, lo, hi, seq) VALUES (?,?,?,?,?,?,?,?,?)",
                             (mid, sender, recipient, content, ctype, now_ms(), lo, hi, last + 1))
            row = db.execute(f"SELECT {COLUMNS} FROM messages WHERE id = ?", (cur.lastrowid,)).fetchone()
            return row, False

        try:
            row, duplicate = store.run(store_it)
        except UnicodeEncodeError:      # a lone surrogate from a JSON \ud800 escape
            raise bad("content must be valid Unicode") from None
        return {**chat_message(row, bugs), "duplicate": duplicate,
                "delivered": row[8] is not None, "deliveredAt": row[8]}

    @app.get("/v1/messages/unread")
    def unread():
        uid = query_id("userId")
        raw = request.args.get("cursor")
        if raw is not None and raw != "" and not DIGITS.fullmatch(raw):
            raise bad("cursor is not one this service gave")
        after = int(raw) if raw else 0
        n = limit()
        rows = store.run(lambda db: db.execute(
            f"SELECT {COLUMNS} FROM messages WHERE to_user_id = ? AND read_at IS NULL AND id > ? "
            "ORDER BY id LIMIT ?", (uid, after, n + 1)).fetchall())
        more = len(rows) > n
        rows = rows[:n]
        return {"messages": [chat_message(r, bugs) for r in rows],
                "nextCursor": str(rows[-1][0]) if more else None, "hasMore": more}

    @app.post("/v1/messages/delivered")
    def delivered():
        body = json_object()
        uid = user_id(body.get("userId"), "userId")
        items = body.get("messages")
        if not isinstance(items, list) or len(items) > MAX_KEYS:
            raise bad(f"messages must be a list of at most {MAX_KEYS} objects")
        keys = []
        for i, item in enumerate(items):
            if not isinstance(item, dict):
                raise bad(f"messages[{i}] must be an object")
            keys.append((user_id(item.get("fromUserId"), f"messages[{i}].fromUserId"),
                         msg_id(item.get("msgId"), f"messages[{i}].msgId")))

        def mark(db: sqlite3.Connection):
            at, marked = now_ms(), []
            for sender, mid in dict.fromkeys(keys):
                cur = db.execute("UPDATE messages SET delivered_at = ? WHERE from_user_id = ? "
                                 "AND msg_id = ? AND to_user_id = ? AND delivered_at IS NULL",
                                 (at, sender, mid, uid))
                if cur.rowcount:
                    marked.append({"fromUserId": out_id(sender), "msgId": mid, "deliveredAt": at})
            return marked

        return {"messages": store.run(mark)}

    @app.post("/v1/messages/read")
    def read():
        body = json_object()
        uid = user_id(body.get("userId"), "userId")
        peer = user_id(body.get("peerId"), "peerId")
        raw = body.get("msgIds")
        if raw is not None and (not isinstance(raw, list) or len(raw) > MAX_KEYS):
            raise bad(f"msgIds must be a list of at most {MAX_KEYS} msgIds")
        wanted = [msg_id(m, f"msgIds[{i}]") for i, m in enumerate(raw or [])]

        def mark(db: sqlite3.Connection):
            at = now_ms()
            rows = db.execute("SELECT id, msg_id FROM messages WHERE to_user_id = ? AND "
                              "from_user_id = ? AND read_at IS NULL ORDER BY id",
                              (uid, peer)).fetchall()
            if wanted:
                rows = [r for r in rows if r[1] in set(wanted)]
            for rid, _ in rows:
                db.execute("UPDATE messages SET read_at = ?, delivered_at = COALESCE(delivered_at, ?) "
                           "WHERE id = ?", (at, at, rid))
            return [mid for _, mid in rows], at

        ids, at = store.run(mark)
        return {"msgIds": ids, "readAt": at}

    @app.get("/v1/messages/history")
    def history():
        uid, peer = query_id("userId"), query_id("peerId")
        before = query_id("beforeSeq", required=False)
        n = limit()
        lo, hi = min(uid, peer), max(uid, peer)
        rows = store.run(lambda db: db.execute(
            f"SELECT {COLUMNS} FROM messages WHERE lo = ? AND hi = ? AND seq < ? "
            "ORDER BY seq DESC LIMIT ?", (lo, hi, before or MAX_ID, n + 1)).fetchall())
        more = len(rows) > n
        rows = rows[:n]
        if "history-oldest-first" in bugs:
            rows.reverse()
        return {"messages": [{**chat_message(r, bugs), "status": status_of(r)} for r in rows],
                "hasMore": more}

    app.config["CLOSE"] = store.close
    return app


# -- Friend service -----------------------------------------------------------------

FRIEND_SCHEMA = """
CREATE TABLE IF NOT EXISTS friends (user_id INTEGER NOT NULL, friend_id INTEGER NOT NULL,
                                    PRIMARY KEY (user_id, friend_id));
"""


def friend_app(args: argparse.Namespace) -> Flask:
    app = base_app("friend", args)
    bugs = app.config["BUGS"]
    store = Store(args.db, FRIEND_SCHEMA)

    @app.get("/v1/friends/<uid>")
    def friends(uid: str):
        user = path_id(uid, "userId")
        rows = store.run(lambda db: db.execute(
            "SELECT friend_id FROM friends WHERE user_id = ? ORDER BY friend_id", (user,)).fetchall())
        return {"friends": [out_id(fid) for (fid,) in rows]}

    @app.post("/v1/friends")
    def add():
        body = json_object()
        user = user_id(body.get("userId"), "userId")
        friend = user_id(body.get("friendId"), "friendId")
        if user == friend:
            raise bad("a user cannot befriend themselves")
        pairs = [(user, friend)] if "one-way-friends" in bugs else [(user, friend), (friend, user)]
        store.run(lambda db: db.executemany(
            "INSERT OR IGNORE INTO friends (user_id, friend_id) VALUES (?, ?)", pairs))
        return {"ok": True}

    @app.delete("/v1/friends/<uid>/<fid>")
    def remove(uid: str, fid: str):
        user, friend = path_id(uid, "userId"), path_id(fid, "friendId")
        store.run(lambda db: db.executemany(
            "DELETE FROM friends WHERE user_id = ? AND friend_id = ?",
            [(user, friend), (friend, user)]))
        return {"ok": True}

    app.config["CLOSE"] = store.close
    return app


# -- Auth service ---------------------------------------------------------------------

AUTH_SCHEMA = """
CREATE TABLE IF NOT EXISTS users (id INTEGER PRIMARY KEY AUTOINCREMENT,
    username TEXT NOT NULL, name_key TEXT NOT NULL UNIQUE, salt BLOB NOT NULL, hash BLOB NOT NULL);
"""


def hash_password(password: str, salt: bytes) -> bytes:
    return hashlib.scrypt(password.encode("utf-8"), salt=salt, n=2**14, r=8, p=1, dklen=32)


def auth_app(args: argparse.Namespace) -> Flask:
    app = base_app("auth", args)
    bugs = app.config["BUGS"]
    store = Store(args.db, AUTH_SCHEMA)
    dummy_salt = secrets.token_bytes(16)
    dummy_hash = hash_password("dummy password", dummy_salt)

    def name_key(username: str) -> str:
        return username if "case-sensitive-usernames" in bugs else username.lower()

    def credentials() -> tuple[str, str]:
        body = json_object()
        username, password = body.get("username"), body.get("password")
        if not isinstance(username, str) or not isinstance(password, str):
            raise bad("username and password must be strings")
        try:
            password.encode("utf-8")
        except UnicodeEncodeError:
            raise bad("password must be valid Unicode") from None
        return username, password

    @app.post("/v1/users")
    def register():
        username, password = credentials()
        if not USERNAME.fullmatch(username):
            raise bad("username must be 3 to 32 characters of A-Z a-z 0-9 _ . -")
        if not 8 <= len(password) <= 128:
            raise bad("password must be 8 to 128 characters")
        salt = secrets.token_bytes(16)
        digest = hash_password(password, salt)

        def create(db: sqlite3.Connection):
            try:
                return db.execute("INSERT INTO users (username, name_key, salt, hash) VALUES (?,?,?,?)",
                                  (username, name_key(username), salt, digest)).lastrowid
            except sqlite3.IntegrityError:
                raise Refused(409, "conflict", "username is taken") from None

        return {"userId": out_id(store.run(create))}

    @app.post("/v1/tokens")
    def login():
        username, password = credentials()
        row = None
        if USERNAME.fullmatch(username) and len(password) <= 128:
            row = store.run(lambda db: db.execute(
                "SELECT id, salt, hash FROM users WHERE name_key = ?", (name_key(username),)).fetchone())
        if row is None:
            hmac.compare_digest(hash_password(password[:128], dummy_salt), dummy_hash)  # same time
            raise Refused(401, "unauthorized", "wrong username or password")
        uid, salt, digest = row
        if not hmac.compare_digest(hash_password(password, salt), digest):
            raise Refused(401, "unauthorized", "wrong username or password")
        now = int(time.time())
        exp = now + args.access_expire
        token = jwt.encode({"userId": uid, "iat": now, "exp": exp}, args.access_secret,
                           algorithm="HS256")
        return {"token": token, "userId": out_id(uid), "expiresAt": exp * 1000}

    @app.get("/v1/users")
    def lookup():
        ids, username = request.args.get("ids"), request.args.get("username")
        if (ids is None) == (username is None):
            raise bad("give ids or username")
        if ids is not None:
            parts = [p.strip() for p in ids.split(",")] if ids.strip() else []
            if len(parts) > MAX_LOOKUP:
                raise bad(f"at most {MAX_LOOKUP} ids")
            wanted = sorted({path_id(p, "ids") for p in parts})
            rows = store.run(lambda db: db.execute(
                f"SELECT id, username FROM users WHERE id IN ({','.join('?' * len(wanted))})",
                wanted).fetchall()) if wanted else []
        else:
            rows = store.run(lambda db: db.execute(
                "SELECT id, username FROM users WHERE name_key = ?", (name_key(username),)).fetchall())
        return {"users": [{"userId": out_id(uid), "username": name} for uid, name in rows]}

    app.config["CLOSE"] = store.close
    return app


APPS = {"message": message_app, "friend": friend_app, "auth": auth_app}


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="A stand-in SkyeIM service (PROTOCOL.md section 6 only).")
    p.add_argument("kind", choices=sorted(APPS))
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--db", default=":memory:", help="SQLite file (default: in memory)")
    p.add_argument("--internal-secret", default="")
    p.add_argument("--access-secret", default="", help="auth: the HS256 secret shared with the gateway")
    p.add_argument("--access-expire", type=int, default=3600, help="auth: token lifetime in seconds")
    p.add_argument("--control", help="a JSON file of test switches, read at each request")
    p.add_argument("--hang-max", type=float, default=60.0, help="seconds a 'hang' lasts at most")
    p.add_argument("--bug", action="append", choices=sorted(BUGS), help="a deliberate contract violation")
    args = p.parse_args(argv)
    if args.kind == "auth" and not args.access_secret:
        p.error("auth needs --access-secret")
    return args


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    logging.getLogger("werkzeug").setLevel(logging.WARNING)    # our own one line per request
    app = APPS[args.kind](args)
    server = make_server(args.host, args.port, app, threaded=True)
    # serve_forever runs in this thread: shutdown() must come from another one
    stop = lambda *_: threading.Thread(target=server.shutdown, daemon=True).start()  # noqa: E731
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    print(f"standin {args.kind} listening on {args.host}:{args.port}"
          f"{' bugs: ' + ','.join(sorted(app.config['BUGS'])) if app.config['BUGS'] else ''}",
          flush=True)
    server.serve_forever(poll_interval=0.2)
    server.server_close()
    app.config["CLOSE"]()
    print(f"standin {args.kind} stopped", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
