"""The package (pyproject.toml): `pip install .` gives the client SDK and its CLI
with only websocket-client and requests; `pip install '.[server]'` adds the
server's pinned requirements and working programs (issue 12 part 3).

A wheel is built from this checkout and installed into a fresh venv (no
system site-packages), from the package index pip is configured with; the
server's requirements are borrowed from the test's venv (same pins, checked
here) unless SKYEIM_PACKAGING_FULL=1 installs the [server] extra from the index.
"""
from __future__ import annotations

import importlib.metadata
import re
import signal
import time
import tomllib

import pytest
import requests

import skyeim
from harness import REPO, System, reap
from package_harness import FULL, SERVER_ONLY, Venv, build_wheel, requirement_pins

PROGRAMS = ("skyeim", "skyeim-gateway", "skyeim-message", "skyeim-friend", "skyeim-auth",
            "skyeim-admin")
START_TIMEOUT = 40.0


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    return build_wheel(tmp_path_factory.mktemp("wheel"))


@pytest.fixture(scope="module")
def sdk_venv(tmp_path_factory, wheel):
    env = Venv(tmp_path_factory.mktemp("venv") / "venv")
    env.pip_install(str(wheel))
    return env


def test_server_extra_pins_requirements_txt():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    pins = requirement_pins(REPO / "requirements.txt")
    server = {p.lower() for p in project["optional-dependencies"]["server"]}
    assert server == pins, f"pyproject's [server] and requirements.txt differ: {server ^ pins}"
    base = {p.lower() for p in project["dependencies"]}
    assert base == {"websocket-client==1.9.2", "requests==2.34.2"} and base <= pins
    assert set(project["scripts"]) == set(PROGRAMS)


def test_sdk_alone_installs_and_imports_without_the_server(sdk_venv):
    env = sdk_venv
    where = env.python_says("import skyeim, skyeim.client, skyeim.client.cli, sys; "
                            "print(skyeim.__file__); print(skyeim.__version__); "
                            "print(sorted(m for m in sys.modules if m.split('.')[0] in "
                            f"{SERVER_ONLY!r}))").splitlines()
    assert where[0].startswith(str(env.path)), f"skyeim imported from {where[0]}, not the venv"
    assert where[1] == skyeim.__version__ == "0.2.0"
    assert where[2] == "[]", f"the SDK imported server modules: {where[2]}"
    missing = env.python_says("import importlib.util as u; "
                              f"print([m for m in {SERVER_ONLY!r} if u.find_spec(m)])")
    assert missing == "[]", f"the base install brought server libraries: {missing}"
    assert env.python_says("import importlib.resources as r; "
                           "print(r.files('skyeim').joinpath('py.typed').is_file())") == "True"
    assert env.run(["skyeim", "--version"]).stdout.strip() == f"skyeim {skyeim.__version__}"
    # the CLI works (an unreachable gateway: one error line, exit 1, no traceback)
    proc = env.run(["bash", "-c", "skyeim --url http://127.0.0.1:9 --timeout 2 "
                                  "register nobody --password x; echo exit=$?"])
    assert proc.stdout.strip().endswith("exit=1") and "Traceback" not in proc.stderr
    assert "skyeim: error:" in proc.stderr


def test_server_extra_gives_working_programs(sdk_venv, wheel, tmp_path):
    env = sdk_venv
    if FULL:
        env.pip_install(f"{wheel}[server]")
    else:
        # what the test venv holds is what the extra pins (then borrowing it is the same)
        extra = tomllib.loads((REPO / "pyproject.toml").read_text())["project"][
            "optional-dependencies"]["server"]
        for pin in extra:
            name, version = re.fullmatch(r"([A-Za-z0-9_.-]+)(?:\[.*\])?==(.+)", pin).groups()
            assert importlib.metadata.version(name) == version, pin
        env.borrow_site_packages()
    for program in PROGRAMS:
        out = env.run([program, "--version"]).stdout.strip()
        assert out == f"skyeim {skyeim.__version__}", (program, out)

    # the installed gateway with its services (static files and migrations are package
    # data), run from a directory outside the checkout
    system = System(tmp_path / "system")       # writes the four YAML files; not started here
    proc = env.popen(["skyeim-gateway", "--standalone", "-f", str(system.paths["ws"])],
                     cwd=system.tmp, log=system.tmp / "installed-gateway.log")
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            assert proc.poll() is None, (system.tmp / "installed-gateway.log").read_text()
            try:
                if requests.get(system.url + "/readyz", timeout=1).status_code == 200:
                    break
            except requests.RequestException:
                pass
            assert time.monotonic() < deadline, "the installed gateway did not get ready"
            time.sleep(0.1)
        assert requests.get(system.url + "/healthz", timeout=5).json() == {
            "ok": True, "version": skyeim.__version__}
        for name in ("message", "friend", "auth"):
            health = requests.get(system.service_url(name) + "/healthz", timeout=5).json()
            assert health == {"ok": True, "version": skyeim.__version__}, (name, health)
        page = requests.get(system.url + "/", timeout=5)
        assert page.status_code == 200 and "<html" in page.text.lower()
        assert requests.get(system.url + "/static/skyeim-client.js", timeout=5).status_code == 200
        user = system.register_user("pkg")
        assert user.id > 0 and user.token
    finally:
        proc.send_signal(signal.SIGTERM)
        assert reap(proc, 20) == 0
    log = (system.tmp / "installed-gateway.log").read_text()
    assert "Traceback" not in log, log
