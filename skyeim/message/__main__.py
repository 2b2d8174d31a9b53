"""python -m skyeim.message -f etc/message.yaml (installed: skyeim-message -f ...)"""
from gevent import monkey

monkey.patch_all()  # first, before anything imports socket, ssl or threading

import sys  # noqa: E402

from skyeim.config import ServiceConfig  # noqa: E402
from skyeim.message.app import create_app  # noqa: E402
from skyeim.service import main  # noqa: E402


def run() -> None:
    """The console script skyeim-message."""
    sys.exit(main(sys.argv[1:], ServiceConfig, create_app, prog="skyeim-message"))


if __name__ == "__main__":
    run()
