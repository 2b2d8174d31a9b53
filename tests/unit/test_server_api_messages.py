"""The cluster messages the server API adds (routing/messages.py: Everyone,
Disconnect, UserFrame's quiet flag) and the Hub calls it uses."""
from __future__ import annotations

import json

import pytest

from skyeim.gateway.routing.hub import Hub
from skyeim.gateway.routing.messages import Disconnect, Everyone, MalformedMessage, UserFrame, decode
from skyeim.gateway.transport.session import Outgoing


@pytest.mark.parametrize("message", [
    Everyone('{"type":"notice"}', "node-a"),
    Disconnect(5, "node-a"),
    UserFrame(5, '{"type":"chat"}', (9, "m1"), 42, quiet=True),
])
def test_round_trip(message):
    assert decode(message.encode()) == message


def test_the_wire():
    assert json.loads(Everyone("x", "n").encode()) == {"all": "x", "n": "n"}
    assert json.loads(Disconnect(5, "n").encode()) == {"dis": 5, "n": "n"}
    assert json.loads(UserFrame(5, "x", (9, "m"), 4, quiet=True).encode()) == \
        {"u": 5, "x": "x", "k": [9, "m"], "s": 4, "q": 1}
    assert "q" not in json.loads(UserFrame(5, "x", (9, "m"), 4).encode())


def test_a_server_api_chat_stays_without_sender_ack_across_nodes():
    item = decode(UserFrame.of(5, Outgoing("t", (9, "m"), 4, ack=False)).encode()).item()
    assert isinstance(item, Outgoing) and item.ack is False
    item = decode(UserFrame.of(5, Outgoing("t", (9, "m"), 4)).encode()).item()
    assert item.ack is True


@pytest.mark.parametrize("data", ['{"all": 3, "n": "a"}', '{"all": "x"}', '{"dis": "5", "n": "a"}',
                                  '{"dis": 5}'])
def test_malformed(data):
    with pytest.raises(MalformedMessage):
        decode(data)


class _Sink:
    def __init__(self, user_id: int):
        self.user_id, self.gen, self.platform = user_id, 0, "web"
        self.got: list = []

    def send(self, item, wait: float = 0.0) -> bool:
        self.got.append(item)
        return True


def test_hub_everyone_here_sessions_and_counts():
    hub = Hub()
    a1, a2, b = _Sink(1), _Sink(1), _Sink(2)
    hub.register(a1, "allow")
    hub.register(a2, "allow")
    hub.register(b, "allow")
    assert hub.send_to_everyone_here("n") == 3
    assert [s.got for s in (a1, a2, b)] == [["n"], ["n"], ["n"]]
    assert hub.sessions_here(1) == [a1, a2] and hub.sessions_here(3) == []
    assert hub.local_connections() == hub.connection_count() == 3
    hub.unregister(a1)
    assert hub.connection_count() == 2
