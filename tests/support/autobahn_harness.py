"""Autobahn|Testsuite for tests/test_autobahn.py: a Python 2.7 virtualenv and a fuzzingclient run.

``autobahntestsuite`` runs only on Python 2.7. ``find_python27`` looks for
pyenv's 2.7.18; ``autobahn_venv`` builds a virtualenv from it with the pinned
set in tests/support/autobahn/requirements-py27.txt, cached outside the repository
(~/.cache/skyeim/autobahn-py27-<hash>) and rebuilt when that file changes.
``run_fuzzingclient`` runs ``wstest -m fuzzingclient`` against one URL and
returns the reports' index (case id -> result).
"""
from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REQUIREMENTS = HERE / "autobahn" / "requirements-py27.txt"
VIRTUALENV = "virtualenv==16.7.12"   # one module, no dependencies, runs on 2.7
PY27_VERSION = "2.7.18"
BUILD_TIMEOUT = 900.0                 # s for the whole venv build (PyPI, two C extensions)
LOCK_TIMEOUT = BUILD_TIMEOUT + 60     # s to wait for another run that builds it


class SetupFailed(Exception):
    """The Autobahn virtualenv could not be built; the message holds the tool's output."""


def find_python27() -> str | None:
    """pyenv's Python 2.7.18 (or SKYEIM_PYTHON27), or None when this machine has none."""
    candidates = [os.environ.get("SKYEIM_PYTHON27")]
    roots = []
    pyenv = shutil.which("pyenv") or str(Path("~/.pyenv/bin/pyenv").expanduser())
    if os.access(pyenv, os.X_OK):
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            roots.append(subprocess.run([pyenv, "root"], capture_output=True, text=True,
                                        timeout=20).stdout.strip())
    roots += [os.environ.get("PYENV_ROOT"), str(Path("~/.pyenv").expanduser()), "/root/.pyenv"]
    candidates += [f"{root}/versions/{PY27_VERSION}/bin/python" for root in roots if root]
    candidates.append(shutil.which("python2.7"))
    for exe in candidates:
        if not exe or not os.access(exe, os.X_OK):
            continue
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            out = subprocess.run([exe, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
                                 capture_output=True, text=True, timeout=20).stdout.strip()
            if out == "2.7":
                return exe
    return None


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path("~/.cache").expanduser())
    return Path(base) / "skyeim"


def autobahn_venv(python27: str) -> Path:
    """The cached virtualenv with wstest in bin/, built first if needed (once at a time)."""
    key = hashlib.sha256(REQUIREMENTS.read_bytes() + VIRTUALENV.encode()
                         + os.path.realpath(python27).encode()).hexdigest()[:16]
    cache = cache_dir()
    cache.mkdir(parents=True, exist_ok=True)
    venv = cache / f"autobahn-py27-{key}"
    done = venv / ".complete"      # written last: a venv without it is half built
    with open(cache / "autobahn-py27.lock", "w") as lock:
        deadline = time.monotonic() + LOCK_TIMEOUT
        while True:               # another test run may be building it: wait, bounded
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise SetupFailed(f"{cache / 'autobahn-py27.lock'} held for {LOCK_TIMEOUT:g}s")
                time.sleep(1)
        if done.exists():
            return venv
        shutil.rmtree(venv, ignore_errors=True)
        log = cache / f"autobahn-py27-{key}.build.log"
        deadline = time.monotonic() + BUILD_TIMEOUT
        with open(log, "w") as out:
            boot = cache / VIRTUALENV.replace("==", "-")
            if not (boot / "virtualenv.py").exists():
                tmp = boot.with_name(boot.name + f".tmp{os.getpid()}")
                shutil.rmtree(tmp, ignore_errors=True)
                _run([python27, "-m", "pip", "install", "--disable-pip-version-check",
                      "--target", str(tmp), VIRTUALENV], out, deadline, log)
                shutil.rmtree(boot, ignore_errors=True)
                tmp.rename(boot)
            _run([python27, str(boot / "virtualenv.py"), "--no-download", str(venv)],
                 out, deadline, log)
            _run([str(venv / "bin" / "python"), "-m", "pip", "install",
                  "--disable-pip-version-check", "-r", str(REQUIREMENTS)], out, deadline, log)
        if not (venv / "bin" / "wstest").exists():
            raise SetupFailed(f"no bin/wstest in {venv} after the install (see {log})")
        done.write_text(REQUIREMENTS.read_text())
        return venv


def _run(argv: list[str], out, deadline: float, log: Path) -> None:
    out.write(f"$ {' '.join(argv)}\n")
    out.flush()
    try:
        code = subprocess.run(argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                              timeout=max(deadline - time.monotonic(), 1)).returncode
    except subprocess.TimeoutExpired:
        code = "timeout"
    if code != 0:
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-30:])
        raise SetupFailed(f"{argv[0]} ... {argv[-1]}: exit {code}; {log} ends:\n{tail}")


def run_fuzzingclient(venv: Path, url: str, workdir: Path, cases: list[str],
                      exclude: list[str], timeout: float) -> tuple[dict, float, str]:
    """Run wstest's fuzzingclient against ``url``; (case id -> result, seconds, its output)."""
    agent = "skyeim"
    reports = workdir / "reports"
    spec = {"outdir": str(reports), "servers": [{"agent": agent, "url": url}],
            "cases": cases, "exclude-cases": exclude, "exclude-agent-cases": {}}
    (workdir / "fuzzingclient.json").write_text(json.dumps(spec, indent=2))
    output = workdir / "wstest.log"
    t0 = time.monotonic()
    with open(output, "w") as out:
        proc = subprocess.Popen([str(venv / "bin" / "wstest"), "-m", "fuzzingclient",
                                 "-s", str(workdir / "fuzzingclient.json")],
                                cwd=workdir, stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)
        try:
            code = proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
            code = "timeout"
    elapsed = time.monotonic() - t0
    text = output.read_text(errors="replace")
    if code != 0:
        raise AssertionError(f"wstest exit {code} after {elapsed:.0f}s; its output ends:\n"
                             + "\n".join(text.splitlines()[-40:]))
    index = json.loads((reports / "index.json").read_text())
    return index[agent], elapsed, text


def case_key(case_id: str) -> tuple[int, ...]:
    return tuple(int(p) for p in case_id.split("."))
