"""HS256 access tokens: issued by the Auth service, verified by the gateway."""
from __future__ import annotations

import ipaddress
import time
import warnings
from dataclasses import dataclass

import jwt

from skyeim.protocol.ids import MAX_USER_ID, is_user_id

# PyJWT warns on every call with a short key; we say it once at start-up instead
# (see weak_secret_warning), not once per connection.
warnings.filterwarnings("ignore", category=jwt.warnings.InsecureKeyLengthWarning)

ALGORITHMS = ["HS256"]        # pinned: "none" and every other algorithm are refused
LEEWAY = 5                    # s past exp a token still verifies: clock skew between hosts
DEFAULT_SECRET = "change-me"  # the shipped etc/*.yaml fallback: never for a public listener


class InvalidToken(Exception):
    """Missing, malformed, badly signed, expired, or without a valid userId."""


@dataclass(frozen=True, slots=True)
class Claims:
    user_id: int
    expires_at: int           # JWT exp, seconds
    gen: int = 0              # the user's token generation at issue (absent = 0); see revocation


def issue(secret: str, user_id: int, expire_s: int, now: float | None = None,
          gen: int = 0) -> tuple[str, int]:
    """Return (token, exp) for ``user_id``, valid ``expire_s`` seconds.

    ``gen`` is the user's token generation: revoking a user's tokens raises it,
    and a token whose ``gen`` is below the revoked generation is refused."""
    iat = int(now if now is not None else time.time())
    exp = iat + expire_s
    claims = {"userId": user_id, "iat": iat, "exp": exp}
    if gen:                   # generation 0 is the default: no claim, as from other minters
        claims["gen"] = gen
    token = jwt.encode(claims, secret, algorithm="HS256")
    return token, exp


def verify(secret: str, token: str) -> Claims:
    try:
        # only userId and exp are the contract's: an iat in the future (clock skew
        # between the Auth service and a gateway) or an aud claim must not refuse a token
        payload = jwt.decode(token, secret, algorithms=ALGORITHMS, leeway=LEEWAY,
                             options={"require": ["exp"], "verify_iat": False, "verify_aud": False})
    except jwt.PyJWTError as e:
        raise InvalidToken(str(e)) from None
    user_id = payload.get("userId")
    if not is_user_id(user_id):
        raise InvalidToken("userId missing or not a valid user id")
    exp = payload["exp"]
    if isinstance(exp, bool) or not isinstance(exp, (int, float)):
        raise InvalidToken("exp is not a number")
    gen = payload.get("gen", 0)
    if type(gen) is not int or not 0 <= gen <= MAX_USER_ID:
        raise InvalidToken("gen is not a non-negative integer")
    return Claims(user_id=user_id, expires_at=int(exp), gen=gen)


def weak_secret_warning(secret: str) -> str | None:
    """A start-up warning for a secret too short for HS256 (RFC 7518 3.2), else None."""
    if len(secret.encode()) < 32:
        return ("AccessSecret is shorter than 32 bytes: set a long random one "
                "(e.g. SKYEIM_ACCESS_SECRET) before going to production")
    return None


def default_secret_refusal(secrets: list[str], hosts: list[str], what: str) -> str | None:
    """The one-line reason to refuse to start, or None: the shipped default
    AccessSecret on a listener other machines can reach lets anyone mint tokens."""
    if DEFAULT_SECRET not in secrets:
        return None
    public = [h for h in hosts if not is_loopback(h)]
    if not public:
        return None
    return (f"{what} uses the shipped default AccessSecret and listens on {public[0]}: "
            "set SKYEIM_ACCESS_SECRET to a long random secret, listen on 127.0.0.1, "
            "or pass --insecure-dev")


def is_loopback(host: str) -> bool:
    """127.0.0.0/8, ::1 or localhost: a listener no other machine can reach."""
    if host.lower() in ("localhost", "localhost."):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False
