"""The pure parts of the SDK's connection (skyeim/client/connection.py): which
close codes end the client, and the reassembly of a
fragmented message. The socket itself is tested over real processes
(tests/test_client_sdk.py, which also checks ws_url)."""
from __future__ import annotations

import pytest
from websocket import ABNF

from skyeim.client import ConnectionClosed, Replaced, TokenExpired
from skyeim.client.connection import _Message, final_close
from skyeim.protocol import CloseCode


@pytest.mark.parametrize("code", [CloseCode.GOING_AWAY, CloseCode.ABNORMAL, CloseCode.INTERNAL,
                                  CloseCode.TOO_SLOW, CloseCode.HEARTBEAT_TIMEOUT, 4999])
def test_closes_after_which_the_client_reconnects(code):
    assert final_close(code, "", can_renew_token=False, reconnect=True) is None
    assert isinstance(final_close(code, "", can_renew_token=False, reconnect=False),
                      ConnectionClosed)


@pytest.mark.parametrize("code", [CloseCode.NORMAL, CloseCode.PROTOCOL_ERROR,
                                  CloseCode.INVALID_DATA, CloseCode.TOO_BIG, 1005, 1008])
def test_closes_that_end_the_client(code):
    end = final_close(code, "why", can_renew_token=True, reconnect=True)
    assert type(end) is ConnectionClosed and end.code == code and end.reason == "why"


def test_replaced_ends_the_client_and_an_expired_token_needs_a_new_one():
    assert isinstance(final_close(4001, "", can_renew_token=True, reconnect=True), Replaced)
    assert isinstance(final_close(4003, "", can_renew_token=False, reconnect=True), TokenExpired)
    assert final_close(4003, "", can_renew_token=True, reconnect=False) is None


def test_a_fragmented_message_is_reassembled():
    m = _Message()
    assert m.add(ABNF(fin=0, opcode=ABNF.OPCODE_TEXT, data=b'{"type":')) is None
    assert m.add(ABNF(fin=0, opcode=ABNF.OPCODE_CONT, data=b'"po')) is None
    assert m.add(ABNF(fin=1, opcode=ABNF.OPCODE_CONT, data=b'ng"}')) == \
        (ABNF.OPCODE_TEXT, b'{"type":"pong"}')
    assert m.add(ABNF(fin=1, opcode=ABNF.OPCODE_BINARY, data=b"\x00")) == \
        (ABNF.OPCODE_BINARY, b"\x00")
    assert m.add(ABNF(fin=1, opcode=ABNF.OPCODE_TEXT, data="é")) == \
        (ABNF.OPCODE_TEXT, "é".encode())
