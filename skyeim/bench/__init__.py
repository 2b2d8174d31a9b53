"""The SkyeIM benchmark: ``python -m skyeim.bench`` (see docs/performance.md).

- ``system``: starts the system under test in a temporary directory on free
  ports (standalone or the supervisord layout), or points at a running one;
  seeds friendships and unread messages through the services' HTTP APIs.
- ``relay``: the baseline, a bare relay on the same stack (Flask + gevent +
  gevent-websocket, a greenlet pair per connection, no storage, no acks).
- ``load``: the load generator: raw WebSocket clients on gevent in separate
  worker processes, whose own CPU use is measured.
- ``scenarios``: idle capacity, 1:1 chat, connect storm, unread backlog,
  presence fan-out.
- ``report``: the table, the JSON and the PNG chart.

Bench-only dependencies (matplotlib) are in skyeim/bench/requirements.txt.
"""
