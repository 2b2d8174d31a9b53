"""Build the skyeim wheel from this checkout and install it into fresh virtual
environments (no --system-site-packages), for tests/test_packaging.py.

Dependencies come from the package index pip is configured with (``pip config
list``: this machine's local index and links, as for the README's install).
Programs of a venv run with the venv's bin on PATH, from a directory outside the
checkout and without PYTHONPATH, so ``import skyeim`` finds the installed copy.

The server's requirements are many and large: by default a venv borrows them
from the test's own venv (``Venv.borrow_site_packages``: a .pth file after its
own site-packages, which were installed from the same pins), and
SKYEIM_PACKAGING_FULL=1 installs ``skyeim[server]`` from the index instead.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import venv
from pathlib import Path

from harness import REPO

FULL = os.environ.get("SKYEIM_PACKAGING_FULL") == "1"
PIP_TIMEOUT = 300.0     # s one pip command may take (an install downloads on a cold cache)
# what the wheel is built from; the rest of the checkout (tests, data, .venv) stays out
SOURCES = ("pyproject.toml", "README.md", "skyeim")
# what `pip install .` must never bring: the server's libraries
SERVER_ONLY = ("gevent", "flask", "sqlalchemy", "psycopg", "yaml", "jwt", "prometheus_client",
               "redis", "alembic", "orjson")


def _clean_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")}
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    return env


def run(argv: list[str], cwd: Path, timeout: float = PIP_TIMEOUT,
        env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """Run a program; fail with its output when it exits non-zero."""
    proc = subprocess.run(argv, cwd=cwd, env=env or _clean_env(), capture_output=True,
                          text=True, timeout=timeout)
    if proc.returncode != 0:
        raise AssertionError(f"{' '.join(map(str, argv))} exited {proc.returncode}:\n"
                             f"{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc


def build_wheel(tmp: Path) -> Path:
    """``pip wheel`` of a copy of the checkout's package sources; the .whl file."""
    src = tmp / "src"
    src.mkdir()
    for name in SOURCES:
        path = REPO / name
        if path.is_dir():
            shutil.copytree(path, src / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            shutil.copy2(path, src / name)
    out = tmp / "dist"
    run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(out), str(src)], cwd=tmp)
    wheels = list(out.glob("skyeim-*.whl"))
    assert len(wheels) == 1, wheels
    return wheels[0]


class Venv:
    """A fresh virtual environment (its own site-packages only)."""

    def __init__(self, path: Path):
        self.path = path
        # no pip of its own (ensurepip is the slowest part): the test's pip installs into it
        venv.EnvBuilder(with_pip=False, clear=True).create(path)
        self.bin = path / "bin"
        self.python = self.bin / "python"
        self.cwd = path.parent            # outside the checkout
        self.env = _clean_env()
        self.env["PATH"] = f"{self.bin}{os.pathsep}{self.env.get('PATH', '')}"

    def pip_install(self, *requirements: str) -> None:
        run([sys.executable, "-m", "pip", "--python", str(self.python), "install", "-q",
             *requirements], cwd=self.cwd)

    def borrow_site_packages(self) -> None:
        """Make the test venv's packages (the server's requirements) importable here,
        after this venv's own: a .pth file naming the test venv's site-packages."""
        site = self.python_says("import sysconfig; print(sysconfig.get_paths()['purelib'])")
        Path(site, "zz_borrowed_server_requirements.pth").write_text(
            sysconfig.get_paths()["purelib"] + "\n")

    def run(self, argv: list[str], timeout: float = 60.0) -> subprocess.CompletedProcess:
        return run(argv, cwd=self.cwd, timeout=timeout, env=self.env)

    def python_says(self, code: str) -> str:
        return self.run([str(self.python), "-c", code]).stdout.strip()

    def popen(self, argv: list[str], cwd: Path, log: Path) -> subprocess.Popen:
        with open(log, "wb") as f:
            return subprocess.Popen(argv, cwd=cwd, env=self.env, stdout=f, stderr=subprocess.STDOUT)


def requirement_pins(path: Path) -> set[str]:
    """``name==version`` lines of a requirements file, names lower-cased, comments dropped."""
    pins = set()
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, _, version = line.partition("==")
            pins.add(f"{name.strip().lower()}=={version.strip()}")
    return pins
