"""The WebSocket transport (skyeim/gateway/transport/websocket.py) on the wire.

Every test runs a real gateway process and speaks raw RFC 6455 bytes over a
real TCP socket: the HTTP upgrade is written by hand, client frames are built
byte by byte (masked or not, fragmented, with RSV bits, oversized headers) and
every byte the server sends is parsed strictly. Each test pins one of the
fixes listed in transport.py's docstring and fails without it:

1. the app decides the handshake (401/400 as plain HTTP, never a 101 first);
2. close codes are carried, echoed and validated;
3. MaxMessageSize (the whole reassembled message) is enforced from frame headers;
4. unmasked client frames are refused;
5. one write lock: pongs never interleave with other frames;
6. the rest: UTF-8, RSV bits, fragmentation rules, control frames, binary
   frames, close timeout, linger, handshake timeout.
"""
from __future__ import annotations

import base64
import json
import os
import socket
import time

import pytest

from harness import running_system
from rawws import (OP_BINARY, OP_CLOSE, OP_CONT, OP_PING, OP_PONG, OP_TEXT, OPEN_RAW, PING_JSON,
                   TIMEOUT, HttpResponse, RawWS, accept_for, assert_open,
                   close_payload, close_raw_sockets, connect, frame_bytes, handshake, new_key,
                   open_socket, upgrade_request)

MAX = 60000                 # WebSocket.MaxMessageSize of the module's gateway (not the default)
CLOSE_TIMEOUT = 1.0         # WebSocket.CloseTimeout (the default, made explicit)

WS_CONFIG = {"WebSocket": {
    "MaxMessageSize": MAX,
    "CloseTimeout": CLOSE_TIMEOUT,
    "SendQueueSize": 4096,
    "RateLimit": {"Rate": 100000, "Burst": 100000},
}}


@pytest.fixture(autouse=True)
def _close_raw_sockets():
    yield
    close_raw_sockets()


# ---------------------------------------------------------------------------
# Fixtures

@pytest.fixture(scope="module")
def tsys(tmp_path_factory):
    with running_system(tmp_path_factory.mktemp("transport"), ws=WS_CONFIG) as s:
        yield s


@pytest.fixture
def user(tsys):
    return tsys.register_user("tr")


@pytest.fixture
def ws(tsys, user):
    return connect(tsys, user)


# ---------------------------------------------------------------------------
# 1. The app decides the handshake

def _assert_plain_refusal(resp: HttpResponse, status: int, code: str) -> None:
    assert resp.status_line.startswith(f"HTTP/1.1 {status} "), \
        f"expected {status} as the first response, got {resp.raw!r}"
    assert "sec-websocket-accept" not in resp.headers, resp.raw
    assert resp.headers.get("upgrade", "").lower() != "websocket", resp.raw
    body = json.loads(resp.body)
    assert body.get("code") == code and isinstance(body.get("message"), str), body


@pytest.mark.timeout(30)
@pytest.mark.parametrize("make_token", [
    lambda s: "not-a-jwt",
    lambda s: s.token_for(1, secret="not-the-access-secret"),
    lambda s: s.token_for(1, exp=int(time.time()) - 60),
    lambda s: None,
], ids=["garbage", "bad-signature", "expired", "none"])
def test_bad_token_is_refused_with_401_and_no_101_first(tsys, make_token):
    token = make_token(tsys)
    path = "/ws" if token is None else f"/ws?token={token}"
    resp, ws = handshake(tsys, path)
    _assert_plain_refusal(resp, 401, "unauthorized")
    # nothing else follows on the connection: no 101, no frames
    ws.sock.settimeout(0.3)
    try:
        extra = ws.sock.recv(4096)
    except (socket.timeout, TimeoutError):
        extra = b""
    assert b"101" not in extra and not extra.startswith(b"\x81"), extra


@pytest.mark.timeout(30)
def test_good_token_gets_101_with_the_right_accept_key(tsys, user):
    key = new_key()
    resp, ws = handshake(tsys, f"/ws?token={user.token}", key=key)
    assert resp.status_line.startswith("HTTP/1.1 101 "), resp.raw
    assert resp.headers.get("upgrade", "").lower() == "websocket"
    assert "upgrade" in resp.headers.get("connection", "").lower()
    assert resp.headers.get("sec-websocket-accept") == accept_for(key)
    # a 101 has no body: no Content-Length, no chunking
    assert "content-length" not in resp.headers and "transfer-encoding" not in resp.headers, resp.raw
    assert ws.wait_connected()["userId"] == user.id
    assert_open(ws)


@pytest.mark.timeout(30)
def test_frames_pipelined_behind_the_upgrade_request_are_not_lost(tsys, user):
    """A client may send its first frames in the same packet as the request."""
    key = new_key()
    sock = open_socket(tsys)
    ws = RawWS(sock)
    OPEN_RAW.append(ws)
    sock.sendall(upgrade_request(tsys, f"/ws?token={user.token}", key=key)
                 + frame_bytes(OP_PING, b"early") + frame_bytes(OP_TEXT, PING_JSON))
    deadline = time.monotonic() + TIMEOUT
    while b"\r\n\r\n" not in ws.buf:
        ws._fill(deadline)
    head, _, rest = bytes(ws.buf).partition(b"\r\n\r\n")
    ws.buf = bytearray(rest)
    assert head.startswith(b"HTTP/1.1 101 "), head
    pong = ws.recv_frame()
    assert pong.opcode == OP_PONG and pong.payload == b"early"
    seen = []
    while "pong" not in seen:
        seen.append(ws.recv_json()["type"])
    assert "connected" in seen, seen


@pytest.mark.timeout(30)
def test_get_without_upgrade_is_400_not_websocket(tsys, user):
    """Werkzeug 3 routes a plain GET only to a rule without websocket=True."""
    resp, _ = handshake(tsys, f"/ws?token={user.token}", upgrade=False)
    _assert_plain_refusal(resp, 400, "not_websocket")


@pytest.mark.timeout(30)
@pytest.mark.parametrize("headers", [
    {"Sec-WebSocket-Version": "12"},
    {"Sec-WebSocket-Version": "8"},        # gevent-websocket upstream accepts 8 and 7
    {"Sec-WebSocket-Version": "7"},
    {"Sec-WebSocket-Version": None},
    {"Sec-WebSocket-Key": "not a base64 key!"},
    {"Sec-WebSocket-Key": base64.b64encode(b"x" * 15).decode()},
    {"Sec-WebSocket-Key": base64.b64encode(b"x" * 17).decode()},
    {"Sec-WebSocket-Key": None},
], ids=["version-12", "version-8", "version-7", "no-version", "key-not-base64",
        "key-15-bytes", "key-17-bytes", "no-key"])
def test_invalid_upgrade_is_400_not_websocket(tsys, user, headers):
    resp, _ = handshake(tsys, f"/ws?token={user.token}", headers=headers)
    _assert_plain_refusal(resp, 400, "not_websocket")


# ---------------------------------------------------------------------------
# 2. Close codes

@pytest.mark.timeout(30)
def test_server_close_carries_1009(ws):
    ws.send(OP_TEXT, "x" * (MAX + 1))
    f = ws.expect_close_code(1009)
    assert f.fin


@pytest.mark.timeout(30)
def test_kick_by_a_newer_login_carries_4001(tsys, user, ws):
    newer = connect(tsys, user)
    ws.expect_close_code(4001)
    assert_open(newer)


@pytest.mark.timeout(30)
def test_client_close_code_and_reason_are_echoed(ws):
    ws.send(OP_CLOSE, close_payload(4321, "see you"))
    ws.expect_close_code(4321)
    # then the server ends TCP promptly, with nothing (no HTTP response) after the close frame
    assert ws.wait_eof(timeout=CLOSE_TIMEOUT + 2) < CLOSE_TIMEOUT + 1


@pytest.mark.timeout(30)
def test_client_close_without_payload_is_answered_1000(ws):
    ws.send(OP_CLOSE)
    ws.expect_close_code(1000)
    ws.wait_eof()


@pytest.mark.timeout(30)
@pytest.mark.parametrize("code", [0, 999, 1004, 1005, 1006, 1015, 1016, 2999, 5000, 65535])
def test_close_with_an_invalid_code_is_1002(ws, code):
    ws.send(OP_CLOSE, close_payload(code, "bad"))
    ws.expect_close_code(1002)


@pytest.mark.timeout(30)
def test_close_with_a_one_byte_payload_is_1002(ws):
    ws.send(OP_CLOSE, b"\x03")
    ws.expect_close_code(1002)


@pytest.mark.timeout(30)
def test_close_with_an_invalid_utf8_reason_is_1007(ws):
    ws.send(OP_CLOSE, close_payload(1000, b"\xff\xfe"))
    ws.expect_close_code(1007)


# ---------------------------------------------------------------------------
# 3. MaxMessageSize, enforced from the frame header

@pytest.mark.timeout(30)
@pytest.mark.parametrize("announced", [MAX + 1, 20 * 1024 * 1024], ids=["max+1", "20MB"])
def test_oversized_frame_header_alone_gets_1009_at_once(ws, announced):
    """Only the header is sent: the server must not wait for (or buffer) the payload."""
    start = time.monotonic()
    ws.send_raw(frame_bytes(OP_TEXT, b"", length=announced))
    ws.expect_close_code(1009, timeout=3)
    assert time.monotonic() - start < 1.0


@pytest.mark.timeout(30)
def test_oversized_binary_frame_header_gets_1009(ws):
    ws.send_raw(frame_bytes(OP_BINARY, b"", length=MAX + 1))
    ws.expect_close_code(1009, timeout=3)


@pytest.mark.timeout(30)
def test_fragmented_message_over_the_limit_in_total_is_1009(ws):
    third = MAX // 3 + 1                   # each fragment well under the limit
    ws.send(OP_TEXT, '{"type":"ping","data":null,"pad":"' + "a" * third, fin=False)
    ws.send(OP_CONT, "a" * third, fin=False)
    ws.send(OP_CONT, "a" * third + '"}', fin=True)
    ws.expect_close_code(1009)


@pytest.mark.timeout(30)
def test_fragment_header_that_would_overflow_the_message_gets_1009_at_once(ws):
    ws.send(OP_TEXT, "a" * (MAX - 10), fin=False)
    start = time.monotonic()
    ws.send_raw(frame_bytes(OP_CONT, b"", fin=True, length=11))   # header only
    ws.expect_close_code(1009, timeout=3)
    assert time.monotonic() - start < 1.0


def _padded_ping(size: int) -> str:
    head, tail = '{"type":"ping","data":null,"pad":"', '"}'
    text = head + "p" * (size - len(head) - len(tail)) + tail
    assert len(text.encode()) == size
    json.loads(text)
    return text


@pytest.mark.timeout(30)
def test_message_of_exactly_max_bytes_is_accepted(ws):
    ws.send(OP_TEXT, _padded_ping(MAX))
    assert ws.expect("pong") is None


@pytest.mark.timeout(30)
def test_fragmented_message_of_exactly_max_bytes_is_accepted(ws):
    text = _padded_ping(MAX).encode()
    cut1, cut2 = MAX // 3, 2 * MAX // 3
    ws.send(OP_TEXT, text[:cut1], fin=False)
    ws.send(OP_PING, b"between fragments")        # control frames may come in between
    ws.send(OP_CONT, text[cut1:cut2], fin=False)
    ws.send(OP_CONT, text[cut2:], fin=True)
    pong = ws.recv_frame()
    assert pong.opcode == OP_PONG and pong.payload == b"between fragments"
    assert ws.expect("pong") is None


@pytest.mark.timeout(30)
def test_multibyte_message_of_exactly_max_bytes_is_accepted(ws):
    """The limit counts bytes, not characters: MAX bytes of 2-byte characters pass,
    one byte more does not."""
    head, tail = '{"type":"ping","data":null,"pad":"', '"}'
    room = MAX - len(head) - len(tail)
    text = head + "\u00e9" * (room // 2) + "z" * (room % 2) + tail
    assert len(text.encode()) == MAX
    ws.send(OP_TEXT, text)
    assert ws.expect("pong") is None
    ws.send(OP_TEXT, text[:-2] + "z" + tail)   # one character more: MAX + 1 bytes
    ws.expect_close_code(1009)


# ---------------------------------------------------------------------------
# 4. Masking

@pytest.mark.timeout(30)
@pytest.mark.parametrize("opcode", [OP_TEXT, OP_PING, OP_CLOSE], ids=["text", "ping", "close"])
def test_unmasked_client_frame_is_1002(ws, opcode):
    payload = PING_JSON if opcode == OP_TEXT else (close_payload(1000) if opcode == OP_CLOSE else b"hi")
    ws.send(opcode, payload, mask=False)
    ws.expect_close_code(1002)


# ---------------------------------------------------------------------------
# 5. One write lock: pongs (read greenlet) never split other frames (write greenlet)

def _max_send_buffer() -> int:
    """The largest TCP send buffer the kernel may grow a socket's to (tcp_wmem max)."""
    try:
        with open("/proc/sys/net/ipv4/tcp_wmem") as f:
            return int(f.read().split()[2])
    except (OSError, ValueError, IndexError):
        return 4 * 1024 * 1024


@pytest.mark.timeout(180)
def test_pongs_never_interleave_with_frames_written_concurrently(tsys):
    """A friend sends large chats to alice while alice sends a protocol ping after
    each one and does not read yet. Once alice's receive window and the server's
    send buffer are full, the server's writer blocks in the middle of a chat
    frame; the pongs, written by the read greenlet, must wait for the frame to
    end (one write lock), never land inside it (nor fail on the busy socket).
    Then every byte the server sent must parse as well-formed frames: every text
    frame valid JSON, every pong carrying its ping's payload."""
    alice, bob = tsys.users("wl_a", "wl_b")
    tsys.befriend(alice, bob)
    ws = connect(tsys, alice, rcvbuf=4096)
    bob_client = tsys.connect(bob)
    content = "\u20ac" * 16000                    # 48,000 bytes: each chat frame about 48 KB
    n_chats = int(1.5 * _max_send_buffer()) // len(content.encode()) + 50   # overflows the buffers

    # phase 1: alice only writes (a ping after each of bob's chats), reads nothing
    pings: list[bytes] = []
    sent_ids = []
    for i in range(n_chats):
        sent_ids.append(f"wl-{i:04d}")
        bob_client.send_raw(json.dumps({"type": "chat", "data": {
            "msgId": sent_ids[-1], "toUserId": alice.id, "content": content}},
            ensure_ascii=False))                   # raw UTF-8: 48 KB, under MAX
        pings.append(b"ping-%04d" % i)
        ws.send(OP_PING, pings[-1])
    # the server has taken every chat (so it has tried to write them all to alice)
    sent_acks = 0
    deadline = time.monotonic() + 60
    while sent_acks < n_chats:
        ack = bob_client.expect("ack", timeout=max(deadline - time.monotonic(), 0.001))
        sent_acks += ack["status"] == "sent"

    # phase 2: read everything the server wrote, strictly
    pongs: list[bytes] = []
    chats: list[dict] = []
    deadline = time.monotonic() + 60
    while len(chats) < n_chats or len(pongs) < len(pings):
        f = ws.recv_frame(max(deadline - time.monotonic(), 0.001))
        if f.opcode == OP_PONG:
            pongs.append(f.payload)
        elif f.opcode == OP_TEXT:
            assert f.fin, f
            obj = f.json()                         # every text frame is valid JSON
            if obj["type"] == "chat":
                chats.append(obj["data"])
        else:
            assert f.opcode == OP_PING, f"unexpected frame {f}"
    assert pongs == pings, "every pong must carry its ping's payload, in order"
    assert [c["msgId"] for c in chats] == sent_ids
    assert all(c["content"] == content for c in chats)
    assert [c["seq"] for c in chats] == list(range(1, n_chats + 1))
    assert_open(ws)


# ---------------------------------------------------------------------------
# 6. The rest of RFC 6455 as the gateway applies it

@pytest.mark.timeout(30)
def test_invalid_utf8_text_is_1007(ws):
    ws.send(OP_TEXT, b'{"type":"ping","data":"\xff"}')
    ws.expect_close_code(1007)


@pytest.mark.timeout(30)
def test_invalid_utf8_split_across_fragments_is_1007(ws):
    # "\xce" opens a 2-byte sequence that the next fragment does not continue
    ws.send(OP_TEXT, b'{"type":"ping","data":"\xce', fin=False)
    ws.send(OP_CONT, b'A"}', fin=True)
    ws.expect_close_code(1007)


@pytest.mark.timeout(30)
def test_invalid_utf8_in_a_first_fragment_fails_fast(ws):
    """Invalid UTF-8 is refused as its fragment arrives, not at the end of the message."""
    ws.send(OP_TEXT, b'{"type":"ping","data":"\xc0\xaf', fin=False)   # overlong: never valid
    ws.expect_close_code(1007, timeout=3)


@pytest.mark.timeout(30)
def test_truncated_utf8_at_the_end_of_a_message_is_1007(ws):
    ws.send(OP_TEXT, b'{"type":"ping","data":null}\xe2\x82', fin=False)
    ws.send(OP_CONT, b"", fin=True)
    ws.expect_close_code(1007)


@pytest.mark.timeout(30)
def test_valid_utf8_split_inside_a_character_is_accepted(ws):
    text = '{"type":"ping","data":null,"x":"\u20ac\U0001f600"}'.encode()
    cut = text.index(b"\xe2") + 1                 # inside the euro sign
    cut2 = text.index(b"\xf0") + 2                # inside the emoji
    ws.send(OP_TEXT, text[:cut], fin=False)
    ws.send(OP_CONT, text[cut:cut2], fin=False)
    ws.send(OP_CONT, text[cut2:], fin=True)
    assert ws.expect("pong") is None


@pytest.mark.timeout(30)
@pytest.mark.parametrize("rsv", [4, 2, 1, 7], ids=["rsv1", "rsv2", "rsv3", "all"])
def test_rsv_bits_are_1002(ws, rsv):
    ws.send(OP_TEXT, PING_JSON, rsv=rsv)
    ws.expect_close_code(1002)


@pytest.mark.timeout(30)
def test_continuation_without_a_start_is_1002(ws):
    ws.send(OP_CONT, PING_JSON, fin=True)
    ws.expect_close_code(1002)


@pytest.mark.timeout(30)
def test_new_message_inside_a_fragmented_one_is_1002(ws):
    ws.send(OP_TEXT, '{"type":"ping",', fin=False)
    ws.send(OP_TEXT, PING_JSON, fin=True)
    ws.expect_close_code(1002)


@pytest.mark.timeout(30)
@pytest.mark.parametrize("opcode", [0x3, 0x7, 0xB, 0xF])
def test_reserved_opcode_is_1002(ws, opcode):
    ws.send(opcode, b"x")
    ws.expect_close_code(1002)


@pytest.mark.timeout(30)
def test_ping_with_126_byte_payload_is_1002(ws):
    ws.send(OP_PING, b"p" * 126)
    ws.expect_close_code(1002)


@pytest.mark.timeout(30)
def test_fragmented_ping_is_1002(ws):
    ws.send(OP_PING, b"part", fin=False)
    ws.expect_close_code(1002)


@pytest.mark.timeout(30)
@pytest.mark.parametrize("payload", [b"", b"hello", bytes(range(125))], ids=["empty", "short", "125"])
def test_protocol_ping_payload_is_echoed_in_pong(ws, payload):
    ws.send(OP_PING, payload)
    f = ws.recv_frame()
    assert f.opcode == OP_PONG and f.fin and f.payload == payload
    assert_open(ws)


@pytest.mark.timeout(30)
def test_unsolicited_pong_is_ignored(ws):
    ws.send(OP_PONG, b"unsolicited")
    assert_open(ws)


@pytest.mark.timeout(30)
def test_binary_frame_gets_unsupported_frame_and_stays_open(ws):
    ws.send(OP_BINARY, b"\x00\x01binary")
    err = ws.expect("error")
    assert err["code"] == "unsupported_frame" and err["msgId"] is None, err
    assert_open(ws)


@pytest.mark.timeout(30)
def test_server_drops_tcp_soon_after_its_close_when_the_client_never_answers(tsys, user, ws):
    """The kick's close frame (4001) comes from another greenlet than the reader:
    if the client never answers it, the server still ends TCP after CloseTimeout."""
    connect(tsys, user)
    ws.expect_close_code(4001)
    took = ws.wait_eof(timeout=CLOSE_TIMEOUT + 4)
    assert took < CLOSE_TIMEOUT + 1.0, f"TCP closed {took:.2f}s after the close frame"


@pytest.mark.timeout(30)
def test_server_ends_tcp_promptly_when_the_client_answers_its_close(tsys, user, ws):
    connect(tsys, user)
    ws.expect_close_code(4001)
    ws.send(OP_CLOSE, close_payload(4001))
    took = ws.wait_eof(timeout=CLOSE_TIMEOUT + 4)
    assert took < 0.8 * CLOSE_TIMEOUT, f"TCP closed {took:.2f}s after the client's close frame"


@pytest.mark.timeout(30)
def test_close_frame_arrives_although_the_client_sent_unread_data(tsys, user):
    """1009 to a client that is still pushing a huge frame's payload and has not
    been reading: its close frame waits in the server's send buffer behind data
    the client has not read yet. The server must drain the client's data before
    closing the socket; closing it with unread data sends a RST that discards
    the close frame (the client would see ECONNRESET instead of 1009)."""
    ws = connect(tsys, user, rcvbuf=4096)
    pings = [b"%03d" % i + b"p" * 122 for i in range(200)]   # 200 x 127-byte pongs, unread
    ws.send_raw(b"".join(frame_bytes(OP_PING, p) for p in pings)
                + frame_bytes(OP_TEXT, b"", length=20 * 1024 * 1024))
    chunk = os.urandom(1 << 20)
    ws.sock.settimeout(2)
    try:
        for _ in range(4):                         # up to 4 MB of the announced 20 MB
            ws.sock.sendall(chunk)
    except OSError:
        pass                                       # the server stopped reading: fine
    try:
        close = ws.expect_close(timeout=TIMEOUT)
    except ConnectionResetError as e:
        raise AssertionError("the server reset the connection: its close frame was lost") from e
    assert close.close_code == 1009, close
    assert [f.payload for f in ws.before_close if f.opcode == OP_PONG] == pings


@pytest.fixture(scope="module")
def quick_sys(tmp_path_factory):
    """A gateway that gives a client 1 s to send its whole upgrade request."""
    with running_system(tmp_path_factory.mktemp("transport_hs"),
                        ws={"WebSocket": {"HandshakeTimeout": 1}}) as s:
        yield s


@pytest.mark.timeout(30)
@pytest.mark.parametrize("sent", [b"GET /ws?tok", b"GET /ws HTTP/1.1\r\nHost: a\r\nUpgr"],
                         ids=["half-request-line", "half-headers"])
def test_incomplete_handshake_is_dropped_after_handshake_timeout(quick_sys, sent):
    sock = open_socket(quick_sys)
    ws = RawWS(sock)
    OPEN_RAW.append(ws)
    start = time.monotonic()
    sock.sendall(sent)                             # part of a request, then silence
    answer = ws.read_to_eof(timeout=5)
    assert answer == b"" or answer.startswith(b"HTTP/1.1 4"), answer[:200]
    took = time.monotonic() - start
    assert 0.5 <= took < 2.5, f"dropped after {took:.2f}s (HandshakeTimeout 1)"
    assert "Traceback" not in quick_sys.log_text()
    # a handshake that completes in time still works on the same gateway
    assert_open(connect(quick_sys, quick_sys.register_user("hst")))


@pytest.mark.timeout(30)
def test_trickled_handshake_is_dropped_after_handshake_timeout(quick_sys):
    """Slow-loris: a byte every 0.25 s never leaves the socket idle for 1 s, but
    the whole request must still arrive within HandshakeTimeout."""
    user = quick_sys.register_user("hsl")
    request = upgrade_request(quick_sys, f"/ws?token={user.token}")
    sock = open_socket(quick_sys)
    OPEN_RAW.append(RawWS(sock))
    start = time.monotonic()
    closed_after = None
    for byte in request[:-1]:                      # never completes the request
        if time.monotonic() - start > 5:
            break
        try:
            sock.sendall(bytes([byte]))
            sock.settimeout(0.25)                  # the pace of the trickle
            data = sock.recv(4096)
        except (socket.timeout, TimeoutError):
            continue
        except OSError:                            # reset: the server dropped us
            closed_after = time.monotonic() - start
            break
        if not data:
            closed_after = time.monotonic() - start
            break
        raise AssertionError(f"the server answered an incomplete request: {data[:200]!r}")
    assert closed_after is not None, "a trickling client was never dropped"
    assert closed_after < 2.5, f"dropped after {closed_after:.2f}s (HandshakeTimeout 1)"
    assert "Traceback" not in quick_sys.log_text()
