"""Helpers for the SDK and CLI tests (test_client_*.py): reading frames from a
Client; a TCP proxy that cuts connections on purpose; running the command line
client (``python -m skyeim.client``) as a subprocess with a HOME of its own.
The ``clients`` fixture (SDK clients closed after the test) is in conftest.py."""
from __future__ import annotations

import json
import os
import queue
import socket
import subprocess
import threading
import time
from pathlib import Path

from harness import PASSWORD, PYTHON, REPO, unique
from skyeim.client import Client

FAST = dict(base=0.05, cap=0.5)     # reconnect backoff for tests: quick, still jittered


def frames_until(client: Client, pred, timeout: float = 5.0) -> list:
    """Frames from the iterator up to and including the first one matching ``pred``."""
    out, deadline = [], time.monotonic() + timeout
    for _ in range(100_000):                  # bounded; the deadline ends it first
        f = client.next_frame(max(deadline - time.monotonic(), 0.001))
        out.append(f)
        if pred(f):
            return out
    raise AssertionError("no matching frame")


def next_of(client: Client, kind: type, timeout: float = 10.0, **match):
    """The next frame of class ``kind`` (with the given attribute values), skipping others."""
    frames = frames_until(client, lambda f: isinstance(f, kind) and all(
        getattr(f, k) == v for k, v in match.items()), timeout)
    return frames[-1]


def drain(client: Client, duration: float) -> list:
    """Every frame that arrives within ``duration`` seconds."""
    out, deadline = [], time.monotonic() + duration
    while (remaining := deadline - time.monotonic()) > 0:
        try:
            out.append(client.next_frame(remaining))
        except TimeoutError:
            break
    return out


# -- connections cut on purpose ---------------------------------------------------------

class Proxy:
    """A TCP proxy to the gateway. ``blackhole(up=, down=)`` makes the current
    connections swallow bytes in a direction (client->gateway is up);
    ``cut()`` drops them; new connections always pass through."""

    def __init__(self, target_port: int):
        self.target = ("127.0.0.1", target_port)
        self.lsock = socket.socket()
        self.lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.lsock.bind(("127.0.0.1", 0))
        self.lsock.listen(16)
        self.port = self.lsock.getsockname()[1]
        self.conns: list[dict] = []
        self.accepted = 0
        self.lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws"

    def _accept(self) -> None:
        while True:
            try:
                c, _ = self.lsock.accept()
            except OSError:
                return
            try:
                u = socket.create_connection(self.target, timeout=5)
                u.settimeout(None)
            except OSError:
                c.close()
                continue
            conn = {"c": c, "u": u, "up": False, "down": False}
            with self.lock:
                self.conns.append(conn)
                self.accepted += 1
            threading.Thread(target=self._pump, args=(conn, "c", "u", "up"), daemon=True).start()
            threading.Thread(target=self._pump, args=(conn, "u", "c", "down"), daemon=True).start()

    @staticmethod
    def _pump(conn: dict, src: str, dst: str, direction: str) -> None:
        while True:
            try:
                data = conn[src].recv(65536)
            except OSError:
                break
            if not data:
                break
            if conn[direction]:
                continue
            try:
                conn[dst].sendall(data)
            except OSError:
                break
        for k in ("c", "u"):
            try:
                conn[k].shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def blackhole(self, up: bool = False, down: bool = False) -> None:
        with self.lock:
            for conn in self.conns:
                conn["up"], conn["down"] = up, down

    def cut(self) -> None:
        with self.lock:
            conns, self.conns = self.conns, []
        for conn in conns:
            for k in ("c", "u"):
                try:
                    conn[k].shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                conn[k].close()

    def close(self) -> None:
        try:
            self.lsock.shutdown(socket.SHUT_RDWR)   # wakes the accept() (close alone does not)
        except OSError:
            pass
        self.lsock.close()
        self.cut()


# -- the command line client --------------------------------------------------------------

CLI_TIMEOUT = 60
CLI_ENV = ("XDG_CONFIG_HOME", "SKYEIM_URL", "SKYEIM_TOKEN", "SKYEIM_TOKEN_FILE",
           "SKYEIM_PASSWORD", "SKYEIM_USER", "SKYEIM_CA_FILE")


def cli_env(home: Path, **extra: str) -> dict:
    """The environment of a CLI run: HOME of its own, none of the CLI's own variables."""
    env = {k: v for k, v in os.environ.items() if k not in CLI_ENV}
    env.update({"HOME": str(home), "PYTHONPATH": str(REPO), "PYTHONUNBUFFERED": "1"}, **extra)
    return env


def cli_argv(system, *args: str, token_file: Path | None = None) -> list[str]:
    argv = [PYTHON, "-m", "skyeim.client", "--url", system.url]
    if token_file is not None:
        argv += ["--token-file", str(token_file)]
    return argv + list(args)


def cli(system, home: Path, *args: str, token_file: Path | None = None, input: str | None = None,
        **env: str) -> subprocess.CompletedProcess:
    """Run one CLI command to its end."""
    return subprocess.run(cli_argv(system, *args, token_file=token_file), cwd=REPO,
                          env=cli_env(home, **env), input=input, capture_output=True, text=True,
                          timeout=CLI_TIMEOUT)


def ok(p: subprocess.CompletedProcess) -> str:
    assert p.returncode == 0, f"exit {p.returncode}: {p.stderr}"
    return p.stdout


def one_line_error(p: subprocess.CompletedProcess) -> str:
    assert p.returncode == 1, f"exit {p.returncode}: {p.stdout} {p.stderr}"
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("skyeim: error: "), p.stderr
    return lines[0]


def account(system, home: Path, prefix: str) -> tuple[str, Path, int]:
    """Register and log in a user through the CLI into a token file of its own;
    (name, token file, user id)."""
    name = unique(prefix)
    tf = home / f"{name}.json"
    ok(cli(system, home, "register", name, "--password", PASSWORD))
    ok(cli(system, home, "login", name, "--password", PASSWORD, token_file=tf))
    return name, tf, json.loads(tf.read_text())["userId"]


class CliProcess:
    """A long-running CLI command (``listen``, ``chat``) whose stdout is read line by
    line; with ``stdin`` its input is a pipe written by ``type``."""

    def __init__(self, system, home: Path, *args: str, token_file: Path | None = None,
                 stdin: bool = False):
        self.proc = subprocess.Popen(
            cli_argv(system, *args, token_file=token_file), cwd=REPO, env=cli_env(home),
            stdin=subprocess.PIPE if stdin else subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, text=True, bufsize=1)
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
            raise AssertionError("the command printed nothing in time") from None
        assert line is not None, f"the command ended: {self.proc.stderr.read()}"
        return line

    def line_with(self, text: str, timeout: float = 10.0, most: int = 50) -> str:
        """The next line that contains ``text`` (skipping up to ``most`` others)."""
        for _ in range(most):
            line = self.line(timeout)
            if text in line:
                return line
        raise AssertionError(f"no line with {text!r} in {most} lines")

    def frame(self, timeout: float = 10.0) -> dict:
        return json.loads(self.line(timeout))

    def frame_of(self, kind: str, timeout: float = 10.0, most: int = 50) -> dict:
        """The next JSON frame of type ``kind`` (skipping up to ``most`` others)."""
        for _ in range(most):
            frame = self.frame(timeout)
            if frame["type"] == kind:
                return frame
        raise AssertionError(f"no {kind} frame in {most}")

    def type(self, text: str) -> None:
        self.proc.stdin.write(text + "\n")
        self.proc.stdin.flush()

    def end_input(self) -> None:
        self.proc.stdin.close()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)
