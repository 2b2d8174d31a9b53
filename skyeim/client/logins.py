"""The command line client's saved logins: one token file per user.

    ~/.config/skyeim/            ($XDG_CONFIG_HOME/skyeim; mode 700)
        tokens/alice.json        {url, username, userId, token, expiresAt} (mode 600)
        tokens/bob.json
        default-user             the user a command acts as without --user (one line)

A login saves ``tokens/<username>.json`` (the name in lower case: usernames are
matched without regard to case) and makes that user the default. A
``token.json`` of the single-file layout used before is moved into
``tokens/`` the first time this layout is read.
"""
from __future__ import annotations

import json
import os
import re
from pathlib import Path

# what may name a token file: the Auth service's username characters, never a path
NAME = re.compile(r"[A-Za-z0-9_.-]{1,64}")
OLD_FILE = "token.json"
DEFAULT_FILE = "default-user"


class LoginError(Exception):
    """A one-line reason a saved login cannot be used."""


def config_dir() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    return Path(base) / "skyeim"


def write_private(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` readable by its owner only, atomically."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def read_record(path: Path, hint: str) -> dict:
    """A saved login from ``path``; ``hint`` says how to make one."""
    try:
        record = json.loads(path.read_text())
    except FileNotFoundError:
        raise LoginError(f"not logged in (no {path}); {hint}") from None
    except (OSError, ValueError) as e:
        raise LoginError(f"cannot read {path}: {e}") from None
    if not isinstance(record, dict) or not isinstance(record.get("token"), str):
        raise LoginError(f"{path} holds no token; {hint}")
    return record


class Logins:
    """The saved logins under ``root`` (default: ~/.config/skyeim)."""

    def __init__(self, root: Path | None = None):
        self.root = root or config_dir()
        self.dir = self.root / "tokens"

    def path(self, username: str) -> Path:
        if not NAME.fullmatch(username):
            raise LoginError(f"not a username: {username!r}")
        return self.dir / f"{username.lower()}.json"

    def _make_dirs(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.dir.mkdir(exist_ok=True, mode=0o700)

    def names(self) -> list[str]:
        """The users with a saved login, by file name."""
        try:
            return sorted(p.stem for p in self.dir.glob("*.json"))
        except OSError:
            return []

    def default(self) -> str | None:
        try:
            name = (self.root / DEFAULT_FILE).read_text().strip()
        except OSError:
            return None
        return name if NAME.fullmatch(name) else None

    def set_default(self, username: str) -> None:
        write_private(self.root / DEFAULT_FILE, username.lower() + "\n")

    def save(self, record: dict) -> Path:
        """Keep a login (``record["username"]`` names it) and make it the default."""
        path = self.path(record["username"])
        self._make_dirs()
        write_private(path, json.dumps(record))
        self.set_default(record["username"])
        return path

    def which(self, username: str | None) -> str:
        """The user a command acts as: ``username``, else the default, else the only one."""
        if username:
            return username
        name = self.default()
        if name is not None and self.path(name).exists():
            return name
        names = self.names()
        if len(names) == 1:
            return names[0]
        if not names:
            raise LoginError(f"not logged in (no login in {self.dir}); run: login USER")
        raise LoginError(f"several users are logged in ({', '.join(names)}): choose one "
                         f"with --user NAME")

    def load(self, username: str | None) -> dict:
        name = self.which(username)
        return read_record(self.path(name), f"run: login {name}")

    def remove(self, username: str | None) -> Path:
        """Forget a login (the default user's when None); returns the file it was in."""
        name = self.which(username)
        path = self.path(name)
        path.unlink(missing_ok=True)
        if self.default() == name.lower():
            (self.root / DEFAULT_FILE).unlink(missing_ok=True)
        return path

    def migrate(self) -> str | None:
        """Move a token.json of the old single-file layout into tokens/ (once); says what
        it did, or None when there was nothing to move."""
        old = self.root / OLD_FILE
        try:
            record = json.loads(old.read_text())
            name = record["username"]
            target = self.path(name)
        except (OSError, ValueError, KeyError, TypeError, LoginError):
            return None               # nothing there, or nothing usable: left alone
        if target.exists():
            old.unlink()
            return f"removed {old}: {target} holds {name}'s newer login"
        self._make_dirs()
        os.replace(old, target)
        os.chmod(target, 0o600)
        if self.default() is None:
            self.set_default(name)
        return f"moved {old} to {target}"
