"""Pure parts of PROTOCOL.md 9.3 / 9.4: the event body and its signature, the
Webhooks and Hooks config sections, the hub's bounded memory (remember/recall)
and the events the Webhooks feature makes from what it hears."""
from __future__ import annotations

import json

import pytest

from skyeim.config import ConfigError, GatewayConfig, from_mapping
from skyeim.gateway.features.webhooks import Webhooks, event_body
from skyeim.gateway.routing import hub as hub_module
from skyeim.gateway.routing.hub import Hub
from skyeim.protocol.signatures import sign, verify_signature


def test_an_event_body_has_id_event_timestamp_data_and_verifies():
    body = event_body("user.online", {"userId": 7}, timestamp=1_700_000_000_000)
    parsed = json.loads(body)
    assert set(parsed) == {"id", "event", "timestamp", "data"}
    assert parsed["event"] == "user.online" and parsed["data"] == {"userId": 7}
    assert json.loads(event_body("user.online", {"userId": 7}))["id"] != parsed["id"]
    header = sign(body, "s3cret")
    assert verify_signature(body, header, "s3cret")
    assert not verify_signature(body + b" ", header, "s3cret")


def config(**ws) -> GatewayConfig:
    cfg = from_mapping(GatewayConfig, {"Auth": {"AccessSecret": "x" * 40}, **ws})
    cfg.validate()
    return cfg


def test_the_sections_default_to_off_and_validate_their_keys():
    cfg = config()
    assert not cfg.webhooks.enabled and not cfg.hooks.before_send.enabled
    assert (cfg.webhooks.timeout, cfg.webhooks.max_attempts, cfg.webhooks.queue_size) == \
        (2000, 5, 10000)
    assert (cfg.hooks.before_send.timeout, cfg.hooks.before_send.on_error) == (500, "allow")
    with pytest.raises(ConfigError, match=r"Webhooks.Events\[0\]"):
        config(Webhooks={"Url": "http://h:1/x", "Events": ["user.login"]})
    with pytest.raises(ConfigError, match="Webhooks.Url"):
        config(Webhooks={"Url": "ftp://h/x"})
    with pytest.raises(ConfigError, match="Hooks.BeforeSend.OnError"):
        config(Hooks={"BeforeSend": {"Url": "http://h:1/x", "OnError": "maybe"}})
    with pytest.raises(ConfigError, match="Webhooks.QueueSize"):
        config(Webhooks={"QueueSize": 0})


class Recorder:
    def __init__(self):
        self.put_events: list[dict] = []

    def put(self, event: str, body: bytes) -> bool:
        self.put_events.append(json.loads(body))
        return True


def test_the_feature_sends_only_the_listed_events_and_offline_chats_only():
    cfg = config(Webhooks={"Url": "http://h:1/x", "Events": ["message.offline", "friend.added"]})
    sender = Recorder()
    hooks = Webhooks(cfg.webhooks, sender)
    stored = {"msgId": "m1", "fromUserId": 1, "toUserId": 2, "content": "hi", "contentType": 1,
              "createdAt": 5, "seq": 1, "duplicate": False, "delivered": False}
    hooks.user_online(1)
    hooks.chat_stored(stored, connections=1)          # delivered live: no push
    hooks.chat_stored(stored, connections=0)
    hooks.friendship_changed(1, 2, added=True)
    hooks.friendship_changed(1, 2, added=False)           # not listed
    assert [e["event"] for e in sender.put_events] == ["message.offline", "friend.added"]
    offline = sender.put_events[0]
    assert offline["data"] == {"message": {k: stored[k] for k in (
        "msgId", "fromUserId", "toUserId", "content", "contentType", "createdAt", "seq")}}
    # the same message's id is the same whoever makes it (receivers drop repeats)
    hooks.chat_stored(stored, connections=0)
    assert sender.put_events[-1]["id"] == offline["id"]


def test_the_hub_remembers_with_a_ttl_and_a_bound(monkeypatch):
    hub = Hub()
    hub.remember("a", "1", ttl=60)
    assert hub.recall("a") == "1" and hub.recall("b") is None
    hub.remember("gone", "x", ttl=-1)
    assert hub.recall("gone") is None
    monkeypatch.setattr(hub_module, "MEMO_MAX", 3)
    for k in "bcd":
        hub.remember(k, k, ttl=60)
    assert hub.recall("a") is None and hub.recall("d") == "d"
