"""``python -m skyeim.contract check``: the command line, and how a report is printed."""
from __future__ import annotations

import argparse
import sys
from typing import TextIO

from skyeim import __version__
from skyeim.contract.auth import AuthChecks
from skyeim.contract.friend import FriendChecks
from skyeim.contract.message import MessageChecks
from skyeim.contract.runner import Report, Service, TestData

SUITES = {"message": MessageChecks, "friend": FriendChecks, "auth": AuthChecks}

DESCRIPTION = """\
Check a Message, Friend or Auth service against PROTOCOL.md section 6: every
endpoint, its answers' shapes and types, its rules, and its answers to bad
input. Prints one PASS/FAIL line per endpoint (and per check with -v); exits 0
when every check passes, 1 otherwise.

It WRITES TEST DATA to the services: messages and friendships between random
user ids from 2^62 up (the friendships are removed again), one message to user
2^63-1, and three users named ct_<hex>_<hex> (plus refused attempts). Point it
at a test deployment, or at a live one where such data does no harm."""


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m skyeim.contract", description=DESCRIPTION,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"skyeim {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    check = commands.add_parser("check", help="run the section 6 checks",
                                description=DESCRIPTION,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    check.add_argument("--message", metavar="URL", help="the Message service, e.g. http://127.0.0.1:10301")
    check.add_argument("--friend", metavar="URL", help="the Friend service")
    check.add_argument("--auth", metavar="URL", help="the Auth service")
    check.add_argument("--internal-secret", metavar="S", default="",
                       help="the services' InternalSecret: sent with every call, and calls "
                            "without it must be refused (401)")
    check.add_argument("--access-secret", metavar="S", default="",
                       help="the Auth service's AccessSecret: tokens must be signed with it")
    check.add_argument("--timeout", type=float, default=10.0, metavar="SECONDS",
                       help="per request (default 10)")
    check.add_argument("-v", "--verbose", action="store_true", help="one line per check")
    args = parser.parse_args(argv)
    if not (args.message or args.friend or args.auth):
        check.error("give at least one of --message, --friend, --auth")
    if args.timeout <= 0:
        check.error("--timeout must be positive")
    return args


def run(args: argparse.Namespace) -> Report:
    report, data = Report(), TestData()
    for name, suite in SUITES.items():
        url = getattr(args, name)
        if not url:
            continue
        svc = Service(name, url, args.internal_secret, args.timeout)
        try:
            suite(svc, report, data, args.access_secret).run()
        finally:
            svc.close()
    return report


def print_report(report: Report, verbose: bool, out: TextIO) -> None:
    width = max(len(r.endpoint) for r in report.endpoints.values())
    for r in report.endpoints.values():
        failed = r.failed
        total = len(r.outcomes)
        if failed:
            summary = f"{len(failed)} of {total} checks failed"
        else:
            summary = f"{total} check{'s' if total != 1 else ''}"
        print(f"{'PASS' if r.ok else 'FAIL'}  {r.service:<7}  {r.endpoint:<{width}}  {summary}", file=out)
        for o in r.outcomes:
            if verbose or not o.ok:
                line = f"      {'ok  ' if o.ok else 'FAIL'}  {o.name}"
                print(line + (f": {o.detail}" if o.detail else ""), file=out)
    results = list(report.endpoints.values())
    passed = sum(r.ok for r in results)
    print(f"{len(results)} endpoints: {passed} passed, {len(results) - passed} failed", file=out)


def main(argv: list[str] | None = None, out: TextIO | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    out = out or sys.stdout
    targets = ", ".join(f"{n} {getattr(args, n)}" for n in SUITES if getattr(args, n))
    print(f"checking {targets} against PROTOCOL.md section 6 (this writes test data; see --help)",
          file=out, flush=True)
    report = run(args)
    print_report(report, args.verbose, out)
    return 0 if report.ok else 1
