"""The one mapping from a failed backend call to an error frame (features/base.py)."""
from __future__ import annotations

import pytest

from skyeim.gateway.backends.clients import BackendRejected, BackendUnavailable
from skyeim.gateway.features.base import backend_error
from skyeim.protocol import ErrorCode


@pytest.mark.parametrize("failure, code, message", [
    (BackendUnavailable("message service: timeout"), ErrorCode.UNAVAILABLE,
     "the message service is unavailable; retry"),
    (BackendRejected(400, "bad_request", "content too long"), ErrorCode.BAD_REQUEST,
     "content too long"),
    (BackendRejected(403, "forbidden", "not a member"), ErrorCode.FORBIDDEN, "not a member"),
    (BackendRejected(404, "not_found", "no such group"), ErrorCode.INTERNAL, "no such group"),
    (BackendRejected(401, "unauthorized", "wrong secret"), ErrorCode.INTERNAL, "wrong secret"),
    (KeyError("seq"), ErrorCode.INTERNAL, "internal error"),
])
def test_each_failure_has_its_code(failure, code, message):
    e = backend_error(failure, "message")
    assert (e.code, e.message) == (code, message)


def test_the_error_echoes_the_ids_it_is_given():
    e = backend_error(BackendUnavailable("x"), "friend", msg_id="m1", request_id="r1")
    assert (e.msg_id, e.request_id) == ("m1", "r1")
    assert "friend service" in e.message
