"""The messages gateway nodes send each other over Redis Pub/Sub (PROTOCOL.md section 8).

JSON objects with short keys, on three kinds of channel (``P`` is Cluster.KeyPrefix):

  P chan:<node>  UserFrame     {u, x, k?, s?, q?, w?}   a frame for a user connected on that node
  P kick         Kick          {kick, g, n, p?}     a user logged in anew (login number g on node n)
  P group        GroupFrame    {grp, x, not?, also?, n}  a group frame for every node's local members
                                                    (and the users in ``also``: a kicked member)
                 GroupChanged  {grp, changed, n}    a group's member list changed
                 Everyone      {all, n}             a frame for every node's connections (a notice)
                 Disconnect    {dis, n}             close a user's connections with 4003

The keys are the wire between nodes, perhaps of two versions during a rolling
upgrade: change them only in ways an older node still reads. ``decode`` raises
MalformedMessage (a ValueError) for anything else.
"""
from __future__ import annotations

import json
from dataclasses import dataclass

from skyeim.gateway.transport.session import Outgoing


class MalformedMessage(ValueError):
    """Not one of the messages below."""


@dataclass(frozen=True, slots=True)
class UserFrame:
    """A frame for ``user_id``'s connections on the node that hears it."""

    user_id: int
    text: str
    key: tuple[int, str] | None = None    # a chat's (fromUserId, msgId): recorded as delivered
    seq: int | None = None                # the chat's seq (with key)
    wait: float = 0.0                     # s a full send queue may take to drain (Session.send)
    quiet: bool = False                   # (with key) no `ack delivered` to the sender (q: 1)

    @classmethod
    def of(cls, user_id: int, item: str | Outgoing, wait: float = 0.0) -> "UserFrame":
        if isinstance(item, Outgoing):
            return cls(user_id, item.text, item.key, item.seq, wait, not item.ack)
        return cls(user_id, item, wait=wait)

    def item(self) -> str | Outgoing:
        """What to queue on the user's sessions."""
        return self.text if self.key is None else \
            Outgoing(self.text, self.key, self.seq, ack=not self.quiet)

    def encode(self) -> str:
        msg: dict = {"u": self.user_id, "x": self.text}
        if self.key is not None:
            msg.update(k=list(self.key), s=self.seq)
            if self.quiet:
                msg["q"] = 1
        if self.wait:
            msg["w"] = self.wait
        return json.dumps(msg)


@dataclass(frozen=True, slots=True)
class Kick:
    """``user_id`` logged in anew on ``node`` (login number ``gen``): every node closes the
    user's older connections (4001), only those of ``platform`` when given."""

    user_id: int
    gen: int
    node: str
    platform: str | None = None

    def encode(self) -> str:
        msg: dict = {"kick": self.user_id, "g": self.gen, "n": self.node}
        if self.platform is not None:
            msg["p"] = self.platform
        return json.dumps(msg)


@dataclass(frozen=True, slots=True)
class GroupFrame:
    """A group frame each node queues to its own online members (``not_user`` left out)."""

    group_id: int
    text: str
    not_user: int | None = None
    node: str = ""                        # the sender: set by the hub that publishes it
    also: tuple[int, ...] = ()            # users beside the members (a kick, a dismissal)

    def encode(self) -> str:
        msg: dict = {"grp": self.group_id, "x": self.text}
        if self.not_user is not None:
            msg["not"] = self.not_user
        if self.also:
            msg["also"] = list(self.also)
        msg["n"] = self.node
        return json.dumps(msg)


@dataclass(frozen=True, slots=True)
class GroupChanged:
    """A group's member list changed (an invite or a leave): every node forgets its copy."""

    group_id: int
    node: str = ""

    def encode(self) -> str:
        return json.dumps({"grp": self.group_id, "changed": True, "n": self.node})


@dataclass(frozen=True, slots=True)
class Everyone:
    """A frame for every live connection on every node (a server API notice to everyone)."""

    text: str
    node: str = ""

    def encode(self) -> str:
        return json.dumps({"all": self.text, "n": self.node})


@dataclass(frozen=True, slots=True)
class Disconnect:
    """Every node closes ``user_id``'s connections with 4003 (the server API's disconnect)."""

    user_id: int
    node: str = ""

    def encode(self) -> str:
        return json.dumps({"dis": self.user_id, "n": self.node})


Broadcast = GroupFrame | GroupChanged | Everyone | Disconnect    # what goes to every node
Message = UserFrame | Kick | GroupFrame | GroupChanged | Everyone | Disconnect


def decode(data: str | bytes) -> Message:
    try:
        msg = json.loads(data)
    except ValueError:
        raise MalformedMessage("not JSON") from None
    if not isinstance(msg, dict):
        raise MalformedMessage("not a JSON object")
    try:
        if "kick" in msg:
            return Kick(int(msg["kick"]), int(msg["g"]), _str(msg["n"]), _opt_str(msg.get("p")))
        if "all" in msg:
            return Everyone(_str(msg["all"]), _str(msg["n"]))
        if "dis" in msg:
            return Disconnect(_int(msg["dis"]), _str(msg["n"]))
        if "grp" in msg:
            gid, node = _int(msg["grp"]), _str(msg["n"])
            if msg.get("changed"):
                return GroupChanged(gid, node)
            not_user, also = msg.get("not"), msg.get("also", [])
            if not isinstance(also, list):
                raise MalformedMessage("also must be a list of user ids")
            return GroupFrame(gid, _str(msg["x"]), None if not_user is None else _int(not_user),
                              node, tuple(_int(u) for u in also))
        uid, text = _int(msg["u"]), _str(msg["x"])
        wait = msg.get("w", 0.0)
        if isinstance(wait, bool) or not isinstance(wait, (int, float)) or wait < 0:
            raise MalformedMessage("w must be a number of seconds")
        if "k" not in msg:
            return UserFrame(uid, text, wait=wait)
        sender, msg_id = msg["k"]
        return UserFrame(uid, text, (_int(sender), _str(msg_id)), _int(msg["s"]), wait,
                         bool(msg.get("q")))
    except (KeyError, TypeError, ValueError) as e:     # (int() of junk, a k of the wrong length)
        raise MalformedMessage(str(e)) from None


def _int(v: object) -> int:
    if type(v) is not int:
        raise MalformedMessage(f"{v!r} is not an integer")
    return v


def _str(v: object) -> str:
    if not isinstance(v, str):
        raise MalformedMessage(f"{v!r} is not a string")
    return v


def _opt_str(v: object) -> str | None:
    return None if v is None else _str(v)
