"""``python -m skyeim.client``: a small command line client, for chatting from a
terminal and for trying and debugging a gateway.

    python -m skyeim.client register alice            # asks for the password
    python -m skyeim.client login alice               # saves alice's token; alice is the default
    python -m skyeim.client friends add bob
    python -m skyeim.client friends requests          # accept|decline NAME, block|unblock NAME
    python -m skyeim.client send bob "hello" --wait delivered   # a username or a user id
    python -m skyeim.client --user bob listen --pretty          # one line per frame, until Ctrl-C
    python -m skyeim.client --user bob read alice               # mark alice's messages read
    python -m skyeim.client history bob --limit 20
    python -m skyeim.client chat bob                  # type lines to send them; Ctrl-D ends
    python -m skyeim.client conversations             # newest first, with unread counts
    python -m skyeim.client conversations pin bob     # or mute/unmute/unpin; --group ID
    python -m skyeim.client groups list               # also: create, members, send (--mention),
                                                      # role, kick, mute, rename, dismiss

Each login is kept in ``~/.config/skyeim/tokens/<username>.json`` (mode 600;
``$XDG_CONFIG_HOME``), the last one is the default user, and ``--user NAME``
(before or after the command, or ``$SKYEIM_USER``) picks another (see
logins.py); ``--token-file`` or ``$SKYEIM_TOKEN_FILE`` uses one file instead.
The password is taken from ``--password``, ``$SKYEIM_PASSWORD`` or a prompt,
and never printed. Errors print one line to stderr and exit 1 (2 for usage).
"""
from __future__ import annotations

import argparse
import getpass
import json
import logging
import os
import queue
import sys
import threading
import time
from pathlib import Path
from typing import Any

from skyeim import __version__
from skyeim.protocol import is_msg_id

from .api import Api
from .errors import ChatError, SkyeIMError
from .frames import AnyFrame, ChatMessage, ErrorFrame, MessageEdited, MessageRecalled
from .logins import NAME, LoginError, Logins, read_record, write_private
from .pretty import chat_line, conversation_line, describe, fmt_ms
from .ws import Client

DEFAULT_URL = "http://127.0.0.1:10300"
PROG = "python -m skyeim.client"
HISTORY_SHOWN = 10        # messages of history `chat` shows first
POLL = 0.5                # s between looks at the connection while `chat` waits for a line


class CliError(Exception):
    """A one-line error for the user."""


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


def _api(args: argparse.Namespace) -> Api:
    return Api(args.url, token=args.token, timeout=args.timeout, ca_file=args.ca_file)


def _client(args: argparse.Namespace, **kw: Any) -> Client:
    return Client(args.url, args.token, connect_timeout=args.timeout, ca_file=args.ca_file, **kw)


def resolve_peer(args: argparse.Namespace, who: str) -> tuple[int, str | None]:
    """(user id, username if known) for a user id or a friend's username. Only friends
    can be found by name: the gateway's /api looks up no other user by name."""
    if who.isascii() and who.isdigit() and not getattr(args, "name", False):
        uid = int(who)
        if uid < 1:
            raise CliError(f"not a user id: {who}")
        return uid, None
    for f in _api(args).friends():
        if f.username is not None and f.username.lower() == who.lower():
            return f.user_id, f.username
    raise CliError(f"{who} is not among your friends: befriend them first "
                   f"({PROG} friends add {who}) or give their user id")


# -- commands ------------------------------------------------------------------------------------

def cmd_register(args: argparse.Namespace) -> None:
    user_id = _api(args).register(args.username, read_password(args, True))
    print(f"registered {args.username} (user id {user_id})")


def cmd_login(args: argparse.Namespace) -> None:
    login = _api(args).login(args.username, read_password(args))
    record = {"url": args.url, "username": args.username, "userId": login.user_id,
              "token": login.token, "expiresAt": login.expires_at}
    if args.ca_file:               # later commands of this user trust the same CA
        record["caFile"] = os.path.abspath(args.ca_file)
    if args.token_file is not None:
        write_private(args.token_file, json.dumps(record))
        path = args.token_file
    else:
        path = Logins().save(record)
    print(f"logged in as {args.username} (user id {login.user_id}); token saved to {path}"
          f" (expires {fmt_ms(login.expires_at)})")


def cmd_logout(args: argparse.Namespace) -> None:
    if args.token_file is not None:
        args.token_file.unlink(missing_ok=True)
        path = args.token_file
    else:
        path = Logins().remove(args.user)
    print(f"removed {path}")


def cmd_accounts(args: argparse.Namespace) -> None:
    logins = Logins()
    default = logins.default()
    for name in logins.names():
        mark = " (default)" if name == default else ""
        try:
            r = read_record(logins.path(name), "")
        except LoginError as e:
            print(f"{name}\t?\t?\t{e}{mark}")
            continue
        print(f"{r.get('username', name)}\t{r.get('userId')}\t{r.get('url')}"
              f"\texpires {fmt_ms(r.get('expiresAt'))}{mark}")


def cmd_friends(args: argparse.Namespace) -> None:
    api = _api(args)
    if args.action == "list":
        for f in api.friends():
            print(f"{f.user_id}\t{f.username or '?'}\t{'online' if f.online else 'offline'}")
    elif args.action == "add":
        target: int | str = args.target
        if not args.name and args.target.isascii() and args.target.isdigit():
            target = int(args.target)
        status = api.request_friend(target)
        shown = f"{'user ' if isinstance(target, int) else ''}{target}"
        print(f"requested {shown}: they must accept" if status == "requested" else f"added {shown}")
    elif args.action == "requests":
        incoming, outgoing = api.friend_requests()
        for direction, rows in (("from", incoming), ("to", outgoing)):
            for r in rows:
                print(f"{direction}\t{r.user_id}\t{r.username or '?'}\t{fmt_ms(r.created_at)}")
    elif args.action == "blocks":
        for b in api.blocks():
            print(f"{b.user_id}\t{b.username or '?'}\t{fmt_ms(b.created_at)}")
    elif args.action in ("accept", "decline"):
        uid = _resolve_among(args, args.target, api.friend_requests()[0], "requested you")
        (api.accept_friend if args.action == "accept" else api.decline_friend)(uid)
        print(f"{args.action}d user {uid}" if args.action == "decline" else f"accepted user {uid}")
    elif args.action == "block":
        uid, _ = resolve_peer(args, args.target)
        api.block(uid)
        print(f"blocked user {uid}")
    elif args.action == "unblock":
        uid = _resolve_among(args, args.target, api.blocks(), "blocked by you")
        api.unblock(uid)
        print(f"unblocked user {uid}")
    else:
        uid, _ = resolve_peer(args, args.target)
        api.remove_friend(uid)
        print(f"removed user {uid}")


def _resolve_among(args: argparse.Namespace, who: str, entries: list, what: str) -> int:
    """A user id, or the id of the entry (a pending request, a block) with that username."""
    if who.isascii() and who.isdigit() and not args.name:
        return int(who)
    for e in entries:
        if e.username is not None and e.username.lower() == who.lower():
            return e.user_id
    raise CliError(f"{who}: no such user {what}; give their user id")
def cmd_groups(args: argparse.Namespace) -> None:
    """Groups and their administration (docs/protocol.md "Groups", "Group administration")."""
    api, gid = _api(args), getattr(args, "group", None)
    if args.action == "list":
        for g in api.groups():
            print(f"{g['groupId']}\t{g['name']}\t{g['role']}\tlast={g['lastSeq']} "
                  f"read={g['readSeq']}")
    elif args.action == "create":
        ids = [resolve_peer(args, m)[0] for m in args.members]
        print(f"created group {api.create_group(args.group_name, ids)}")
    elif args.action == "members":
        members, more = api.group_members(gid, limit=200)
        for m in members:
            muted = f"\tmuted until {fmt_ms(m['mutedUntil'])}" if m.get("mutedUntil") else ""
            print(f"{m['userId']}\t{m.get('username') or '?'}\t{m['role']}{muted}")
        if more:
            print("(more members not shown)")
    elif args.action == "send":
        mentions = [resolve_peer(args, m)[0] for m in args.mention]
        client = _client(args, reconnect=True)
        try:
            client.connect()
            r = client.send_groupchat(gid, args.text, mentions=mentions or None,
                                      timeout=args.timeout)
        finally:
            client.close()
        print(f"{r.status} {r.msg_id} seq={r.seq}")
    elif args.action == "history":
        messages, more = api.group_history(gid, limit=args.limit)
        for m in reversed(messages):            # oldest first, as a conversation reads
            text = "(recalled)" if m.recalled else m.content + (" (edited)" if m.edited else "")
            print(f"#{m.seq}\t{fmt_ms(m.created_at)}\t{m.from_user_id}\t[{m.msg_id}]\t{text}")
        if more:
            print("(older messages not shown)", file=sys.stderr)
    elif args.action == "role":
        uid, _ = resolve_peer(args, args.member)
        r = api.set_group_role(gid, uid, args.role)
        print(f"user {uid} is {r['role']}" + ("" if r["changed"] else " (unchanged)"))
    elif args.action == "kick":
        uid, _ = resolve_peer(args, args.member)
        api.kick(gid, uid)
        print(f"removed user {uid} from group {gid}")
    elif args.action == "mute":
        uid, _ = resolve_peer(args, args.member)
        until = api.mute_member(gid, uid, args.seconds)
        print(f"user {uid} muted until {fmt_ms(until)}" if until else f"user {uid} unmuted")
    elif args.action == "rename":
        print(f"group {gid} is now {api.rename_group(gid, args.group_name)['name']!r}")
    else:
        gone = api.dismiss_group(gid)
        print(f"dismissed group {gid} ({len(gone)} members)")


def cmd_send(args: argparse.Namespace) -> None:
    to, _ = resolve_peer(args, args.to)
    wait = None if args.wait == "none" else args.wait
    client = _client(args, reconnect=True)
    try:
        client.connect()
        r = client.send_chat(to, args.text, content_type=args.content_type,
                             msg_id=args.msg_id, wait=wait, timeout=args.timeout)
    finally:
        client.close()
    extra = f" seq={r.seq}" if r.seq is not None else ""
    extra += " (duplicate)" if r.duplicate else ""
    print(f"{r.status} {r.msg_id}{extra}")


def cmd_send_file(args: argparse.Namespace) -> None:
    """Upload a file and send it as an image (--image), voice (--voice) or file message."""
    if not Path(args.path).is_file():
        raise CliError(f"no such file: {args.path}")
    if args.group and not (args.to.isascii() and args.to.isdigit() and int(args.to) > 0):
        raise CliError(f"not a group id: {args.to}")
    to = None if args.group else resolve_peer(args, args.to)[0]
    ctype = 2 if args.image else 4 if args.voice else 3
    client = _client(args, reconnect=True)
    try:
        client.connect()
        if args.group:
            r, upload = client.send_file(None, args.path, group_id=int(args.to), content_type=ctype,
                                         wait="sent", timeout=args.timeout)
        else:
            r, upload = client.send_file(to, args.path, content_type=ctype, timeout=args.timeout)
    finally:
        client.close()
    dims = f" {upload['width']}x{upload['height']}" if "width" in upload else ""
    print(f"{r.status} {r.msg_id} seq={r.seq} file={upload['fileId']} {upload['mime']} "
          f"{upload['size']} bytes{dims}")


def cmd_read(args: argparse.Namespace) -> None:
    peer, name = resolve_peer(args, args.peer)
    refused: list[ErrorFrame] = []
    client = _client(args, reconnect=False, sync=False)
    client.on(ErrorFrame, lambda e: refused.append(e) if e.msg_id is None else None)
    try:
        client.connect()
        client.mark_read(peer, args.msg_ids or None)
        client.ping(timeout=args.timeout)         # the gateway has handled the read by its pong
    finally:
        client.close()
    if refused:
        raise CliError(f"{refused[0].code}: {refused[0].message}")
    what = f"{len(args.msg_ids)} message(s)" if args.msg_ids else "every unread message"
    who = f"{name} (user {peer})" if name else f"user {peer}"
    print(f"sent a read receipt for {what} from {who}")


def cmd_change(args: argparse.Namespace) -> None:
    """recall MSGID / edit MSGID TEXT (--group G: a group message): wait for the gateway's
    answer frame (or its error)."""
    want = MessageRecalled if args.command == "recall" else MessageEdited
    client = _client(args, reconnect=False, sync=False)
    try:
        client.connect()
        if args.command == "recall":
            client.recall(args.msg_id, group_id=args.group)
        else:
            client.edit(args.msg_id, args.text, group_id=args.group)
        deadline = time.monotonic() + args.timeout
        while True:                                  # bounded by the deadline
            frame = client.next_frame(max(deadline - time.monotonic(), 0.001))
            if isinstance(frame, ErrorFrame) and frame.msg_id == args.msg_id:
                raise CliError(f"{frame.code}: {frame.message}")
            if isinstance(frame, want) and frame.msg_id == args.msg_id:
                print(describe(frame))
                return
    except TimeoutError:
        raise CliError(f"no answer from the gateway within {args.timeout:g} s") from None
    finally:
        client.close()


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
    peer, _ = resolve_peer(args, args.peer)
    page = _api(args).history(peer, limit=args.limit, before_seq=args.before)
    if args.json:
        print(json.dumps({"messages": [m.raw["data"] for m in page.messages],
                          "hasMore": page.has_more}, ensure_ascii=False))
        return
    for m in reversed(page.messages):          # oldest first, as a conversation reads
        text = "(recalled)" if m.recalled else m.content + (" (edited)" if m.edited else "")
        print(f"#{m.seq}\t{fmt_ms(m.created_at)}\t{m.from_user_id} -> {m.to_user_id}\t"
              f"[{m.status}]\t{text}")
    if page.has_more:
        print(f"(older messages: --before {page.next_before})", file=sys.stderr)


def cmd_conversations(args: argparse.Namespace) -> None:
    """The conversation list (extension), or mute/unmute/pin/unpin one conversation."""
    api = _api(args)
    if args.action != "list":
        if args.target is None:
            raise CliError(f"{args.action} needs a PEER (a user id or a friend's username) "
                           "or --group ID")
        if args.group:
            if not (args.target.isascii() and args.target.isdigit()):
                raise CliError("with --group, the target is a group id")
            target = {"group_id": int(args.target)}
        else:
            target = {"peer_id": resolve_peer(args, args.target)[0]}
        on = not args.action.startswith("un")
        if args.action.endswith("mute"):
            answer = api.mute(**target, muted=on)
        else:
            answer = api.pin(**target, pinned=on)
        what = f"group {answer.get('groupId')}" if args.group else f"user {answer.get('peerId')}"
        print(f"{what}: muted={str(answer.get('muted')).lower()} "
              f"pinned={str(answer.get('pinned')).lower()}")
        return
    page = api.conversations(limit=args.limit, before=args.before)
    if args.json:
        print(json.dumps({"items": [_conversation_json(c) for c in page.items],
                          "nextCursor": page.next_cursor}, ensure_ascii=False))
        return
    for c in page.items:
        print(conversation_line(c))
    if page.next_cursor:
        print(f"(more: --before {page.next_cursor})", file=sys.stderr)


def _conversation_json(c) -> dict:
    last = c.last_message.raw.get("data") if c.last_message is not None else None
    out = {"kind": c.kind, "lastAt": c.last_at, "lastSeq": c.last_seq, "unread": c.unread,
           "muted": c.muted, "pinned": c.pinned, "lastMessage": last}
    if c.kind == "group":
        out.update(groupId=c.group_id, name=c.name, readSeq=c.read_seq)
    else:
        out.update(peerId=c.peer_id, username=c.username)
    return out


def cmd_chat(args: argparse.Namespace) -> None:
    """One conversation on one connection: its last messages, then what comes in, while
    every line typed is sent; the peer's messages are marked read as they are shown."""
    peer, name = resolve_peer(args, args.peer)
    names = {peer: name or f"user {peer}"}
    past = list(reversed(_api(args).history(peer, limit=HISTORY_SHOWN).messages))
    shown = {(m.from_user_id, m.msg_id) for m in past}      # backlog may repeat them
    client = _client(args)

    def show(frame: AnyFrame) -> None:
        if isinstance(frame, ChatMessage) and (frame.from_user_id, frame.msg_id) in shown:
            return
        line = chat_line(frame, peer, names)
        if line is not None:
            print(line, flush=True)
        if isinstance(frame, ChatMessage) and frame.from_user_id == peer and client.live:
            try:
                client.mark_read(peer, [frame.msg_id] if frame.msg_id else None)
            except SkyeIMError:
                pass                # the connection is down: it stays unread, shown again later

    for m in past:
        print(chat_line(m, peer, names), flush=True)
    if past and past[-1].seq is not None:
        client.track(peer, past[-1].seq)     # anything newer comes by sync after `connected`
    client.on("*", show)
    sent: list[str] = []
    try:
        me = client.connect(timeout=args.timeout).user_id
        client.mark_read(peer)               # what was shown before `connected`
        print(f"* chatting with {names[peer]} as user {me}; Ctrl-D ends", flush=True)
        typed = _typed_lines(sys.stdin)
        while True:                          # until the end of input (Ctrl-D) or of the client
            try:
                line = typed.get(timeout=POLL)
            except queue.Empty:
                if client.error is not None:
                    raise client.error from None     # e.g. replaced by another login
                continue
            if line is None:
                break
            text = line.rstrip("\r\n")
            if text:
                sent.append(client.send_chat(peer, text, wait=None).msg_id)
        _wait_sent(client, sent, args.timeout)
    finally:
        client.close()


def _typed_lines(stream) -> queue.Queue:
    """The lines of ``stream``, read by a daemon thread; None at its end."""
    lines: queue.Queue[str | None] = queue.Queue(maxsize=1000)

    def read() -> None:
        for line in stream:
            lines.put(line)
        lines.put(None)

    threading.Thread(target=read, name="skyeim-stdin", daemon=True).start()
    return lines


def _wait_sent(client: Client, msg_ids: list[str], timeout: float) -> None:
    """Wait until each chat is acked sent (or refused: its error line was shown)."""
    deadline = time.monotonic() + timeout
    for mid in msg_ids:
        try:
            client.wait_ack(mid, "sent", timeout=max(deadline - time.monotonic(), 0.0))
        except ChatError:
            pass


# -- parsing -------------------------------------------------------------------------------------

def _peer(text: str) -> str:
    if text.isascii() and text.isdigit() and int(text) < 1 or not NAME.fullmatch(text):
        raise argparse.ArgumentTypeError(f"not a user id or username: {text!r}")
    return text


def _positive(text: str) -> int:
    if not (text.isascii() and text.isdigit()) or int(text) < 1:
        raise argparse.ArgumentTypeError(f"not a positive integer: {text!r}")
    return int(text)


def _msg_id(text: str) -> str:
    if not is_msg_id(text):
        raise argparse.ArgumentTypeError(f"not a msgId: {text!r}")
    return text


def _common(suppress: bool) -> argparse.ArgumentParser:
    """The options every command takes, before or after its name."""
    d = (lambda v: argparse.SUPPRESS) if suppress else (lambda v: v)
    p = argparse.ArgumentParser(add_help=False)
    p.add_argument("--url", default=d(None),
                   help=f"the gateway's base URL (default: $SKYEIM_URL, the URL of the user's "
                        f"login, or {DEFAULT_URL}); the socket is at ws://.../ws")
    p.add_argument("--user", default=d(None), metavar="NAME",
                   help="act as this logged-in user (default: $SKYEIM_USER or the last login)")
    p.add_argument("--token-file", type=Path, default=d(None),
                   help="keep the token in this one file instead (default: $SKYEIM_TOKEN_FILE; "
                        "else ~/.config/skyeim/tokens/NAME.json)")
    p.add_argument("--token", default=d(None), help="use this token instead of a saved one")
    p.add_argument("--timeout", type=float, default=d(10.0), help="seconds per request or ack")
    p.add_argument("--ca-file", default=d(None), metavar="PEM",
                   help="for an https:// URL: trust the CA(s) in this file instead of the "
                        "system's (default: $SKYEIM_CA_FILE)")
    p.add_argument("-v", "--verbose", action="store_true", default=d(False),
                   help="log connection events")
    return p


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=PROG, description="SkyeIM command line client.",
                                parents=[_common(False)])
    p.add_argument("--version", action="version", version=f"skyeim {__version__}")
    common = [_common(True)]
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, func, needs_token: bool, **kw) -> argparse.ArgumentParser:
        s = sub.add_parser(name, parents=common, **kw)
        s.set_defaults(func=func, needs_token=needs_token)
        return s

    for name, func, help_ in (("register", cmd_register, "create a user"),
                              ("login", cmd_login, "log in and keep the token")):
        s = command(name, func, False, help=help_)
        s.add_argument("username", metavar="USER")
        s.add_argument("--password", help="(default: $SKYEIM_PASSWORD or a prompt)")

    command("logout", cmd_logout, False, help="forget the user's saved token")
    command("accounts", cmd_accounts, False, help="the saved logins (and the default user)")

    s = command("friends", cmd_friends, True, help="list, add or remove friends; requests, "
                                             "accept, decline; block, unblock, blocks")
    fsub = s.add_subparsers(dest="action", required=True, metavar="ACTION")
    fsub.add_parser("list", parents=common, help="your friends, with their presence")
    fsub.add_parser("requests", parents=common, help="pending friend requests, from and to you")
    fsub.add_parser("blocks", parents=common, help="the users you blocked")
    for action, help_ in (("add", "befriend (or ask, when the gateway wants acceptance) a user "
                                  "by username or id"),
                          ("remove", "unfriend a friend by username or id"),
                          ("accept", "accept a pending request (username or id)"),
                          ("decline", "decline a pending request (username or id)"),
                          ("block", "block a user (a friend's username, or an id); unfriends"),
                          ("unblock", "unblock a user you blocked (username or id)")):
        a = fsub.add_parser(action, parents=common, help=help_)
        a.add_argument("target", metavar="NAME_OR_ID")
        a.add_argument("--name", action="store_true",
                       help="NAME_OR_ID is a username even if all digits")

    s = command("groups", cmd_groups, True, help="groups: list, create, members, send, history, and "
                                                 "administration (role, kick, mute, rename, "
                                                 "dismiss)")
    gsub = s.add_subparsers(dest="action", required=True, metavar="ACTION")
    gsub.add_parser("list", parents=common, help="your groups, with your role and seqs")
    a = gsub.add_parser("create", parents=common, help="a new group that you own")
    a.add_argument("group_name", metavar="NAME")
    a.add_argument("members", nargs="*", metavar="MEMBER", help="user ids or friends' names")

    def group_action(action: str, help_: str, member: bool = False) -> argparse.ArgumentParser:
        a = gsub.add_parser(action, parents=common, help=help_)
        a.add_argument("group", type=_positive, metavar="GROUP_ID")
        if member:
            a.add_argument("member", type=_peer, metavar="MEMBER",
                           help="a user id, or a friend's username")
        return a

    group_action("members", "the members, their roles and mutes")
    a = group_action("send", "send a message to the group")
    a.add_argument("text")
    a.add_argument("--mention", action="append", default=[], metavar="MEMBER",
                   help="mention a member (a user id or a friend's name; repeatable)")
    a = group_action("history", "the group's messages, oldest first ((recalled), (edited))")
    a.add_argument("--limit", type=_positive, default=None, help="messages (default 50, max 200)")
    a = group_action("role", "(owner) make a member an admin, or an admin a member", True)
    a.add_argument("role", choices=("admin", "member"))
    group_action("kick", "(owner, admin) remove a member", True)
    a = group_action("mute", "(owner, admin) mute a member for SECONDS (0 unmutes)", True)
    a.add_argument("seconds", type=int)
    a = group_action("rename", "(owner, admin) rename the group")
    a.add_argument("group_name", metavar="NAME")
    group_action("dismiss", "(owner) delete the group")

    s = command("send", cmd_send, True, help="send a chat (opens a connection, which replaces "
                                             "any other connection of the same user)")
    s.add_argument("to", type=_peer, metavar="TO", help="a user id, or a friend's username")
    s.add_argument("text")
    s.add_argument("--name", action="store_true", help="TO is a username even if all digits")
    s.add_argument("--wait", choices=("sent", "delivered", "none"), default="sent",
                   help="the ack to wait for (default: sent)")
    s.add_argument("--content-type", type=int, default=1, choices=(1, 2, 3, 4))
    s.add_argument("--msg-id", default=None, help="(default: a new UUID)")

    s = command("send-file", cmd_send_file, True,
                help="upload a file and send it (docs/protocol.md \"Files, images and voice\")")
    s.add_argument("to", metavar="TO", help="a user id, a friend's username, or with --group a group id")
    s.add_argument("path", help="the file to send (its type is sniffed by the gateway)")
    s.add_argument("--name", action="store_true", help="TO is a username even if all digits")
    s.add_argument("--group", action="store_true", help="TO is a group id")
    kind = s.add_mutually_exclusive_group()
    kind.add_argument("--image", action="store_true", help="an image message (contentType 2)")
    kind.add_argument("--voice", action="store_true", help="a voice message (contentType 4)")

    s = command("read", cmd_read, True, help="mark a user's messages to you read (the peer "
                                             "gets a read receipt)")
    s.add_argument("peer", type=_peer, metavar="PEER", help="a user id, or a friend's username")
    s.add_argument("msg_ids", type=_msg_id, nargs="*", metavar="MSGID",
                   help="only these messages (default: every unread one from PEER)")
    s.add_argument("--name", action="store_true", help="PEER is a username even if all digits")

    s = command("recall", cmd_change, True, help="take back a chat you sent (within the "
                                                 "gateway's Chat.RecallWindow)")
    s.add_argument("msg_id", type=_msg_id, metavar="MSGID")
    s.add_argument("--group", type=_positive, default=None, metavar="GROUP_ID",
                   help="MSGID is a message you sent to this group")
    s = command("edit", cmd_change, True, help="replace the text of a chat you sent (within "
                                               "Chat.EditWindow)")
    s.add_argument("msg_id", type=_msg_id, metavar="MSGID")
    s.add_argument("text")
    s.add_argument("--group", type=_positive, default=None, metavar="GROUP_ID",
                   help="MSGID is a message you sent to this group")

    s = command("listen", cmd_listen, True, help="print frames as they arrive (one JSON object "
                                                 "per line) until Ctrl-C")
    s.add_argument("--pretty", action="store_true", help="human-readable lines instead of JSON")
    s.add_argument("--count", type=_positive, default=None, help="exit after N frames")
    s.add_argument("--idle", type=float, default=None,
                   help="fail when no frame comes for this many seconds")

    s = command("history", cmd_history, True, help="the conversation with a user, oldest first")
    s.add_argument("peer", type=_peer, metavar="PEER", help="a user id, or a friend's username")
    s.add_argument("--name", action="store_true", help="PEER is a username even if all digits")
    s.add_argument("--limit", type=_positive, default=None, help="messages (default 50, max 200)")
    s.add_argument("--before", type=_positive, default=None, metavar="SEQ",
                   help="only messages older than this seq")
    s.add_argument("--json", action="store_true", help="print the API's JSON answer")

    s = command("conversations", cmd_conversations, True,
                help="your conversations, pinned first then newest first, with unread counts; "
                     "or mute/unmute/pin/unpin one")
    s.add_argument("action", nargs="?", default="list",
                   choices=("list", "mute", "unmute", "pin", "unpin"))
    s.add_argument("target", nargs="?", metavar="PEER",
                   help="a user id or a friend's username (a group id with --group)")
    s.add_argument("--group", action="store_true", help="PEER is a group id")
    s.add_argument("--name", action="store_true", help="PEER is a username even if all digits")
    s.add_argument("--limit", type=_positive, default=None,
                   help="conversations (default 50, max 200)")
    s.add_argument("--before", default=None, metavar="CURSOR",
                   help="the page after this cursor (printed after a full page)")
    s.add_argument("--json", action="store_true", help="print the API's JSON answer")

    s = command("chat", cmd_chat, True, help="chat with a user: shows the conversation and what "
                                             "comes in, sends each line typed; Ctrl-D ends")
    s.add_argument("peer", type=_peer, metavar="PEER", help="a user id, or a friend's username")
    s.add_argument("--name", action="store_true", help="PEER is a username even if all digits")
    return p


def _token(args: argparse.Namespace) -> dict:
    """Fill ``args.token`` for a command that needs one; the saved login's record."""
    if args.token is not None:
        return {}
    if os.environ.get("SKYEIM_TOKEN"):
        args.token = os.environ["SKYEIM_TOKEN"]
        return {}
    if args.token_file is not None:
        record = read_record(args.token_file, f"run: {PROG} login USER")
    else:
        record = Logins().load(args.user)
    exp = record.get("expiresAt")
    if type(exp) is int and exp < time.time() * 1000:
        name = record.get("username", "USER")
        raise CliError(f"the saved token of {name} expired at {fmt_ms(exp)}; run: "
                       f"{PROG} login {name}")
    args.token = record["token"]
    return record


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # without -v only the one error line: what ended a connection is that line
    logging.basicConfig(level=logging.INFO if args.verbose else logging.ERROR,
                        format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    if args.token_file is None and os.environ.get("SKYEIM_TOKEN_FILE"):
        args.token_file = Path(os.environ["SKYEIM_TOKEN_FILE"])
    args.user = args.user or os.environ.get("SKYEIM_USER") or None
    args.ca_file = args.ca_file or os.environ.get("SKYEIM_CA_FILE") or None
    try:
        if args.token_file is None:
            note = Logins().migrate()
            if note:
                print(f"skyeim: {note}", file=sys.stderr)
        record = _token(args) if args.needs_token else {}
        args.url = (args.url or os.environ.get("SKYEIM_URL") or record.get("url")
                    or DEFAULT_URL).rstrip("/")
        args.ca_file = args.ca_file or record.get("caFile") or None
        args.func(args)
        return 0
    except (SkyeIMError, CliError, LoginError, ValueError, OSError) as e:
        print(f"skyeim: error: {' '.join(str(e).split())}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        if args.command in ("listen", "chat"):
            return 0
        print("skyeim: interrupted", file=sys.stderr)
        return 130
