"""/metrics: Prometheus text on the gateway and on every service, on each program's
admin listener (Admin: {Host, Port}) and never on its public port, and the
counters move under traffic."""
from __future__ import annotations

import json
import re
import time

import pytest
import requests

import rawws


def scrape(url: str) -> dict[str, float]:
    r = requests.get(url + "/metrics", timeout=5)
    assert r.status_code == 200
    assert r.headers["Content-Type"].startswith("text/plain")
    values = {}
    for line in r.text.splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            values[name] = float(value)
    return values


def eventually(condition, timeout: float = 5.0) -> None:
    """Poll a condition that has no event to wait on (a scraped gauge), within a bound."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.05)


def delta(before: dict, after: dict, name: str) -> float:
    return after.get(name, 0.0) - before.get(name, 0.0)


def test_gateway_counters_move_under_traffic(system):
    alice, bob = system.users("met_a", "met_b")
    before = scrape(system.metrics_url)
    ca, cb = system.connect(alice), system.connect(bob)
    mid = ca.chat(bob, "counted")
    ca.expect_ack(mid, "sent")
    ca.expect_ack(mid, "delivered")
    cb.expect("chat")
    ca.send("ping")
    ca.expect("pong")
    ca.send_raw("not json")
    ca.expect_error("bad_json")
    during = scrape(system.metrics_url)

    assert delta(before, during, 'skyeim_frames_in_total{type="chat"}') == 1
    assert delta(before, during, 'skyeim_frames_in_total{type="ping"}') == 1
    assert delta(before, during, 'skyeim_frames_in_total{type="invalid"}') == 1
    assert delta(before, during, 'skyeim_frames_out_total{type="chat"}') == 1
    assert delta(before, during, 'skyeim_frames_out_total{type="connected"}') == 2
    assert delta(before, during, 'skyeim_frames_out_total{type="ack"}') == 2
    assert delta(before, during, 'skyeim_chat_ack_seconds_count{status="sent"}') == 1
    assert delta(before, during, 'skyeim_chat_ack_seconds_count{status="delivered"}') == 1
    assert delta(before, during, "skyeim_ws_connections") == 2
    assert during["skyeim_users_online"] >= 2
    assert delta(before, during, 'skyeim_backend_request_seconds_count{service="message"}') >= 3

    ca.close()
    cb.close()
    eventually(lambda: scrape(system.metrics_url)["skyeim_ws_connections"] == before["skyeim_ws_connections"])
    after = scrape(system.metrics_url)
    assert delta(before, after, 'skyeim_ws_closes_total{code="1000"}') == 2


def test_chats_that_arrive_together_share_one_batch_call(system):
    """A client's burst (one TCP write) is read in one pass and stored with one
    call: skyeim_backend_batch_size shows fewer batches than chats."""
    alice, bob = system.users("met_burst_a", "met_burst_b")
    before = scrape(system.metrics_url)
    ws = rawws.connect(system, alice)
    ids = [f"burst-{i}" for i in range(6)]
    ws.send_raw(b"".join(rawws.frame_bytes(rawws.OP_TEXT, json.dumps(
        {"type": "chat", "data": {"msgId": mid, "toUserId": bob.id, "content": "x"}})) for mid in ids))
    sent = []
    while len(sent) < len(ids):
        ack = ws.expect("ack")
        if ack["status"] == "sent":
            sent.append(ack["msgId"])
    assert sent == ids
    after = scrape(system.metrics_url)
    rawws.close_raw_sockets()
    assert delta(before, after, 'skyeim_backend_batch_size_sum{batch="message_sends"}') == 6
    assert delta(before, after, 'skyeim_backend_batch_size_count{batch="message_sends"}') == 1


def test_refused_handshakes_are_counted(system):
    before = scrape(system.metrics_url)
    assert system.handshake("not-a-token").status == 401
    after = scrape(system.metrics_url)
    assert delta(before, after, 'skyeim_handshake_refusals_total{code="unauthorized"}') == 1


@pytest.mark.parametrize("service", ["message", "friend", "auth"])
def test_each_service_serves_its_own_metrics_without_the_secret(system, service):
    system.users(f"met_{service}")          # register + login: traffic on auth (and friend lookups)
    values = scrape(system.admin_url(service))
    names = {re.sub(r"\{.*", "", k) for k in values}
    assert "skyeim_http_request_seconds_count" in names
    assert not any(k.startswith("skyeim_frames") for k in values)   # the gateway's are not mixed in


def test_gateway_reports_process_figures_for_leak_watching(system):
    """RSS, open descriptors and live greenlets: what the fuzz and soak tests watch."""
    alice, bob = system.users("met_p1", "met_p2")
    before = scrape(system.metrics_url)
    assert before["process_resident_memory_bytes"] > 10_000_000
    assert before["process_open_fds"] > 0
    ca, cb = system.connect(alice), system.connect(bob)
    # each connection counts twice: its socket's greenlet in the server's pool and its session
    connected = scrape(system.metrics_url)["skyeim_greenlets"]
    assert connected >= 4
    ca.close()
    cb.close()
    # and both go when it closes (a leak would keep them). Measured from the connected
    # figure, not from one before connecting: the test's own keep-alive HTTP sockets to
    # the gateway come and go meanwhile (one closing made "idle + 4" unreachable)
    eventually(lambda: scrape(system.metrics_url)["skyeim_greenlets"] <= connected - 4)


def _label_values(text: str) -> list[tuple[str, str]]:
    """(series, value) of every label value in a /metrics page."""
    out = []
    for line in text.splitlines():
        if line and not line.startswith("#"):
            out += [(line.split("{", 1)[0], v) for v in re.findall(r'="((?:[^"\\]|\\.)*)"', line)]
    return out


def test_label_values_have_no_spaces_in_any_program(system):
    """Spaces in label values break the simplest scrapers and greps (issue 12)."""
    alice, bob = system.users("met_lv1", "met_lv2")
    system.befriend(alice, bob)
    c = system.connect(alice)                 # friend lists, unread first pages, group lists batched
    c.chat(bob.id, "hi")
    c.expect("ack")
    c.close()
    for name in ("ws", "message", "friend", "auth"):
        url = system.admin_url(name)
        text = requests.get(url + "/metrics", timeout=5).text
        values = _label_values(text)
        assert values, url
        spaced = [(series, v) for series, v in values if " " in v]
        assert not spaced, (url, spaced[:5])


def test_gateway_counts_and_times_its_api_requests_by_route_and_status(system):
    before = scrape(system.metrics_url)
    alice = system.register_user("met_api")
    system.api("GET", "/api/friends", alice)
    system.api("POST", "/api/friends", alice, json_body={"friendId": "x"})
    after = scrape(system.metrics_url)
    series = 'skyeim_http_request_seconds_count{method="%s",route="%s",status="%s"}'
    assert delta(before, after, series % ("POST", "/api/register", "200")) == 1
    assert delta(before, after, series % ("POST", "/api/login", "200")) == 1
    assert delta(before, after, series % ("GET", "/api/friends", "200")) == 1
    assert delta(before, after, series % ("POST", "/api/friends", "400")) == 1
    # only /api: the WebSocket, the probes and the page are not in it
    assert not any('route="/ws"' in k or 'route="/healthz"' in k for k in after)


@pytest.mark.parametrize("program", ["ws", "message", "friend", "auth"])
def test_metrics_are_on_the_admin_listener_only(system, program):
    public = system.url if program == "ws" else system.service_url(program)
    r = requests.get(public + "/metrics", timeout=5)
    assert r.status_code == 404, (program, r.status_code)
    assert "skyeim_" not in r.text
    admin = system.admin_url(program)
    assert requests.get(admin + "/healthz", timeout=5).json() == {"ok": True}
    expected = "skyeim_ws_connections" if program == "ws" else "skyeim_http_request_seconds"
    assert expected in requests.get(admin + "/metrics", timeout=5).text
