"""HS256 access tokens: issued by the Auth service, verified by the gateway."""
from __future__ import annotations

import time
import warnings
from dataclasses import dataclass

import jwt

# PyJWT warns on every call with a short key; we say it once at start-up instead
# (see weak_secret_warning), not once per connection.
warnings.filterwarnings("ignore", category=jwt.warnings.InsecureKeyLengthWarning)

ALGORITHMS = ["HS256"]        # pinned: "none" and every other algorithm are refused
MAX_USER_ID = 2**63 - 1


class InvalidToken(Exception):
    """Missing, malformed, badly signed, expired, or without a valid userId."""


@dataclass(frozen=True, slots=True)
class Claims:
    user_id: int
    expires_at: int           # JWT exp, seconds


def issue(secret: str, user_id: int, expire_s: int, now: float | None = None) -> tuple[str, int]:
    """Return (token, exp) for ``user_id``, valid ``expire_s`` seconds."""
    iat = int(now if now is not None else time.time())
    exp = iat + expire_s
    token = jwt.encode({"userId": user_id, "iat": iat, "exp": exp}, secret, algorithm="HS256")
    return token, exp


def verify(secret: str, token: str) -> Claims:
    try:
        # only userId and exp are the contract's: an iat in the future (clock skew
        # between the Auth service and a gateway) or an aud claim must not refuse a token
        payload = jwt.decode(token, secret, algorithms=ALGORITHMS,
                             options={"require": ["exp"], "verify_iat": False, "verify_aud": False})
    except jwt.PyJWTError as e:
        raise InvalidToken(str(e)) from None
    user_id = payload.get("userId")
    if not is_user_id(user_id):
        raise InvalidToken("userId missing or not a valid user id")
    exp = payload["exp"]
    if isinstance(exp, bool) or not isinstance(exp, (int, float)):
        raise InvalidToken("exp is not a number")
    return Claims(user_id=user_id, expires_at=int(exp))


def weak_secret_warning(secret: str) -> str | None:
    """A start-up warning for a secret too short for HS256 (RFC 7518 3.2), else None."""
    if len(secret.encode()) < 32:
        return ("AccessSecret is shorter than 32 bytes: set a long random one "
                "(e.g. SKYEIM_ACCESS_SECRET) before going to production")
    return None


def is_user_id(v: object) -> bool:
    """A JSON integer from 1 to 2**63-1 (never a bool, float or string)."""
    return type(v) is int and 1 <= v <= MAX_USER_ID
