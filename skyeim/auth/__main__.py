"""python -m skyeim.auth -f etc/auth.yaml (installed: skyeim-auth -f ...)"""
from gevent import monkey

monkey.patch_all()  # first, before anything imports socket, ssl or threading

import sys  # noqa: E402

from skyeim.auth.app import create_app  # noqa: E402
from skyeim.config import AuthServiceConfig  # noqa: E402
from skyeim.service import main  # noqa: E402


def run() -> None:
    """The console script skyeim-auth."""
    sys.exit(main(sys.argv[1:], AuthServiceConfig, create_app, prog="skyeim-auth"))


if __name__ == "__main__":
    run()
