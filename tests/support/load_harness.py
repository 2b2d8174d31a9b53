"""Tools for the fault, storm and soak tests: /metrics scraping, chat traffic in
threads that records every message acked `sent`, the store check at the end,
and the real faults (a process holding SQLite's write lock, a disk that fills).
"""
from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Iterator

import pytest
import requests

from harness import Client, ConnectionClosed, NoFrame, System, User, reap

# ---------------------------------------------------------------------------
# /metrics


def scrape(url: str) -> dict[str, float]:
    """A program's /metrics as {series: value} (labels kept in the series name)."""
    r = requests.get(url + "/metrics", timeout=10)
    assert r.status_code == 200, r.status_code
    values = {}
    for line in r.text.splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            values[name] = float(value)
    return values


def series(values: dict[str, float], prefix: str) -> dict[str, float]:
    return {k: v for k, v in values.items() if k.startswith(prefix)}


PROCESS_FIGURES = ("process_resident_memory_bytes", "process_open_fds", "skyeim_greenlets")


def process_figures(url: str) -> dict[str, float]:
    m = scrape(url)
    return {k: m[k] for k in PROCESS_FIGURES}


# ---------------------------------------------------------------------------
# chat traffic

class ChatPeer(threading.Thread):
    """One client that sends chats to ``to`` (``window`` unanswered at most, a
    chat every ``interval`` s) and reads everything, until stopped or closed.

    ``acked`` holds every msgId acked `sent`; ``failed`` those answered with an
    error; ``received`` the msgIds of chats that reached it; ``close_code``
    the code of the server's close frame (None while open or without one)."""

    def __init__(self, client: Client, to: User, *, window: int = 4, interval: float = 0.02,
                 prefix: str = "load"):
        super().__init__(daemon=True)
        self.client, self.to = client, to
        self.window, self.interval, self.prefix = window, interval, prefix
        self.acked: list[str] = []
        self.failed: dict[str, str] = {}
        self.received: set[str] = set()
        self.outstanding: set[str] = set()
        self.close_code: int | None = None
        self.closed = False
        self.problem: str | None = None     # anything the protocol does not allow
        self._halt = threading.Event()
        self._n = 0

    def stop(self) -> None:
        self._halt.set()

    def run(self) -> None:
        next_send = time.monotonic()
        while True:                     # bounded: stop() or the server's close ends it
            now = time.monotonic()
            if (not self._halt.is_set() and len(self.outstanding) < self.window
                    and now >= next_send):
                self._n += 1
                try:
                    mid = self.client.chat(self.to, f"{self.prefix} {self._n}")
                except Exception:       # noqa: BLE001 - the socket is gone: read the close
                    mid = None
                if mid is not None:
                    self.outstanding.add(mid)
                next_send = now + self.interval
            if self._halt.is_set() and not self.outstanding:
                return
            try:
                frame = self.client.recv_frame(timeout=0.05 if not self._halt.is_set() else 5.0)
            except NoFrame:
                if self._halt.is_set():
                    return              # answers that never came: outstanding, not acked
                continue
            except ConnectionClosed as e:
                self.close_code, self.closed = e.code, True
                return
            except AssertionError as e:
                self.problem = str(e)
                return
            kind, data = frame["type"], frame.get("data") or {}
            if kind == "ack" and data.get("status") == "sent":
                self.outstanding.discard(data["msgId"])
                self.acked.append(data["msgId"])
            elif kind == "error":
                self.outstanding.discard(data.get("msgId"))
                self.failed[data.get("msgId")] = data.get("code")
            elif kind == "chat":
                self.received.add(data["msgId"])

    def finish(self, timeout: float = 30.0) -> None:
        self.stop()
        self.join(timeout)
        assert not self.is_alive(), f"{self.client}: load thread did not finish"


def stored_ids(system: System, a: User | int, b: User | int, max_pages: int = 1000) -> set[str]:
    """Every msgId stored between two users, read from the Message service's history."""
    a_id = a.id if isinstance(a, User) else a
    b_id = b.id if isinstance(b, User) else b
    ids: set[str] = set()
    params: dict = {"userId": a_id, "peerId": b_id, "limit": 200}
    for _ in range(max_pages):
        r = system.service("message", "GET", "/v1/messages/history", params=params)
        assert r.status_code == 200, r.text
        body = r.json()
        ids.update(m["msgId"] for m in body["messages"])
        if not body["hasMore"] or not body["messages"]:
            return ids
        params["beforeSeq"] = body["messages"][-1]["seq"]
    raise AssertionError("history longer than max_pages")


def assert_all_stored(system: System, peers: list[ChatPeer]) -> int:
    """Every msgId any peer saw acked `sent` is in the store; returns how many."""
    total = 0
    by_pair: dict[tuple[int, int], set[str]] = {}
    for p in peers:
        key = tuple(sorted((p.client.user_id, p.to.id)))
        by_pair.setdefault(key, set()).update(p.acked)
    for (a, b), acked in by_pair.items():
        missing = acked - stored_ids(system, a, b)
        assert not missing, f"{len(missing)} acked messages lost between {a} and {b}: {sorted(missing)[:5]}"
        total += len(acked)
    return total


# ---------------------------------------------------------------------------
# real faults

@contextlib.contextmanager
def sqlite_write_lock(db_path: Path, timeout: float = 10.0) -> Iterator[subprocess.Popen]:
    """Another process holds ``BEGIN EXCLUSIVE`` on the SQLite file until the block ends.

    (In WAL mode that is the write lock: writers wait, readers go on.)"""
    code = ("import sqlite3, sys\n"
            "c = sqlite3.connect(sys.argv[1], isolation_level=None, timeout=10)\n"
            "c.execute('BEGIN EXCLUSIVE')\n"
            "print('locked', flush=True)\n"
            "sys.stdin.readline()\n"
            "c.execute('ROLLBACK')\n")
    proc = subprocess.Popen([sys.executable, "-c", code, str(db_path)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    try:
        ready = [None]
        t = threading.Thread(target=lambda: ready.__setitem__(0, proc.stdout.readline()), daemon=True)
        t.start()
        t.join(timeout)
        assert ready[0] == "locked\n", f"the lock holder did not take the lock: {ready[0]!r}"
        yield proc
    finally:
        with contextlib.suppress(Exception):
            proc.stdin.write("\n")
            proc.stdin.flush()
        reap(proc, 5)


@contextlib.contextmanager
def small_disk(size: str = "4m") -> Iterator[Path]:
    """A tmpfs of ``size`` (a real file system that can fill up: ENOSPC, as a full
    disk). Mounting needs root on Linux; without it the test is skipped."""
    if sys.platform != "linux" or os.geteuid() != 0:
        pytest.skip("a small file system that can fill up needs root on Linux (mount -t tmpfs)")
    mnt = Path(tempfile.mkdtemp(prefix="skyeim-small-disk-"))
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mnt)],
                       capture_output=True, text=True, timeout=10)
    if r.returncode != 0:
        mnt.rmdir()
        pytest.skip(f"cannot mount a tmpfs here: {r.stderr.strip()}")
    try:
        yield mnt
    finally:
        # lazy: a service that still has its files open must not keep the mount
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True, timeout=10)
        with contextlib.suppress(OSError):
            mnt.rmdir()


def fill_disk(directory: Path) -> Path:
    """Write a filler file until the file system says ENOSPC; returns its path."""
    filler = directory / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
    chunk = b"\0" * 65536
    try:
        for _ in range(1_000_000):       # bounded: the tmpfs fills long before
            try:
                os.write(fd, chunk)
            except OSError:
                chunk = chunk[:len(chunk) // 2]   # top off the last bytes
                if not chunk:
                    break
    finally:
        os.close(fd)
    return filler
