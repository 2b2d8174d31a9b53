"""The Message service as it runs in production: ``python -m skyeim.message
-f <yaml>`` on a free port, spoken to over HTTP, on SQLite and on PostgreSQL.

PostgreSQL comes from SKYEIM_TEST_POSTGRES_URL (default: postgres on
127.0.0.1:5432); each test session gets a fresh database, dropped afterwards.
If PostgreSQL is unreachable its tests are skipped, unless
SKYEIM_REQUIRE_SERVICES=1, which makes that a failure.
"""
from __future__ import annotations

import itertools
import json
import logging
import os
import random
import subprocess
import sys
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests
import sqlalchemy as sa

from service_harness import POSTGRES_URL, REPO, STOP_TIMEOUT, ServiceProcess, database_url, free_port
import skyeim
from skyeim.db import Database, now_ms
from skyeim.message import store

SECRET = "message-test-secret"
HTTP_TIMEOUT = 10          # s per request
MAX_ID = 2**63 - 1
CHAT_KEYS = {"msgId", "fromUserId", "toUserId", "content", "contentType", "createdAt", "seq"}

pytestmark = pytest.mark.timeout(180)


# -- processes and databases ---------------------------------------------------

class MessageService(ServiceProcess):
    """One ``python -m skyeim.message`` process on a free 127.0.0.1 port, run in ``workdir``."""

    def __init__(self, workdir: Path, data_source: str):
        super().__init__("skyeim.message", {"Name": "message", "DataSource": data_source,
                                            "InternalSecret": SECRET, "PoolSize": 8},
                         workdir, cwd=workdir)

    def get(self, path: str, **params) -> requests.Response:
        return self.session.get(self.url + path, params=params, timeout=HTTP_TIMEOUT)

    def post(self, path: str, body) -> requests.Response:
        return self.session.post(self.url + path, json=body, timeout=HTTP_TIMEOUT)

    # the happy paths, asserting 200

    def send(self, from_user: int, to_user: int, content: str = "hello", msg_id: str | None = None,
             **extra) -> dict:
        body = {"msgId": msg_id or uuid.uuid4().hex, "fromUserId": from_user, "toUserId": to_user,
                "content": content, **extra}
        r = self.post("/v1/messages", body)
        assert r.status_code == 200, r.text
        return r.json()

    def unread(self, user: int, **params) -> dict:
        r = self.get("/v1/messages/unread", userId=user, **params)
        assert r.status_code == 200, r.text
        return r.json()

    def all_unread(self, user: int) -> list[dict]:
        return self.unread(user, limit=200)["messages"]

    def delivered(self, user: int, keys: list[tuple[int, str]]) -> list[dict]:
        r = self.post("/v1/messages/delivered",
                      {"userId": user, "messages": [{"fromUserId": f, "msgId": m} for f, m in keys]})
        assert r.status_code == 200, r.text
        return r.json()["messages"]

    def read(self, user: int, peer: int, msg_ids=None, omit: bool = False) -> dict:
        body = {"userId": user, "peerId": peer}
        if not omit:
            body["msgIds"] = msg_ids
        r = self.post("/v1/messages/read", body)
        assert r.status_code == 200, r.text
        return r.json()

    def history(self, user: int, peer: int, **params) -> dict:
        r = self.get("/v1/messages/history", userId=user, peerId=peer, **params)
        assert r.status_code == 200, r.text
        return r.json()

    def conversation(self, user: int, peer: int, **params) -> dict:
        r = self.get("/v1/messages/conversation", userId=user, peerId=peer, **params)
        assert r.status_code == 200, r.text
        return r.json()


@pytest.fixture(scope="session")
def postgres_url(tmp_path_factory):
    with database_url("postgresql", tmp_path_factory.getbasetemp(), "message") as url:
        yield url


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def data_source(request, tmp_path_factory):
    if request.param == "postgresql":
        yield request.getfixturevalue("postgres_url")
        return
    # in a directory that does not exist yet: the service creates it
    with database_url("sqlite", tmp_path_factory.mktemp("sqlite") / "data", "message") as url:
        yield url


@pytest.fixture(scope="module")
def svc(data_source, tmp_path_factory):
    service = MessageService(tmp_path_factory.mktemp("svc"), data_source)
    yield service
    assert service.stop() == 0, service.log()


@pytest.fixture(scope="module")
def svc2(data_source, tmp_path_factory, svc):
    """A second process on the same database, as when a service is scaled out."""
    service = MessageService(tmp_path_factory.mktemp("svc2"), data_source)
    yield service
    assert service.stop() == 0, service.log()


# Every test uses users of its own, so tests share a process without interfering.
_user_ids = itertools.count(random.randrange(10**12, 10**15) * 1000)


def users(n: int) -> list[int]:
    return [next(_user_ids) for _ in range(n)]


# -- sending -------------------------------------------------------------------

def test_send_returns_the_stored_chat_message(svc):
    a, b = users(2)
    before = now_ms()
    got = svc.send(a, b, "hi there 👋", msg_id="m-1_A")
    after = now_ms()
    assert set(got) == CHAT_KEYS | {"duplicate", "delivered", "deliveredAt"}
    assert got["msgId"] == "m-1_A"
    assert (got["fromUserId"], got["toUserId"]) == (a, b)
    assert got["content"] == "hi there 👋"
    assert got["contentType"] == 1
    assert before <= got["createdAt"] <= after
    assert got["seq"] == 1
    assert (got["duplicate"], got["delivered"], got["deliveredAt"]) == (False, False, None)


def test_send_accepts_every_content_type_and_the_extreme_ids(svc):
    a, b = users(2)
    for content_type in (1, 2, 3, 4):
        got = svc.send(a, b, "https://example.com/x", contentType=content_type)
        assert got["contentType"] == content_type
    assert svc.send(a, b, "null type", contentType=None)["contentType"] == 1
    got = svc.send(MAX_ID, 1, "x" * 16384, msg_id="z" * 64)
    assert (got["fromUserId"], got["toUserId"], got["msgId"]) == (MAX_ID, 1, "z" * 64)
    assert len(svc.history(1, MAX_ID, limit=1)["messages"][0]["content"]) == 16384


def test_content_keeps_nul_and_any_unicode(svc):
    # U+0000 is a legal character; PostgreSQL's text type cannot hold it, so content is stored as UTF-8 bytes
    a, b = users(2)
    content = "a\u0000b \U0001F600 \u00e9\u0301 \u202e"
    assert svc.send(a, b, content)["content"] == content
    assert svc.history(a, b, limit=1)["messages"][0]["content"] == content
    assert svc.all_unread(b)[0]["content"] == content


def test_send_without_msg_id_gets_a_uuid(svc):
    a, b = users(2)
    for body in ({}, {"msgId": None}):
        r = svc.post("/v1/messages", {"fromUserId": a, "toUserId": b, "content": "x", **body})
        assert r.status_code == 200, r.text
        assert str(uuid.UUID(r.json()["msgId"])) == r.json()["msgId"]


def test_duplicate_returns_the_original_message(svc):
    a, b = users(2)
    first = svc.send(a, b, "original", msg_id="dup-1")
    time.sleep(0.01)
    again = svc.send(a, b, "changed", msg_id="dup-1", contentType=2)
    assert again["duplicate"] is True
    assert {k: again[k] for k in CHAT_KEYS} == {k: first[k] for k in CHAT_KEYS}
    assert again["content"] == "original"
    # the duplicate took no seq
    assert svc.send(a, b, "next")["seq"] == first["seq"] + 1
    assert [m["content"] for m in svc.all_unread(b)] == ["original", "next"]


def test_duplicate_after_delivery_reports_the_delivery(svc):
    a, b = users(2)
    svc.send(a, b, msg_id="d1")
    [marked] = svc.delivered(b, [(a, "d1")])
    again = svc.send(a, b, msg_id="d1")
    assert (again["duplicate"], again["delivered"], again["deliveredAt"]) == (True, True, marked["deliveredAt"])


def test_same_msg_id_from_different_senders_are_different_messages(svc):
    a, b, c = users(3)
    assert svc.send(a, c, "from a", msg_id="same")["duplicate"] is False
    assert svc.send(b, c, "from b", msg_id="same")["duplicate"] is False
    assert [m["content"] for m in svc.all_unread(c)] == ["from a", "from b"]


def test_seq_counts_per_conversation_in_both_directions(svc):
    a, b, c = users(3)
    assert svc.send(a, b)["seq"] == 1
    assert svc.send(b, a)["seq"] == 2
    assert svc.send(a, c)["seq"] == 1
    assert svc.send(a, b)["seq"] == 3
    assert svc.send(c, a)["seq"] == 2


def test_concurrent_sends_get_gapless_seqs_across_processes(svc, svc2):
    a, b = users(2)
    n = 160

    def send(i: int) -> dict:
        service = (svc, svc2)[i % 2]
        frm, to = (a, b) if i % 3 else (b, a)
        return service.send(frm, to, f"c{i}", msg_id=f"c{i}")

    with ThreadPoolExecutor(16) as pool:
        sent = list(pool.map(send, range(n)))
    assert sorted(m["seq"] for m in sent) == list(range(1, n + 1))
    history = svc.history(a, b, limit=200)["messages"]
    assert [m["seq"] for m in history] == list(range(n, 0, -1))
    # seq order is storage order: the unread walk of each side agrees with it
    for user in (a, b):
        seqs = [m["seq"] for m in svc.all_unread(user)]
        assert seqs == sorted(seqs)


def test_concurrent_duplicates_store_one_message(svc, svc2):
    a, b = users(2)
    svc.send(a, b, "before")
    n = 16
    barrier = threading.Barrier(n)

    def send(i: int) -> dict:
        barrier.wait(timeout=HTTP_TIMEOUT)
        return (svc, svc2)[i % 2].send(a, b, f"version {i}", msg_id="race")

    with ThreadPoolExecutor(n) as pool:
        results = list(pool.map(send, range(n)))
    originals = [r for r in results if not r["duplicate"]]
    assert len(originals) == 1
    for r in results:
        assert {k: r[k] for k in CHAT_KEYS} == {k: originals[0][k] for k in CHAT_KEYS}
    assert originals[0]["seq"] == 2
    assert svc.send(a, b, "after")["seq"] == 3      # no seq was lost to the losers
    assert [m["content"] for m in svc.all_unread(b)] == ["before", originals[0]["content"], "after"]


# -- sending in batches (what the gateway uses under load) ----------------------

def send_batch(service, bodies) -> list[dict]:
    r = service.post("/v1/messages/batch", {"messages": bodies})
    assert r.status_code == 200, r.text
    results = r.json()["results"]
    assert len(results) == len(bodies)
    return results


def test_batch_stores_each_message_as_a_single_send_would(svc):
    a, b, c = users(3)
    svc.send(a, b, "before")
    bodies = [{"msgId": f"b{i}", "fromUserId": frm, "toUserId": to, "content": f"m{i}",
               "contentType": 1 + i % 4}
              for i, (frm, to) in enumerate([(a, b), (b, a), (a, c), (a, b), (c, a)])]
    results = send_batch(svc, bodies)
    for body, r in zip(bodies, results):
        assert {k: r[k] for k in ("msgId", "fromUserId", "toUserId", "content", "contentType")} == body
        assert r["duplicate"] is False and r["delivered"] is False and r["deliveredAt"] is None
        assert set(r) == CHAT_KEYS | {"duplicate", "delivered", "deliveredAt"}
    # seqs per conversation, in the order the batch listed them
    assert [r["seq"] for r in results] == [2, 3, 1, 4, 2]
    assert [m["content"] for m in svc.history(a, b)["messages"]] == ["m3", "m1", "m0", "before"]
    assert svc.send(a, b, "after")["seq"] == 5


def test_batch_answers_each_invalid_item_and_stores_the_rest(svc):
    a, b = users(2)
    good = {"msgId": "ok1", "fromUserId": a, "toUserId": b, "content": "fine"}
    results = send_batch(svc, [
        {"msgId": "bad id!", "fromUserId": a, "toUserId": b, "content": "x"},
        good,
        {"msgId": "self", "fromUserId": a, "toUserId": a, "content": "x"},
        "not an object",
        {"msgId": "empty", "fromUserId": a, "toUserId": b, "content": ""},
        {**good, "msgId": "ok2", "contentType": 9},
    ])
    assert [r.get("error", {}).get("code") for r in results] == [
        "bad_request", None, "bad_request", "bad_request", "bad_request", "bad_request"]
    assert "msgId" in results[0]["error"]["message"]
    assert results[1]["seq"] == 1 and results[1]["msgId"] == "ok1"
    assert [m["msgId"] for m in svc.history(a, b)["messages"]] == ["ok1"]


def test_batch_reports_duplicates_of_stored_and_of_its_own_messages(svc):
    a, b = users(2)
    first = svc.send(a, b, "original", msg_id="dup1")
    results = send_batch(svc, [
        {"msgId": "dup1", "fromUserId": a, "toUserId": b, "content": "resend"},
        {"msgId": "new1", "fromUserId": a, "toUserId": b, "content": "new"},
        {"msgId": "new1", "fromUserId": a, "toUserId": b, "content": "resend of new"},
    ])
    assert results[0]["duplicate"] is True and results[0]["content"] == "original"
    assert results[0]["seq"] == first["seq"] == 1
    assert results[1]["duplicate"] is False and results[1]["seq"] == 2
    assert results[2]["duplicate"] is True
    assert {k: results[2][k] for k in CHAT_KEYS} == {k: results[1][k] for k in CHAT_KEYS}
    assert svc.send(a, b, "after")["seq"] == 3      # the duplicates took no seq


@pytest.mark.parametrize("bodies", [[], "x", None, [{}] * 1001], ids=["empty", "string", "null", "1001"])
def test_batch_refuses_a_malformed_list(svc, bodies):
    r = svc.post("/v1/messages/batch", {"messages": bodies})
    assert r.status_code == 400 and r.json()["code"] == "bad_request"


def test_concurrent_batches_across_processes_neither_deadlock_nor_leave_gaps(svc, svc2):
    # Batches listing the same conversations in opposite orders, from two
    # processes at once: on PostgreSQL a naive order of row locks deadlocks.
    people = users(6)
    pairs = [(people[i], people[j]) for i in range(6) for j in range(i + 1, 6)]
    rounds = 12

    def batch(i: int) -> list[dict]:
        order = pairs if i % 2 else pairs[::-1]
        return send_batch((svc, svc2)[i % 2], [
            {"msgId": f"r{i}p{k}", "fromUserId": frm, "toUserId": to, "content": f"{i}"}
            for k, (frm, to) in enumerate(order)])

    with ThreadPoolExecutor(8) as pool:
        results = [r for rs in pool.map(batch, range(rounds)) for r in rs]
    assert not [r for r in results if "error" in r]
    for frm, to in pairs:
        seqs = sorted(r["seq"] for r in results if {r["fromUserId"], r["toUserId"]} == {frm, to})
        assert seqs == list(range(1, rounds + 1))


def test_concurrent_batches_with_the_same_keys_store_each_once(svc, svc2):
    a, b = users(2)
    n = 8
    barrier = threading.Barrier(n)

    def batch(i: int) -> list[dict]:
        barrier.wait(timeout=HTTP_TIMEOUT)
        return send_batch((svc, svc2)[i % 2], [
            {"msgId": f"same{k}", "fromUserId": a, "toUserId": b, "content": f"v{i}"} for k in range(5)])

    with ThreadPoolExecutor(n) as pool:
        results = list(pool.map(batch, range(n)))
    for k in range(5):
        versions = [rs[k] for rs in results]
        assert sum(not r["duplicate"] for r in versions) == 1
        assert len({(r["seq"], r["content"]) for r in versions}) == 1
    assert [r["seq"] for r in results[0]] == [1, 2, 3, 4, 5]
    assert svc.send(a, b, "after")["seq"] == 6


def test_delivered_batch_marks_each_recipients_messages_once(svc):
    a, b, c = users(3)
    ab = [svc.send(a, b, f"ab{i}")["msgId"] for i in range(3)]
    cb = svc.send(c, b, "cb")["msgId"]
    ac = svc.send(a, c, "ac")["msgId"]
    svc.delivered(b, [(a, ab[0])])
    r = svc.post("/v1/messages/delivered/batch", {"deliveries": [
        {"userId": b, "messages": [{"fromUserId": a, "msgId": m} for m in ab] + [{"fromUserId": c, "msgId": cb}]},
        # c did not receive a->b messages: addressed to another user, not marked
        {"userId": c, "messages": [{"fromUserId": a, "msgId": ac}, {"fromUserId": a, "msgId": ab[1]}]},
    ]})
    assert r.status_code == 200, r.text
    to_b, to_c = r.json()["results"]
    assert [(m["fromUserId"], m["msgId"]) for m in to_b["messages"]] == [(a, ab[1]), (a, ab[2]), (c, cb)]
    assert [(m["fromUserId"], m["msgId"]) for m in to_c["messages"]] == [(a, ac)]
    assert len({m["deliveredAt"] for m in to_b["messages"] + to_c["messages"]}) == 1
    statuses = {m["msgId"]: m["status"] for m in svc.history(a, b)["messages"]}
    assert statuses == dict.fromkeys(ab, "delivered")


@pytest.mark.parametrize("body", [{"deliveries": []}, {"deliveries": [1]},
                                  {"deliveries": [{"userId": 0, "messages": []}]},
                                  {"deliveries": [{"userId": 5, "messages": [{"fromUserId": 1, "msgId": "a"}] * 600}] * 2}],
                         ids=["empty", "not-object", "bad-user", "too-many-keys"])
def test_delivered_batch_refuses_malformed_input(svc, body):
    r = svc.post("/v1/messages/delivered/batch", body)
    assert r.status_code == 400 and r.json()["code"] == "bad_request"


_BAD_SENDS = {
    "fromUserId bool": {"fromUserId": True},
    "fromUserId float": {"fromUserId": 1.0},
    "fromUserId string": {"fromUserId": "7"},
    "fromUserId 0": {"fromUserId": 0},
    "fromUserId negative": {"fromUserId": -5},
    "fromUserId 2^63": {"fromUserId": 2**63},
    "fromUserId missing": {"fromUserId": None},
    "fromUserId list": {"fromUserId": [7]},
    "toUserId bool": {"toUserId": False},
    "toUserId float": {"toUserId": 2.5},
    "toUserId string": {"toUserId": "8"},
    "toUserId 0": {"toUserId": 0},
    "toUserId 2^63": {"toUserId": 2**63},
    "toUserId missing": {"toUserId": None},
    "to oneself": {"toUserId": "FROM"},
    "msgId empty": {"msgId": ""},
    "msgId 65 chars": {"msgId": "a" * 65},
    "msgId space": {"msgId": "a b"},
    "msgId slash": {"msgId": "a/b"},
    "msgId non-ascii": {"msgId": "ä"},
    "msgId newline": {"msgId": "abc\n"},
    "msgId number": {"msgId": 5},
    "msgId bool": {"msgId": True},
    "content empty": {"content": ""},
    "content missing": {"content": None},
    "content number": {"content": 5},
    "content list": {"content": ["x"]},
    "content lone surrogate": {"content": "\ud800"},
    "contentType 0": {"contentType": 0},
    "contentType 5": {"contentType": 5},
    "contentType true": {"contentType": True},
    "contentType string": {"contentType": "1"},
    "contentType float": {"contentType": 1.0},
}


@pytest.mark.parametrize("change", _BAD_SENDS.values(), ids=_BAD_SENDS.keys())
def test_send_refuses_invalid_fields(svc, change):
    a, b = users(2)
    body = {"msgId": "ok", "fromUserId": a, "toUserId": b, "content": "x", "contentType": 1}
    body.update({k: a if v == "FROM" else v for k, v in change.items()})
    body = {k: v for k, v in body.items() if v is not None or k == "contentType"}
    r = svc.post("/v1/messages", body)
    assert r.status_code == 400, r.text
    assert r.json()["code"] == "bad_request" and r.json()["message"]
    assert svc.all_unread(b) == []


@pytest.mark.parametrize("raw", [b"[1, 2]", b'"text"', b"not json", b"", b'{"a": '])
def test_send_refuses_bodies_that_are_not_objects(svc, raw):
    r = svc.session.post(svc.url + "/v1/messages", data=raw, timeout=HTTP_TIMEOUT,
                      headers={"Content-Type": "application/json"})
    assert r.status_code == 400 and r.json()["code"] == "bad_request"


# -- the store's batch path itself (PostgreSQL: one statement per step over arrays) --

@pytest.fixture(scope="module")
def pg_db(postgres_url):
    """The store on PostgreSQL, in this process, for what only PostgreSQL has:
    concurrent writers (Database creates the schema of an empty database)."""
    database = Database(postgres_url, store.metadata, pool_size=4)
    yield database
    database.close()


@pytest.fixture(scope="module")
def db(data_source, svc):
    """The store on the module's database, in this process (after svc made the schema)."""
    database = Database(data_source, store.metadata, pool_size=4)
    yield database
    database.close()


def _msg(frm: int, to: int, msg_id: str, content: str = "x") -> store.NewMessage:
    return store.NewMessage(msg_id, frm, to, content, 1)


def _conversation(db: Database, a: int, b: int) -> list[tuple[int, str, int, str]]:
    lo, hi = sorted((a, b))
    return [(r.seq, r.msg_id, r.from_user_id, r.content) for r in db.run(lambda conn: conn.execute(
        sa.select(store.messages).where(store.messages.c.user_lo == lo, store.messages.c.user_hi == hi)
        .order_by(store.messages.c.seq)).all())]


def test_store_batch_of_many_chunks_keeps_order_duplicates_and_gapless_seqs(db):
    people = users(8)
    pairs = [(people[i], people[j]) for i in range(8) for j in range(8) if i != j]   # both directions
    rng = random.Random(15)
    db.run(store.send_messages, [_msg(f, t, f"old{k}", "old") for k, (f, t) in enumerate(pairs[:30])])
    msgs = []
    for k in range(700):                        # more keys than one 256-key chunk
        f, t = rng.choice(pairs)
        msgs.append(_msg(f, t, f"n{k}", f"\x00\u00e9\U0001f600 {k}"))
    msgs[100:100] = [_msg(*pairs[3], "old3", "resent"), msgs[5], msgs[5], _msg(*pairs[7], "old7")]
    results = db.run(store.send_messages, msgs)
    assert [(r.from_user_id, r.msg_id) for r, _ in results] == [(m.from_user_id, m.msg_id) for m in msgs]
    assert [dup for _, dup in results][100:104] == [True, True, True, True]
    assert sum(dup for _, dup in results) == 4
    assert results[100][0].content == "old" and results[100][0].seq == 1
    assert results[101][0] == results[102][0] == results[5][0]
    assert all(r.content == m.content for (r, dup), m in zip(results, msgs) if not dup)
    for a, b in {tuple(sorted(p)) for p in pairs}:
        stored = _conversation(db, a, b)
        assert [s for s, *_ in stored] == list(range(1, len(stored) + 1))
        # seqs follow the batch's order within a conversation
        new = [(r.seq, r.msg_id) for (r, dup) in results if not dup and {r.from_user_id, r.to_user_id} == {a, b}]
        assert new == sorted(new) and [m for _, m in new] == [m for _, m, *_ in stored if m.startswith("n")]
        # both users' conversation rows point at the newest message
        rows = db.run(lambda conn: conn.execute(sa.select(store.user_conversations).where(
            store.user_conversations.c.user_id.in_([a, b]),
            store.user_conversations.c.peer_id.in_([a, b]))).all())
        assert sorted((r.user_id, r.last_seq) for r in rows) == [(a, len(stored)), (b, len(stored))]
    again = db.run(store.send_messages, msgs)        # a resend of everything: all duplicates
    assert all(dup for _, dup in again)
    assert [(r.msg_id, r.seq, r.content) for r, _ in again] == [(r.msg_id, r.seq, r.content) for r, _ in results]


def test_store_marks_delivered_only_new_keys_of_their_recipient(db):
    a, b, c = users(3)
    sent = [r for r, _ in db.run(store.send_messages,
                                 [_msg(a, b if k % 2 else c, f"d{k}") for k in range(600)])]
    to_b = [(a, r.msg_id) for r in sent if r.to_user_id == b]
    to_c = [(a, r.msg_id) for r in sent if r.to_user_id == c]
    first = db.run(store.mark_delivered_many, [(b, to_b[:50])])
    assert [(f, m) for f, m, _ in first[0]] == to_b[:50]
    asked = [(b, to_b[::-1] + to_b[:10] + to_c[:5] + [(a, "unknown")]), (c, to_c), (b, to_b[60:70])]
    marked = db.run(store.mark_delivered_many, asked)
    # b's keys newly marked, in the order asked (not those marked before, not c's keys)
    assert [(f, m) for f, m, _ in marked[0]] == to_b[:49:-1]
    assert [(f, m) for f, m, _ in marked[1]] == to_c
    assert len({at for row in marked for _, _, at in row}) == 1
    # a key asked twice in one call is newly marked for its first asker only in the
    # writer; the store reports it for every request that listed it
    assert [(f, m) for f, m, _ in marked[2]] == to_b[60:70]
    assert db.run(store.mark_delivered_many, asked) == [[], [], []]


def test_postgresql_batch_that_loses_a_race_runs_again_and_answers_the_duplicate(pg_db, caplog):
    """(PostgreSQL only: SQLite has one writer, no concurrent transaction to lose to.)"""
    caplog.set_level(logging.INFO, logger="skyeim.db")
    db = pg_db
    a, b, c, d = users(4)
    with db.engine.connect() as first:
        txn = first.begin()
        store.send_messages(first, [_msg(a, b, "k1", "first"), _msg(b, a, "k2", "first")])
        # this batch's lookup misses k1 (not committed yet); its seq upsert waits
        # for the pair's row, then its INSERT fails on k1's unique key (stored
        # meanwhile): the transaction is rolled back and run again, and its lookup finds k1
        with ThreadPoolExecutor(1) as pool:
            later = pool.submit(db.run, store.send_messages,
                                [_msg(c, d, "k3"), _msg(a, b, "k1", "second"), _msg(a, b, "k4")])
            time.sleep(0.5)
            assert not later.done()
            txn.commit()
            results = later.result(timeout=HTTP_TIMEOUT)
    assert [(r.msg_id, r.content, r.seq, dup) for r, dup in results] == [
        ("k3", "x", 1, False), ("k1", "first", 1, True), ("k4", "x", 3, False)]
    assert [s for s, *_ in _conversation(db, a, b)] == [1, 2, 3]
    assert [s for s, *_ in _conversation(db, c, d)] == [1]    # the first run's seq rolled back
    assert "lost a race" in caplog.text


def test_send_batch_takes_no_savepoint(db):
    """SQLite: its write transactions begin IMMEDIATE, so no other writer runs between
    a batch's lookup and its INSERT. PostgreSQL: a lost race runs the transaction
    again (above) instead of rolling back to a savepoint. A SAVEPOINT and RELEASE
    per batch were a sixth of a one-chat transaction's CPU on SQLite."""
    a, b = users(2)
    seen: list[str] = []

    def record(conn, cursor, statement, parameters, context, executemany):
        seen.append(statement.lstrip().split(None, 1)[0].upper())

    sa.event.listen(db.engine, "before_cursor_execute", record)
    try:
        for batch in ([_msg(a, b, "sp1")], [_msg(a, b, "sp2"), _msg(b, a, "sp3"), _msg(a, b, "sp1")]):
            db.run(store.send_messages, batch)
    finally:
        sa.event.remove(db.engine, "before_cursor_execute", record)
    assert "INSERT" in seen and "SAVEPOINT" not in seen, seen
    assert [s for s, *_ in _conversation(db, a, b)] == [1, 2, 3]


def test_postgresql_concurrent_batches_of_two_processes_store_once_without_gaps(pg_db, postgres_url):
    """(PostgreSQL only: SQLite has one writer.)"""
    db = pg_db
    other = Database(postgres_url, store.metadata, pool_size=4)     # as a second process
    people = users(6)
    pairs = [(people[i], people[j]) for i in range(6) for j in range(6) if i != j]
    rounds, shared = 16, [_msg(*pairs[k], f"shared{k}") for k in range(10)]

    def batch(i: int):
        rng = random.Random(i)
        msgs = [_msg(*rng.choice(pairs), f"b{i}-{k}") for k in range(150)] + shared
        rng.shuffle(msgs)
        results = (db, other)[i % 2].run(store.send_messages, msgs)
        keys = [(r.to_user_id, r.from_user_id, r.msg_id) for r, _ in results]
        rng.shuffle(keys)       # delivery records in another order than other batches'
        marked = (db, other)[i % 2].run(store.mark_delivered_many, [(t, [(f, m)]) for t, f, m in keys])
        return msgs, results, [k for k, row in zip(keys, marked) if row]

    try:
        with ThreadPoolExecutor(8) as pool:
            done = list(pool.map(batch, range(rounds)))
    finally:
        other.close()
    originals = [r for _, results, _ in done for r, dup in results if not dup]
    assert len(originals) == rounds * 150 + len(shared)
    for msgs, results, _ in done:
        assert [(r.from_user_id, r.msg_id) for r, _ in results] == [(m.from_user_id, m.msg_id) for m in msgs]
    for a, b in {tuple(sorted(p)) for p in pairs}:
        seqs = [s for s, *_ in _conversation(db, a, b)]
        assert seqs == list(range(1, len(seqs) + 1))
    # every message's delivery was newly marked exactly once, by whichever batch came first
    marked = [k for _, _, ks in done for k in ks]
    assert len(marked) == len(set(marked)) == len(originals)


# -- unread --------------------------------------------------------------------

@pytest.fixture(scope="module")
def backlog(svc):
    """250 unread messages to one user from two senders, interleaved."""
    a, b, c = users(3)
    contents = []
    for i in range(250):
        contents.append(f"backlog {i}")
        svc.send(a if i % 3 else b, c, contents[-1])
    return a, b, c, contents


def test_unread_pages_walk_the_backlog_oldest_first(svc, backlog):
    a, b, c, contents = backlog
    seen, cursor, pages = [], None, []
    while True:
        params = {"limit": 100} if cursor is None else {"limit": 100, "cursor": cursor}
        page = svc.unread(c, **params)
        assert set(page) == {"messages", "nextCursor", "hasMore"}
        pages.append((len(page["messages"]), page["hasMore"]))
        seen += page["messages"]
        cursor = page["nextCursor"]
        if cursor is None:
            break
        assert isinstance(cursor, str) and page["hasMore"] is True
    assert pages == [(100, True), (100, True), (50, False)]
    assert [m["content"] for m in seen] == contents
    assert all(set(m) == CHAT_KEYS and m["toUserId"] == c and m["fromUserId"] in (a, b) for m in seen)


def test_unread_limit_defaults_to_50_and_is_capped_at_200(svc, backlog):
    c = backlog[2]
    page = svc.unread(c)
    assert len(page["messages"]) == 50 and page["hasMore"] is True
    assert len(svc.unread(c, limit="")["messages"]) == 50
    page = svc.unread(c, limit=1000)
    assert len(page["messages"]) == 200 and page["hasMore"] is True
    assert len(svc.unread(c, limit=200)["messages"]) == 200


def test_first_unread_pages_of_many_users_in_one_call(svc, backlog):
    a, b, c, contents = backlog
    nobody = users(1)[0]
    r = svc.post("/v1/messages/unread/batch", {"userIds": [nobody, c, a], "limit": 100})
    assert r.status_code == 200, r.text
    empty, of_c, of_a = r.json()["pages"]
    assert empty == {"messages": [], "nextCursor": None, "hasMore": False}
    assert of_c == svc.unread(c, limit=100)         # exactly the single call's first page
    assert [m["content"] for m in of_c["messages"]] == contents[:100] and of_c["hasMore"]
    assert of_a == svc.unread(a, limit=100)


@pytest.mark.parametrize("body", [{"userIds": []}, {"userIds": [1.5]}, {"userIds": [1], "limit": 0},
                                  {"userIds": [1], "limit": "x"}, {"userIds": list(range(1, 1002))}],
                         ids=["empty", "float", "limit-0", "limit-string", "1001"])
def test_unread_batch_refuses_malformed_input(svc, body):
    r = svc.post("/v1/messages/unread/batch", body)
    assert r.status_code == 400 and r.json()["code"] == "bad_request"


def test_unread_of_a_user_without_messages_is_empty(svc):
    [nobody] = users(1)
    assert svc.unread(nobody) == {"messages": [], "nextCursor": None, "hasMore": False}


def test_unread_exact_last_page_has_no_cursor(svc):
    a, b = users(2)
    for _ in range(3):
        svc.send(a, b)
    page = svc.unread(b, limit=3)
    assert len(page["messages"]) == 3 and page["hasMore"] is False and page["nextCursor"] is None


@pytest.mark.parametrize("params", [
    {"cursor": "abc"}, {"cursor": "-1"}, {"cursor": "1.5"}, {"cursor": str(2**63)}, {"cursor": "²"},
    {"userId": None}, {"userId": "abc"}, {"userId": "0"}, {"userId": "-1"}, {"userId": "1.0"},
    {"userId": str(2**63)}, {"userId": "²"}, {"userId": " 1"},
    {"limit": "0"}, {"limit": "-1"}, {"limit": "abc"}, {"limit": "1.5"},
], ids=repr)
def test_unread_refuses_invalid_query(svc, params):
    query = {"userId": 1, **params}
    query = {k: v for k, v in query.items() if v is not None}
    r = svc.session.get(svc.url + "/v1/messages/unread", params=query, timeout=HTTP_TIMEOUT)
    assert r.status_code == 400, r.text
    assert r.json()["code"] == "bad_request"


# -- delivered -----------------------------------------------------------------

def test_delivered_marks_only_new_messages_addressed_to_the_user(svc):
    a, b, c = users(3)
    svc.send(a, c, msg_id="m1")
    svc.send(a, c, msg_id="m2")
    svc.send(b, c, msg_id="m3")
    svc.send(a, b, msg_id="m4")            # not to c
    before = now_ms()
    marked = svc.delivered(c, [(a, "m1"), (b, "m3"), (a, "m4"), (a, "missing"), (b, "m1"), (a, "m1")])
    assert [(m["fromUserId"], m["msgId"]) for m in marked] == [(a, "m1"), (b, "m3")]
    assert all(set(m) == {"fromUserId", "msgId", "deliveredAt"} for m in marked)
    assert all(before <= m["deliveredAt"] <= now_ms() for m in marked)
    # only newly marked: m1 and m3 again are not, m2 is
    assert [m["msgId"] for m in svc.delivered(c, [(a, "m1"), (a, "m2"), (b, "m3")])] == ["m2"]
    assert svc.delivered(c, []) == []
    # delivered is not read: all still unread; m4 still undelivered
    assert [m["msgId"] for m in svc.all_unread(c)] == ["m1", "m2", "m3"]
    assert [m["status"] for m in svc.history(a, b)["messages"]] == ["sent"]
    assert [m["status"] for m in svc.history(c, a)["messages"]] == ["delivered", "delivered"]


@pytest.mark.parametrize("body", [
    {"userId": 1},
    {"userId": 1, "messages": "m1"},
    {"userId": 1, "messages": {"fromUserId": 2, "msgId": "m1"}},
    {"userId": 1, "messages": [5]},
    {"userId": 1, "messages": [{"fromUserId": 2}]},
    {"userId": 1, "messages": [{"fromUserId": "2", "msgId": "m1"}]},
    {"userId": 1, "messages": [{"fromUserId": True, "msgId": "m1"}]},
    {"userId": 1, "messages": [{"fromUserId": 2, "msgId": "bad id"}]},
    {"userId": 1, "messages": [{"fromUserId": 2, "msgId": f"m{i}"} for i in range(1001)]},
    {"userId": 1.0, "messages": []},
    {"messages": []},
], ids=lambda b: json.dumps(b)[:60])
def test_delivered_refuses_invalid_bodies(svc, body):
    r = svc.post("/v1/messages/delivered", body)
    assert r.status_code == 400, r.text
    assert r.json()["code"] == "bad_request"


# -- read ----------------------------------------------------------------------

def test_read_marks_messages_from_the_peer(svc):
    a, b, c = users(3)
    for m in ("r1", "r2", "r3"):
        svc.send(a, c, m, msg_id=m)
    svc.send(b, c, "s1", msg_id="s1")
    svc.send(c, a, "t1", msg_id="t1")

    # by id, and only from the peer: b's message is not touched via peer a
    before = now_ms()
    got = svc.read(c, a, ["r1", "s1", "t1", "unknown"])
    assert set(got) == {"msgIds", "readAt"}
    assert got["msgIds"] == ["r1"] and before <= got["readAt"] <= now_ms()
    assert [m["msgId"] for m in svc.all_unread(c)] == ["r2", "r3", "s1"]
    assert svc.read(c, a, ["r1"])["msgIds"] == []            # only newly marked

    # all (msgIds missing) from a: leaves b's message and c's own to a
    got = svc.read(c, a, omit=True)
    assert got["msgIds"] == ["r2", "r3"]
    assert [m["msgId"] for m in svc.all_unread(c)] == ["s1"]
    assert [m["msgId"] for m in svc.all_unread(a)] == ["t1"]

    # reading implies delivery: never delivered, yet not "newly delivered" now
    assert svc.delivered(c, [(a, "r2")]) == []
    assert svc.send(a, c, msg_id="r2")["deliveredAt"] == got["readAt"]
    assert [m["status"] for m in svc.history(c, a)["messages"]] == ["sent", "read", "read", "read"]


@pytest.mark.parametrize("empty", ["null", "[]"])
def test_read_with_null_or_empty_ids_reads_all(svc, empty):
    a, b = users(2)
    for m in ("x1", "x2"):
        svc.send(a, b, msg_id=m)
    assert svc.read(b, a, json.loads(empty))["msgIds"] == ["x1", "x2"]
    assert svc.all_unread(b) == []
    assert svc.read(b, a)["msgIds"] == []


def test_read_messages_are_never_unread_again(svc):
    a, b = users(2)
    svc.send(a, b, msg_id="once")
    svc.delivered(b, [(a, "once")])
    svc.read(b, a, ["once"])
    svc.send(a, b, msg_id="once")                       # a resend changes nothing
    assert svc.all_unread(b) == []
    assert svc.history(b, a)["messages"][0]["status"] == "read"


@pytest.mark.parametrize("body", [
    {"userId": 1, "peerId": 1},
    {"userId": 1},
    {"peerId": 2},
    {"userId": "1", "peerId": 2},
    {"userId": 1, "peerId": True},
    {"userId": 1, "peerId": 2, "msgIds": "m1"},
    {"userId": 1, "peerId": 2, "msgIds": ["ok", ""]},
    {"userId": 1, "peerId": 2, "msgIds": [7]},
    {"userId": 1, "peerId": 2, "msgIds": [f"m{i}" for i in range(1001)]},
], ids=lambda b: json.dumps(b)[:60])
def test_read_refuses_invalid_bodies(svc, body):
    r = svc.post("/v1/messages/read", body)
    assert r.status_code == 400, r.text
    assert r.json()["code"] == "bad_request"


# -- history -------------------------------------------------------------------

def test_history_pages_newest_first_with_status(svc):
    a, b = users(2)
    sent = [svc.send(*((a, b) if i % 2 else (b, a)), f"h{i}", msg_id=f"h{i}") for i in range(7)]
    svc.delivered(a, [(b, "h0")])          # seq 1: delivered
    svc.read(b, a, ["h1"])                 # seq 2: read
    page = svc.history(a, b)
    assert page["hasMore"] is False
    assert [m["seq"] for m in page["messages"]] == [7, 6, 5, 4, 3, 2, 1]
    assert [m["status"] for m in page["messages"]] == ["sent"] * 5 + ["read", "delivered"]
    assert page["messages"][-1] == {**{k: sent[0][k] for k in CHAT_KEYS}, "status": "delivered"}
    assert svc.history(b, a) == page                       # one conversation, both ways

    def seqs(**params):
        p = svc.history(a, b, **params)
        return [m["seq"] for m in p["messages"]], p["hasMore"]

    assert seqs(limit=3) == ([7, 6, 5], True)
    assert seqs(beforeSeq=5, limit=3) == ([4, 3, 2], True)
    assert seqs(beforeSeq=2, limit=3) == ([1], False)
    assert seqs(beforeSeq=1) == ([], False)
    assert seqs(beforeSeq=100) == ([7, 6, 5, 4, 3, 2, 1], False)
    assert seqs(beforeSeq=4, limit=3) == ([3, 2, 1], False)


def test_history_limit_defaults_to_50_and_is_capped_at_200(svc):
    a, b = users(2)
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda i: svc.send(a, b, f"n{i}"), range(205)))
    page = svc.history(a, b)
    assert [m["seq"] for m in page["messages"]] == list(range(205, 155, -1)) and page["hasMore"] is True
    page = svc.history(a, b, limit=1000)
    assert [m["seq"] for m in page["messages"]] == list(range(205, 5, -1)) and page["hasMore"] is True
    page = svc.history(a, b, limit=200, beforeSeq=6)
    assert [m["seq"] for m in page["messages"]] == [5, 4, 3, 2, 1] and page["hasMore"] is False


def test_history_of_strangers_is_empty(svc):
    a, b = users(2)
    assert svc.history(a, b) == {"messages": [], "hasMore": False}


@pytest.mark.parametrize("params", [
    {"beforeSeq": "0"}, {"beforeSeq": "-1"}, {"beforeSeq": "abc"}, {"beforeSeq": "1.5"},
    {"beforeSeq": str(2**63)}, {"peerId": None}, {"peerId": "1"}, {"peerId": "x"}, {"userId": None},
    {"userId": "true"}, {"limit": "0"}, {"limit": "-1"}, {"limit": "abc"},
], ids=repr)
def test_history_refuses_invalid_query(svc, params):
    query = {"userId": 1, "peerId": 2, **params}
    query = {k: v for k, v in query.items() if v is not None}
    r = svc.session.get(svc.url + "/v1/messages/history", params=query, timeout=HTTP_TIMEOUT)
    assert r.status_code == 400, r.text
    assert r.json()["code"] == "bad_request"


# -- conversation (sync) ---------------------------------------------------------

def test_conversation_pages_oldest_first_after_a_seq_with_status(svc):
    a, b = users(2)
    sent = [svc.send(*((a, b) if i % 2 else (b, a)), f"c{i}", msg_id=f"c{i}") for i in range(7)]
    svc.delivered(a, [(b, "c0")])          # seq 1: delivered
    svc.read(b, a, ["c1"])                 # seq 2: read
    page = svc.conversation(a, b)
    assert page["hasMore"] is False
    assert [m["seq"] for m in page["messages"]] == [1, 2, 3, 4, 5, 6, 7]
    assert [m["status"] for m in page["messages"]] == ["delivered", "read"] + ["sent"] * 5
    assert page["messages"][0] == {**{k: sent[0][k] for k in CHAT_KEYS}, "status": "delivered"}
    assert svc.conversation(b, a) == page                  # one conversation, both ways

    def seqs(**params):
        p = svc.conversation(a, b, **params)
        return [m["seq"] for m in p["messages"]], p["hasMore"]

    assert seqs(afterSeq=0, limit=3) == ([1, 2, 3], True)
    assert seqs(afterSeq=3, limit=3) == ([4, 5, 6], True)
    assert seqs(afterSeq=6, limit=3) == ([7], False)
    assert seqs(afterSeq=7) == ([], False)
    assert seqs(afterSeq=100) == ([], False)
    assert seqs(afterSeq=2, beforeSeq=6) == ([3, 4, 5], False)           # a gap's range
    assert seqs(afterSeq=2, beforeSeq=6, limit=2) == ([3, 4], True)
    assert seqs(afterSeq=4, beforeSeq=6, limit=2) == ([5], False)
    assert seqs(afterSeq=4, beforeSeq=5) == ([], False)


def test_conversation_limit_defaults_to_50_and_is_capped_at_200(svc):
    a, b = users(2)
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda i: svc.send(a, b, f"n{i}"), range(205)))
    page = svc.conversation(a, b)
    assert [m["seq"] for m in page["messages"]] == list(range(1, 51)) and page["hasMore"] is True
    page = svc.conversation(a, b, afterSeq=1, limit=1000)
    assert [m["seq"] for m in page["messages"]] == list(range(2, 202)) and page["hasMore"] is True


def test_conversation_of_strangers_is_empty(svc):
    a, b = users(2)
    assert svc.conversation(a, b, afterSeq=0) == {"messages": [], "hasMore": False}


@pytest.mark.parametrize("params", [
    {"afterSeq": "-1"}, {"afterSeq": "abc"}, {"afterSeq": "1.5"}, {"afterSeq": str(2**63)},
    {"beforeSeq": "0"}, {"beforeSeq": "x"}, {"afterSeq": "5", "beforeSeq": "5"},
    {"afterSeq": "6", "beforeSeq": "5"}, {"peerId": None}, {"peerId": "1"}, {"userId": None},
    {"limit": "0"}, {"limit": "abc"},
], ids=repr)
def test_conversation_refuses_invalid_query(svc, params):
    query = {"userId": 1, "peerId": 2, **params}
    query = {k: v for k, v in query.items() if v is not None}
    r = svc.session.get(svc.url + "/v1/messages/conversation", params=query, timeout=HTTP_TIMEOUT)
    assert r.status_code == 400, r.text
    assert r.json()["code"] == "bad_request"


# -- the service around the routes ---------------------------------------------

@pytest.mark.parametrize("headers", [{}, {"X-Internal-Secret": "wrong"}, {"X-Internal-Secret": ""}],
                         ids=["without", "wrong", "empty"])
def test_internal_secret_is_required(svc, headers):
    for method, path in (("GET", "/v1/messages/unread?userId=1"), ("POST", "/v1/messages"),
                         ("POST", "/v1/messages/read"), ("GET", "/v1/messages/history?userId=1&peerId=2")):
        r = requests.request(method, svc.url + path, headers=headers, json={}, timeout=HTTP_TIMEOUT)
        assert r.status_code == 401, (method, path, r.text)
        assert r.json()["code"] == "unauthorized"


def test_healthz_needs_no_secret(svc):
    r = requests.get(svc.url + "/healthz", timeout=HTTP_TIMEOUT)
    assert r.status_code == 200 and r.json() == {"ok": True, "version": skyeim.__version__}


def test_unknown_routes_and_methods_answer_json(svc):
    r = svc.get("/v1/nothing")
    assert r.status_code == 404 and r.json()["code"] == "not_found"
    r = svc.session.delete(svc.url + "/v1/messages", timeout=HTTP_TIMEOUT)
    assert r.status_code == 405 and r.json()["code"] == "method_not_allowed"


def test_sqlite_unavailable_answers_503_then_recovers(tmp_path):
    blocker = tmp_path / "blocked"
    blocker.write_text("a file where the database directory should be")
    service = MessageService(tmp_path, f"sqlite:///{blocker / 'message.db'}")
    try:
        assert requests.get(service.url + "/healthz", timeout=HTTP_TIMEOUT).status_code == 200
        a, b = users(2)
        r = service.post("/v1/messages", {"msgId": "u1", "fromUserId": a, "toUserId": b, "content": "x"})
        assert r.status_code == 503 and r.json()["code"] == "unavailable", r.text
        r = service.get("/v1/messages/unread", userId=b)
        assert r.status_code == 503 and r.json()["code"] == "unavailable", r.text
        blocker.unlink()                               # the disk is back
        assert service.send(a, b, msg_id="u1")["seq"] == 1
    finally:
        assert service.stop() == 0, service.log()


def test_postgresql_unreachable_answers_503(tmp_path):
    closed_port = free_port()        # nothing listens there
    service = MessageService(tmp_path, f"postgresql+psycopg://postgres@127.0.0.1:{closed_port}/none")
    try:
        assert requests.get(service.url + "/healthz", timeout=HTTP_TIMEOUT).status_code == 200
        r = service.post("/v1/messages", {"msgId": "u1", "fromUserId": 1, "toUserId": 2, "content": "x"})
        assert r.status_code == 503 and r.json()["code"] == "unavailable", r.text
        r = service.get("/v1/messages/history", userId=1, peerId=2)
        assert r.status_code == 503 and r.json()["code"] == "unavailable", r.text
    finally:
        assert service.stop() == 0, service.log()


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_processes_starting_together_create_the_schema_once(tmp_path, backend):
    with database_url(backend, tmp_path / "fresh", "message") as data_source:
        with ThreadPoolExecutor(3) as pool:
            services = list(pool.map(lambda _: MessageService(tmp_path, data_source), range(3)))
        a, b = users(2)
        try:
            assert [s.send(a, b)["seq"] for s in services] == [1, 2, 3]
        finally:
            assert [s.stop() for s in services] == [0, 0, 0]


def test_postgresql_connections_killed_are_replaced(tmp_path, postgres_url):
    svc = MessageService(tmp_path, postgres_url)
    a, b = users(2)
    svc.send(a, b)
    database = sa.make_url(postgres_url).database
    admin = sa.create_engine(POSTGRES_URL, isolation_level="AUTOCOMMIT",
                             connect_args={"connect_timeout": 3})
    try:
        with admin.connect() as conn:       # as a server restart or failover would
            killed = conn.exec_driver_sql(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE datname = %(db)s AND pid <> pg_backend_pid()", {"db": database}).scalar()
        assert killed >= 1
    finally:
        admin.dispose()
    try:
        assert svc.send(a, b)["seq"] == 2       # the pool's pre-ping reconnects: no 503
        assert len(svc.all_unread(b)) == 2
    finally:
        assert svc.stop() == 0, svc.log()


def test_sigterm_stops_the_service_with_exit_0(tmp_path):
    service = MessageService(tmp_path, f"sqlite:///{tmp_path / 'm.db'}")
    service.send(1, 2)
    started = time.monotonic()
    assert service.stop() == 0, service.log()
    assert time.monotonic() - started < STOP_TIMEOUT


def test_bad_config_exits_2_with_one_line(tmp_path):
    config = tmp_path / "bad.yaml"
    config.write_text("Name: message\nPort: 0\n")
    for path in (config, tmp_path / "missing.yaml"):
        done = subprocess.run([sys.executable, "-m", "skyeim.message", "-f", str(path)],
                              cwd=tmp_path, capture_output=True, text=True, timeout=30,
                              env={**os.environ, "PYTHONPATH": str(REPO)})
        assert done.returncode == 2
        assert done.stderr.startswith("error: ") and done.stderr.count("\n") == 1, done.stderr


# -- db.py under gevent -----------------------------------------------------------

_OFF_LOOP_SCRIPT = r"""
from gevent import monkey; monkey.patch_all()
import json, sys, gevent
from gevent.monkey import get_original
from sqlalchemy import text
from skyeim.db import Database
from skyeim.message import store

native_ident = get_original("threading", "get_ident")
db = Database(sys.argv[1], store.metadata)
ticks = 0

def ticker():
    global ticks
    while True:
        ticks += 1
        gevent.sleep(0.005)

def slow_query(conn):
    # about a second of pure SQLite work, holding the GIL only in C
    conn.execute(text("WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c "
                      "WHERE x < 3000000) SELECT count(*) FROM c")).scalar()
    return native_ident()

def insert(conn, i):
    return store.send_messages(conn, [store.NewMessage(f"m{i}", 1 + i % 5, 10, "x", 1)])[0][0].seq

gevent.spawn(ticker)
gevent.sleep(0.05)
before = ticks
worker_ident = db.run(slow_query)
during = ticks - before
jobs = [gevent.spawn(db.run, insert, i) for i in range(500)]
gevent.joinall(jobs, raise_error=True)
db.close()
print(json.dumps({"ticks_during_slow_query": during, "main": native_ident(), "worker": worker_ident,
                  "seqs": sorted(j.value for j in jobs)}))
"""


def test_sqlite_calls_run_off_the_event_loop(tmp_path):
    """Monkey-patched, as in a service: SQLite work runs on a native thread while
    greenlets keep running, and many concurrent calls serialize cleanly."""
    done = subprocess.run([sys.executable, "-c", _OFF_LOOP_SCRIPT, f"sqlite:///{tmp_path / 'x.db'}"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(REPO)})
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["worker"] != result["main"]
    assert result["ticks_during_slow_query"] >= 10, result   # the loop was not blocked
    # 5 senders to one user: 5 conversations of 100 messages each
    assert result["seqs"] == sorted(list(range(1, 101)) * 5)


# -- the store's queries use the indexes ---------------------------------------

def _statements_of(db: Database, fn, *args) -> list[tuple[str, object]]:
    """The SQL statements (with parameters) that ``db.run(fn, *args)`` executes."""
    seen = []

    def record(conn, cursor, statement, parameters, context, executemany):
        if statement.lstrip().upper().startswith(("SELECT", "UPDATE")):
            seen.append((statement, parameters))

    sa.event.listen(db.engine, "before_cursor_execute", record)
    try:
        db.run(fn, *args)
    finally:
        sa.event.remove(db.engine, "before_cursor_execute", record)
    return seen


# query: (store function, its arguments, the indexes PostgreSQL may pick, what
# SQLite's plan says: its unique constraints are named sqlite_autoindex_*)
_QUERIES = {
    "unread": (store.unread_page, (7, 0, 50),
               {"ix_messages_unread_by_recipient", "ix_messages_unread_by_pair"},
               "ix_messages_unread_by_recipient (to_user_id=? AND id>?)"),
    "history": (store.history_page, (7, 8, 100, 50), {"uq_messages_conversation_seq"},
                "INDEX sqlite_autoindex_messages_2 (user_lo=? AND user_hi=? AND seq<?)"),
    "conversation": (store.conversation_page, (7, 8, 100, None, 50),
                     {"uq_messages_conversation_seq"},
                     "INDEX sqlite_autoindex_messages_2 (user_lo=? AND user_hi=? AND seq>?)"),
    "conversation range": (store.conversation_page, (7, 8, 100, 200, 50),
                           {"uq_messages_conversation_seq"},
                           "INDEX sqlite_autoindex_messages_2 (user_lo=? AND user_hi=? AND seq>? AND seq<?)"),
    "read all": (store.mark_read, (7, 8, None), {"ix_messages_unread_by_pair"},
                 "ix_messages_unread_by_pair (to_user_id=? AND from_user_id=?)"),
    "read by id": (store.mark_read, (7, 8, ["a", "b"]),
                   {"uq_messages_sender_msg_id", "ix_messages_unread_by_pair"},
                   "INDEX sqlite_autoindex_messages_1 (from_user_id=? AND msg_id=?)"),
    "delivered": (store.mark_delivered, (7, [(8, "a"), (9, "b"), (8, "c")]),
                  {"uq_messages_sender_msg_id"},
                  "INDEX sqlite_autoindex_messages_1 (from_user_id=? AND msg_id=?)"),
    "unread first pages": (store.first_unread_pages, ([7, 8, 9], 50),
                           {"ix_messages_unread_by_recipient", "ix_messages_unread_by_pair"},
                           # either partial unread index serves it; SQLite picks one
                           "INDEX ix_messages_unread_by_"),
    "delivered batch": (store.mark_delivered_many, ([(7, [(8, "a"), (9, "b")]), (6, [(8, "c")])],),
                        {"uq_messages_sender_msg_id"},
                        "INDEX sqlite_autoindex_messages_1 (from_user_id=? AND msg_id=?)"),
    "send batch lookup": (store.send_messages,
                          ([store.NewMessage("a", 8, 7, "x", 1), store.NewMessage("b", 9, 7, "y", 1)],),
                          {"uq_messages_sender_msg_id"},
                          "INDEX sqlite_autoindex_messages_1 (from_user_id=? AND msg_id=?)"),
}


@pytest.mark.parametrize("query", _QUERIES.values(), ids=_QUERIES.keys())
def test_sqlite_queries_use_indexes(tmp_path, query):
    fn, args, _, expected = query
    db = Database(f"sqlite:///{tmp_path / 'plan.db'}", store.metadata)
    try:
        statements = _statements_of(db, fn, *args)
        assert statements
        for statement, params in statements:
            with db.engine.connect() as conn:   # unpatched test process: direct use is safe
                plan = [r[-1] for r in conn.exec_driver_sql("EXPLAIN QUERY PLAN " + statement, params)]
            if "FROM conversations" in statement:   # a batch's seq read: by the pair's key
                assert any(step.startswith("SEARCH conversations USING") for step in plan), plan
            else:
                assert any(step.startswith("SEARCH messages USING") and expected in step
                           for step in plan), plan
            assert not any(step.startswith("SCAN") for step in plan), plan
    finally:
        db.close()


@pytest.fixture(scope="module")
def postgres_with_history(postgres_url, tmp_path_factory):
    """A database of its own with 300,000 messages (1 in 20 unread), analyzed,
    so that the planner chooses as it would in production."""
    with database_url("postgresql", tmp_path_factory.getbasetemp(), "message_plans") as url:
        db = Database(url, store.metadata, pool_size=1)
        with db.engine.begin() as conn:
            conn.exec_driver_sql("""
                INSERT INTO messages (from_user_id, to_user_id, user_lo, user_hi, msg_id, content,
                                      content_type, created_at, seq, delivered_at, read_at)
                SELECT f, t, least(f, t), greatest(f, t), 'm' || g, 'x', 1, g, g, g,
                       CASE WHEN mod(g, 20) = 0 THEN NULL ELSE g END
                FROM (SELECT g, 1 + mod(g, 1000) AS f, 1 + mod(g / 1000 + 7 * g, 1000) AS t
                      FROM generate_series(1, 300000) AS g) AS s
                WHERE f <> t""")
        with db.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.exec_driver_sql("ANALYZE messages")
        yield db
        db.close()


@pytest.mark.parametrize("query", _QUERIES.values(), ids=_QUERIES.keys())
def test_postgresql_queries_use_indexes(postgres_with_history, query):
    fn, args, indexes, _ = query
    db = postgres_with_history
    statements = _statements_of(db, fn, *args)
    assert statements
    for statement, params in statements:
        with db.engine.connect() as conn:
            plan = "\n".join(r[0] for r in conn.exec_driver_sql("EXPLAIN " + statement, params))
        # a batch's seq read goes by the pair's key
        usable = {"conversations_pkey"} if "FROM conversations" in statement else indexes
        assert any(index in plan for index in usable) and "Seq Scan" not in plan, plan
