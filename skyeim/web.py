"""HTTP/JSON conventions shared by the gateway's /api and the backend services.

Success is 200 with a JSON body; failure is 4xx/5xx with ``{"code", "message"}``.
"""
from __future__ import annotations

import hmac
import json
import logging
import math
import re
from typing import Any

from flask import Flask, Response, jsonify, request
from werkzeug.exceptions import HTTPException

from skyeim.protocol import ErrorCode, is_user_id

log = logging.getLogger(__name__)

_DIGITS = re.compile(r"[0-9]{1,100}")

DEFAULT_LIMIT = 50
MAX_LIMIT = 200


class ApiError(Exception):
    """Raise in a view to answer ``status`` with ``{"code", "message"}``."""

    def __init__(self, status: int, code: ErrorCode, message: str, headers: dict | None = None):
        super().__init__(message)
        self.status, self.code, self.message = status, code, message
        self.headers = headers or {}     # e.g. Retry-After with a 429


def bad_request(message: str) -> ApiError:
    return ApiError(400, ErrorCode.BAD_REQUEST, message)


def error_response(status: int, code: ErrorCode, message: str) -> Response:
    resp = jsonify(code=code, message=message)
    resp.status_code = status
    return resp


_HTTP_CODES = {400: ErrorCode.BAD_REQUEST, 401: ErrorCode.UNAUTHORIZED, 403: ErrorCode.FORBIDDEN,
               404: ErrorCode.NOT_FOUND, 405: ErrorCode.METHOD_NOT_ALLOWED,
               409: ErrorCode.CONFLICT, 413: ErrorCode.TOO_LARGE, 429: ErrorCode.RATE_LIMITED,
               503: ErrorCode.UNAVAILABLE}


def install_json_errors(app: Flask) -> None:
    """Answer every error, ours or Werkzeug's, in the contract's JSON shape."""

    @app.errorhandler(ApiError)
    def _api_error(e: ApiError):
        resp = error_response(e.status, e.code, e.message)
        resp.headers.update(e.headers)
        return resp

    @app.errorhandler(HTTPException)
    def _http_error(e: HTTPException):
        status = e.code or 500
        return error_response(status, _HTTP_CODES.get(status, ErrorCode.ERROR),
                              e.description or e.name)

    @app.errorhandler(Exception)
    def _internal(e: Exception):
        log.exception("unhandled error in %s %s", request.method, request.path)
        return error_response(500, ErrorCode.INTERNAL, "internal error")


# an escaped UTF-16 surrogate (\ud800-\udfff) in the raw body: a pair is an emoji, a lone
# one a string that cannot be encoded again (to a service, a database, a log)
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")


def json_body() -> dict[str, Any]:
    """The request's JSON object, or 400 ``bad_request``: for a body that is not JSON,
    not an object, nested deeper than the parser goes, or holds what cannot travel on as
    JSON (NaN, Infinity, 1e400, a lone surrogate)."""
    if not request.is_json:
        raise bad_request("the body must be a JSON object (Content-Type: application/json)")
    raw = request.get_data(cache=True)
    try:
        data = json.loads(raw.decode("utf-8"),     # RFC 8259 8.1: UTF-8, nothing else
                          parse_constant=_no_constant, parse_float=_finite_float)
    except RecursionError:     # nested deeper than the parser goes: bad input, not a 500
        raise bad_request("the body is JSON nested too deeply") from None
    except (ValueError, TypeError):  # not JSON, not UTF-8, an integer of 4,300+ digits
        raise bad_request("the body is not valid JSON") from None
    if not isinstance(data, dict):
        raise bad_request("the body must be a JSON object")
    if _SURROGATE_ESCAPE.search(raw):
        try:
            json.dumps(data, ensure_ascii=False).encode("utf-8")
        except UnicodeEncodeError:
            raise bad_request("the body has a string with a lone UTF-16 surrogate") from None
    return data


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _finite_float(text: str) -> float:
    value = float(text)
    if math.isinf(value):
        raise ValueError(f"{text[:20]} is out of range")
    return value


def positive_int_arg(raw: str | None) -> int | None:
    """An optional query argument that must be an ASCII integer >= 1, else 400."""
    if raw is None or raw == "":
        return None
    if not _DIGITS.fullmatch(raw) or int(raw) < 1:
        raise bad_request(f"{raw[:20]!r} is not a positive integer")
    return int(raw)


def body_user_id(body: dict, key: str, where: str = "") -> int:
    """``body[key]`` as a user id (a JSON integer 1..2^63-1, never a bool/float/string), else 400."""
    value = body.get(key)
    if not is_user_id(value):
        raise bad_request(f"{where}{key} must be an integer from 1 to 2^63-1")
    return value


def user_id_list(body: dict, key: str, max_len: int, required: bool = True) -> list[int]:
    """``body[key]`` as a list of user ids (1 to ``max_len`` of them; 0 allowed, and a
    missing key is [], when not ``required``), else 400."""
    raw = body.get(key)
    if raw is None and not required:
        return []
    if not isinstance(raw, list) or len(raw) > max_len or (required and not raw):
        raise bad_request(f"{key} must be a list of {1 if required else 0} to {max_len} user ids")
    return [body_user_id({"id": v}, "id", f"{key}[{i}].") for i, v in enumerate(raw)]


def path_user_id(raw: str, key: str) -> int:
    """A user id from a URL path segment (ASCII digits only), else 400."""
    value = int(raw) if _DIGITS.fullmatch(raw) else 0
    if not is_user_id(value):
        raise bad_request(f"{key} must be an integer from 1 to 2^63-1")
    return value


def limit_arg(raw: str | None) -> int:
    """The contract's paging ``limit``: default 50, capped at 200, else 400."""
    if raw is None or raw == "":
        return DEFAULT_LIMIT
    if not _DIGITS.fullmatch(raw) or int(raw) < 1:   # ASCII only: "²".isdigit() is True
        raise bad_request("limit must be a positive integer")
    return min(int(raw), MAX_LIMIT)


CLIENT_ADDRESS_HEADER = "X-Client-Address"   # the gateway's caller, for per-address limits


def has_internal_secret(secret: str) -> bool:
    """This request carries the configured (non-empty) internal secret; constant time."""
    if not secret:
        return False
    got = request.headers.get("X-Internal-Secret", "").encode()
    return hmac.compare_digest(got, secret.encode())


def client_address(secret: str) -> str:
    """The address a request is from: the gateway's X-Client-Address when the
    request proves it is the gateway (the internal secret), else the peer's."""
    forwarded = request.headers.get(CLIENT_ADDRESS_HEADER)
    if forwarded and has_internal_secret(secret):
        return forwarded.strip()
    return request.remote_addr or ""


def require_internal_secret(app: Flask, secret: str) -> None:
    """Refuse (401) service calls without the right X-Internal-Secret; /healthz stays open."""
    if not secret:
        return
    expected = secret.encode()

    @app.before_request
    def _check_secret():
        if request.path in ("/healthz", "/metrics"):   # probes and scrapers carry no secret
            return None
        got = request.headers.get("X-Internal-Secret", "").encode()
        if not hmac.compare_digest(got, expected):
            return error_response(401, ErrorCode.UNAUTHORIZED, "missing or wrong X-Internal-Secret")
        return None
