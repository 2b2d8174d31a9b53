"""Users chatting without pause through SDK clients (one thread each), for
tests that do something to a live system, such as a backup, and then check
what was acknowledged."""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass

from harness import Client as RawClient
from harness import System, User
from skyeim.client import Backoff, Client
from skyeim.client.errors import SkyeIMError

FRAME_TIMEOUT = 10.0        # s a raw client waits for the frame it looks for
MAX_SECONDS = 120.0         # a load runs at most this long, stopped or not
MAX_PER_USER = 20_000       # chats one user sends at most
GROUP_EVERY = 5             # every 5th message of a user goes to the group


@dataclass(frozen=True)
class Acked:
    """A message the gateway acknowledged `sent`, and when (time.monotonic())."""
    from_user_id: int
    msg_id: str
    seq: int
    to_user_id: int | None     # a 1:1 chat
    group_id: int | None       # a group message
    at: float


class ChatLoad:
    """Each user of ``partners`` (user, partner) sends to its partner, and every
    GROUP_EVERY-th message to the group, waiting for each `sent` ack (the
    SDK's rate limit paces it)."""

    def __init__(self, system: System, partners: list[tuple[User, User]], group_id: int):
        self.acked: list[Acked] = []
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._clients = [Client(system.url, u.token, backoff=Backoff(base=0.05, cap=0.5), max_queue=0)
                         for u, _ in partners]
        self._threads = [threading.Thread(target=self._run, args=(c, u, p, group_id), daemon=True)
                         for c, (u, p) in zip(self._clients, partners)]

    def start(self) -> "ChatLoad":
        for c in self._clients:
            c.connect()
        for t in self._threads:
            t.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(30)
        for c in self._clients:
            c.close(timeout=3)

    def count(self) -> int:
        with self._lock:
            return len(self.acked)

    def acked_before(self, moment: float) -> list[Acked]:
        with self._lock:
            return [a for a in self.acked if a.at < moment]

    def _run(self, client: Client, user: User, partner: User, group_id: int) -> None:
        deadline = time.monotonic() + MAX_SECONDS
        for i in range(MAX_PER_USER):
            if self._stop.is_set() or time.monotonic() > deadline:
                return
            to_group = i % GROUP_EVERY == GROUP_EVERY - 1
            msg_id = f"load-{user.id}-{i}"
            try:
                if to_group:
                    r = client.send_groupchat(group_id, f"group #{i}", msg_id=msg_id)
                else:
                    r = client.send_chat(partner.id, f"chat #{i}", msg_id=msg_id)
            except SkyeIMError as e:
                with self._lock:
                    self.errors.append(f"{user} {msg_id}: {e!r}")
                return
            with self._lock:
                self.acked.append(Acked(user.id, msg_id, r.seq or 0, None if to_group else partner.id,
                                        group_id if to_group else None, time.monotonic()))


def until(client: RawClient, match) -> dict:
    """The first frame that ``match``es, skipping others (bounded by FRAME_TIMEOUT)."""
    deadline = time.monotonic() + FRAME_TIMEOUT
    while True:
        frame = client.recv_frame(max(deadline - time.monotonic(), 0.01))
        if match(frame):
            return frame


def sent_ack(client: RawClient, msg_id: str) -> dict:
    """The `sent` ack of ``msg_id`` (an unread push, presence ... skipped)."""
    return until(client, lambda f: f["type"] == "ack" and f["data"].get("msgId") == msg_id
                 and f["data"]["status"] == "sent")["data"]
