"""Who is asking: the gateway serving this request, and the caller a bearer token names."""
from __future__ import annotations

from flask import current_app, request

from skyeim import tokens
from skyeim.gateway.composition import Gateway
from skyeim.protocol import ErrorCode
from skyeim.web import ApiError

GATEWAY_KEY = "skyeim.gateway"        # app.extensions[...]: the Gateway (app.create_app)


def current_gateway() -> Gateway:
    return current_app.extensions[GATEWAY_KEY]


def bearer_token() -> str | None:
    """The token of an ``Authorization: Bearer`` header ("" when it has none), else None."""
    scheme, _, token = request.headers.get("Authorization", "").strip().partition(" ")
    if scheme.lower() != "bearer":
        return None
    return token.strip()


def caller_id() -> int:
    """The user id of the request's valid bearer token; else 401."""
    token = bearer_token()
    if not token:
        raise ApiError(401, ErrorCode.UNAUTHORIZED, "Authorization: Bearer <token> is required")
    try:
        return current_gateway().verify_token(token).user_id
    except tokens.InvalidToken:
        raise ApiError(401, ErrorCode.UNAUTHORIZED, "the token is invalid or expired") from None
