"""PROTOCOL.md 9.2: the server API under /server/v1 (X-Api-Key), standalone and in
a cluster of two gateways on Redis; partly through skyeim.server's client."""
from __future__ import annotations

import time
import uuid

import pytest

from cluster_harness import running_cluster
from harness import UUID4, free_port, new_msg_id, running_system, wait_until
from server_api_harness import KEY, WS_OVERRIDE, assert_error, call, metric_value
from skyeim.server import ServerApi, ServerApiError

SLACK = 1.5                # s on top of protocol bounds, for a loaded test machine
WITHIN = 2.0 + SLACK       # PROTOCOL.md 9.2/9.5: disconnects and friend frames within 2 s


@pytest.fixture(scope="module")
def srv(tmp_path_factory):
    """A standalone gateway with ServerApi.Key set."""
    with running_system(tmp_path_factory.mktemp("server_api"), ws=WS_OVERRIDE) as s:
        yield s


@pytest.fixture(scope="module")
def api(srv):
    client = ServerApi(srv.url, KEY, timeout=10)
    yield client
    client.close()


ROUTES = [("POST", "/messages"), ("POST", "/notices"), ("POST", "/disconnect"),
          ("GET", "/presence?userIds=1"), ("GET", "/stats"), ("POST", "/friends"),
          ("DELETE", "/friends/1/2")]


# ---------------------------------------------------------------------------
# the key

@pytest.mark.parametrize("method,path", ROUTES)
def test_without_a_key_configured_the_server_tree_is_404(system, method, path):
    # the conftest's system: the default ws.yaml, ServerApi.Key empty
    r = call(system.url, method, path, json_body={})
    assert_error(r, 404, "not_found")
    assert_error(call(system.url, "GET", "/stats", key=None), 404, "not_found")


@pytest.mark.parametrize("method,path", ROUTES)
@pytest.mark.parametrize("key", [None, "", "wrong", KEY + "x", KEY[:-1]],
                         ids=["missing", "empty", "wrong", "longer", "shorter"])
def test_a_missing_or_wrong_key_is_401(srv, method, path, key):
    assert_error(call(srv.url, method, path, key=key, json_body={}), 401, "unauthorized")


def test_the_client_raises_the_gateways_error_or_status_0_when_unreached(srv):
    with pytest.raises(ServerApiError) as e:
        ServerApi(srv.url, "wrong-key").stats()
    assert (e.value.status, e.value.code) == (401, "unauthorized")
    with pytest.raises(ServerApiError) as e:
        ServerApi(f"http://127.0.0.1:{free_port()}", KEY, timeout=2).stats()
    assert e.value.status == 0
    with pytest.raises(ValueError):
        ServerApi(srv.url, KEY).notice("e", None)          # neither user_ids nor everyone


def test_requests_are_counted_by_route_and_status(srv, api):
    before_ok = metric_value(srv.metrics_url, "skyeim_server_api_requests_total",
                             route="/server/v1/stats", status="200")
    before_401 = metric_value(srv.metrics_url, "skyeim_server_api_requests_total",
                              route="/server/v1/stats", status="401")
    api.stats()
    api.stats()
    call(srv.url, "GET", "/stats", key="nope")
    assert metric_value(srv.metrics_url, "skyeim_server_api_requests_total",
                        route="/server/v1/stats", status="200") == before_ok + 2
    assert metric_value(srv.metrics_url, "skyeim_server_api_requests_total",
                        route="/server/v1/stats", status="401") == before_401 + 1


# ---------------------------------------------------------------------------
# bad input: 400 naming the field, never 500

BAD = [
    ("POST", "/messages", [], "body"),
    ("POST", "/messages", {"toUserId": 2, "content": "x"}, "fromUserId"),
    ("POST", "/messages", {"fromUserId": "1", "toUserId": 2, "content": "x"}, "fromUserId"),
    ("POST", "/messages", {"fromUserId": True, "toUserId": 2, "content": "x"}, "fromUserId"),
    ("POST", "/messages", {"fromUserId": 1, "toUserId": 0, "content": "x"}, "toUserId"),
    ("POST", "/messages", {"fromUserId": 1, "toUserId": 2 ** 63, "content": "x"}, "toUserId"),
    ("POST", "/messages", {"fromUserId": 1, "toUserId": 1, "content": "x"}, "toUserId"),
    ("POST", "/messages", {"fromUserId": 1, "toUserId": 2, "content": ""}, "content"),
    ("POST", "/messages", {"fromUserId": 1, "toUserId": 2, "content": 5}, "content"),
    ("POST", "/messages", {"fromUserId": 1, "toUserId": 2, "content": "x" * 16385}, "content"),
    ("POST", "/messages", {"fromUserId": 1, "toUserId": 2, "content": "x", "contentType": 9},
     "contentType"),
    ("POST", "/messages", {"fromUserId": 1, "toUserId": 2, "content": "x", "contentType": True},
     "contentType"),
    ("POST", "/messages", {"fromUserId": 1, "toUserId": 2, "content": "x", "msgId": "a b"},
     "msgId"),
    ("POST", "/messages", {"fromUserId": 1, "toUserId": 2, "content": "x", "msgId": "m" * 65},
     "msgId"),
    ("POST", "/notices", {"event": "e", "data": 1}, "userIds"),
    ("POST", "/notices", {"userIds": [], "event": "e"}, "userIds"),
    ("POST", "/notices", {"userIds": "1", "event": "e"}, "userIds"),
    ("POST", "/notices", {"userIds": [1, "2"], "event": "e"}, "userIds"),
    ("POST", "/notices", {"userIds": list(range(1, 1002)), "event": "e"}, "userIds"),
    ("POST", "/notices", {"all": 1, "event": "e"}, "all"),
    ("POST", "/notices", {"all": True, "userIds": [1], "event": "e"}, "userIds"),
    ("POST", "/notices", {"userIds": [1]}, "event"),
    ("POST", "/notices", {"userIds": [1], "event": ""}, "event"),
    ("POST", "/notices", {"userIds": [1], "event": "e" * 65}, "event"),
    ("POST", "/notices", {"userIds": [1], "event": "has space"}, "event"),
    ("POST", "/notices", {"userIds": [1], "event": "e", "data": "x" * 16385}, "data"),
    ("POST", "/notices", {"userIds": [1], "event": "e", "data": 2 ** 70}, "data"),
    ("POST", "/disconnect", {}, "userId"),
    ("POST", "/disconnect", {"userId": -3}, "userId"),
    ("GET", "/presence", None, "userIds"),
    ("GET", "/presence?userIds=", None, "userIds"),
    ("GET", "/presence?userIds=1,x", None, "userIds"),
    ("GET", "/presence?userIds=1,,2", None, "userIds"),
    ("GET", "/presence?userIds=0", None, "userIds"),
    ("GET", "/presence?userIds=" + ",".join(map(str, range(1, 1002))), None, "userIds"),
    ("POST", "/friends", {"friendId": 2}, "userId"),
    ("POST", "/friends", {"userId": 1, "friendId": "2"}, "friendId"),
    ("POST", "/friends", {"userId": 1, "friendId": 1}, "friendId"),
    ("DELETE", "/friends/x/2", None, "userId"),
    ("DELETE", "/friends/1/99999999999999999999", None, "friendId"),
]


@pytest.mark.parametrize("method,path,body,field", BAD,
                         ids=[f"{m} {p[:30]} {f}" for m, p, _, f in BAD])
def test_bad_input_is_400_naming_the_field(srv, method, path, body, field):
    kw = {} if body is None else {"json_body": body}
    assert_error(call(srv.url, method, path, **kw), 400, "bad_request", names=field)


def test_a_body_that_is_not_json_is_400(srv):
    r = call(srv.url, "POST", "/messages", data=b"{not json",
             headers={"Content-Type": "application/json"})
    assert_error(r, 400, "bad_request")
    r = call(srv.url, "POST", "/notices", data=b"[" * 100_000 + b"]" * 100_000,
             headers={"Content-Type": "application/json"})
    assert r.status_code in (400, 413), r.text


# ---------------------------------------------------------------------------
# messages from a backend account

def test_a_message_from_a_backend_account_is_stored_delivered_and_in_history(srv, api):
    bot, bob = srv.minted_user("bot"), srv.minted_user("bob")
    bot_ws = srv.connect(bot)
    bob_ws = srv.connect(bob)
    msg_id = new_msg_id()
    sent = api.send_message(bot.id, bob.id, "your order shipped", msg_id=msg_id, content_type=1)
    assert sent["msgId"] == msg_id and sent["duplicate"] is False and sent["delivered"] is True
    assert type(sent["seq"]) is int and type(sent["createdAt"]) is int
    chat = bob_ws.expect("chat")
    assert chat == {"msgId": msg_id, "fromUserId": bot.id, "toUserId": bob.id,
                    "content": "your order shipped", "contentType": 1,
                    "createdAt": sent["createdAt"], "seq": sent["seq"]}
    bot_ws.assert_no_frame(0.5)              # no ack (nor copy) to the sender's connections
    history = srv.history(bob, bot)["messages"]
    assert [m["msgId"] for m in history] == [msg_id]
    # idempotent on (fromUserId, msgId): stored once, not delivered again
    again = api.send_message(bot.id, bob.id, "your order shipped", msg_id=msg_id)
    assert again["duplicate"] is True and again["seq"] == sent["seq"]
    assert again["delivered"] is True
    bob_ws.assert_no_frame(0.5)
    assert len(srv.history(bob, bot)["messages"]) == 1


def test_a_message_to_an_offline_user_waits_in_the_backlog(srv, api):
    bot, carol = srv.minted_user("bot"), srv.minted_user("carol")
    sent = api.send_message(bot.id, carol.id, "while you were away")   # no msgId: a UUID4
    assert UUID4.match(sent["msgId"]), sent
    assert sent["delivered"] is False and sent["duplicate"] is False
    backlog = srv.connect(carol).backlog        # the chats before `connected`
    assert [m["msgId"] for m in backlog] == [sent["msgId"]]
    assert backlog[0]["fromUserId"] == bot.id and backlog[0]["content"] == "while you were away"


def test_messages_need_no_friendship_and_no_rate_limit(system_factory):
    s = system_factory(ws={**WS_OVERRIDE, "Chat": {"RequireFriendship": True}})
    bot, dave = s.minted_user("bot"), s.minted_user("dave")
    ws = s.connect(dave)
    client = ServerApi(s.url, KEY)
    ids = [client.send_message(bot.id, dave.id, f"n{i}")["msgId"] for i in range(30)]
    got = [m["msgId"] for m in ws.collect("chat", 30)]
    assert got == ids


def test_the_message_service_down_is_503(system_factory):
    s = system_factory(ws=WS_OVERRIDE, standalone=False)
    s.stop_process("message")
    client = ServerApi(s.url, KEY, timeout=15)
    with pytest.raises(ServerApiError) as e:
        client.send_message(1, 2, "hello")
    assert e.value.status == 503 and e.value.code == "unavailable"


# ---------------------------------------------------------------------------
# notices, disconnect, presence, stats

def test_a_notice_reaches_the_listed_users_only(srv, api):
    a, b, c = (srv.minted_user(n) for n in ("na", "nb", "nc"))
    wa, wb, wc = srv.connect(a), srv.connect(b), srv.connect(c)
    before = int(time.time() * 1000)
    n = api.notice("order.shipped", {"orderId": 7, "items": ["x"]}, user_ids=[a.id, b.id, a.id])
    assert n == 2
    for w in (wa, wb):
        data = w.expect("notice")
        assert data["event"] == "order.shipped" and data["data"] == {"orderId": 7, "items": ["x"]}
        assert before - 5000 <= data["timestamp"] <= int(time.time() * 1000) + 5000
    wc.assert_no_frame(0.5)
    # never stored: a reconnect brings nothing back
    wa.close()
    srv.connect(a).assert_no_frame(0.5)
    # an offline user counts nothing
    assert api.notice("x", None, user_ids=[srv.minted_user("off").id]) == 0


def test_notice_data_up_to_max_content_length_bytes_is_accepted(srv, api):
    u = srv.minted_user("big")
    w = srv.connect(u)
    data = "é" * 8191                        # 2 * 8191 + 2 quotes = 16384 bytes as JSON
    assert api.notice("big", data, user_ids=[u.id]) == 1
    assert w.expect("notice")["data"] == data
    r = call(srv.url, "POST", "/notices", json_body={"userIds": [u.id], "event": "big",
                                                     "data": data + "x"})
    assert_error(r, 400, "bad_request", names="data")


def test_a_notice_to_everyone_reaches_every_connection(srv, api):
    users = [srv.minted_user(f"all{i}") for i in range(3)]
    conns = [srv.connect(u) for u in users]
    n = api.notice("maintenance", {"inSeconds": 600}, everyone=True)
    assert n >= 3
    for w in conns:
        assert w.expect("notice")["event"] == "maintenance"


def test_disconnect_closes_every_connection_with_4003_and_a_token_connects_again(srv, api):
    u, other = srv.minted_user("kicked"), srv.minted_user("stays")
    w, wo = srv.connect(u), srv.connect(other)
    assert api.disconnect(u.id) == 1
    t0 = time.monotonic()
    assert w.expect_close(WITHIN) == 4003
    assert time.monotonic() - t0 <= WITHIN
    wo.assert_open()
    srv.connect(u).assert_open()                 # not a ban
    assert api.disconnect(srv.minted_user("nobody").id) == 0


def test_presence_and_stats(srv, api):
    on, off = srv.minted_user("on"), srv.minted_user("off")
    srv.connect(on)
    assert api.online([on.id, off.id]) == [on.id]
    r = call(srv.url, "GET", f"/presence?userIds={off.id},{on.id},{on.id}")
    assert r.status_code == 200 and r.json() == {"online": [on.id]}
    stats = api.stats()
    assert set(stats) == {"onlineUsers", "connections"}
    assert stats["onlineUsers"] >= 1 and stats["connections"] >= stats["onlineUsers"]
    srv.connect(srv.minted_user("more"))
    after = api.stats()
    assert after["onlineUsers"] >= 2 and after["connections"] >= 2


# ---------------------------------------------------------------------------
# friendships

def test_friendship_changes_reach_both_users_and_presence_follows(srv, api):
    alice, bob = srv.register_user("alice"), srv.register_user("bob")
    wa, wb = srv.connect(alice), srv.connect(bob)
    api.add_friend(alice.id, bob.id)
    assert wa.expect("friend_added", WITHIN) == {"userId": bob.id, "username": bob.username,
                                                 "online": True}
    assert wb.expect("friend_added", WITHIN) == {"userId": alice.id,
                                                 "username": alice.username, "online": True}
    r = srv.api("GET", "/api/friends", alice)
    assert [f["userId"] for f in r.json()["friends"]] == [bob.id]
    wb.close()                                   # presence started with the friendship
    assert wa.expect("offline", WITHIN)["userId"] == bob.id
    api.remove_friend(alice.id, bob.id)
    assert wa.expect("friend_removed", WITHIN) == {"userId": bob.id}
    assert srv.api("GET", "/api/friends", alice).json()["friends"] == []
    srv.connect(bob)                             # and stopped with it
    wa.assert_no_frame(1.0)


def test_a_friendship_with_a_user_the_auth_service_does_not_know_is_made(srv, api):
    """A team that issues its own tokens has users SkyeIM's Auth service never saw."""
    alice = srv.register_user("own_users")
    wa = srv.connect(alice)
    r = call(srv.url, "POST", "/friends", json_body={"userId": alice.id, "friendId": 2 ** 62})
    assert r.status_code == 200 and r.json() == {"ok": True}, r.text
    assert wa.expect("friend_added", WITHIN) == {"userId": 2 ** 62, "username": None, "online": False}


# ---------------------------------------------------------------------------
# cluster: every call acts on the whole cluster, whichever node takes it

@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    with running_cluster(tmp_path_factory.mktemp("server_api_cluster"), "server_api_cluster",
                         nodes=2, heartbeat_interval=1, node_ttl=3,
                         ws={**WS_OVERRIDE, "WebSocket": {"MultiLogin": "allow"}}) as system:
        yield system


def test_cluster_notice_to_a_user_on_another_node(cluster):
    n1, n2 = cluster[1], cluster[2]
    u = cluster.minted_user("far")
    w = n2.connect(u)
    assert ServerApi(n1.url, KEY).notice("ping.me", [1, 2], user_ids=[u.id]) == 1
    assert w.expect("notice")["data"] == [1, 2]


def test_cluster_notice_to_everyone_reaches_both_nodes(cluster):
    n1, n2 = cluster[1], cluster[2]
    users = [cluster.minted_user(f"every{i}") for i in range(4)]
    conns = [(n1 if i % 2 else n2).connect(u) for i, u in enumerate(users)]
    # the other node's count comes with its heartbeat (1 s here)
    wait_until(lambda: ServerApi(n1.url, KEY).stats()["connections"] >= 4, 10)
    n = ServerApi(n1.url, KEY).notice("deploy", {"v": 2}, everyone=True)
    assert n >= 4
    for w in conns:
        assert w.expect("notice")["data"] == {"v": 2}


def test_cluster_disconnect_closes_connections_on_every_node(cluster):
    n1, n2 = cluster[1], cluster[2]
    u, other = cluster.minted_user("gone"), cluster.minted_user("stays")
    w1, w2, wo = n1.connect(u), n2.connect(u), n2.connect(other)   # MultiLogin allow here
    assert ServerApi(n1.url, KEY).disconnect(u.id) == 2
    assert w2.expect_close(WITHIN) == 4003
    assert w1.expect_close(WITHIN) == 4003
    wo.assert_open()
    n2.connect(u).assert_open()                  # not a ban


def test_cluster_message_from_a_backend_account(cluster):
    n1, n2 = cluster[1], cluster[2]
    bot, rcpt = cluster.minted_user("bot"), cluster.minted_user("rcpt")
    bot_ws, w = n1.connect(bot), n2.connect(rcpt)
    msg_id = f"sys-{uuid.uuid4().hex}"
    sent = ServerApi(n1.url, KEY).send_message(bot.id, rcpt.id, "hello from the system",
                                               msg_id=msg_id)
    assert sent["delivered"] is True and sent["duplicate"] is False
    chat = w.expect("chat")
    assert chat["msgId"] == msg_id and chat["seq"] == sent["seq"]
    bot_ws.assert_no_frame(1.0)                  # no `ack delivered` from the other node either
    r = n2.api("GET", "/api/messages", rcpt, params={"peerId": bot.id})
    assert [m["msgId"] for m in r.json()["messages"]] == [msg_id]


def test_cluster_presence_and_stats(cluster):
    n1, n2 = cluster[1], cluster[2]
    a, b, off = (cluster.minted_user(n) for n in ("pa", "pb", "poff"))
    n1.connect(a)
    n2.connect(b)
    for node in (n1, n2):
        assert ServerApi(node.url, KEY).online([a.id, b.id, off.id]) == [a.id, b.id]
    stats = wait_until(lambda: (s := ServerApi(n2.url, KEY).stats())["connections"] >= 2 and s, 10)
    assert stats["onlineUsers"] >= 2


def test_cluster_friendship_frames_on_both_nodes(cluster):
    n1, n2 = cluster[1], cluster[2]
    a, b = cluster.register_user("ca"), cluster.register_user("cb")
    wa, wb = n1.connect(a), n2.connect(b)
    api = ServerApi(n2.url, KEY)
    api.add_friend(a.id, b.id)
    assert wa.expect("friend_added", WITHIN)["userId"] == b.id
    assert wb.expect("friend_added", WITHIN) == {"userId": a.id, "username": a.username,
                                                 "online": True}
    api.remove_friend(b.id, a.id)
    assert wa.expect("friend_removed", WITHIN) == {"userId": b.id}
    assert wb.expect("friend_removed", WITHIN) == {"userId": a.id}


def test_cluster_without_the_key_is_401_on_every_node(cluster):
    for node in cluster.nodes:
        assert_error(call(node.url, "GET", "/stats", key="wrong"), 401, "unauthorized")
