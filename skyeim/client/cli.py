"""``python -m skyeim.client``: a small command line client, for trying and debugging a gateway.

    python -m skyeim.client register alice            # asks for the password
    python -m skyeim.client login alice               # saves the token
    python -m skyeim.client friends add bob
    python -m skyeim.client send 2 "hello" --wait delivered
    python -m skyeim.client listen                    # one JSON frame per line, until Ctrl-C
    python -m skyeim.client history 2 --limit 20

The token is kept in ``~/.config/skyeim/token.json`` (``$XDG_CONFIG_HOME``,
``--token-file`` or ``$SKYEIM_TOKEN_FILE``), readable by its owner only; the
password is taken from ``--password``, ``$SKYEIM_PASSWORD`` or a prompt, and
never printed. Errors print one line to stderr and exit 1 (2 for usage).
"""
from __future__ import annotations

import argparse
import datetime as _dt
import getpass
import json
import logging
import os
import sys
from pathlib import Path
from typing import Any

from .api import Api
from .errors import SkyeIMError
from .frames import (Ack, ChatMessage, Connected, ErrorFrame, Frame, Pong, Presence,
                     ReadReceipt, TokenExpiring)
from .ws import Client

DEFAULT_URL = "http://127.0.0.1:10300"
PROG = "python -m skyeim.client"


class CliError(Exception):
    """A one-line error for the user."""


def default_token_file() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    return Path(base) / "skyeim" / "token.json"


def save_token(path: Path, record: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(record, f)
    os.replace(tmp, path)


def load_token(path: Path) -> dict:
    try:
        record = json.loads(path.read_text())
    except FileNotFoundError:
        raise CliError(f"not logged in (no {path}); run: {PROG} login USER") from None
    except (OSError, ValueError) as e:
        raise CliError(f"cannot read {path}: {e}") from None
    if not isinstance(record, dict) or not isinstance(record.get("token"), str):
        raise CliError(f"{path} holds no token; run: {PROG} login USER")
    return record


def fmt_ms(ms: int | None) -> str:
    if ms is None:
        return "-"
    return _dt.datetime.fromtimestamp(ms / 1000).strftime("%Y-%m-%d %H:%M:%S")


def read_password(args: argparse.Namespace, confirm: bool = False) -> str:
    if args.password is not None:
        return args.password
    if os.environ.get("SKYEIM_PASSWORD"):
        return os.environ["SKYEIM_PASSWORD"]
    try:
        pw = getpass.getpass("Password: ")
        if confirm and sys.stdin.isatty() and getpass.getpass("Password again: ") != pw:
            raise CliError("the passwords do not match")
    except (EOFError, KeyboardInterrupt):
        raise CliError("no password given") from None
    return pw


def describe(frame: Any) -> str:
    """A human-readable line for a frame (``listen --pretty``)."""
    if isinstance(frame, ChatMessage):
        return (f"chat   #{frame.seq} from {frame.from_user_id} to {frame.to_user_id} "
                f"[{frame.msg_id}] {frame.content}")
    if isinstance(frame, Ack):
        dup = " (duplicate)" if frame.duplicate else ""
        return f"ack    {frame.status} {frame.msg_id} seq={frame.seq}{dup}"
    if isinstance(frame, ReadReceipt):
        return f"read   by {frame.peer_id}: {', '.join(frame.msg_ids)}"
    if isinstance(frame, Presence):
        return f"{frame.type:<6} user {frame.user_id}"
    if isinstance(frame, Connected):
        return (f"connected as {frame.user_id}; {frame.online_count} online; friends online: "
                f"{list(frame.online_friends)}; {frame.unread_pushed} unread pushed")
    if isinstance(frame, ErrorFrame):
        return f"error  {frame.code} {frame.msg_id or ''}: {frame.message}"
    if isinstance(frame, TokenExpiring):
        return f"token expires at {fmt_ms(frame.expires_at)}"
    if isinstance(frame, Pong):
        return "pong"
    assert isinstance(frame, Frame)
    return f"{frame.type} {json.dumps(frame.data, ensure_ascii=False)}"


# -- commands ------------------------------------------------------------------------------------

def cmd_register(args: argparse.Namespace) -> None:
    user_id = Api(args.url, timeout=args.timeout).register(args.user, read_password(args, True))
    print(f"registered {args.user} (user id {user_id})")


def cmd_login(args: argparse.Namespace) -> None:
    login = Api(args.url, timeout=args.timeout).login(args.user, read_password(args))
    save_token(args.token_file, {"url": args.url, "username": args.user, "userId": login.user_id,
                                 "token": login.token, "expiresAt": login.expires_at})
    print(f"logged in as {args.user} (user id {login.user_id}); token saved to {args.token_file}"
          f" (expires {fmt_ms(login.expires_at)})")


def cmd_logout(args: argparse.Namespace) -> None:
    try:
        args.token_file.unlink()
    except FileNotFoundError:
        pass
    print(f"removed {args.token_file}")


def cmd_friends(args: argparse.Namespace) -> None:
    api = Api(args.url, token=args.token, timeout=args.timeout)
    if args.action == "list":
        for f in api.friends():
            print(f"{f.user_id}\t{f.username or '?'}\t{'online' if f.online else 'offline'}")
    elif args.action == "add":
        target: int | str = args.target
        if not args.name and args.target.isascii() and args.target.isdigit():
            target = int(args.target)
        api.add_friend(target)
        print(f"added {'user ' if isinstance(target, int) else ''}{target}")
    else:
        if not (args.target.isascii() and args.target.isdigit()):
            raise CliError("friends remove takes a user id (see: friends list)")
        api.remove_friend(int(args.target))
        print(f"removed user {args.target}")


def _client(args: argparse.Namespace, **kw: Any) -> Client:
    return Client(args.url, args.token, connect_timeout=args.timeout, **kw)


def cmd_send(args: argparse.Namespace) -> None:
    wait = None if args.wait == "none" else args.wait
    client = _client(args, reconnect=True)
    try:
        client.connect()
        r = client.send_chat(args.to, args.text, content_type=args.content_type,
                             msg_id=args.msg_id, wait=wait, timeout=args.timeout)
    finally:
        client.close()
    extra = f" seq={r.seq}" if r.seq is not None else ""
    extra += " (duplicate)" if r.duplicate else ""
    print(f"{r.status} {r.msg_id}{extra}")


def cmd_listen(args: argparse.Namespace) -> None:
    client = _client(args)
    client.connect()
    seen = 0
    try:
        for frame in client.frames(timeout=args.idle):
            if args.pretty:
                print(describe(frame), flush=True)
            else:
                print(json.dumps(frame.raw, ensure_ascii=False, separators=(",", ":")),
                      flush=True)
            seen += 1
            if args.count and seen >= args.count:
                break
    except TimeoutError:
        raise CliError(f"no frame for {args.idle:g}s") from None
    finally:
        client.close()


def cmd_history(args: argparse.Namespace) -> None:
    api = Api(args.url, token=args.token, timeout=args.timeout)
    page = api.history(args.peer, limit=args.limit, before_seq=args.before)
    if args.json:
        print(json.dumps({"messages": [m.raw["data"] for m in page.messages],
                          "hasMore": page.has_more}, ensure_ascii=False))
        return
    for m in reversed(page.messages):          # oldest first, as a conversation reads
        print(f"#{m.seq}\t{fmt_ms(m.created_at)}\t{m.from_user_id} -> {m.to_user_id}\t"
              f"[{m.status}]\t{m.content}")
    if page.has_more:
        print(f"(older messages: --before {page.next_before})", file=sys.stderr)


# -- parsing -------------------------------------------------------------------------------------

def _user_id(text: str) -> int:
    if not (text.isascii() and text.isdigit()) or int(text) < 1:
        raise argparse.ArgumentTypeError(f"not a user id: {text!r}")
    return int(text)


def _positive(text: str) -> int:
    if not (text.isascii() and text.isdigit()) or int(text) < 1:
        raise argparse.ArgumentTypeError(f"not a positive integer: {text!r}")
    return int(text)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=PROG, description="SkyeIM command line client.")
    p.add_argument("--url", default=None,
                   help=f"the gateway's base URL (default: $SKYEIM_URL, the URL of the last "
                        f"login, or {DEFAULT_URL}); the socket is at ws://.../ws")
    p.add_argument("--token-file", type=Path, default=None,
                   help="where login keeps the token (default: $SKYEIM_TOKEN_FILE or "
                        "~/.config/skyeim/token.json)")
    p.add_argument("--token", default=None, help="use this token instead of the saved one")
    p.add_argument("--timeout", type=float, default=10.0, help="seconds per request or ack")
    p.add_argument("-v", "--verbose", action="store_true", help="log connection events")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    s = sub.add_parser("register", help="create a user")
    s.add_argument("user")
    s.add_argument("--password", help="(default: $SKYEIM_PASSWORD or a prompt)")
    s.set_defaults(func=cmd_register, needs_token=False)

    s = sub.add_parser("login", help="log in and save the token")
    s.add_argument("user")
    s.add_argument("--password", help="(default: $SKYEIM_PASSWORD or a prompt)")
    s.set_defaults(func=cmd_login, needs_token=False)

    s = sub.add_parser("logout", help="forget the saved token")
    s.set_defaults(func=cmd_logout, needs_token=False)

    s = sub.add_parser("friends", help="list, add or remove friends")
    fsub = s.add_subparsers(dest="action", required=True, metavar="ACTION")
    fsub.add_parser("list", help="your friends, with their presence")
    a = fsub.add_parser("add", help="befriend a user by username or id")
    a.add_argument("target", metavar="NAME_OR_ID")
    a.add_argument("--name", action="store_true", help="NAME_OR_ID is a username even if all digits")
    r = fsub.add_parser("remove", help="unfriend a user by id")
    r.add_argument("target", metavar="ID")
    s.set_defaults(func=cmd_friends, needs_token=True)

    s = sub.add_parser("send", help="send a chat (opens a connection, which replaces "
                                    "any other connection of the same user)")
    s.add_argument("to", type=_user_id, metavar="TO_ID")
    s.add_argument("text")
    s.add_argument("--wait", choices=("sent", "delivered", "none"), default="sent",
                   help="the ack to wait for (default: sent)")
    s.add_argument("--content-type", type=int, default=1, choices=(1, 2, 3, 4))
    s.add_argument("--msg-id", default=None, help="(default: a new UUID)")
    s.set_defaults(func=cmd_send, needs_token=True)

    s = sub.add_parser("listen", help="print frames as they arrive (one JSON object per "
                                      "line) until Ctrl-C")
    s.add_argument("--pretty", action="store_true", help="human-readable lines instead of JSON")
    s.add_argument("--count", type=_positive, default=None, help="exit after N frames")
    s.add_argument("--idle", type=float, default=None,
                   help="fail when no frame comes for this many seconds")
    s.set_defaults(func=cmd_listen, needs_token=True)

    s = sub.add_parser("history", help="the conversation with a user, oldest first")
    s.add_argument("peer", type=_user_id, metavar="PEER_ID")
    s.add_argument("--limit", type=_positive, default=None, help="messages (default 50, max 200)")
    s.add_argument("--before", type=_positive, default=None, metavar="SEQ",
                   help="only messages older than this seq")
    s.add_argument("--json", action="store_true", help="print the API's JSON answer")
    s.set_defaults(func=cmd_history, needs_token=True)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    if args.token_file is None:
        env = os.environ.get("SKYEIM_TOKEN_FILE")
        args.token_file = Path(env) if env else default_token_file()
    try:
        record: dict = {}
        if args.needs_token and args.token is None:
            args.token = os.environ.get("SKYEIM_TOKEN") or None
            if args.token is None:
                record = load_token(args.token_file)
                args.token = record["token"]
        args.url = (args.url or os.environ.get("SKYEIM_URL") or record.get("url")
                    or DEFAULT_URL).rstrip("/")
        args.func(args)
        return 0
    except (SkyeIMError, CliError, ValueError, OSError) as e:
        print(f"skyeim: error: {' '.join(str(e).split())}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        if args.command == "listen":
            return 0
        print("skyeim: interrupted", file=sys.stderr)
        return 130
