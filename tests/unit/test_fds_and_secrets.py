"""skyeim.fds (the descriptor budget) and skyeim.internal_secret (the secret
filled in for an empty InternalSecret): their rules, without processes."""
from __future__ import annotations

import stat

import pytest

from skyeim import fds, internal_secret
from skyeim.config import ServiceConfig


def test_the_budget_counts_each_admission_until_the_next_count():
    clock = [0.0]
    soft = fds.limits()[0]
    budget = fds.FdBudget(reserve=0, clock=lambda: clock[0])
    assert not budget.exhausted()               # counts /proc/self/fd once
    budget.reserve = soft - budget._counted - 3   # room for 3 more descriptors
    for _ in range(3):
        assert not budget.exhausted()
        budget.admitted()
    assert budget.exhausted()


def test_raise_limit_reaches_the_hard_limit():
    before, now, hard = fds.raise_limit()
    assert now == hard or hard == fds.resource.RLIM_INFINITY
    assert now >= before


def test_the_shared_secret_file_is_made_once_with_mode_0600(tmp_path):
    path = tmp_path / "data" / "internal-secret"
    first = internal_secret.shared(str(path))
    assert len(first) >= 32
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert internal_secret.shared(str(path)) == first          # the other programs read it


def test_an_empty_secret_is_filled_in_on_loopback_and_refused_elsewhere(tmp_path, monkeypatch):
    monkeypatch.setenv(internal_secret.FILE_VARIABLE, str(tmp_path / "secret"))
    cfg = ServiceConfig(name="friend", port=1)
    filled, note = internal_secret.fill_in(cfg, ["127.0.0.1"], "friend")
    assert filled.internal_secret == (tmp_path / "secret").read_text().strip() and note
    with pytest.raises(internal_secret.SecretError, match="0.0.0.0"):
        internal_secret.fill_in(cfg, ["0.0.0.0"], "friend")
    same, note = internal_secret.fill_in(ServiceConfig(name="friend", port=1, internal_secret="x"),
                                         ["0.0.0.0"], "friend")
    assert same.internal_secret == "x" and note is None
