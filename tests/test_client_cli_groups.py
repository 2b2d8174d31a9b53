"""The CLI's `groups` command (docs/protocol.md "Groups", "Group administration",
"Mentions in groups"): list, create, members, send --mention, role, kick, mute,
rename, dismiss, each against a live system; a role not allowed is a one-line 403."""
from __future__ import annotations

from pathlib import Path

import pytest

from sdk_harness import account, cli, ok, one_line_error


@pytest.fixture
def home(tmp_path) -> Path:
    h = tmp_path / "home"
    h.mkdir()
    return h


def test_groups_administration_from_the_command_line(system, home):
    _, own, _ = account(system, home, "clig_o")
    _, adm, adm_id = account(system, home, "clig_a")
    _, mem, mem_id = account(system, home, "clig_m")
    out = ok(cli(system, home, "groups", "create", "42", str(adm_id), str(mem_id), token_file=own))
    assert out.startswith("created group ")
    gid = out.split()[-1]
    assert ok(cli(system, home, "groups", "list", token_file=mem)).split("\t")[:3] == \
        [gid, "42", "member"]
    assert ok(cli(system, home, "groups", "role", gid, str(adm_id), "admin", token_file=own)) == \
        f"user {adm_id} is admin\n"
    err = one_line_error(cli(system, home, "groups", "kick", gid, str(adm_id), token_file=mem))
    assert "forbidden" in err
    out = ok(cli(system, home, "groups", "mute", gid, str(mem_id), "600", token_file=adm))
    assert out.startswith(f"user {mem_id} muted until ")
    members = ok(cli(system, home, "groups", "members", gid, token_file=own)).splitlines()
    assert [line.split("\t")[2] for line in members] == ["owner", "admin", "member"]
    assert "muted until" in members[2]
    assert "muted" in one_line_error(cli(system, home, "groups", "send", gid, "hi",
                                         token_file=mem))
    assert ok(cli(system, home, "groups", "mute", gid, str(mem_id), "0", token_file=own)) == \
        f"user {mem_id} unmuted\n"
    assert ok(cli(system, home, "groups", "send", gid, "@admin", "--mention", str(adm_id),
                  token_file=mem)).startswith("sent ")
    assert ok(cli(system, home, "groups", "rename", gid, "new name", token_file=adm)) == \
        f"group {gid} is now 'new name'\n"
    assert ok(cli(system, home, "groups", "kick", gid, str(mem_id), token_file=adm)) == \
        f"removed user {mem_id} from group {gid}\n"
    assert "forbidden" in one_line_error(cli(system, home, "groups", "dismiss", gid,
                                             token_file=adm))
    assert ok(cli(system, home, "groups", "dismiss", gid, token_file=own)) == \
        f"dismissed group {gid} (2 members)\n"


def test_group_messages_are_edited_and_recalled_from_the_command_line(system, home):
    _, own, _ = account(system, home, "cligr_o")
    _, mem, mem_id = account(system, home, "cligr_m")
    gid = ok(cli(system, home, "groups", "create", "g", str(mem_id), token_file=own)).split()[-1]
    sent = ok(cli(system, home, "groups", "send", gid, "teh typo", token_file=own)).split()
    mid = sent[1]
    out = ok(cli(system, home, "edit", mid, "the typo", "--group", gid, token_file=own))
    assert f"to group {gid}" in out and "the typo" in out
    history = ok(cli(system, home, "groups", "history", gid, token_file=mem))
    assert history.rstrip().endswith("the typo (edited)")
    assert "recalled" in ok(cli(system, home, "recall", mid, "--group", gid, token_file=own))
    assert ok(cli(system, home, "groups", "history", gid, token_file=mem)).rstrip().endswith(
        "(recalled)")
    err = one_line_error(cli(system, home, "edit", mid, "again", "--group", gid, token_file=own))
    assert "recalled: a recalled message cannot be edited" in err
    err = one_line_error(cli(system, home, "recall", mid, "--group", gid, token_file=mem))
    assert "not_found" in err
