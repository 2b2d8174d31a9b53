"""What the SDK knows of each conversation, for gap-free sync (docs/protocol.md, "Sync").

No I/O: ``Conversations`` turns what the client sees (chats, its own acks,
sync pages) into "is this message new?" and into the ``sync`` frames to send:
a catch-up after every (re)connect, and a range request when a gap in seq
shows up. The Client calls it under its own lock.
"""
from __future__ import annotations

import collections
import itertools

MAX_PER_FRAME = 100        # conversations in one sync frame (the gateway's limit)
PAGE = 200                 # messages per sync page (the contract's cap)
MAX_SEEN = 10_000          # message keys remembered to yield each message once
MAX_ABOVE = 10_000         # seqs held above a gap, per conversation
GAP_TRIES = 3              # range requests for one gap before it is given up

_rids = itertools.count(1)


class Conversations:
    def __init__(self, max_seen: int = MAX_SEEN):
        self.marks: dict[int, int] = {}          # peer -> every seq up to it is held
        self._above: dict[int, set[int]] = {}    # peer -> seqs held beyond a gap
        self._seen: collections.OrderedDict[tuple[int, str], None] = collections.OrderedDict()
        self._max_seen = max_seen
        self._busy: dict[int, str] = {}          # peer -> requestId of its sync in flight
        self._requests: dict[str, list[int]] = {}
        self._gap_tries: dict[int, tuple[int, int]] = {}   # peer -> (mark, tries) of its gap
        # peer -> serverTime of its last sync_complete: the next sync asks what was
        # recalled or edited since (unknown: 0, every change, a page at most)
        self._changed_since: dict[int, int] = {}

    # -- what the client sees -------------------------------------------------------
    def track(self, peer: int, last_seq: int) -> None:
        """The app holds ``peer``'s conversation up to ``last_seq`` (e.g. from its storage)."""
        self.marks[peer] = max(self.marks.get(peer, 0), last_seq)
        self._absorb(peer)

    def message(self, me: int | None, from_user: int | None, to_user: int | None,
                msg_id: str | None, seq: int | None) -> bool:
        """A chat seen (live, backlog or sync): True when it is new to the client."""
        if from_user is None or msg_id is None:
            return True                          # nothing to recognise it by
        key = (from_user, msg_id)
        if key in self._seen:
            self._seen.move_to_end(key)
            return False
        self._seen[key] = None
        if len(self._seen) > self._max_seen:
            self._seen.popitem(last=False)
        peer = to_user if from_user == me else from_user
        if peer is not None and seq is not None:
            self._held(peer, seq)
        return True

    def own(self, me: int | None, peer: int, msg_id: str, seq: int | None) -> None:
        """This client's own chat was stored (ack sent) as ``seq``."""
        if me is not None:
            self.message(me, me, peer, msg_id, seq)
        elif seq is not None:
            self._held(peer, seq)

    def _held(self, peer: int, seq: int) -> None:
        mark = self.marks.get(peer)
        if mark is None:
            # a conversation new to us: what came before is history, not a gap
            self.marks[peer] = seq
            return
        if seq <= mark:
            return
        above = self._above.setdefault(peer, set())
        above.add(seq)
        self._absorb(peer)
        if len(above) > MAX_ABOVE:               # a gap that never fills: give it up
            self.marks[peer] = min(above) - 1
            self._absorb(peer)

    def _absorb(self, peer: int) -> None:
        above = self._above.get(peer)
        if not above:
            return
        mark = self.marks[peer]
        while mark + 1 in above:                 # bounded by len(above)
            mark += 1
            above.discard(mark)
        self.marks[peer] = mark
        if not above:
            del self._above[peer]

    # -- what to send ---------------------------------------------------------------
    def catch_up(self, peers: list[int] | None = None) -> list[dict]:
        """Sync frames for every known conversation (or ``peers``) from its mark."""
        self._busy.clear()                       # a new connection: nothing is in flight
        self._requests.clear()
        wanted = [p for p in (self.marks if peers is None else peers) if p in self.marks]
        return self._frames([(p, self.marks[p], None) for p in wanted])

    def gaps(self) -> list[dict]:
        """Range requests for conversations with a gap and no sync in flight."""
        ranges = []
        for peer, above in self._above.items():
            if peer in self._busy or not above:
                continue
            mark = self.marks[peer]
            last_mark, tries = self._gap_tries.get(peer, (mark, 0))
            tries = tries + 1 if last_mark == mark else 1
            if tries > GAP_TRIES:
                continue                         # the server does not have it: stop asking
            self._gap_tries[peer] = (mark, tries)
            ranges.append((peer, mark, min(above)))
        return self._frames(ranges)

    def complete(self, request_id: str | None, conversations: list,
                 server_time: int | None = None) -> list[dict]:
        """A sync_complete: follow-up frames for conversations cut short, then gaps.
        ``server_time``: the next sync of these conversations asks what was recalled
        or edited since then (changedSince)."""
        peers = self._requests.pop(request_id, []) if request_id else []
        if server_time is not None:
            for p in peers:
                self._changed_since[p] = server_time
        for p in peers:
            if self._busy.get(p) == request_id:
                del self._busy[p]
        more = []
        for c in conversations if isinstance(conversations, list) else []:
            if isinstance(c, dict) and c.get("hasMore") is True and c.get("peerId") in peers:
                peer, last = c["peerId"], c.get("lastSeq")
                if type(last) is int:
                    more.append((peer, max(last, self.marks.get(peer, 0)), None))
        return self._frames(more) + self.gaps()

    def failed(self, request_id: str | None) -> None:
        """The gateway refused a sync (error with its requestId): it may be asked again."""
        for p in self._requests.pop(request_id, []) if request_id else []:
            if self._busy.get(p) == request_id:
                del self._busy[p]

    def _frames(self, ranges: list[tuple[int, int, int | None]]) -> list[dict]:
        frames = []
        for i in range(0, len(ranges), MAX_PER_FRAME):
            rid = f"sdk-{next(_rids)}"
            convs = []
            for peer, after, before in ranges[i:i + MAX_PER_FRAME]:
                conv = {"peerId": peer, "afterSeq": after}
                if before is not None:
                    conv["beforeSeq"] = before
                convs.append(conv)
                self._busy[peer] = rid
            self._requests[rid] = [c["peerId"] for c in convs]
            data = {"requestId": rid, "conversations": convs, "limit": PAGE}
            if convs:                             # recalls and edits since the last sync
                data["changedSince"] = min(self._changed_since.get(c["peerId"], 0) for c in convs)
            frames.append({"type": "sync", "data": data})
        return frames
