"""The command line client (``python -m skyeim.client``), run as a subprocess
against a live system: register, login (token file, never the password),
friends, send --wait delivered to a listening peer, history, and one-line
errors with a non-zero exit code."""
from __future__ import annotations

import json
import os
import queue
import stat
import subprocess
import threading
from pathlib import Path

import pytest

from harness import PASSWORD, PYTHON, REPO, unique

CLI_TIMEOUT = 60


@pytest.fixture
def home(tmp_path) -> Path:
    """A HOME of its own, so that nothing touches the real ~/.config."""
    h = tmp_path / "home"
    h.mkdir()
    return h


def env_for(home: Path, **extra: str) -> dict:
    env = {k: v for k, v in os.environ.items()
           if k not in ("XDG_CONFIG_HOME", "SKYEIM_URL", "SKYEIM_TOKEN", "SKYEIM_TOKEN_FILE",
                        "SKYEIM_PASSWORD")}
    env.update({"HOME": str(home), "PYTHONPATH": str(REPO), "PYTHONUNBUFFERED": "1"}, **extra)
    return env


def cli(system, home: Path, *args: str, token_file: Path | None = None, input: str | None = None,
        **env: str) -> subprocess.CompletedProcess:
    argv = [PYTHON, "-m", "skyeim.client", "--url", system.url]
    if token_file is not None:
        argv += ["--token-file", str(token_file)]
    return subprocess.run(argv + list(args), cwd=REPO, env=env_for(home, **env), input=input,
                          capture_output=True, text=True, timeout=CLI_TIMEOUT)


def ok(p: subprocess.CompletedProcess) -> str:
    assert p.returncode == 0, f"exit {p.returncode}: {p.stderr}"
    return p.stdout


def one_line_error(p: subprocess.CompletedProcess) -> str:
    assert p.returncode == 1, f"exit {p.returncode}: {p.stdout} {p.stderr}"
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("skyeim: error: "), p.stderr
    return lines[0]


def account(system, home: Path, prefix: str) -> tuple[str, Path, int]:
    """Register and log in a user through the CLI; (name, token file, user id)."""
    name = unique(prefix)
    tf = home / f"{name}.json"
    ok(cli(system, home, "register", name, "--password", PASSWORD))
    ok(cli(system, home, "login", name, "--password", PASSWORD, token_file=tf))
    return name, tf, json.loads(tf.read_text())["userId"]


class Listener:
    """``listen`` running in the background; reads its stdout line by line."""

    def __init__(self, system, home: Path, token_file: Path, *args: str):
        self.proc = subprocess.Popen(
            [PYTHON, "-m", "skyeim.client", "--url", system.url, "--token-file",
             str(token_file), "listen", *args],
            cwd=REPO, env=env_for(home), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            text=True, bufsize=1)
        self.lines: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.lines.put(line)
        self.lines.put(None)

    def line(self, timeout: float = 10.0) -> str:
        try:
            line = self.lines.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError("listen printed nothing in time") from None
        assert line is not None, f"listen ended: {self.proc.stderr.read()}"
        return line

    def frame(self, timeout: float = 10.0) -> dict:
        return json.loads(self.line(timeout))

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)


@pytest.fixture
def listeners():
    made: list[Listener] = []
    yield made
    for lst in made:
        lst.stop()


# ---------------------------------------------------------------------------

def test_register_and_login_save_the_token_and_never_print_the_password(system, home):
    name = unique("cli")
    password = "s3cret-Pa55word"
    out = ok(cli(system, home, "register", name, "--password", password))
    assert out.startswith(f"registered {name} (user id ")
    p = cli(system, home, "login", name, "--password", password)     # the default token file
    out = ok(p)
    assert password not in out + p.stderr
    path = home / ".config" / "skyeim" / "token.json"
    assert f"token saved to {path}" in out
    record = json.loads(path.read_text())
    assert record["username"] == name and record["url"] == system.url
    assert isinstance(record["token"], str) and type(record["userId"]) is int
    assert record["token"] not in out
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    # the saved token (and URL) work for the next command, with no --url
    p = subprocess.run([PYTHON, "-m", "skyeim.client", "friends", "list"], cwd=REPO,
                       env=env_for(home), capture_output=True, text=True, timeout=CLI_TIMEOUT)
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
    p = cli(system, home, "send", "not-an-id", "hi")
    assert p.returncode == 2 and "not a user id" in p.stderr


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


def test_send_wait_delivered_to_a_listening_peer_and_history(system, home, listeners):
    _, alice_tf, alice_id = account(system, home, "clis_a")
    _, bob_tf, bob_id = account(system, home, "clis_b")
    lst = Listener(system, home, bob_tf, "--count", "3")
    listeners.append(lst)
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


def test_listen_pretty_shows_presence_and_ctrl_c_exits_cleanly(system, home, listeners):
    alice, alice_tf, alice_id = account(system, home, "clil_a")
    _, bob_tf, bob_id = account(system, home, "clil_b")
    ok(cli(system, home, "friends", "add", str(bob_id), token_file=alice_tf))
    lst = Listener(system, home, alice_tf, "--pretty")
    listeners.append(lst)
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
