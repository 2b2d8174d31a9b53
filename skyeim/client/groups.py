"""Group state of a Client (extension: docs/protocol.md "Groups"): per group the
highest seq it holds, the messages it has yielded (each once, live or from a
sync page), and the sync frames that fetch what `group_unread` says is missing.
Not thread-safe by itself: the Client calls it (through inbox.py) under its lock."""
from __future__ import annotations

import collections
import itertools

MAX_GROUPS = 10_000          # groups whose seq is tracked
MAX_SEEN = 10_000            # (groupId, seq) keys remembered to yield each message once
MAX_PER_FRAME = 100          # conversations in one sync frame (the gateway's bound)
MAX_PENDING = 64             # group sync requests awaiting their sync_complete

_rids = itertools.count(1)


class GroupSeqs:
    def __init__(self) -> None:
        self.held: dict[int, int] = {}
        self._seen: collections.OrderedDict[tuple[int, int], None] = collections.OrderedDict()
        self._pending: collections.OrderedDict[str, list[int]] = collections.OrderedDict()
        # group -> serverTime of its last sync_complete: the next sync asks what was
        # recalled or edited since (unknown: 0, every change, a page at most)
        self._changed_since: dict[int, int] = {}

    def track(self, group_id: int, seq: int) -> None:
        if seq > self.held.get(group_id, 0):
            self.held[group_id] = seq
            while len(self.held) > MAX_GROUPS:
                del self.held[next(iter(self.held))]

    def message(self, group_id: int | None, seq: int | None) -> bool:
        """True the first time this message is seen (then it is yielded)."""
        if group_id is None or seq is None:
            return True
        key = (group_id, seq)
        if key in self._seen:
            return False
        self._seen[key] = None
        while len(self._seen) > MAX_SEEN:
            self._seen.popitem(last=False)
        self.track(group_id, seq)
        return True

    def on_unread(self, groups) -> list[dict]:
        """`group_unread`: sync frames for every group with messages beyond what is held
        (from the read cursor when nothing is held), and for every group of which some
        messages are held, to hear what was recalled or edited meanwhile."""
        ranges = []
        for g in groups:
            gid, last, read = g.get("groupId"), g.get("lastSeq"), g.get("readSeq")
            if type(gid) is not int or type(last) is not int:
                continue
            after = self.held.get(gid, read if type(read) is int else 0)
            if last > after or gid in self.held:
                ranges.append((gid, after))
        return self._frames(ranges)

    def complete(self, request_id: str | None, conversations,
                 server_time: int | None = None) -> list[dict]:
        """`sync_complete` of one of ours: follow-ups for groups cut short. ``server_time``:
        the next sync of these groups asks what changed since then (changedSince)."""
        if request_id is None or request_id not in self._pending:
            return []
        groups = self._pending.pop(request_id)
        if server_time is not None:
            for gid in groups:
                self._changed_since[gid] = server_time
                while len(self._changed_since) > MAX_GROUPS:
                    del self._changed_since[next(iter(self._changed_since))]
        more = [(c["groupId"], c["lastSeq"]) for c in conversations
                if isinstance(c, dict) and c.get("hasMore") is True
                and type(c.get("groupId")) is int and type(c.get("lastSeq")) is int]
        return self._frames(more)

    def sync_from(self, group_id: int, after_seq: int | None = None) -> list[dict]:
        """The sync frame for one group's messages after ``after_seq`` (default: the seq held)."""
        after = self.held.get(group_id, 0) if after_seq is None else after_seq
        return self._frames([(group_id, after)])

    def failed(self, request_id: str | None) -> None:
        if request_id is not None:
            self._pending.pop(request_id, None)

    def _frames(self, ranges: list[tuple[int, int]]) -> list[dict]:
        frames = []
        for i in range(0, len(ranges), MAX_PER_FRAME):
            rid = f"sdk-g{next(_rids)}"
            chunk = ranges[i:i + MAX_PER_FRAME]
            self._pending[rid] = [gid for gid, _ in chunk]
            while len(self._pending) > MAX_PENDING:
                self._pending.popitem(last=False)
            frames.append({"type": "sync", "data": {
                "requestId": rid,
                "conversations": [{"groupId": gid, "afterSeq": after} for gid, after in chunk],
                # recalls and edits since the last sync of these groups
                "changedSince": min(self._changed_since.get(gid, 0) for gid, _ in chunk)}})
        return frames
