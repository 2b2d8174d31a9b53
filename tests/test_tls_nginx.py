"""SkyeIM behind nginx with TLS (issue 12 part 4): a real nginx on 127.0.0.1 with
the shipped etc/nginx/skyeim.conf (only addresses, ports, certificate and log
paths replaced) and a certificate of a CA made here, in front of a gateway
that trusts it (WebSocket.TrustedProxies). Users chat through it with the SDK
(wss:// and ca_file), the CLI (--ca-file) and the web page in chromium (https,
so the page opens wss:)."""
from __future__ import annotations

import re

import pytest
import requests

from browser_harness import TIMEOUT_MS, VIEWPORT
from harness import PASSWORD, System, close_open_clients, unique, wait_until
from nginx_harness import SITE, Nginx, make_certificates, require_nginx, session_from
from sdk_harness import cli, next_of, ok, one_line_error
from skyeim.client import Api, ChatMessage, Client, ConnectFailed
from skyeim.config import WebSocketConfig


ADDRESS_FAILURES = 4     # failed logins per client address (auth.yaml LoginLimit) here


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    return make_certificates(tmp_path_factory.mktemp("certs"))


@pytest.fixture(scope="module")
def tls(tmp_path_factory, certs):
    """(system, nginx): a standalone system behind nginx on https://127.0.0.1:<port>."""
    require_nginx()
    system = System(tmp_path_factory.mktemp("system"),
                    ws={"WebSocket": {"TrustedProxies": ["127.0.0.1"]}},
                    auth={"LoginLimit": {"MaxAddressFailures": ADDRESS_FAILURES}}).start()
    nginx = Nginx(tmp_path_factory.mktemp("nginx"), system.port, certs)
    try:
        nginx.start()
        yield system, nginx
    finally:
        close_open_clients()
        nginx.stop()
        system.stop()


def _user(api_url: str, ca_file, prefix: str):
    """Register and log in through nginx: (username, Login)."""
    name = unique(prefix)
    api = Api(api_url, ca_file=ca_file)
    api.register(name, PASSWORD)
    return name, api.login(name, PASSWORD)


def test_the_shipped_site_keeps_sockets_longer_than_the_heartbeat():
    site = SITE.read_text()
    ws = re.search(r"location = /ws \{(.*?)\n    \}", site, re.S).group(1)
    assert "proxy_set_header Upgrade $http_upgrade;" in ws
    assert "proxy_set_header Connection $skyeim_connection;" in ws
    assert "proxy_set_header X-Forwarded-For $remote_addr;" in ws
    read_timeout = int(re.search(r"proxy_read_timeout (\d+)s;", ws).group(1))
    defaults = WebSocketConfig()
    assert read_timeout > max(defaults.ping_interval, defaults.pong_timeout)


def test_sdk_chats_over_wss_trusting_the_ca_file(tls, certs):
    system, nginx = tls
    assert requests.get(nginx.url + "/healthz", verify=str(certs.ca), timeout=10).json()["ok"]
    _, alice = _user(nginx.url, certs.ca, "alice")
    _, bob = _user(nginx.url, certs.ca, "bob")

    a = Client(nginx.url, alice.token, ca_file=str(certs.ca))          # https:// -> wss://
    b = Client(nginx.url.replace("https://", "wss://") + "/ws", bob.token, ca_file=str(certs.ca))
    try:
        assert a.url.startswith("wss://127.0.0.1:")
        a.connect()
        b.connect()
        sent = a.send_chat(bob.user_id, "hello over TLS", wait="sent")
        assert a.wait_ack(sent.msg_id, "delivered", timeout=30).status == "delivered"
        got = next_of(b, ChatMessage, from_user_id=alice.user_id)
        assert got.content == "hello over TLS"
        b.send_chat(alice.user_id, "and back", wait="sent")
        assert next_of(a, ChatMessage, from_user_id=bob.user_id).content == "and back"
    finally:
        a.close()
        b.close()

    # without the CA file the certificate is refused, with no retry that could succeed
    with pytest.raises(ConnectFailed, match="CERTIFICATE_VERIFY_FAILED|certificate verify failed"):
        Client(nginx.url, alice.token, reconnect=False).connect()
    # nginx logged the socket without the token of its query string
    wait_until(lambda: "/ws" in nginx.access_log(), message="no /ws line in nginx's access log")
    log = nginx.access_log()
    assert alice.token not in log and bob.token not in log and "token=" not in log


def test_cli_chats_through_nginx_with_ca_file(tls, certs, tmp_path):
    system, nginx = tls
    home = tmp_path / "home"
    home.mkdir()
    name = unique("cli")
    ok(cli(nginx, home, "register", name, "--password", PASSWORD, "--ca-file", str(certs.ca)))
    tf = home / "cli.json"
    ok(cli(nginx, home, "login", name, "--password", PASSWORD, "--ca-file", str(certs.ca),
           token_file=tf))
    _, bob = _user(nginx.url, certs.ca, "bob")
    b = Client(nginx.url, bob.token, ca_file=str(certs.ca))
    try:
        b.connect()
        # the login saved the CA file: the next commands need no --ca-file
        ok(cli(nginx, home, "send", str(bob.user_id), "hi from the CLI", token_file=tf))
        got = next_of(b, ChatMessage, content="hi from the CLI")
        assert got.to_user_id == bob.user_id
    finally:
        b.close()
    history = ok(cli(nginx, home, "history", str(bob.user_id), token_file=tf))
    assert "hi from the CLI" in history
    # a CA that did not sign nginx's certificate: one error line, exit 1
    line = one_line_error(cli(nginx, home, "register", unique("x"), "--password", PASSWORD,
                              "--ca-file", "/etc/ssl/certs/ca-certificates.crt"))
    assert "unreachable" in line or "SSL" in line, line


def test_web_page_over_https_chats_over_wss(tls, certs, browser):
    system, nginx = tls
    carol_name, carol = _user(nginx.url, certs.ca, "carol")
    _, bob = _user(nginx.url, certs.ca, "bob")
    r = requests.post(nginx.url + "/api/friends", json={"friendId": bob.user_id},
                      headers={"Authorization": f"Bearer {carol.token}"},
                      verify=str(certs.ca), timeout=10)
    assert r.status_code == 200, r.text
    b = Client(nginx.url, bob.token, ca_file=str(certs.ca))
    sockets: list[str] = []
    try:
        b.connect()
        context = browser.new_context(viewport=VIEWPORT, ignore_https_errors=True)
        page = context.new_page()
        page.set_default_timeout(TIMEOUT_MS)
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.on("websocket", lambda ws: sockets.append(ws.url))
        page.goto(nginx.url + "/")
        page.locator("#login-username").fill(carol_name)
        page.locator("#login-password").fill(PASSWORD)
        page.locator("#login-button").click()
        page.locator("#chat-view").wait_for(state="visible")
        friend = page.locator(f'.friend[data-user-id="{bob.user_id}"]')
        friend.click()
        page.locator("#composer-input").fill("hello from https")
        page.locator("#composer-input").press("Enter")
        got = next_of(b, ChatMessage, from_user_id=carol.user_id)
        assert got.content == "hello from https"
        sent = b.send_chat(carol.user_id, "seen in the page", wait="sent")
        page.locator("#message-list .msg", has_text="seen in the page").wait_for()
        # written to the page's socket through nginx: delivered (a generous bound: the
        # machine running the tests may be loaded)
        assert b.wait_ack(sent.msg_id, "delivered", timeout=30).status == "delivered"
        assert not errors, errors
        context.close()
    finally:
        b.close()
    assert sockets and all(url.startswith(f"wss://127.0.0.1:{nginx.https_port}/ws")
                           for url in sockets), sockets


def test_login_limit_counts_the_address_nginx_saw(tls, certs):
    """nginx sets X-Forwarded-For to its client's address; the gateway believes it
    (nginx is in TrustedProxies) and the Auth service counts failed logins per
    that address: one address locked out, another (and the proxy's own) not."""
    system, nginx = tls
    name, _ = _user(nginx.url, certs.ca, "limited")
    attacker, other = session_from("127.0.0.2", certs.ca), session_from("127.0.0.3", certs.ca)

    def login(session, username, password, **headers):
        return session.post(nginx.url + "/api/login", json={"username": username,
                            "password": password}, headers=headers, timeout=10)

    for i in range(ADDRESS_FAILURES):      # random names; a forged X-Forwarded-For changes nothing
        r = login(attacker, unique("nobody"), "wrong", **{"X-Forwarded-For": f"10.9.9.{i}"})
        assert r.status_code == 401, r.text
    r = login(attacker, name, PASSWORD)
    assert r.status_code == 429 and r.json()["code"] == "rate_limited", r.text
    assert int(r.headers["Retry-After"]) > 0
    assert login(other, name, PASSWORD).status_code == 200
    assert Api(nginx.url, ca_file=certs.ca).login(name, PASSWORD).user_id > 0   # from 127.0.0.1
