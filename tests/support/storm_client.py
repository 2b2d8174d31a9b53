"""A reconnect storm, as a separate process: N WebSocket handshakes at once.

    python tests/support/storm_client.py HOST PORT TOKENS_FILE

TOKENS_FILE holds one JWT a line. Every handshake starts at the same moment
(gevent, one raw socket each). When all are answered (or timed out) it prints
one JSON line: counts by outcome ("101", "503 overloaded", "timeout",
"reset", ...) and answer times, then holds the upgraded sockets open until
a line arrives on stdin, closes them and exits.
"""
from gevent import monkey

monkey.patch_all()

import base64  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import resource  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from collections import Counter  # noqa: E402

import gevent  # noqa: E402
from gevent import socket  # noqa: E402

ANSWER_TIMEOUT = 60.0      # s a handshake may take before it counts as hanging


def handshake(host: str, port: int, token: str, held: list, outcomes: Counter, times: list) -> None:
    t0 = time.monotonic()
    sock = None
    try:
        sock = socket.create_connection((host, port), timeout=ANSWER_TIMEOUT)
        key = base64.b64encode(os.urandom(16)).decode()
        sock.sendall((f"GET /ws?token={token} HTTP/1.1\r\nHost: {host}:{port}\r\n"
                      "Upgrade: websocket\r\nConnection: Upgrade\r\n"
                      f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n").encode())
        data = b""
        while b"\r\n\r\n" not in data and len(data) < 65536:
            chunk = sock.recv(4096)
            if not chunk:
                break
            data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        status = head.split(b" ", 2)[1].decode() if head.startswith(b"HTTP/1.1 ") else "garbled"
        if status == "101":
            outcome = "101"
            held.append(sock)
            sock = None
        else:
            while len(body) < 4096:          # the JSON body: read to its end (Connection: close)
                chunk = sock.recv(4096)
                if not chunk:
                    break
                body += chunk
            try:
                code = json.loads(body).get("code")
            except ValueError:
                code = "no-json"
            outcome = f"{status} {code}"
    except socket.timeout:
        outcome = "timeout"
    except ConnectionResetError:
        outcome = "reset"
    except OSError as e:
        outcome = f"oserror {e.errno}"
    finally:
        if sock is not None:
            sock.close()
    outcomes[outcome] += 1
    times.append(time.monotonic() - t0)


def main() -> None:
    # thousands of sockets: this process's soft open-files limit up to the hard one
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    host, port, tokens_file = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    tokens = [t for t in open(tokens_file).read().split() if t]
    held: list = []
    outcomes: Counter = Counter()
    times: list[float] = []
    t0 = time.monotonic()
    jobs = [gevent.spawn(handshake, host, port, tok, held, outcomes, times) for tok in tokens]
    gevent.joinall(jobs, timeout=ANSWER_TIMEOUT + 30)
    times.sort()
    print(json.dumps({
        "outcomes": dict(outcomes), "answered": len(times), "wall": time.monotonic() - t0,
        "p50": times[len(times) // 2] if times else None,
        "max": times[-1] if times else None}), flush=True)
    sys.stdin.readline()
    for s in held:
        s.close()


if __name__ == "__main__":
    main()
