"""A real nginx (Debian's /usr/sbin/nginx) on 127.0.0.1 terminating TLS in front
of a test gateway, configured from the shipped etc/nginx/skyeim.conf, for
tests/test_tls_nginx.py.

- ``make_certificates(dir)``: a private CA and a server certificate for
  127.0.0.1 and localhost signed by it (openssl CLI);
- ``site_config(...)``: etc/nginx/skyeim.conf with only the addresses, ports,
  certificate and log paths replaced (every proxy directive is the shipped one);
- ``Nginx``: that site in a minimal nginx.conf, run in the foreground.
"""
from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests
from requests.adapters import HTTPAdapter

from harness import REPO, free_port, reap

NGINX = os.environ.get("SKYEIM_NGINX", "/usr/sbin/nginx")
SITE = REPO / "etc" / "nginx" / "skyeim.conf"
START_TIMEOUT = 15.0


def require_nginx() -> None:
    """Skip without nginx (fail under SKYEIM_REQUIRE_SERVICES=1, as CI installs it)."""
    if os.access(NGINX, os.X_OK):
        return
    reason = f"no nginx at {NGINX} (apt-get install nginx-light)"
    if os.environ.get("SKYEIM_REQUIRE_SERVICES") == "1":
        pytest.fail(f"SKYEIM_REQUIRE_SERVICES=1 but {reason}")
    pytest.skip(reason)


@dataclass
class Certificates:
    ca: Path          # the CA's certificate: what clients trust
    cert: Path        # the server's certificate (127.0.0.1, localhost)
    key: Path


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


def make_certificates(where: Path) -> Certificates:
    where.mkdir(parents=True, exist_ok=True)
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
             "-keyout", "ca.key", "-out", "ca.pem", "-subj", "/CN=SkyeIM test CA",
             "-addext", "basicConstraints=critical,CA:TRUE",
             "-addext", "keyUsage=critical,keyCertSign,cRLSign", cwd=where)
    _openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "server.key",
             "-out", "server.csr", "-subj", "/CN=127.0.0.1", cwd=where)
    (where / "server.ext").write_text(
        "subjectAltName=IP:127.0.0.1,DNS:localhost\n"
        "basicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\n"
        "extendedKeyUsage=serverAuth\n")
    _openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
             "-CAcreateserial", "-days", "2", "-out", "server.pem", "-extfile", "server.ext",
             cwd=where)
    return Certificates(where / "ca.pem", where / "server.pem", where / "server.key")


def _replace(text: str, old: str, new: str) -> str:
    assert old in text, f"{SITE} no longer has {old!r}: update nginx_harness.site_config"
    return text.replace(old, new)


def site_config(gateway_port: int, https_port: int, http_port: int, certs: Certificates,
                logs: Path) -> str:
    text = SITE.read_text()
    for old, new in (
            ("server 127.0.0.1:10300;", f"server 127.0.0.1:{gateway_port};"),
            ("listen 80;", f"listen 127.0.0.1:{http_port};"),
            ("    listen [::]:80;\n", ""),
            ("listen 443 ssl;", f"listen 127.0.0.1:{https_port} ssl;"),
            ("    listen [::]:443 ssl;\n", ""),
            ("/etc/letsencrypt/live/chat.example.com/fullchain.pem", str(certs.cert)),
            ("/etc/letsencrypt/live/chat.example.com/privkey.pem", str(certs.key)),
            ("/var/log/nginx/skyeim.access.log", str(logs / "skyeim.access.log")),
            ("/var/log/nginx/skyeim.error.log", str(logs / "skyeim.error.log"))):
        text = _replace(text, old, new)
    return text


class _SourceAdapter(HTTPAdapter):
    def __init__(self, source: str):
        self.source = source
        super().__init__()

    def init_poolmanager(self, *args, **kw):
        kw["source_address"] = (self.source, 0)
        return super().init_poolmanager(*args, **kw)


def session_from(source: str, ca: Path) -> requests.Session:
    """HTTP from another loopback address (127.0.0.2, ...: all of 127/8 is this
    machine), so that nginx sees another client address; trusting ``ca``."""
    session = requests.Session()
    session.mount("https://", _SourceAdapter(source))
    session.verify = str(ca)
    session.trust_env = False           # $REQUESTS_CA_BUNDLE would replace verify
    return session


class Nginx:
    """nginx serving the shipped site on https://127.0.0.1:<port> in front of
    ``gateway_port``; ``start()``, ``stop()``, ``url``, ``access_log()``."""

    def __init__(self, tmp: Path, gateway_port: int, certs: Certificates):
        self.dir = Path(tmp)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.https_port, self.http_port = free_port(), free_port()
        self.url = f"https://127.0.0.1:{self.https_port}"
        site = site_config(gateway_port, self.https_port, self.http_port, certs, self.dir)
        (self.dir / "site.conf").write_text(site)
        temp = "\n".join(f"    {kind}_temp_path {self.dir / (kind + '_temp')};"
                         for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
        user = "user root;\n" if os.geteuid() == 0 else ""   # workers write the temp dirs here
        (self.dir / "nginx.conf").write_text(
            f"{user}daemon off;\nworker_processes 1;\npid {self.dir / 'nginx.pid'};\n"
            f"error_log {self.dir / 'error.log'} info;\n"
            "events { worker_connections 1024; }\n"
            "http {\n    include /etc/nginx/mime.types;\n    default_type application/octet-stream;\n"
            f"{temp}\n    access_log {self.dir / 'access.log'};\n"
            f"    include {self.dir / 'site.conf'};\n}}\n")
        self.proc: subprocess.Popen | None = None

    def _argv(self, *extra: str) -> list[str]:
        return [NGINX, "-p", str(self.dir), "-c", str(self.dir / "nginx.conf"),
                "-e", str(self.dir / "error.log"), *extra]

    def check(self) -> None:
        """``nginx -t`` on the derived configuration."""
        proc = subprocess.run(self._argv("-t"), capture_output=True, text=True, timeout=30)
        assert proc.returncode == 0, proc.stderr

    def start(self) -> "Nginx":
        self.check()
        self.log = open(self.dir / "nginx.out", "wb")
        self.proc = subprocess.Popen(self._argv(), stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            assert self.proc.poll() is None, f"nginx exited: {self.error_log()}"
            with contextlib.suppress(OSError), socket.create_connection(
                    ("127.0.0.1", self.https_port), timeout=1):
                return self
            assert time.monotonic() < deadline, f"nginx not listening: {self.error_log()}"
            time.sleep(0.05)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGQUIT)         # graceful: finish, then exit
            reap(self.proc, 10)
        if self.proc is not None:
            self.log.close()

    def error_log(self) -> str:
        path = self.dir / "error.log"
        return path.read_text(errors="replace")[-3000:] if path.exists() else ""

    def access_log(self) -> str:
        path = self.dir / "skyeim.access.log"
        return path.read_text(errors="replace") if path.exists() else ""
