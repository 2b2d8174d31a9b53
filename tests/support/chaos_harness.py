"""The chaos test's parts (tests/test_chaos.py): the shipped supervisord.conf run
in a private directory, a killer that SIGKILLs its programs, and SDK users that
chat in pairs and remember everything they sent, got and saw.

``ShippedLayout`` runs supervisord.conf and etc/*.yaml *as shipped*: both are
copied unchanged into a temporary run directory (where ``%(here)s`` points, with
symlinks to the checkout's .venv, skyeim/ and wsserver.py), except that every
port of the 103xx and 104xx families in the YAML files is replaced by a free port. The
SQLite stores and the logs land in that directory's data/.

``ChatUser`` is the real SDK ``Client`` (reconnect and resend on, sync on) with
an observer on the socket: it counts every ``chat`` frame per connection, so
that a frame sent twice on one connection is seen even though the SDK yields
each message once.
"""
from __future__ import annotations

import collections
import json
import os
import random
import re
import secrets
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import requests

from harness import PASSWORD, REPO, free_port, unique
from skyeim.client import (Api, Backoff, ChatMessage, Client, Connected, NotConnected, Presence,
                           SkyeIMError)

BIN = Path(sys.executable).parent
PROGRAMS = ("gateway", "message", "friend", "auth")
START_TIMEOUT = 60.0


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


class ShippedLayout:
    """supervisord.conf and etc/*.yaml as shipped, in ``tmp/run`` with free ports."""

    def __init__(self, tmp: Path):
        self.run = tmp / "run"
        (self.run / "data" / "logs").mkdir(parents=True)
        (self.run / "etc").mkdir()
        for name in (".venv", "skyeim", "wsserver.py"):
            os.symlink(REPO / name, self.run / name)
        shutil.copy(REPO / "supervisord.conf", self.run / "supervisord.conf")
        self.port_map: dict[str, int] = {}
        for src in sorted((REPO / "etc").glob("*.yaml")):
            # the client ports (103xx) and the admin listeners (104xx)
            text = re.sub(r"\b10[34]\d\d\b", lambda m: str(self._port(m.group(0))), src.read_text())
            (self.run / "etc" / src.name).write_text(text)
        self.ports = {"gateway": self._port("10300"), "message": self._port("10301"),
                      "friend": self._port("10302"), "auth": self._port("10303")}
        self.conf = self.run / "supervisord.conf"
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("SKYEIM_")}
        self.env.update({"SKYEIM_ACCESS_SECRET": secrets.token_urlsafe(32),
                         "SKYEIM_INTERNAL_SECRET": secrets.token_urlsafe(16)})
        self.pid: int | None = None
        self.seen_pids: dict[str, set[int]] = collections.defaultdict(set)

    def _port(self, shipped: str) -> int:
        if shipped not in self.port_map:
            self.port_map[shipped] = free_port()
        return self.port_map[shipped]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.ports['gateway']}"

    def start(self) -> "ShippedLayout":
        out = self.run / "supervisord.out"
        with open(out, "wb") as f:                       # it daemonizes: no pipes
            proc = subprocess.run([str(BIN / "supervisord"), "-c", str(self.conf)], cwd=self.run,
                                  env=self.env, stdin=subprocess.DEVNULL, stdout=f,
                                  stderr=subprocess.STDOUT, timeout=30)
        assert proc.returncode == 0, out.read_text(errors="replace")
        pidfile = self.run / "data" / "supervisord.pid"
        deadline = time.monotonic() + 15
        while not (pidfile.exists() and pidfile.read_text().strip()):
            assert time.monotonic() < deadline, "supervisord wrote no pid file"
            time.sleep(0.1)
        self.pid = int(pidfile.read_text())
        deadline = time.monotonic() + START_TIMEOUT
        while not (self.healthy("gateway", "/readyz") and len(self.running()) == 4):
            assert time.monotonic() < deadline, f"not up:\n{self.status()}\n{self.log_tails()}"
            time.sleep(0.3)
        return self

    def ctl(self, *args: str, timeout: float = 30) -> subprocess.CompletedProcess:
        return subprocess.run([str(BIN / "supervisorctl"), "-c", str(self.conf), *args],
                              cwd=self.run, env=self.env, capture_output=True, text=True,
                              timeout=timeout)

    def status(self) -> str:
        return self.ctl("status").stdout

    def running(self) -> dict[str, int]:
        """program -> pid of those supervisord says are RUNNING."""
        found = re.findall(r"^(\S+)\s+RUNNING\s+pid (\d+),", self.status(), re.M)
        pids = {name: int(pid) for name, pid in found}
        for name, pid in pids.items():
            self.seen_pids[name].add(pid)
        return pids

    def healthy(self, program: str, path: str = "/healthz") -> bool:
        try:
            return requests.get(f"http://127.0.0.1:{self.ports[program]}{path}",
                                timeout=1).status_code == 200
        except requests.RequestException:
            return False

    def restarts(self) -> dict[str, int]:
        return {p: max(len(self.seen_pids[p]) - 1, 0) for p in PROGRAMS}

    def shutdown(self) -> None:
        if self.pid is None:
            return
        self.running()
        self.ctl("shutdown")
        deadline = time.monotonic() + 30
        pids = [self.pid, *(p for s in self.seen_pids.values() for p in s)]
        while time.monotonic() < deadline and any(map(_alive, pids)):
            time.sleep(0.1)
        for pid in pids:                                  # what did not stop: by pid
            if _alive(pid):
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass

    def logs(self) -> dict[str, str]:
        return {p.name: p.read_text(errors="replace")
                for p in sorted((self.run / "data" / "logs").glob("*.log*"))}

    def log_tails(self, lines: int = 30) -> str:
        return "\n".join(f"--- {name}\n" + "\n".join(text.splitlines()[-lines:])
                         for name, text in self.logs().items())


# -- the killer ----------------------------------------------------------------------------

@dataclass
class Kill:
    program: str
    pid: int
    at: float                      # monotonic
    back_after: float | None = None   # s until the program answered again (a new pid, healthz)
    probe: str = "/healthz"        # what "answered" means (the process serves, whatever else is down)
    held: bool = False             # kept stopped on purpose: not an outage to measure


class Killer:
    """SIGKILLs the layout's programs and measures how long each stays away."""

    def __init__(self, layout: ShippedLayout, rng: random.Random):
        self.layout, self.rng = layout, rng
        self.kills: list[Kill] = []

    def kill(self, program: str, probe: str = "/healthz") -> Kill | None:
        pid = self.layout.running().get(program)
        if pid is None or not _alive(pid):
            return None
        os.kill(pid, signal.SIGKILL)
        k = Kill(program, pid, time.monotonic(), probe=probe)
        self.kills.append(k)
        return k

    def poll(self) -> None:
        """Note the programs killed that are back: a new pid, RUNNING, and answering."""
        pending = [k for k in self.kills if k.back_after is None]
        if not pending:
            return
        running = self.layout.running()
        for k in pending:
            pid = running.get(k.program)
            if pid is not None and pid != k.pid and self.layout.healthy(k.program, k.probe):
                if k.back_after is None:
                    k.back_after = time.monotonic() - k.at

    def watch(self, stop: threading.Event) -> threading.Thread:
        """poll() every 0.2 s in a thread until ``stop``."""
        def run() -> None:
            while not stop.wait(0.2):
                self.poll()
        t = threading.Thread(target=run, daemon=True, name="killer-watch")
        t.start()
        return t

    def wait_back(self, k: Kill, timeout: float = 60.0) -> float:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.poll()
            if k.back_after is not None:
                return k.back_after
            time.sleep(0.2)
        raise AssertionError(f"{k.program} not back within {timeout:g}s:\n{self.layout.status()}")

    def stop(self, program: str) -> None:
        """SIGKILL ``program`` and have supervisord leave it stopped (until ``start``)."""
        k = self.kill(program)
        if k is not None:
            k.held = True
        out = self.layout.ctl("stop", program)
        assert "ERROR" not in out.stdout or "not running" in out.stdout, out.stdout

    def start(self, program: str) -> None:
        out = self.layout.ctl("start", program, timeout=60)
        assert "started" in out.stdout or "already started" in out.stdout, out.stdout + out.stderr

    def kill_random(self) -> Kill | None:
        """A random program among those that are back (RUNNING and answering): one that
        is restarting is left alone, so that supervisord's startretries are never used
        up and each outage measured is one restart."""
        self.poll()
        pending = {k.program for k in self.kills if k.back_after is None}
        ready = sorted(set(self.layout.running()) - pending)
        return self.kill(self.rng.choice(ready)) if ready else None

    def per_program(self) -> dict[str, int]:
        return {p: sum(k.program == p for k in self.kills) for p in PROGRAMS}

    def longest_outage(self) -> tuple[float, str]:
        done = [k for k in self.kills if k.back_after is not None and not k.held]
        if not done:
            return 0.0, "-"
        k = max(done, key=lambda k: k.back_after)
        return k.back_after, k.program


# -- the users ----------------------------------------------------------------------------

class ObservedClient(Client):
    """The SDK client with an eye on the socket: ``chat`` frames per connection."""

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.wire_chats: collections.Counter = collections.Counter()   # (gen, from, msgId)
        self.wire_lock = threading.Lock()

    def _on_message(self, payload: bytes, gen: int) -> None:
        try:
            obj = json.loads(payload)
        except ValueError:
            obj = None
        if isinstance(obj, dict) and obj.get("type") == "chat" and isinstance(obj.get("data"), dict):
            d = obj["data"]
            with self.wire_lock:
                self.wire_chats[(gen, d.get("fromUserId"), d.get("msgId"))] += 1
        super()._on_message(payload, gen)


@dataclass
class ChatUser:
    name: str
    user_id: int
    password: str
    api: Api
    client: ObservedClient | None = None
    peer: "ChatUser | None" = None
    friends: set[int] = field(default_factory=set)
    sent: list[str] = field(default_factory=list)          # msgIds, in order
    received: collections.Counter = field(default_factory=collections.Counter)  # (from, msgId)
    online_view: dict[int, bool] = field(default_factory=dict)   # friend -> online, from frames
    connects: int = 0
    offline_since: float | None = None
    longest_offline: float = 0.0
    to_read: dict[int, list[str]] = field(default_factory=lambda: collections.defaultdict(list))
    errors: list[str] = field(default_factory=list)


class ChatCrowd:
    """Users in pairs (each pair friends, plus a ring of friendships across pairs),
    each chatting to its partner from a thread, reading from another, sending read
    receipts for what it got."""

    def __init__(self, url: str, pairs: int, rate: float = 3.0, max_in_flight: int = 40):
        self.url, self.rate, self.max_in_flight = url, rate, max_in_flight
        self.users: list[ChatUser] = []
        self.stop_sending = threading.Event()
        self.stop_all = threading.Event()
        self.threads: list[threading.Thread] = []
        api = Api(url)
        for _ in range(2 * pairs):
            name = unique("chaos")
            uid = api.register(name, PASSWORD)
            login = Api(url).login(name, PASSWORD)
            self.users.append(ChatUser(name, uid, PASSWORD, Api(url, token=login.token)))
        n = len(self.users)
        for i in range(0, n, 2):
            a, b = self.users[i], self.users[i + 1]
            a.peer, b.peer = b, a
        edges = {(i, i + 1) for i in range(0, n, 2)} | {(i, (i + 2) % n) for i in range(n)
                                                        if (i + 2) % n != i}
        for i, j in edges:
            self.users[i].api.add_friend(self.users[j].user_id)
            self.users[i].friends.add(self.users[j].user_id)
            self.users[j].friends.add(self.users[i].user_id)

    def _token(self, u: ChatUser) -> str:
        return Api(self.url).login(u.name, u.password).token

    def start(self) -> None:
        for u in self.users:
            c = ObservedClient(self.url, token=self._token(u), token_provider=lambda u=u: self._token(u),
                               backoff=Backoff(base=0.2, cap=2.0), max_retries=30,
                               rate_limit=None, connect_timeout=20)
            u.client = c
            c.on(Connected, lambda f, u=u: self._connected(u, f))
            c.on(Presence, lambda f, u=u: u.online_view.__setitem__(f.user_id, f.online))
            c.connect()
        for u in self.users:
            for target in (self._send_loop, self._read_loop):
                t = threading.Thread(target=target, args=(u,), daemon=True,
                                     name=f"{target.__name__}-{u.name}")
                t.start()
                self.threads.append(t)
            threading.Thread(target=self._watch_live, args=(u,), daemon=True).start()

    @staticmethod
    def _connected(u: ChatUser, f: Connected) -> None:
        u.connects += 1
        u.online_view = {fid: fid in set(f.online_friends or []) for fid in u.friends}

    def _watch_live(self, u: ChatUser) -> None:
        while not self.stop_all.is_set():
            live, now = u.client.live, time.monotonic()
            if not live and u.offline_since is None:
                u.offline_since = now
            elif live and u.offline_since is not None:
                u.longest_offline = max(u.longest_offline, now - u.offline_since)
                u.offline_since = None
            time.sleep(0.05)

    def _send_loop(self, u: ChatUser) -> None:
        n = 0
        while not self.stop_sending.is_set():
            if len(u.client.outbox) >= self.max_in_flight:
                time.sleep(0.1)
                continue
            n += 1
            msg_id = f"{u.user_id}-{n}-{uuid.uuid4().hex[:8]}"
            try:
                u.client.send_chat(u.peer.user_id, f"chaos {u.name} #{n}", msg_id=msg_id, wait=None)
                u.sent.append(msg_id)
            except SkyeIMError as e:          # the client ended: that is a failure of its own
                u.errors.append(f"send {msg_id}: {e!r}")
                return
            self.stop_sending.wait(random.uniform(0.5, 1.5) / self.rate)

    def _read_loop(self, u: ChatUser) -> None:
        last_read = time.monotonic()
        while not self.stop_all.is_set():
            try:
                f = u.client.next_frame(0.2)
            except TimeoutError:
                f = None
            except SkyeIMError as e:
                u.errors.append(f"frames: {e!r}")
                return
            if isinstance(f, ChatMessage) and f.to_user_id == u.user_id:
                u.received[(f.from_user_id, f.msg_id)] += 1
                u.to_read[f.from_user_id].append(f.msg_id)
            if time.monotonic() - last_read > 1.0 and u.to_read and u.client.live:
                last_read = time.monotonic()
                for peer, ids in list(u.to_read.items()):
                    try:
                        u.client.mark_read(peer, ids[:100])
                        del ids[:100]
                    except (NotConnected, TimeoutError, SkyeIMError):
                        break
                    if not ids:
                        del u.to_read[peer]

    # -- the outcome ------------------------------------------------------------------------

    def acked(self, u: ChatUser) -> list[str]:
        """u's chats acked ``sent`` (or delivered)."""
        out = []
        for msg_id in u.sent:
            r = u.client.result(msg_id)
            if r is not None and r.status in ("sent", "delivered"):
                out.append(msg_id)
        return out

    def unacked(self) -> int:
        return sum(len(u.client.outbox) for u in self.users)

    def missing(self) -> dict[str, list[str]]:
        """user -> msgIds acked sent by its partner that it has not got."""
        out = {}
        for u in self.users:
            got = {m for (frm, m) in u.received if frm == u.peer.user_id}
            lost = [m for m in self.acked(u.peer) if m not in got]
            if lost:
                out[u.name] = lost
        return out

    def store_problems(self) -> list[str]:
        """Each pair's conversation as the store holds it (GET /api/messages): every chat
        acked ``sent`` once, seqs 1..n without a gap or a repeat."""
        out = []
        for u in self.users[::2]:
            msgs, before = [], None
            for _ in range(10_000):                      # bounded; ends at the last page
                page = u.api.history(u.peer.user_id, limit=100, before_seq=before)
                msgs += page.messages
                before = page.next_before
                if before is None:
                    break
            seqs = sorted(m.seq for m in msgs)
            if seqs != list(range(1, len(seqs) + 1)):
                out.append(f"{u.name}/{u.peer.name}: seqs are not 1..{len(seqs)}")
            keys = collections.Counter((m.from_user_id, m.msg_id) for m in msgs)
            out += [f"{u.name}/{u.peer.name}: {k} stored {n} times" for k, n in keys.items() if n > 1]
            for v in (u, u.peer):
                lost = [m for m in self.acked(v) if (v.user_id, m) not in keys]
                if lost:
                    out.append(f"{v.name}: acked sent but not in the store: {lost[:5]}")
        return out

    def duplicates(self) -> dict[str, list]:
        out = {}
        for u in self.users:
            dup = [k for k, n in u.received.items() if n > 1]
            if dup:
                out[u.name] = dup
        return out

    def wire_duplicates(self) -> list:
        """chat frames written twice on one connection (PROTOCOL.md section 1 forbids it)."""
        out = []
        for u in self.users:
            with u.client.wire_lock:
                out += [(u.name, k, n) for k, n in u.client.wire_chats.items() if n > 1]
        return out

    def wire_repeats(self) -> int:
        """chat frames received again on a later connection (the unread push, at-least-once)."""
        total = 0
        for u in self.users:
            with u.client.wire_lock:
                per_msg = collections.Counter((k[1], k[2]) for k in u.client.wire_chats)
            total += sum(n - 1 for n in per_msg.values())
        return total

    def stale_presence(self) -> list[str]:
        """What a user's frames say about a friend that is connected, when it is not online."""
        live = {u.user_id for u in self.users if u.client.live}
        return [f"{u.name} sees {fid} offline" for u in self.users if u.client.live
                for fid in sorted(u.friends & live) if not u.online_view.get(fid)]

    def all_live(self) -> bool:
        return all(u.client.live for u in self.users)

    def stale_rest_presence(self) -> list[str]:
        live = {u.user_id for u in self.users if u.client.live}
        out = []
        for u in self.users:
            try:
                friends = u.api.friends()
            except SkyeIMError as e:
                out.append(f"{u.name}: GET /api/friends failed: {e!r}")
                continue
            for f in friends:
                if f.user_id in live and not f.online:
                    out.append(f"{u.name}: /api/friends says {f.user_id} offline")
        return out

    def close(self) -> None:
        self.stop_sending.set()
        self.stop_all.set()
        for u in self.users:
            if u.client is not None:
                u.client.close(timeout=1)


def chaos_seconds(default: float = 120.0) -> float:
    value = os.environ.get("SKYEIM_CHAOS_SECONDS")
    return float(value) if value else default


__all__ = ["ShippedLayout", "Killer", "Kill", "ChatCrowd", "ChatUser", "ObservedClient",
           "chaos_seconds", "PROGRAMS"]
