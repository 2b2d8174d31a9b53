"""``python -m skyeim.contract check``: does a team's own Message, Friend or Auth
service implement PROTOCOL.md section 6? (docs/integration.md, "Replacing a service")

It needs only the standard library, ``requests`` and ``skyeim.protocol``, so it
runs from the SDK's install, without the server's dependencies.
"""
from skyeim.contract.cli import main

__all__ = ["main"]
