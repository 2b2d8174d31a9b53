"""Measure the group fan-out (docs/performance.md "Group fan-out"): a group of
10,000 members with 1,000 of them online on one standalone gateway.

    .venv/bin/python tests/support/group_fanout.py [--members 10000] [--online 1000]
                                                       [--messages 20] [--json out.json]

It reports, per `groupchat`, the time from the send to the first and to the
last online member having it; the same for a burst of messages sent
back-to-back; and meanwhile the latency of a 1:1 chat between two other users
(a probe every 20 ms), against an idle baseline. Clients read raw bytes and
look for a marker in the stream (server frames are unmasked), so that the
measuring process spends little time per frame: it shares the machine's cores
with the gateway, and the figures include that.
"""
from __future__ import annotations

from gevent import monkey

monkey.patch_all()

import argparse  # noqa: E402
import json  # noqa: E402
import re  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import gevent  # noqa: E402
import gevent.pool  # noqa: E402
import websocket  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent))
from harness import System  # noqa: E402

MARK = re.compile(rb"@@(G|P)(\d+)@@")
WAIT = 60.0          # s any one wait is allowed


class Reader:
    """One connection: records when each marker first arrived."""

    def __init__(self, ws: websocket.WebSocket):
        self.ws, self.sock = ws, ws.sock
        self.seen: dict[bytes, float] = {}
        self.tail = b""
        self.connected = gevent.event.Event()
        self.group_unread = gevent.event.Event()    # the connect flow is over
        self.errors = 0

    def run(self) -> None:
        for _ in range(10**9):          # until the socket closes
            try:
                data = self.sock.recv(65536)
            except OSError:
                return
            if not data:
                return
            now = time.monotonic()
            buf = self.tail + data
            if not self.connected.is_set() and b'"type":"connected"' in buf:
                self.connected.set()
            if not self.group_unread.is_set() and b'"type":"group_unread"' in buf:
                self.group_unread.set()
            self.errors += data.count(b'"type":"error"')
            for m in MARK.finditer(buf):
                self.seen.setdefault(m.group(0), now)
            self.tail = buf[-24:]

    def send(self, obj) -> None:
        self.ws.send(json.dumps(obj))


def pct(values: list[float], p: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(round(p / 100 * (len(values) - 1))))] if values else float("nan")


def ms(v: float) -> float:
    return round(v * 1000, 1)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--members", type=int, default=10_000)
    ap.add_argument("--online", type=int, default=1_000)
    ap.add_argument("--messages", type=int, default=20)
    ap.add_argument("--json", type=Path)
    ap.add_argument("--cluster", action="store_true",
                    help="two gateway nodes (redis-server, PostgreSQL); members alternate between them")
    args = ap.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="group-fanout-"))
    ws = {"WebSocket": {"SendQueueSize": 1024, "RateLimit": {"Rate": 1000, "Burst": 1000}}}
    if not args.cluster:
        system = System(tmp, ws=ws)
        system.start()
        try:
            run(system, args, [system])
        finally:
            system.stop()
        return
    import shutil
    from cluster_harness import ClusterSystem, RedisServer
    from service_harness import database_url
    with database_url("postgresql", tmp, "fanout") as url:
        redis_server = RedisServer(tmp, shutil.which("redis-server")).start()
        system = ClusterSystem(tmp, redis_server, url, nodes=2, ws=ws)
        try:
            system.start()
            run(system, args, [system[1], system[2]])
        finally:
            system.stop()
            redis_server.stop()


def run(system: System, args, nodes: list) -> None:
    base = 10**12 + int(time.time()) % 10**6 * 10**5
    member_ids = [base + i for i in range(args.members)]
    owner = member_ids[0]
    t0 = time.monotonic()
    r = system.service("friend", "POST", "/v1/groups",
                       json_body={"ownerId": owner, "name": "big", "memberIds": member_ids[1:1000]})
    assert r.status_code == 200, r.text
    gid = r.json()["groupId"]
    for i in range(1000, args.members, 1000):
        r = system.service("friend", "POST", f"/v1/groups/{gid}/members",
                           json_body={"byUserId": owner, "userIds": member_ids[i:i + 1000]})
        assert r.status_code == 200, r.text
    print(f"group {gid}: {args.members} members created in {time.monotonic() - t0:.1f}s")

    def connect(uid: int) -> Reader:
        node = nodes[uid % len(nodes)]          # in a cluster: members alternate between nodes
        ws = node.open_ws(system.token_for(uid), timeout=30)
        rd = Reader(ws)
        gevent.spawn(rd.run)
        return rd

    t0 = time.monotonic()
    pool = gevent.pool.Pool(50)
    online = pool.map(connect, member_ids[:args.online])      # the sender is online too
    for rd in online:
        assert rd.connected.wait(WAIT), "no connected"
    connect_s = time.monotonic() - t0
    settled = sum(1 for rd in online if rd.group_unread.wait(max(0.01, t0 + WAIT - time.monotonic())))
    sender, receivers = online[0], online[1:]
    probe_from, probe_to = connect(base - 1), connect(base - 2)
    assert probe_from.connected.wait(WAIT) and probe_to.connected.wait(WAIT)
    print(f"{len(online)} members online in {connect_s:.1f}s; {settled} got group_unread "
          f"after {time.monotonic() - t0:.1f}s")

    probes: list[tuple[float, bytes]] = []
    probing = [True]

    def probe_loop() -> None:
        for n in range(10**6):
            if not probing[0]:
                return
            key = b"@@P%d@@" % n
            probes.append((time.monotonic(), key))
            probe_from.send({"type": "chat", "data": {"toUserId": base - 2, "content": key.decode()}})
            gevent.sleep(0.02)

    def probe_latencies(since: float, until: float) -> list[float]:
        return [probe_to.seen[k] - t for t, k in probes
                if since <= t < until and k in probe_to.seen]

    def wait_all(key: bytes) -> None:
        deadline = time.monotonic() + WAIT
        while time.monotonic() < deadline:
            if all(key in rd.seen for rd in receivers):
                return
            gevent.sleep(0.005)
        missing = sum(1 for rd in receivers if key not in rd.seen)
        raise AssertionError(f"{key!r}: {missing} members never got it")

    prober = gevent.spawn(probe_loop)
    t_idle = time.monotonic()
    gevent.sleep(2.0)
    idle = probe_latencies(t_idle, time.monotonic())

    # one at a time: the first also fetches the member list (a cold cache)
    first, last = [], []
    t_seq = time.monotonic()
    for i in range(args.messages):
        key = b"@@G%d@@" % i
        t = time.monotonic()
        sender.send({"type": "groupchat", "data": {"groupId": gid, "content": key.decode()}})
        wait_all(key)
        arrivals = [rd.seen[key] for rd in receivers]
        first.append(min(arrivals) - t)
        last.append(max(arrivals) - t)
        gevent.sleep(0.1)
    during_seq = probe_latencies(t_seq, time.monotonic())

    # a burst: every message sent back-to-back
    keys = [b"@@G%d@@" % (10_000 + i) for i in range(args.messages)]
    t_burst = time.monotonic()
    for key in keys:
        sender.send({"type": "groupchat", "data": {"groupId": gid, "content": key.decode()}})
    for key in keys:
        wait_all(key)
    burst_done = max(rd.seen[k] for rd in receivers for k in keys) - t_burst
    gevent.sleep(0.3)
    during_burst = probe_latencies(t_burst, t_burst + burst_done)
    probing[0] = False
    prober.join(timeout=5)

    node_url = getattr(nodes[0], "metrics_url", system.metrics_url)     # the admin listener
    metrics = system.session.get(node_url + "/metrics", timeout=10).text
    fan = dict(re.findall(r"^skyeim_group_fanout_seconds_(sum|count) (\S+)$", metrics, re.M))
    fan_mean = float(fan["sum"]) / float(fan["count"]) if fan.get("count") else float("nan")
    result = {
        "members": args.members, "online": len(online), "messages": args.messages,
        "gateway_nodes": len(nodes),
        "connect_storm": {"all_connected_s": round(connect_s, 2), "group_unread_received": settled},
        "errors_to_sender": sender.errors,
        "one_at_a_time_ms": {
            "first_message_to_last_member": ms(last[0]),
            "to_first_member_p50": ms(statistics.median(first)),
            "to_last_member_p50": ms(statistics.median(last[1:] or last)),
            "to_last_member_max": ms(max(last[1:] or last)),
        },
        "burst_ms": {"messages": args.messages, "deliveries": args.messages * len(receivers),
                     "all_delivered_after": ms(burst_done),
                     "deliveries_per_s": round(args.messages * len(receivers) / burst_done)},
        "gateway_fanout_call_mean_ms": round(fan_mean * 1000, 2),
        "probe_chat_latency_ms": {
            phase: {"n": len(v), "p50": ms(pct(v, 50)), "p99": ms(pct(v, 99)), "max": ms(max(v))}
            for phase, v in (("idle", idle), ("during_one_at_a_time", during_seq),
                             ("during_burst", during_burst)) if v},
    }
    print(json.dumps(result, indent=2))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
