"""The `auth` frame (PROTOCOL.md section 5): a fresh token for the same user
moves the connection's expiry (the `token_expiring` warning comes again before
the new one) and the token generation it runs on (features/revocation.py)."""
from __future__ import annotations

from dataclasses import dataclass

from skyeim import tokens
from skyeim.gateway.features.base import TokenTracking
from skyeim.gateway.frames.codec import FrameError, bad_request
from skyeim.gateway.frames.registry import FrameRegistry, FrameType
from skyeim.gateway.transport.session import Session
from skyeim.protocol import ErrorCode


@dataclass(frozen=True, slots=True)
class Auth:
    kind = "auth"
    token: str


def parse_auth(data, sender_id: int) -> Auth:
    if not isinstance(data, dict) or not isinstance(data.get("token"), str):
        raise bad_request('auth needs data {"token": "<JWT>"}')
    return Auth(data["token"])


class TokenRefresh:
    def __init__(self, token_check: TokenTracking):
        self.token_check = token_check

    def register(self, frames: FrameRegistry) -> None:
        frames.add(FrameType("auth", parse_auth, handle=self.handle))
        frames.add_server_types("token_expiring")

    def handle(self, session: Session, auth: Auth) -> None:
        try:
            claims = self.token_check.verify(auth.token)
        except (tokens.InvalidToken, UnicodeEncodeError):
            # a lone surrogate (a JSON "\ud800" escape) is no UTF-8, so no JWT either
            raise FrameError(ErrorCode.UNAUTHORIZED, "the token is invalid or expired") from None
        if claims.user_id != session.user_id:
            raise FrameError(ErrorCode.FORBIDDEN, "the token is for another user")
        session.refresh_token(claims.expires_at)
        self.token_check.track(session, claims.gen)
