"""The InternalSecret when none is configured: safe defaults for every layout.

The gateway proves itself to the services with ``X-Internal-Secret``; only then
do the services believe what it says about its caller (``X-Client-Address``,
the key of the Auth service's per-address login limit). An empty secret would
leave the services open to anyone who can reach them, and make every login
count against the gateway's own address.

So an empty ``InternalSecret`` is filled in at start:

* standalone (``wsserver.py --standalone``): a random secret made in the
  process, shared by the gateway and the services it runs;
* four programs (supervisord): a random secret kept in a file that all of them
  read, or the first one creates (mode 0600): ``data/internal-secret`` under
  the working directory, or ``$SKYEIM_INTERNAL_SECRET_FILE``. This is safe
  only when every listener is on loopback: a program that listens on another
  address refuses to start without a configured InternalSecret.
"""
from __future__ import annotations

import dataclasses
import os
import secrets
import time
from typing import Any

from skyeim.tokens import is_loopback

DEFAULT_FILE = os.path.join("data", "internal-secret")
FILE_VARIABLE = "SKYEIM_INTERNAL_SECRET_FILE"


class SecretError(Exception):
    """Cannot start: one line saying why (and what to do)."""


def generated() -> str:
    """A fresh random secret (standalone mode: it never leaves the process)."""
    return secrets.token_urlsafe(32)


def secret_file() -> str:
    return os.environ.get(FILE_VARIABLE) or DEFAULT_FILE


def refusal(configured: str, hosts: list[str], what: str) -> str | None:
    """Why a program with this secret and these listeners must not start, or None."""
    if configured:
        return None
    public = [h for h in hosts if not is_loopback(h)]
    if not public:
        return None
    return (f"{what} has an empty InternalSecret and listens on {public[0]}: set "
            "SKYEIM_INTERNAL_SECRET to a long random secret (the same for every program), "
            "or listen on 127.0.0.1")


def shared(path: str | None = None) -> str:
    """The secret in ``path`` (default :func:`secret_file`), made there first if
    the file does not exist yet. Raises SecretError when it cannot be read or made."""
    path = path or secret_file()
    for _ in range(50):
        try:
            with open(path, encoding="ascii") as f:
                value = f.read().strip()
        except FileNotFoundError:
            value = None
        except (OSError, UnicodeDecodeError) as e:
            raise SecretError(f"cannot read the internal secret file {path}: {e}") from None
        if value:
            return value
        if value is None:
            try:
                return _create(path)
            except FileExistsError:
                pass                     # another program made it first: read theirs
        time.sleep(0.05)                 # empty: its maker is writing it now
    raise SecretError(f"the internal secret file {path} stays empty: delete it and start again")


def _create(path: str) -> str:
    directory = os.path.dirname(path)
    try:
        if directory:
            os.makedirs(directory, exist_ok=True)
        value = generated()
        tmp = f"{path}.{os.getpid()}.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, (value + "\n").encode("ascii"))
            os.fsync(fd)
        finally:
            os.close(fd)
        try:
            os.link(tmp, path)           # atomic, and fails when the file exists: one maker wins
        finally:
            os.unlink(tmp)
    except FileExistsError:
        raise
    except OSError as e:
        raise SecretError(f"cannot create the internal secret file {path}: {e.strerror or e}") from None
    return value


def fill_in(cfg: Any, hosts: list[str], what: str, insecure_dev: bool = False) -> tuple[Any, str | None]:
    """(cfg, note): ``cfg`` (a config dataclass with ``internal_secret``) with the
    shared generated secret when its own is empty, and a line to log then.
    Raises SecretError (one line) when an empty secret is unsafe -- a listener
    or service on a non-loopback address -- unless ``insecure_dev``, or when
    the file cannot be read or made."""
    if cfg.internal_secret:
        return cfg, None
    why = refusal(cfg.internal_secret, hosts, what)
    if why and not insecure_dev:
        raise SecretError(why)
    secret = shared()
    note = (f"InternalSecret is empty: using the generated one in {secret_file()} "
            "(shared by the programs of this machine)")
    if why:
        note = f"--insecure-dev: {why}; {note}"
    return dataclasses.replace(cfg, internal_secret=secret), note
