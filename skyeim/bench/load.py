"""The load generator: raw WebSocket clients on gevent, in separate worker processes.

The parent (the benchmark's coordinator, not monkey-patched) starts N worker
processes (multiprocessing, "spawn") and drives them with commands over a
pipe; each worker monkey-patches gevent first and runs thousands of clients
as greenlets. A client is a minimal RFC 6455 client written for speed rather
than generality: one ``sendall`` per frame with an all-zero masking key (legal:
the server still unmasks it; the key only protects browsers from cache
poisoning, which does not apply here), and a reader greenlet that parses
frames from a buffer, answers protocol pings and dispatches JSON frames.

Every wait in a worker is bounded (gevent.Timeout or a deadline), and a
worker exits when its pipe to the parent closes.

Clocks: every timestamp is ``time.monotonic()`` (CLOCK_MONOTONIC, one clock for
every process on the machine), so the parent can set a start time that all
workers honour and compare arrival times across processes.
"""
from __future__ import annotations

import array
import base64
import json
import multiprocessing
import multiprocessing.connection
import os
import socket
import struct
import time
import traceback
from typing import Any, Callable

# Shared counters per worker (RawArray 'q'), read by the parent's progress display.
C_CONNECTED, C_FAILED, C_SENT, C_DONE, C_ERRORS, C_ONLINE, C_BACKLOG, C_CLOSED = range(8)
N_COUNTERS = 8

MAX_FRAME = 1 << 24


class WorkerError(RuntimeError):
    pass


# =====================================================================================
# Parent side

class LoadPool:
    """N worker processes; ``call`` sends one command to each and gathers the answers."""

    def __init__(self, n: int, fd_limit: int):
        ctx = multiprocessing.get_context("spawn")
        self.n = n
        self.counters = [ctx.RawArray("q", N_COUNTERS) for _ in range(n)]
        self.conns = []
        self.procs = []
        for i in range(n):
            parent, child = ctx.Pipe()
            p = ctx.Process(target=worker_entry, args=(i, child, self.counters[i], fd_limit),
                            name=f"skyeim-bench-load-{i}", daemon=True)
            p.start()
            child.close()
            self.conns.append(parent)
            self.procs.append(p)
        self.call([{"cmd": "hello"}] * n, timeout=60)

    @property
    def pids(self) -> dict[str, int]:
        return {f"load{i}": p.pid for i, p in enumerate(self.procs)}

    def counter(self, which: int) -> int:
        return sum(c[which] for c in self.counters)

    def reset_counters(self) -> None:
        for c in self.counters:
            for i in range(N_COUNTERS):
                c[i] = 0

    def call(self, commands: list[dict | None], timeout: float,
             tick: Callable[[], None] | None = None, tick_every: float = 0.5) -> list[dict | None]:
        """Send ``commands[i]`` to worker i (None: skip it); wait (bounded) for every answer."""
        pending = {}
        for i, cmd in enumerate(commands):
            if cmd is not None:
                self.conns[i].send(cmd)
                pending[self.conns[i]] = i
        results: list[dict | None] = [None] * len(commands)
        deadline = time.monotonic() + timeout
        next_tick = time.monotonic() + tick_every
        while pending:
            now = time.monotonic()
            if now >= deadline:
                raise WorkerError(f"load workers {sorted(pending.values())} did not answer "
                                  f"{commands[next(iter(pending.values()))]['cmd']!r} "
                                  f"within {timeout:g}s")
            ready = multiprocessing.connection.wait(list(pending), timeout=min(tick_every, deadline - now))
            for conn in ready:
                i = pending.pop(conn)
                try:
                    res = conn.recv()
                except EOFError:
                    raise WorkerError(f"load worker {i} died") from None
                if isinstance(res, dict) and res.get("error"):
                    raise WorkerError(f"load worker {i}: {res['error']}")
                results[i] = res
            if tick and time.monotonic() >= next_tick:
                tick()
                next_tick = time.monotonic() + tick_every
        return results

    def close(self) -> None:
        for conn in self.conns:
            try:
                conn.send({"cmd": "exit"})
            except (OSError, ValueError):
                pass
        for p in self.procs:
            p.join(5)
            if p.is_alive():
                p.terminate()
                p.join(2)


def split(items: list, n: int) -> list[list]:
    """Round-robin ``items`` over n workers."""
    return [items[i::n] for i in range(n)]


def floats(data: bytes) -> array.array:
    a = array.array("d")
    a.frombytes(data)
    return a


# =====================================================================================
# Worker side (everything below runs in a monkey-patched worker process)

def worker_entry(index: int, conn, counters, fd_limit: int) -> None:
    from gevent import monkey
    monkey.patch_all()
    from skyeim.bench.procstat import raise_fd_limit
    raise_fd_limit(fd_limit)
    Worker(index, conn, counters).run()


def _frame(payload: bytes, opcode: int = 0x1) -> bytes:
    """A client frame with an all-zero masking key (so the payload goes as is)."""
    n = len(payload)
    if n < 126:
        head = bytes((0x80 | opcode, 0x80 | n))
    elif n < 65536:
        head = struct.pack("!BBH", 0x80 | opcode, 0xFE, n)
    else:
        head = struct.pack("!BBQ", 0x80 | opcode, 0xFF, n)
    return head + b"\0\0\0\0" + payload


class Refused(Exception):
    """The server answered the upgrade with plain HTTP."""

    def __init__(self, status: int, code: str):
        super().__init__(status, code)
        self.status, self.code = status, code


class Client:
    """One WebSocket connection of one user."""

    __slots__ = ("uid", "worker", "sock", "wlock", "reader", "t_start", "t_upgraded",
                 "connected_at", "connected_data", "connected_evt", "closed", "close_code",
                 "backlog", "backlog_ids", "online_from", "online_at", "inflight", "window",
                 "peer", "errors", "tag")

    def __init__(self, uid: int, worker: "Worker", tag: str):
        from gevent.event import Event
        from gevent.lock import Semaphore
        self.uid = uid
        self.worker = worker
        self.tag = tag
        self.sock = None
        self.wlock = Semaphore()
        self.reader = None
        self.t_start = self.t_upgraded = self.connected_at = 0.0
        self.connected_data: dict | None = None
        self.connected_evt = Event()
        self.closed = False
        self.close_code: int | None = None
        self.backlog = 0
        self.backlog_ids: set | None = None
        self.online_from: int | None = None
        self.online_at = 0.0
        self.inflight: dict[str, list[float]] = {}
        self.window = None
        self.peer = 0
        self.errors = 0

    # -- connecting ---------------------------------------------------------------------

    def connect(self, host: str, port: int, token: str) -> None:
        """TCP connect, upgrade, start the reader; raises Refused or OSError."""
        self.t_start = time.monotonic()
        sock = socket.create_connection((host, port))
        self.sock = sock
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        key = base64.b64encode(os.urandom(16)).decode()
        sock.sendall((f"GET /ws?token={token} HTTP/1.1\r\nHost: {host}:{port}\r\n"
                      "Upgrade: websocket\r\nConnection: Upgrade\r\n"
                      f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n").encode())
        buf = bytearray()
        while b"\r\n\r\n" not in buf:
            chunk = sock.recv(65536)
            if not chunk:
                raise ConnectionResetError("connection closed during the handshake")
            buf += chunk
            if len(buf) > 65536:
                raise ConnectionResetError("oversized handshake answer")
        head, _, rest = bytes(buf).partition(b"\r\n\r\n")
        status = int(head.split(b" ", 2)[1])
        if status != 101:
            code = "?"
            try:
                code = json.loads(rest.decode() or "{}").get("code", "?")
            except ValueError:
                pass
            raise Refused(status, code)
        self.t_upgraded = time.monotonic()
        import gevent
        self.reader = gevent.spawn(self._read_loop, bytearray(rest))

    # -- writing ------------------------------------------------------------------------

    def send_raw(self, data: bytes) -> None:
        with self.wlock:
            self.sock.sendall(data)

    def send_text(self, text: str) -> None:
        self.send_raw(_frame(text.encode()))

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        sock = self.sock
        if sock is None:
            return
        try:
            if self.wlock.acquire(timeout=0.2):
                try:
                    sock.sendall(_frame(struct.pack("!H", 1000), 0x8))
                finally:
                    self.wlock.release()
        except OSError:
            pass
        try:
            sock.close()
        except OSError:
            pass

    # -- reading ------------------------------------------------------------------------

    def _read_loop(self, buf: bytearray) -> None:
        sock = self.sock
        dispatch = self.worker.dispatch
        fragments: list[bytes] = []
        try:
            while True:
                pos, end = 0, len(buf)
                while end - pos >= 2:
                    b0, b1 = buf[pos], buf[pos + 1]
                    n, h = b1 & 0x7F, 2
                    if n == 126:
                        if end - pos < 4:
                            break
                        n, h = (buf[pos + 2] << 8) | buf[pos + 3], 4
                    elif n == 127:
                        if end - pos < 10:
                            break
                        n, h = int.from_bytes(buf[pos + 2:pos + 10], "big"), 10
                    if n > MAX_FRAME:
                        raise ConnectionResetError("frame too large")
                    if end - pos < h + n:
                        break
                    payload = bytes(buf[pos + h:pos + h + n])
                    pos += h + n
                    op = b0 & 0x0F
                    if op == 0x1 or op == 0x0:
                        if not b0 & 0x80:
                            fragments.append(payload)
                            continue
                        if fragments:
                            fragments.append(payload)
                            payload = b"".join(fragments)
                            fragments.clear()
                        dispatch(self, payload)
                    elif op == 0x9:
                        self.send_raw(_frame(payload, 0xA))
                    elif op == 0x8:
                        self.close_code = struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else 1005
                        return
                if pos:
                    del buf[:pos]
                data = sock.recv(262144)
                if not data:
                    return
                buf += data
        except (OSError, ValueError):
            return
        finally:
            if not self.closed:
                self.closed = True
                self.worker.counters[C_CLOSED] += 1
                try:
                    sock.close()
                except OSError:
                    pass
            self.connected_evt.set()          # wake a connect() waiting for `connected`


class Step:
    """One chat measurement step in this worker."""

    def __init__(self, cmd: dict):
        self.rec_from = cmd["rec_from"]
        self.stop_at = cmd["stop_at"]
        self.complete_on = cmd["complete_on"]          # "delivered" (gateway) or "receive" (relay)
        self.sent = 0
        self.done_in_window = 0
        self.failed = 0
        self.sent_ack = array.array("d")
        self.delivered_ack = array.array("d")
        self.receive = array.array("d")
        self.send_lag = array.array("d")       # open loop: actual send time - scheduled time
        self.error_codes: dict[str, int] = {}


class Worker:
    def __init__(self, index: int, conn, counters):
        self.index = index
        self.conn = conn
        self.counters = counters
        self.tags: dict[str, list[Client]] = {}
        self.by_uid: dict[int, Client] = {}
        self.step: Step | None = None

    def run(self) -> None:
        from gevent.socket import wait_read
        while True:
            try:
                wait_read(self.conn.fileno())
                cmd = self.conn.recv()
            except (EOFError, OSError):
                return
            if cmd["cmd"] == "exit":
                self._close_all()
                return
            try:
                result = getattr(self, "cmd_" + cmd["cmd"])(cmd)
            except Exception:  # noqa: BLE001 - reported to the parent
                result = {"error": traceback.format_exc(limit=8)}
            try:
                self.conn.send(result)
            except (OSError, ValueError):
                return

    # -- frame dispatch (reader greenlets) ----------------------------------------------

    def dispatch(self, client: Client, payload: bytes) -> None:
        frame = json.loads(payload)
        kind = frame.get("type")
        data = frame.get("data")
        if kind == "ack":
            self._on_ack(client, data)
        elif kind == "chat":
            if client.connected_at:
                self._on_chat(data)
            else:
                client.backlog += 1
                if client.backlog_ids is not None:
                    client.backlog_ids.add((data.get("fromUserId"), data.get("msgId")))
                self.counters[C_BACKLOG] += 1
        elif kind == "connected":
            client.connected_at = time.monotonic()
            client.connected_data = data
            self.counters[C_CONNECTED] += 1
            client.connected_evt.set()
        elif kind == "online":
            if client.online_from is not None and data.get("userId") == client.online_from \
                    and not client.online_at:
                client.online_at = time.monotonic()
                self.counters[C_ONLINE] += 1
        elif kind == "error":
            client.errors += 1
            self.counters[C_ERRORS] += 1
            step = self.step
            if step is not None:
                code = str(data.get("code"))
                step.error_codes[code] = step.error_codes.get(code, 0) + 1
                rec = client.inflight.pop(data.get("msgId"), None) if data.get("msgId") else None
                if rec is not None:
                    step.failed += 1
                    client.window.release()

    def _on_ack(self, client: Client, data: dict) -> None:
        rec = client.inflight.get(data.get("msgId"))
        if rec is None:
            return
        now = time.monotonic()
        if data.get("status") == "sent":
            rec[1] = now
        elif data.get("status") == "delivered":
            rec[3] = now
            if self.step is not None and self.step.complete_on == "delivered":
                self._finish(client, data["msgId"], rec, now)

    def _on_chat(self, data: dict) -> None:
        sender = self.by_uid.get(data.get("fromUserId"))
        if sender is None:
            return
        rec = sender.inflight.get(data.get("msgId"))
        if rec is None:
            return
        now = time.monotonic()
        rec[2] = now
        if self.step is not None and self.step.complete_on == "receive":
            self._finish(sender, data["msgId"], rec, now)

    def _finish(self, sender: Client, msg_id: str, rec: list[float], now: float) -> None:
        del sender.inflight[msg_id]
        sender.window.release()
        self.counters[C_DONE] += 1
        step = self.step
        if step.rec_from <= now < step.stop_at:
            step.done_in_window += 1
        t0 = rec[0]
        if step.rec_from <= t0 < step.stop_at:
            if rec[1]:
                step.sent_ack.append((rec[1] - t0) * 1000)
            if rec[3]:
                step.delivered_ack.append((rec[3] - t0) * 1000)
            if rec[2]:
                step.receive.append((rec[2] - t0) * 1000)

    # -- commands -------------------------------------------------------------------------

    def cmd_hello(self, cmd: dict) -> dict:
        return {"pid": os.getpid()}

    def cmd_connect(self, cmd: dict) -> dict:
        """Connect ``uids`` (tag ``tag``) and wait for each one's `connected`.

        ``start_at`` (monotonic): every client starts then, all at once (a storm);
        otherwise at most ``concurrency`` handshakes are under way at a time. With
        ``ports`` (the nodes of a cluster), user ``uid`` connects to
        ``ports[uid % len(ports)]``: consecutive ids land on different nodes."""
        import gevent
        from gevent.pool import Pool

        from skyeim.tokens import issue
        tag, host, port, timeout = cmd["tag"], cmd["host"], cmd["port"], cmd["timeout"]
        ports = cmd.get("ports") or [port]     # several gateway nodes: uid's node is uid % nodes
        secret = cmd["secret"]
        tokens = [(uid, issue(secret, uid, 7200)[0]) for uid in cmd["uids"]]
        clients = self.tags.setdefault(tag, [])
        outcomes: dict[str, int] = {}
        connect_ms, upgrade_ms = array.array("d"), array.array("d")
        starts, ends = [], []
        watch = cmd.get("watch_online")
        track = cmd.get("track_backlog", False)

        def one(uid: int, token: str) -> None:
            c = Client(uid, self, tag)
            c.online_from = watch
            if track:
                c.backlog_ids = set()
            clients.append(c)
            self.by_uid[uid] = c
            outcome = "ok"
            t = gevent.Timeout.start_new(timeout)
            try:
                c.connect(host, ports[uid % len(ports)], token)
                c.connected_evt.wait()
                if not c.connected_at:
                    outcome = f"closed {c.close_code}"
            except gevent.Timeout as e:
                if e is not t:
                    raise
                outcome = "timeout"
            except Refused as e:
                outcome = f"refused {e.status} {e.code}"
            except OSError as e:
                outcome = type(e).__name__
            finally:
                t.close()
            starts.append(c.t_start)
            if outcome == "ok":
                connect_ms.append((c.connected_at - c.t_start) * 1000)
                upgrade_ms.append((c.t_upgraded - c.t_start) * 1000)
                ends.append(c.connected_at)
            else:
                self.counters[C_FAILED] += 1
                c.close()
            outcomes[outcome] = outcomes.get(outcome, 0) + 1

        start_at = cmd.get("start_at")
        if start_at is not None:
            def at_start(uid: int, token: str) -> None:
                gevent.sleep(max(0.0, start_at - time.monotonic()))
                one(uid, token)
            gevent.joinall([gevent.spawn(at_start, u, tk) for u, tk in tokens],
                           timeout=max(0.0, start_at - time.monotonic()) + timeout + 5)
        else:
            pool = Pool(cmd.get("concurrency", 100))
            for u, tk in tokens:
                pool.spawn(one, u, tk)
            pool.join(timeout=timeout + 5 + len(tokens) * timeout / max(1, pool.size))
        result: dict[str, Any] = {
            "outcomes": outcomes, "connect_ms": connect_ms.tobytes(), "upgrade_ms": upgrade_ms.tobytes(),
            "first_start": min(starts) if starts else None,
            "last_start": max(starts) if starts else None,
            "last_connected": max(ends) if ends else None,
        }
        if track:
            result["backlog"] = [{"uid": c.uid, "frames": c.backlog, "distinct": len(c.backlog_ids or ()),
                                  "connected": c.connected_data, "t_start": c.t_start,
                                  "t_connected": c.connected_at} for c in clients]
        if cmd.get("want_connected"):
            result["connected"] = [{"uid": c.uid, "data": c.connected_data, "t_start": c.t_start,
                                    "t_connected": c.connected_at} for c in clients]
        return result

    def cmd_close(self, cmd: dict) -> dict:
        clients = self.tags.pop(cmd["tag"], [])
        for c in clients:
            if c.reader is not None:
                c.reader.kill(block=False)
            c.close()
            if self.by_uid.get(c.uid) is c:
                del self.by_uid[c.uid]
        return {"closed": len(clients)}

    def _close_all(self) -> None:
        for tag in list(self.tags):
            self.cmd_close({"tag": tag})

    def cmd_watch_online(self, cmd: dict) -> dict:
        for c in self.tags.get(cmd["tag"], []):
            c.online_from = cmd["user_id"]
            c.online_at = 0.0
        return {}

    def cmd_online_times(self, cmd: dict) -> dict:
        """Wait (bounded) until every client of ``tag`` got `online`; their arrival times."""
        import gevent
        clients = [c for c in self.tags.get(cmd["tag"], []) if c.connected_at]
        deadline = time.monotonic() + cmd["timeout"]
        while time.monotonic() < deadline and not all(c.online_at for c in clients):
            gevent.sleep(0.01)
        got = array.array("d", [c.online_at for c in clients if c.online_at])
        return {"times": got.tobytes(), "missing": sum(1 for c in clients if not c.online_at)}

    def cmd_chat_setup(self, cmd: dict) -> dict:
        """Pair up connected clients: ``pairs`` is a list of (index, a, b)."""
        pairs = []
        for idx, a, b in cmd["pairs"]:
            ca, cb = self.by_uid.get(a), self.by_uid.get(b)
            if ca is None or cb is None or not ca.connected_at or not cb.connected_at:
                raise RuntimeError(f"pair {idx}: users {a}, {b} not connected")
            ca.peer, cb.peer = b, a
            pairs.append((idx, ca, cb))
        self.pairs = pairs
        return {"pairs": len(pairs)}

    def cmd_chat_step(self, cmd: dict) -> dict:
        """Run one chat step on the pairs with index < ``pairs``.

        Closed loop (``rate`` None): each sender keeps ``window`` messages in
        flight. Open loop: each sender sends ``rate`` messages/s on a fixed
        schedule and latency counts from the scheduled time (no coordinated
        omission); ``window`` then only caps what is in flight. Latency samples
        are the messages scheduled within [rec_from, stop_at); throughput counts
        those completed within it."""
        import gevent
        from gevent.lock import Semaphore
        step = self.step = Step(cmd)
        active = [(i, a, b) for i, a, b in self.pairs if i < cmd["pairs"]]
        senders = [c for _, a, b in active for c in (a, b)]
        content = "x" * cmd["content_len"]
        window, rate = cmd["window"], cmd.get("rate")
        start_at, stop_at = cmd["start_at"], cmd["stop_at"]
        prefix = f"s{cmd['step_id']}w{self.index}"
        for c in senders:
            c.window = Semaphore(window)
            c.inflight.clear()

        def closed_loop(c: Client) -> None:
            seq, to, sem, inflight = 0, c.peer, c.window, c.inflight
            gevent.sleep(max(0.0, start_at - time.monotonic()))
            while True:
                if not sem.acquire(timeout=max(0.0, stop_at - time.monotonic())):
                    return
                now = time.monotonic()
                if now >= stop_at or c.closed:
                    sem.release()
                    return
                seq += 1
                mid = f"{prefix}u{c.uid}n{seq}"
                inflight[mid] = [now, 0.0, 0.0, 0.0]
                c.send_text('{"type":"chat","data":{"msgId":"%s","toUserId":%d,"content":"%s"}}'
                            % (mid, to, content))
                step.sent += 1
                self.counters[C_SENT] += 1

        def open_loop(c: Client, offset: float) -> None:
            seq, to, sem, inflight = 0, c.peer, c.window, c.inflight
            interval = 1.0 / rate
            t_next = start_at + offset * interval
            while t_next < stop_at and not c.closed:
                delay = t_next - time.monotonic()
                if delay > 0:
                    gevent.sleep(delay)
                if not sem.acquire(timeout=max(0.0, stop_at - time.monotonic())):
                    return
                seq += 1
                mid = f"{prefix}u{c.uid}n{seq}"
                inflight[mid] = [t_next, 0.0, 0.0, 0.0]     # latency from the scheduled time
                if step.rec_from <= t_next < stop_at:
                    step.send_lag.append((time.monotonic() - t_next) * 1000)
                c.send_text('{"type":"chat","data":{"msgId":"%s","toUserId":%d,"content":"%s"}}'
                            % (mid, to, content))
                step.sent += 1
                self.counters[C_SENT] += 1
                t_next += interval

        try:
            if rate is None:
                greenlets = [gevent.spawn(closed_loop, c) for c in senders]
            else:
                n = max(1, len(senders))
                greenlets = [gevent.spawn(open_loop, c, k / n) for k, c in enumerate(senders)]
            gevent.joinall(greenlets, timeout=max(0.0, stop_at - time.monotonic()) + 5)
            gevent.killall(greenlets, block=False)
            # drain: what is still in flight gets drain_timeout to complete
            drain_deadline = time.monotonic() + cmd["drain_timeout"]
            while any(c.inflight for c in senders) and time.monotonic() < drain_deadline:
                gevent.sleep(0.02)
            incomplete = sum(len(c.inflight) for c in senders)
        finally:
            self.step = None
        for c in senders:
            c.inflight.clear()
        return {
            "sent": step.sent, "done_in_window": step.done_in_window, "failed": step.failed,
            "incomplete": incomplete, "errors": step.error_codes,
            "closed": sum(1 for c in senders if c.closed),
            "sent_ack": step.sent_ack.tobytes(), "delivered_ack": step.delivered_ack.tobytes(),
            "receive": step.receive.tobytes(), "send_lag": step.send_lag.tobytes(),
        }
