"""The Message service's group commit (skyeim/message/writer.py) and the SQLite
WAL checkpointer (skyeim/db.py), over a real SQLite file: requests from many
greenlets share one transaction, each gets its own answer, and one request's
failure is its own."""
from __future__ import annotations

import os

import gevent
import pytest

from skyeim.db import RACE_ATTEMPTS, Database, DatabaseUnavailable, TransactionRace
from skyeim.message import store, writer
from skyeim.message.writer import MessageWriter


@pytest.fixture
def db(tmp_path):
    database = Database(f"sqlite:///{tmp_path / 'message.db'}", store.metadata)
    yield database
    database.close()


def chat(sender: int, to: int, n: int) -> store.NewMessage:
    return store.NewMessage(f"m{sender}-{n}", sender, to, f"hello {n}", 1)


def test_concurrent_sends_and_deliveries_share_cycles_and_each_gets_its_answer(db, monkeypatch):
    cycles = []
    real = writer._store_group
    monkeypatch.setattr(writer, "_store_group",
                        lambda conn, requests: cycles.append(len(requests)) or real(conn, requests))
    w = MessageWriter(db)
    senders = [gevent.spawn(w.send, [chat(s, 100 + s, n) for n in range(3)]) for s in range(1, 21)]
    gevent.joinall(senders, raise_error=True)
    for s, g in enumerate(senders, start=1):
        rows = g.value
        assert [(r.msg_id, r.seq, dup) for r, dup in rows] == \
            [(f"m{s}-{n}", n + 1, False) for n in range(3)]       # each pair's seqs 1, 2, 3
    assert sum(cycles) == 20 and len(cycles) < 20                  # requests shared commits
    deliveries = [gevent.spawn(w.deliver, [(100 + s, [(s, f"m{s}-0"), (s, f"m{s}-1")])])
                  for s in range(1, 21)]
    again = gevent.spawn(w.deliver, [(101, [(1, "m1-0")])])         # already delivered by then
    gevent.joinall(deliveries + [again], raise_error=True)
    for s, g in enumerate(deliveries, start=1):
        assert [(f, m) for f, m, _ in g.value[0]] == [(s, f"m{s}-0"), (s, f"m{s}-1")]
    assert again.value == [[]]
    w.close()


def test_a_resend_in_another_request_of_the_same_cycle_is_a_duplicate(db):
    w = MessageWriter(db)
    first, second = gevent.spawn(w.send, [chat(1, 2, 0)]), gevent.spawn(w.send, [chat(1, 2, 0)])
    gevent.joinall([first, second], raise_error=True)
    assert [dup for _, dup in first.value + second.value] == [False, True]
    assert first.value[0][0].seq == second.value[0][0].seq == 1
    w.close()


def test_a_failing_request_fails_alone(db, monkeypatch):
    real = store.send_messages

    def refuse_poison(conn, msgs):
        if any(m.content == "poison" for m in msgs):
            raise RuntimeError("poison")
        return real(conn, msgs)

    monkeypatch.setattr(store, "send_messages", refuse_poison)
    w = MessageWriter(db)
    good = [gevent.spawn(w.send, [chat(s, 50, 0)]) for s in range(1, 6)]
    bad = gevent.spawn(w.send, [store.NewMessage("x", 9, 50, "poison", 1)])
    gevent.joinall(good + [bad])
    assert all(g.successful() and g.value[0][1] is False for g in good)
    assert isinstance(bad.exception, RuntimeError)
    w.close()


def test_a_full_queue_answers_busy_at_once(db):
    w = MessageWriter(db)
    w.workers[0].kill()                 # nobody drains the queue
    for _ in range(w.QUEUE_SIZE):
        w.queue.put_nowait(("send", [], 1, gevent.event.AsyncResult()))
    with pytest.raises(writer.WriterBusy):
        w.send([chat(1, 2, 0)])


def test_the_checkpointer_copies_the_wal_back_beside_the_writer(db):
    """The writer's own checkpoint comes only past 20,000 pages (~80 MB): what
    reaches the database file before that was copied by the checkpointer thread."""
    path = db.engine.url.database
    w = MessageWriter(db)
    w.send([chat(1, 2, 0)])
    before = os.path.getsize(path)
    for n in range(40):
        w.send([chat(s, 1000 + s, n) for s in range(1, 101)])
    assert os.path.getsize(path + "-wal") > 1_000_000       # 4,000 chats' pages in the WAL
    deadline = 50
    while os.path.getsize(path) < before + 500_000 and deadline:
        gevent.sleep(0.05)              # a checkpointer pass every 0.2 s
        deadline -= 1
    assert os.path.getsize(path) >= before + 500_000
    w.close()


def test_a_transaction_that_loses_a_race_is_rolled_back_and_run_again_a_bounded_number_of_times(db):
    runs = []

    def store_then_lose(conn, losses: int):
        runs.append(store.send_messages(conn, [chat(1, 2, len(runs))])[0][0].seq)
        if len(runs) <= losses:
            raise TransactionRace("a concurrent transaction stored one of the keys")
        return runs[-1]

    assert db.run(store_then_lose, 1) == 1 and runs == [1, 1]   # the first run's seq rolled back
    runs.clear()
    with pytest.raises(DatabaseUnavailable, match=f"lost a race {RACE_ATTEMPTS} times"):
        db.run(store_then_lose, RACE_ATTEMPTS)
    assert len(runs) == RACE_ATTEMPTS
    stored = db.run(lambda conn: [r.msg_id for r in store.history_page(conn, 1, 2, None, 50)[0]])
    assert stored == ["m1-1"]                                  # only the run that committed
