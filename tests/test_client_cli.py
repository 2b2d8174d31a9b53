"""The command line client (``python -m skyeim.client``), run as a subprocess
against a live system: register, login (one token file per user, never the
password), friends, send to a username or an id, read, listen (JSON, and
--pretty through every frame a user with history and groups gets), history,
two users chatting, and one-line errors with a non-zero exit code."""
from __future__ import annotations

import json
import stat
import subprocess
from pathlib import Path

import pytest

from harness import PASSWORD, PYTHON, REPO, unique
from sdk_harness import CLI_TIMEOUT, CliProcess, account, cli, cli_env, ok, one_line_error


@pytest.fixture
def home(tmp_path) -> Path:
    """A HOME of its own, so that nothing touches the real ~/.config."""
    h = tmp_path / "home"
    h.mkdir()
    return h


@pytest.fixture
def procs():
    """Long-running CLI commands (listen, chat), killed after the test if still running."""
    made: list[CliProcess] = []

    def start(*args, **kw) -> CliProcess:
        made.append(CliProcess(*args, **kw))
        return made[-1]

    yield start
    for p in made:
        p.stop()


# ---------------------------------------------------------------------------

def test_register_and_login_save_the_token_and_never_print_the_password(system, home):
    name = unique("cli")
    password = "s3cret-Pa55word"
    out = ok(cli(system, home, "register", name, "--password", password))
    assert out.startswith(f"registered {name} (user id ")
    p = cli(system, home, "login", name, "--password", password)     # the default token file
    out = ok(p)
    assert password not in out + p.stderr
    path = home / ".config" / "skyeim" / "tokens" / f"{name.lower()}.json"
    assert f"token saved to {path}" in out
    record = json.loads(path.read_text())
    assert record["username"] == name and record["url"] == system.url
    assert isinstance(record["token"], str) and type(record["userId"]) is int
    assert record["token"] not in out
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert stat.S_IMODE(path.parent.parent.stat().st_mode) == 0o700
    # the saved token (and URL) work for the next command, with no --url
    p = subprocess.run([PYTHON, "-m", "skyeim.client", "friends", "list"], cwd=REPO,
                       env=cli_env(home), capture_output=True, text=True, timeout=CLI_TIMEOUT)
    assert ok(p) == ""


def test_password_from_the_environment_or_stdin(system, home):
    name = unique("clienv")
    ok(cli(system, home, "register", name, SKYEIM_PASSWORD=PASSWORD))
    tf = home / "t.json"
    p = cli(system, home, "login", name, token_file=tf, input=PASSWORD + "\n")   # getpass, no tty
    assert ok(p).startswith(f"logged in as {name}") and PASSWORD not in p.stdout + p.stderr


def test_errors_are_one_line_with_a_non_zero_exit(system, home):
    name = unique("clierr")
    ok(cli(system, home, "register", name, "--password", PASSWORD))
    assert "conflict" in one_line_error(cli(system, home, "register", name, "--password", PASSWORD))
    # 401 by the contract; the gateway answers 502 today (see test_client_sdk) -- one line anyway
    p = cli(system, home, "login", name, "--password", "wrong-password", token_file=home / "x")
    assert "wrong-password" not in one_line_error(p)
    assert not (home / "x").exists()
    assert "not logged in" in one_line_error(cli(system, home, "friends", "list",
                                                 token_file=home / "none.json"))
    line = one_line_error(cli(system, home, "--token", "garbage", "send", "1", "hi"))
    assert "401" in line and "unauthorized" in line
    assert "unauthorized" in one_line_error(cli(system, home, "--token", "garbage", "history", "1"))
    p = cli(system, home, "send", "not a name!", "hi")
    assert p.returncode == 2 and "not a user id or username" in p.stderr
    p = cli(system, home, "read", "2", "not a msgId!")
    assert p.returncode == 2 and "not a msgId" in p.stderr


def test_friends_add_list_remove(system, home):
    _, tf, _ = account(system, home, "clif_a")
    bob, _, bob_id = account(system, home, "clif_b")
    carol, _, carol_id = account(system, home, "clif_c")
    assert ok(cli(system, home, "friends", "add", bob, token_file=tf)) == f"added {bob}\n"
    assert ok(cli(system, home, "friends", "add", str(carol_id), token_file=tf)) == \
        f"added user {carol_id}\n"
    rows = sorted(line.split("\t") for line in
                  ok(cli(system, home, "friends", "list", token_file=tf)).splitlines())
    assert rows == sorted([[str(bob_id), bob, "offline"], [str(carol_id), carol, "offline"]])
    assert ok(cli(system, home, "friends", "remove", str(carol_id), token_file=tf)) == \
        f"removed user {carol_id}\n"
    assert ok(cli(system, home, "friends", "list", token_file=tf)) == f"{bob_id}\t{bob}\toffline\n"
    assert "not_found" in one_line_error(cli(system, home, "friends", "add", "nobody_xyz_123",
                                             token_file=tf))


def test_send_wait_delivered_to_a_listening_peer_and_history(system, home, procs):
    _, alice_tf, alice_id = account(system, home, "clis_a")
    _, bob_tf, bob_id = account(system, home, "clis_b")
    lst = procs(system, home, "listen", "--count", "3", token_file=bob_tf)
    connected = lst.frame()
    assert connected["type"] == "connected" and connected["data"]["userId"] == bob_id

    out = ok(cli(system, home, "send", str(bob_id), "hello from the cli", "--wait", "delivered",
                 token_file=alice_tf))
    status, msg_id, seq = out.split()
    assert status == "delivered" and seq == "seq=1"
    chat = lst.frame()
    assert chat["type"] == "chat"
    assert chat["data"]["msgId"] == msg_id and chat["data"]["content"] == "hello from the cli"
    assert chat["data"]["fromUserId"] == alice_id

    out = ok(cli(system, home, "send", str(bob_id), "second", token_file=alice_tf))
    assert out.startswith("sent ") and out.strip().endswith("seq=2")
    assert lst.frame()["data"]["content"] == "second"
    assert lst.proc.wait(10) == 0                   # --count 3 reached

    lines = ok(cli(system, home, "history", str(bob_id), token_file=alice_tf)).splitlines()
    assert len(lines) == 2
    first, second = (line.split("\t") for line in lines)   # oldest first
    assert first[0] == "#1" and first[2] == f"{alice_id} -> {bob_id}"
    assert first[3] == "[delivered]" and first[4] == "hello from the cli"
    assert second[0] == "#2" and second[4] == "second"

    p = cli(system, home, "history", str(alice_id), "--limit", "1", token_file=bob_tf)
    assert ok(p).split("\t")[0] == "#2" and "--before 2" in p.stderr
    p = cli(system, home, "history", str(alice_id), "--limit", "5", "--before", "2", "--json",
            token_file=bob_tf)
    body = json.loads(ok(p))
    assert [m["seq"] for m in body["messages"]] == [1] and body["hasMore"] is False


def test_listen_pretty_shows_presence_and_ctrl_c_exits_cleanly(system, home, procs):
    alice, alice_tf, alice_id = account(system, home, "clil_a")
    _, bob_tf, bob_id = account(system, home, "clil_b")
    ok(cli(system, home, "friends", "add", str(bob_id), token_file=alice_tf))
    lst = procs(system, home, "listen", "--pretty", token_file=alice_tf)
    assert lst.line().startswith(f"connected as {alice_id}")
    # bob's send connects bob (alice sees him online), sends, and disconnects
    ok(cli(system, home, "send", str(alice_id), "hi alice", token_file=bob_tf))
    lines = [lst.line() for _ in range(3)]
    assert lines[0].startswith(f"online user {bob_id}")
    assert lines[1].startswith(f"chat   #1 from {bob_id} to {alice_id}")
    assert lines[1].rstrip().endswith("hi alice")
    assert lines[2].startswith(f"offline user {bob_id}")
    lst.proc.send_signal(2)                          # Ctrl-C
    assert lst.proc.wait(10) == 0
    assert "Traceback" not in lst.proc.stderr.read()


# -- one token file per user ------------------------------------------------------

def config(home: Path) -> Path:
    return home / ".config" / "skyeim"


def test_each_user_keeps_a_token_file_and_the_last_login_is_the_default(system, home):
    alice, bob = unique("clim_a"), unique("clim_b")
    for name in (alice, bob):
        ok(cli(system, home, "register", name, "--password", PASSWORD))
        ok(cli(system, home, "login", name, "--password", PASSWORD))
    files = sorted(p.name for p in (config(home) / "tokens").iterdir())
    assert files == sorted([f"{alice.lower()}.json", f"{bob.lower()}.json"])
    assert (config(home) / "default-user").read_text().strip() == bob.lower()
    ok(cli(system, home, "friends", "add", alice))                      # as bob, the default
    # --user before or after the command, or $SKYEIM_USER: alice's own token
    for argv, env in ((["--user", alice, "friends", "list"], {}),
                      (["friends", "list", "--user", alice.upper()], {}),
                      (["friends", "list"], {"SKYEIM_USER": alice})):
        assert ok(cli(system, home, *argv, **env)).split("\t")[1] == bob
    rows = [line.split("\t") for line in ok(cli(system, home, "accounts")).splitlines()]
    assert sorted(r[0] for r in rows) == sorted([alice, bob])
    assert [r[0] for r in rows if r[-1].endswith("(default)")] == [bob]
    assert "not logged in" in one_line_error(cli(system, home, "--user", "nobody_here",
                                                 "friends", "list"))
    ok(cli(system, home, "logout"))                                     # bob, the default
    assert not (config(home) / "tokens" / f"{bob.lower()}.json").exists()
    assert ok(cli(system, home, "friends", "list")).split("\t")[1] == bob   # alice, the one left


def test_a_token_json_of_the_single_file_layout_is_moved_into_tokens(system, home):
    name = unique("cliold")
    old = config(home) / "token.json"
    ok(cli(system, home, "register", name, "--password", PASSWORD))
    ok(cli(system, home, "login", name, "--password", PASSWORD, token_file=old))
    p = cli(system, home, "friends", "list")
    assert ok(p) == "" and "moved" in p.stderr and str(old) in p.stderr
    new = config(home) / "tokens" / f"{name.lower()}.json"
    assert not old.exists() and json.loads(new.read_text())["username"] == name
    assert stat.S_IMODE(new.stat().st_mode) == 0o600
    assert (config(home) / "default-user").read_text().strip() == name.lower()
    p = cli(system, home, "friends", "list")
    assert ok(p) == "" and p.stderr == ""                               # once only


def test_an_expired_saved_token_says_to_log_in_again(system, home):
    tf = home / "old.json"
    tf.write_text(json.dumps({"username": "someone", "userId": 1, "token": "x",
                              "url": system.url, "expiresAt": 1000}))
    line = one_line_error(cli(system, home, "friends", "list", token_file=tf))
    assert "expired" in line and "login someone" in line


# -- usernames, read, and every frame in listen --pretty -----------------------------

def test_send_history_and_read_take_a_username_and_read_reaches_the_sender(system, home, procs):
    alice, alice_tf, alice_id = account(system, home, "clin_a")
    bob, bob_tf, bob_id = account(system, home, "clin_b")
    stranger, _, _ = account(system, home, "clin_c")
    ok(cli(system, home, "friends", "add", bob, token_file=alice_tf))
    m1 = ok(cli(system, home, "send", bob, "one", token_file=alice_tf)).split()[1]
    m2 = ok(cli(system, home, "send", bob.upper(), "two", token_file=alice_tf)).split()[1]
    line = one_line_error(cli(system, home, "send", stranger, "hi", token_file=alice_tf))
    assert f"{stranger} is not among your friends" in line and "friends add" in line

    lst = procs(system, home, "listen", token_file=alice_tf)
    assert lst.frame()["type"] == "connected"
    out = ok(cli(system, home, "read", alice, m1, token_file=bob_tf))
    assert out == f"sent a read receipt for 1 message(s) from {alice} (user {alice_id})\n"
    receipt = lst.frame_of("read")                  # (bob's connection made him online first)
    assert receipt == {"type": "read", "data": {"peerId": bob_id, "msgIds": [m1],
                                                "timestamp": receipt["data"]["timestamp"]}}
    assert ok(cli(system, home, "read", str(alice_id), token_file=bob_tf)).startswith(
        f"sent a read receipt for every unread message from user {alice_id}")
    assert lst.frame_of("read")["data"]["msgIds"] == [m2]
    rows = [r.split("\t") for r in ok(cli(system, home, "history", alice,
                                          token_file=bob_tf)).splitlines()]
    assert [(r[3], r[4]) for r in rows] == [("[read]", "one"), ("[read]", "two")]
    line = one_line_error(cli(system, home, "read", str(bob_id), token_file=bob_tf))   # oneself
    assert "bad_request" in line


def test_listen_pretty_prints_every_frame_of_a_user_with_history_and_groups(system, home, procs,
                                                                            clients):
    """The frames that used to end `listen --pretty` with a traceback: sync_complete
    (any earlier conversation), typing, groupchat, group_read, group_unread."""
    from skyeim.client import Api
    alice, bob = system.users("clig_a", "clig_b")
    system.befriend(alice, bob)
    system.seed_message(alice, bob, "while you were out")
    gid = Api(system.url, alice.token).create_group("cli-group", [bob.id])
    ca = clients(system.url, alice.token)
    ca.send_groupchat(gid, "first in the group")
    lst = procs(system, home, "--token", bob.token, "listen", "--pretty")
    lines = [lst.line() for _ in range(6)]
    text = "".join(lines)
    assert lines[0].startswith(f"chat   #1 from {alice.id} to {bob.id} [")
    assert lines[0].rstrip().endswith("while you were out")
    assert lines[1].startswith(f"connected as {bob.id}; ")
    assert f'groups 1: {gid} "cli-group" 1 unread' in text                   # group_unread
    assert f"synced 1 conversations (request " in text and f"user {alice.id} up to #1" in text
    assert f"group  #1 in {gid} from {alice.id} [" in text and "first in the group" in text
    ca.send_typing(bob.id)
    assert lst.line_with("typing").strip() == f"typing user {alice.id}: typing"
    ca.send_groupchat(gid, "second")
    assert lst.line_with("group ").startswith(f"group  #2 in {gid} from {alice.id} [")
    ca.mark_group_read(gid, 2)
    assert lst.line_with("group_read").strip() == \
        f"group_read user {alice.id} read group {gid} up to #2"
    ca.send_chat(bob.id, "live one")
    assert lst.line_with("chat").startswith(f"chat   #2 from {alice.id} to {bob.id}")
    ca.close()
    assert lst.line_with("offline").strip() == f"offline user {alice.id}"
    lst.proc.send_signal(2)                          # Ctrl-C
    assert lst.proc.wait(10) == 0
    assert "Traceback" not in lst.proc.stderr.read()


def test_two_users_chat_through_the_cli(system, home, procs):
    alice, bob = unique("clic_a"), unique("clic_b")
    for name in (alice, bob):
        ok(cli(system, home, "register", name, "--password", PASSWORD))
        ok(cli(system, home, "login", name, "--password", PASSWORD))
    ok(cli(system, home, "--user", alice, "friends", "add", bob))
    ok(cli(system, home, "--user", alice, "send", bob, "before the chat"))
    a = procs(system, home, "--user", alice, "chat", bob, stdin=True)
    assert a.line_with("* chatting with").startswith(f"* chatting with {bob} as user ")
    b = procs(system, home, "--user", bob, "chat", alice, stdin=True)
    assert b.line().rstrip().endswith(f"#1 {alice}: before the chat")    # the history first
    assert b.line_with("* chatting with").startswith(f"* chatting with {alice}")
    assert a.line_with(bob).strip() == f"* {bob} is online"
    assert a.line_with("read").strip() == f"({bob} read 1)"             # shown: read
    a.type("hi bob")
    assert b.line_with("hi bob").rstrip().endswith(f"#2 {alice}: hi bob")
    # bob's chat shows it, so reads it (its `delivered` ack may or may not come first)
    assert a.line_with("read").strip() == f"({bob} read 1)"
    b.type("hi alice")
    assert a.line_with("hi alice").rstrip().endswith(f"#3 {bob}: hi alice")
    b.end_input()                                    # Ctrl-D
    assert b.proc.wait(15) == 0
    assert a.line_with("offline").strip() == f"* {bob} is offline"
    a.end_input()
    assert a.proc.wait(15) == 0
    assert "Traceback" not in a.proc.stderr.read() + b.proc.stderr.read()
    rows = [r.split("\t") for r in ok(cli(system, home, "--user", alice, "history",
                                          bob)).splitlines()]
    assert [(r[0], r[3], r[4]) for r in rows] == [("#1", "[read]", "before the chat"),
                                                  ("#2", "[read]", "hi bob"),
                                                  ("#3", "[read]", "hi alice")]


def test_chat_ends_with_one_line_when_another_login_replaces_it(system, home, procs):
    alice, alice_tf, _ = account(system, home, "clir_a")
    bob, _, bob_id = account(system, home, "clir_b")
    a = procs(system, home, "chat", str(bob_id), token_file=alice_tf, stdin=True)
    assert a.line_with("* chatting with").startswith(f"* chatting with user {bob_id}")
    ok(cli(system, home, "send", str(bob_id), "from elsewhere", token_file=alice_tf))  # 4001
    assert a.proc.wait(15) == 1
    err = a.proc.stderr.read().strip().splitlines()
    assert len(err) == 1 and err[0].startswith("skyeim: error: ") and "4001" in err[0]
