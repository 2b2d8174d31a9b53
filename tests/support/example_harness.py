"""examples/flask_app run as a process beside a running SkyeIM ``System``.

``example_system(tmp)`` starts SkyeIM configured for the example (server API key,
webhooks and the before-send hook pointing at the app) and the app itself, and
yields ``ExampleApp``: the app's URL, a requests session per user, and the SDK-free
helpers the test uses to act as the app's own users.
"""
from __future__ import annotations

import contextlib
import os
import secrets
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator

import requests

from harness import REPO, System, close_open_clients, free_port, reap

APP = REPO / "examples" / "flask_app" / "app.py"


class ExampleApp:
    def __init__(self, system: System, tmp: Path, port: int, env: dict[str, str]):
        self.system = system
        self.url = f"http://127.0.0.1:{port}"
        self.log_path = tmp / "example-app.log"
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen([sys.executable, str(APP)], cwd=REPO, env=env,
                                     stdout=self._log, stderr=subprocess.STDOUT)

    def wait_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the example app exited with {self.proc.returncode}:\n{self.log()}")
            with contextlib.suppress(requests.RequestException):
                if requests.get(self.url + "/healthz", timeout=1).status_code == 200:
                    return
            time.sleep(0.1)
        raise RuntimeError(f"the example app did not answer /healthz in {timeout:g}s:\n{self.log()}")

    def log(self) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")

    def post(self, path: str, body: dict, token: str | None = None) -> requests.Response:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return requests.post(self.url + path, json=body, headers=headers, timeout=10)

    def signup_and_login(self, username: str, password: str = "a good password") -> dict:
        r = self.post("/signup", {"username": username, "password": password})
        assert r.status_code == 200, r.text
        r = self.post("/login", {"username": username, "password": password})
        assert r.status_code == 200, r.text
        return r.json()

    def events(self, token: str) -> list[dict]:
        r = requests.get(self.url + "/events", headers={"Authorization": f"Bearer {token}"}, timeout=10)
        assert r.status_code == 200, r.text
        return r.json()["events"]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            reap(self.proc, 10)
        self._log.close()


@contextlib.contextmanager
def example_system(tmp: Path, *, standalone: bool = True) -> Iterator[ExampleApp]:
    app_port = free_port()
    app_url = f"http://127.0.0.1:{app_port}"
    api_key = secrets.token_urlsafe(24)
    webhook_secret = secrets.token_urlsafe(24)
    system = System(tmp, standalone=standalone, ws={
        "ServerApi": {"Key": api_key},
        "Webhooks": {"Url": app_url + "/skyeim/webhooks", "Secret": webhook_secret,
                     "Timeout": 2000, "MaxAttempts": 5, "QueueSize": 1000},
        "Hooks": {"BeforeSend": {"Url": app_url + "/skyeim/before-send", "Timeout": 2000,
                                 "OnError": "reject"}},
        "Chat": {"RequireFriendship": True},
    })
    system.start()
    env = {**os.environ, "PYTHONPATH": str(REPO), "PYTHONUNBUFFERED": "1",
           "SKYEIM_URL": system.url, "SKYEIM_ACCESS_SECRET": system.secret,
           "SKYEIM_SERVER_API_KEY": api_key, "SKYEIM_WEBHOOK_SECRET": webhook_secret,
           "EXAMPLE_DATABASE": str(tmp / "example.db"), "EXAMPLE_PORT": str(app_port)}
    app = ExampleApp(system, tmp, app_port, env)
    try:
        app.wait_ready()
        yield app
    finally:
        close_open_clients()
        app.stop()
        system.stop()
