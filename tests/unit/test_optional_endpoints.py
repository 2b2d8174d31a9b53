"""OptionalEndpoint (skyeim/gateway/backends/clients.py): an endpoint beyond PROTOCOL.md
section 6 is used while the service has it; after a 404 or 405 it is skipped (the
caller uses the section 6 calls), logged once, and probed once per interval."""
from __future__ import annotations

import logging

from skyeim.gateway.backends.clients import BackendRejected, BackendUnavailable, OptionalEndpoint


def endpoint(clock) -> OptionalEndpoint:
    return OptionalEndpoint("message", "POST", "/v1/messages/batch", 60.0, clock=clock)


def test_present_until_a_404_or_405(clock):
    ep = endpoint(clock)
    assert ep.wanted() and ep.wanted()
    assert not ep.absent(BackendRejected(400, "bad_request", "x"))
    assert not ep.absent(BackendRejected(401, "unauthorized", "x"))
    assert not ep.absent(BackendUnavailable("down"))
    assert ep.wanted()
    assert ep.absent(BackendRejected(405, "method_not_allowed", ""))
    assert ep.missing and not ep.wanted()


def test_missing_is_probed_once_per_interval(clock):
    ep = endpoint(clock)
    ep.absent(BackendRejected(404, "not_found", ""))
    clock.advance(59.9)
    assert not ep.wanted()
    clock.advance(0.2)
    assert ep.wanted()                  # the probe
    assert not ep.wanted()              # and only one
    ep.absent(BackendRejected(404, "not_found", ""))
    clock.advance(30)
    assert not ep.wanted()
    clock.advance(31)
    assert ep.wanted()
    ep.present()                        # it answered
    assert not ep.missing and ep.wanted() and ep.wanted()


def test_logged_once_per_change(clock, caplog):
    ep = endpoint(clock)
    with caplog.at_level(logging.INFO, logger="skyeim.gateway.backends.clients"):
        for _ in range(3):
            ep.absent(BackendRejected(404, "not_found", ""))
            clock.advance(61)
            ep.wanted()
        ep.present()
        ep.present()
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 2, lines
    assert "has no POST /v1/messages/batch" in lines[0] and "every 60s" in lines[0]
    assert "again" in lines[1]
