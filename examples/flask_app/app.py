"""A team's own Flask application living beside SkyeIM (PROTOCOL.md section 9).

It has its own users (a SQLite table with hashed passwords) and, for chat, it:
- issues the gateway's tokens itself: HS256 JWTs with the claims of PROTOCOL.md
  section 1 (``userId``, ``exp``, ``iat``), signed with the gateway's
  ``Auth.AccessSecret`` (shared through the environment);
- makes friendships and sends a welcome message from a system account through
  the server API (9.2, ``X-Api-Key``);
- receives the gateway's webhooks (9.3), checking their signature first;
- moderates every chat through the before-send hook (9.4);
- serves a page that chats through skyeim-client.js (the gateway's JavaScript
  client, copied in as a team would copy it into its sources).

Run it (next to a SkyeIM gateway configured as in README.md):

    SKYEIM_URL=http://127.0.0.1:10300 SKYEIM_ACCESS_SECRET=... \
    SKYEIM_SERVER_API_KEY=... SKYEIM_WEBHOOK_SECRET=... python app.py
"""
from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
from pathlib import Path

import jwt
import requests
from flask import Flask, abort, g, jsonify, request, send_file
from werkzeug.security import check_password_hash, generate_password_hash

from skyeim.server import ServerApi, verify_signature

HERE = Path(__file__).resolve().parent
# The JavaScript client ships inside the skyeim package; a team with a bundler
# copies the file into its own sources instead.
CLIENT_JS = HERE.parent.parent / "skyeim" / "gateway" / "static" / "skyeim-client.js"

SKYEIM_URL = os.environ.get("SKYEIM_URL", "http://127.0.0.1:10300").rstrip("/")
ACCESS_SECRET = os.environ.get("SKYEIM_ACCESS_SECRET", "")
WEBHOOK_SECRET = os.environ.get("SKYEIM_WEBHOOK_SECRET", "")
SERVER_API_KEY = os.environ.get("SKYEIM_SERVER_API_KEY", "")
DATABASE = os.environ.get("EXAMPLE_DATABASE", str(HERE / "example.db"))
TOKEN_LIFETIME = 3600          # seconds, as the gateway's Auth.AccessExpire
SYSTEM_USER_ID = 1             # the account the welcome messages come from
BANNED = {"spam"}              # refused outright
MASKED = {"darn": "d**n"}      # rewritten before they are stored

app = Flask(__name__, static_folder=None)
skyeim = ServerApi(SKYEIM_URL, SERVER_API_KEY, timeout=5)
_schema_lock = threading.Lock()


# -- the team's own data --------------------------------------------------------
def db() -> sqlite3.Connection:
    if "db" not in g:
        g.db = sqlite3.connect(DATABASE, timeout=5)
        g.db.row_factory = sqlite3.Row
    return g.db


@app.teardown_appcontext
def _close_db(_exc) -> None:
    conn = g.pop("db", None)
    if conn is not None:
        conn.close()


def create_schema() -> None:
    with _schema_lock, sqlite3.connect(DATABASE) as conn:
        # Ids start at 100: 1 is the system account (SYSTEM_USER_ID).
        conn.executescript("""
            CREATE TABLE IF NOT EXISTS users (
                id INTEGER PRIMARY KEY, username TEXT UNIQUE NOT NULL, password TEXT NOT NULL);
            INSERT OR IGNORE INTO users (id, username, password) VALUES (99, '_seed', '!');
            CREATE TABLE IF NOT EXISTS events (
                id TEXT PRIMARY KEY, event TEXT NOT NULL, data TEXT NOT NULL, received REAL NOT NULL);
            CREATE TABLE IF NOT EXISTS moderation (
                msg_id TEXT NOT NULL, from_user INTEGER NOT NULL, verdict TEXT NOT NULL);
        """)


def bad_request(message: str):
    return jsonify(code="bad_request", message=message), 400


def body_fields(*names: str) -> dict | None:
    body = request.get_json(silent=True)
    if not isinstance(body, dict) or not all(isinstance(body.get(n), str) and body[n] for n in names):
        return None
    return body


def current_user() -> sqlite3.Row:
    """The user of this request, from the same JWT the gateway accepts."""
    header = request.headers.get("Authorization", "")
    try:
        claims = jwt.decode(header.removeprefix("Bearer "), ACCESS_SECRET, algorithms=["HS256"])
    except jwt.PyJWTError:
        abort(401)
    row = db().execute("SELECT id, username FROM users WHERE id = ?", (claims["userId"],)).fetchone()
    if row is None:
        abort(401)
    return row


# -- accounts and tokens ----------------------------------------------------------
@app.post("/signup")
def signup():
    body = body_fields("username", "password")
    if body is None:
        return bad_request("username and password are required strings")
    try:
        with db() as conn:
            cur = conn.execute("INSERT INTO users (username, password) VALUES (?, ?)",
                               (body["username"], generate_password_hash(body["password"])))
    except sqlite3.IntegrityError:
        return jsonify(code="username_taken", message="that username is taken"), 409
    user_id = cur.lastrowid
    # A welcome from the system account: stored, and pushed at the user's first connect.
    skyeim.send_message(SYSTEM_USER_ID, user_id, f"Welcome, {body['username']}!",
                        msg_id=f"welcome-{user_id}")
    return jsonify(userId=user_id, username=body["username"])


@app.post("/login")
def login():
    body = body_fields("username", "password")
    if body is None:
        return bad_request("username and password are required strings")
    row = db().execute("SELECT id, password FROM users WHERE username = ?",
                       (body["username"],)).fetchone()
    if row is None or not check_password_hash(row["password"], body["password"]):
        return jsonify(code="unauthorized", message="wrong username or password"), 401
    now = int(time.time())
    # PROTOCOL.md section 1: HS256, a JSON integer userId, exp (and iat) in seconds.
    token = jwt.encode({"userId": row["id"], "iat": now, "exp": now + TOKEN_LIFETIME},
                       ACCESS_SECRET, algorithm="HS256")
    ws_url = SKYEIM_URL.replace("http", "ws", 1) + "/ws"
    return jsonify(token=token, userId=row["id"], wsUrl=ws_url, expiresIn=TOKEN_LIFETIME)


@app.post("/friends")
def add_friend():
    """Our app decides who may chat; the gateway learns it through the server API
    and tells both users' open pages at once (friend_added, PROTOCOL.md 9.5)."""
    me = current_user()
    body = body_fields("username")
    if body is None:
        return bad_request("username is a required string")
    other = db().execute("SELECT id FROM users WHERE username = ?", (body["username"],)).fetchone()
    if other is None or other["id"] == me["id"]:
        return jsonify(code="not_found", message="no such user"), 404
    skyeim.add_friend(me["id"], other["id"])
    return jsonify(ok=True, userId=other["id"])


@app.get("/users/<int:user_id>")
def user_name(user_id: int):
    current_user()
    row = db().execute("SELECT username FROM users WHERE id = ?", (user_id,)).fetchone()
    if row is None:
        return jsonify(code="not_found", message="no such user"), 404
    return jsonify(userId=user_id, username=row["username"])


# -- what the gateway calls ----------------------------------------------------------
def signed_json() -> dict:
    """The body of a webhook or hook call, after checking its signature over the raw bytes."""
    raw = request.get_data()
    if not verify_signature(raw, request.headers.get("X-SkyeIM-Signature"), WEBHOOK_SECRET):
        abort(401)
    body = json.loads(raw)
    if not isinstance(body, dict):
        abort(400)
    return body


@app.post("/skyeim/webhooks")
def webhooks():
    event = signed_json()
    # At-least-once delivery: the event id makes a repeat harmless.
    with db() as conn:
        conn.execute("INSERT OR IGNORE INTO events (id, event, data, received) VALUES (?, ?, ?, ?)",
                     (str(event.get("id")), str(event.get("event")),
                      json.dumps(event.get("data")), time.time()))
    # A real app would send a push notification for message.offline here.
    return jsonify(ok=True)


@app.post("/skyeim/before-send")
def before_send():
    chat = signed_json()
    content = chat.get("content") if isinstance(chat.get("content"), str) else ""
    words = content.lower().split()
    if BANNED.intersection(words):
        verdict = {"allow": False, "reason": "this message looks like spam"}
    else:
        masked = " ".join(MASKED.get(w.lower(), w) for w in content.split(" "))
        verdict = {"allow": True, "content": masked} if masked != content else {"allow": True}
    with db() as conn:
        conn.execute("INSERT INTO moderation (msg_id, from_user, verdict) VALUES (?, ?, ?)",
                     (str(chat.get("msgId")), int(chat.get("fromUserId") or 0),
                      "refused" if not verdict["allow"] else "rewritten" if "content" in verdict else "allowed"))
    return jsonify(verdict)


@app.get("/events")
def events():
    """What the webhooks told us (newest first): a stand-in for the team's own use of them."""
    current_user()
    rows = db().execute("SELECT id, event, data FROM events ORDER BY received DESC LIMIT 200").fetchall()
    return jsonify(events=[{"id": r["id"], "event": r["event"], "data": json.loads(r["data"])}
                           for r in rows])


# -- the page --------------------------------------------------------------------------
@app.get("/")
def index():
    return send_file(HERE / "static" / "index.html")


@app.get("/static/chat.js")
def chat_js():
    return send_file(HERE / "static" / "chat.js", mimetype="text/javascript")


@app.get("/static/skyeim-client.js")
def client_js():
    return send_file(CLIENT_JS, mimetype="text/javascript")


@app.get("/healthz")
def healthz():
    return jsonify(ok=True, skyeim=requests.get(SKYEIM_URL + "/healthz", timeout=2).ok)


def main() -> None:
    if not ACCESS_SECRET or not SERVER_API_KEY:
        raise SystemExit("set SKYEIM_ACCESS_SECRET and SKYEIM_SERVER_API_KEY (see README.md)")
    create_schema()
    host = os.environ.get("EXAMPLE_HOST", "127.0.0.1")
    port = int(os.environ.get("EXAMPLE_PORT", "5000"))
    app.run(host=host, port=port, threaded=True)


if __name__ == "__main__":
    main()
