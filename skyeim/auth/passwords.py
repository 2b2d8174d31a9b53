"""Password hashing (scrypt), run off the gevent loop.

scrypt is deliberately slow (tens of ms of CPU and 32 MiB per hash); on the
loop it would stall every other request of the process, so it runs on gevent's
native thread pool, where hashlib releases the GIL.
"""
from __future__ import annotations

import secrets

import gevent
from werkzeug.security import check_password_hash, generate_password_hash

METHOD = "scrypt"   # explicit: werkzeug's default may change between versions


def hash_password(password: str) -> str:
    return _off_loop(generate_password_hash, password, METHOD)


def check_password(password_hash: str, password: str) -> bool:
    return _off_loop(check_password_hash, password_hash, password)


def make_dummy_hash() -> str:
    """A hash of a random password, checked for unknown users so that a login
    takes as long whether or not the user exists."""
    return generate_password_hash(secrets.token_urlsafe(16), METHOD)


def _off_loop(fn, *args):
    return gevent.get_hub().threadpool.apply(fn, args)
