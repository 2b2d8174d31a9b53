"""Close and error codes: the values of PROTOCOL.md section 4 (and the extensions in
docs/protocol.md), which the gateway, the services and the SDK share."""
from __future__ import annotations

from skyeim.protocol import CloseCode, ErrorCode

# PROTOCOL.md section 4, "Close codes"
CONTRACT_CLOSE_CODES = {1000: "normal", 1001: "shutting down", 1009: "message too big",
                        1011: "internal error", 4001: "replaced", 4002: "too slow",
                        4003: "token expired or revoked", 4004: "heartbeat timeout"}
# PROTOCOL.md section 4, the error frame's codes
CONTRACT_ERROR_CODES = {"bad_json", "bad_request", "unknown_type", "unsupported_frame",
                        "not_friends", "rate_limited", "unauthorized", "forbidden", "rejected",
                        "unavailable", "internal"}


def test_every_close_code_of_the_contract_is_there_with_its_value():
    assert set(CONTRACT_CLOSE_CODES) <= {int(c) for c in CloseCode}
    assert (CloseCode.NORMAL, CloseCode.GOING_AWAY, CloseCode.TOO_BIG, CloseCode.INTERNAL) == \
        (1000, 1001, 1009, 1011)
    assert (CloseCode.REPLACED, CloseCode.TOO_SLOW, CloseCode.TOKEN_EXPIRED,
            CloseCode.HEARTBEAT_TIMEOUT) == (4001, 4002, 4003, 4004)


def test_a_client_reconnects_by_itself_only_after_a_close_that_may_not_recur():
    assert {c for c in CloseCode if c.reconnect} == {
        CloseCode.GOING_AWAY, CloseCode.ABNORMAL, CloseCode.INTERNAL, CloseCode.TOO_SLOW,
        CloseCode.HEARTBEAT_TIMEOUT}


def test_every_error_code_of_the_contract_is_there_with_its_value():
    assert CONTRACT_ERROR_CODES <= {str(c) for c in ErrorCode}
    assert ErrorCode("bad_request") is ErrorCode.BAD_REQUEST


def test_codes_read_as_their_plain_values_in_json_and_logs():
    import json
    assert json.dumps({"code": ErrorCode.RATE_LIMITED, "close": CloseCode.TOO_SLOW}) == \
        '{"code": "rate_limited", "close": 4002}'
    assert f"{CloseCode.REPLACED} {ErrorCode.NOT_FRIENDS}" == "4001 not_friends"


def test_a_signature_is_the_hex_hmac_sha256_of_the_exact_body():
    import hashlib
    import hmac

    from skyeim.protocol.signatures import sign, verify_signature
    body = b'{"id":"e1","event":"user.online"}'
    expected = "sha256=" + hmac.new(b"s3cret", body, hashlib.sha256).hexdigest()
    assert sign(body, "s3cret") == expected
    assert verify_signature(body, expected, "s3cret")
    assert not verify_signature(body + b" ", expected, "s3cret")      # the exact bytes
    assert not verify_signature(body, expected, "other")
    assert not verify_signature(body, None, "s3cret")
    assert not verify_signature(body, "sha256=zz\u00e9", "s3cret")
    assert not verify_signature(body, expected, "")                   # no secret, no trust
