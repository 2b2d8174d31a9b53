"""For the team's own backend: a client of the gateway's server API (PROTOCOL.md
9.2) and ``verify_signature`` for webhook and before-send hook receivers (9.3, 9.4).

    from skyeim.server import ServerApi, verify_signature

    api = ServerApi("http://127.0.0.1:10300", key=os.environ["SKYEIM_SERVER_API_KEY"])
    api.send_message(from_user_id=1, to_user_id=42, content="Your order shipped")
    api.notice(event="maintenance", data={"in": 600}, everyone=True)

Of skyeim it imports skyeim.protocol only (no server module), so a team's app
can use it with the package installed and nothing of the gateway running in it.
"""
from skyeim.protocol.signatures import HEADER as SIGNATURE_HEADER
from skyeim.protocol.signatures import verify_signature
from skyeim.server.api import ServerApi, ServerApiError

__all__ = ["ServerApi", "ServerApiError", "verify_signature", "SIGNATURE_HEADER"]
