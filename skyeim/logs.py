"""Logging set-up: one line per event, level first. Never log tokens or passwords."""
from __future__ import annotations

import logging
import sys


def setup(level: str = "info", debug: bool = False) -> None:
    logging.basicConfig(
        stream=sys.stderr,
        level=logging.DEBUG if debug else getattr(logging, level.upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
    )
