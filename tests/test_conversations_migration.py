"""Message store schema 0004 (docs/protocol.md "Conversation list"): upgrading a
database at 0001 fills ``user_conversations`` from the conversations it holds
(both users of each pair, the last message's time and seq), and the check finds
the migrated schema equal to the models; down again drops the table. SQLite and
PostgreSQL."""
from __future__ import annotations

import pytest
import sqlalchemy as sa

from service_harness import database_url
from skyeim import migrations
from skyeim.admin.stores import models
from skyeim.db import make_sqlite_directory, open_engine
from skyeim.message import store

pytestmark = pytest.mark.timeout(120)


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_upgrading_fills_the_conversation_list_of_both_users(backend, tmp_path):
    with database_url(backend, tmp_path, "conv0004") as url:
        make_sqlite_directory(sa.make_url(url))
        engine = open_engine(sa.make_url(url), pool_size=1, statement_timeout_ms=0)
        try:
            with engine.begin() as conn:
                migrations.migrate(conn, "message", url, "0001")
                md = migrations.baseline_schema("message")
                msgs, convs = md.tables["messages"], md.tables["conversations"]
                rows = [(1, 2, 1, 100), (2, 1, 2, 200), (1, 3, 1, 300)]   # from, to, seq, at
                conn.execute(msgs.insert(), [
                    {"from_user_id": f, "to_user_id": t, "user_lo": min(f, t), "user_hi": max(f, t),
                     "msg_id": f"m{i}", "content": b"x", "content_type": 1, "created_at": at,
                     "seq": seq} for i, (f, t, seq, at) in enumerate(rows)])
                conn.execute(convs.insert(), [{"user_lo": 1, "user_hi": 2, "last_seq": 2},
                                              {"user_lo": 1, "user_hi": 3, "last_seq": 1}])
            with engine.begin() as conn:
                assert migrations.migrate(conn, "message", url)[1] == migrations.head("message")
                uc = store.user_conversations.c
                got = conn.execute(sa.select(uc.user_id, uc.kind, uc.peer_id, uc.last_at,
                                             uc.last_seq, uc.pinned, uc.muted)
                                   .order_by(uc.user_id, uc.peer_id)).all()
                assert [tuple(r) for r in got] == [(1, 0, 2, 200, 2, 0, 0), (1, 0, 3, 300, 1, 0, 0),
                                                   (2, 0, 1, 200, 2, 0, 0), (3, 0, 1, 300, 1, 0, 0)]
                assert migrations.differences(conn, "message", models("message")) == []
            with engine.begin() as conn:
                migrations.migrate(conn, "message", url, "0001")
                assert "user_conversations" not in sa.inspect(conn).get_table_names()
        finally:
            engine.dispose()
