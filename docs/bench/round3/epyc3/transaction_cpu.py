"""CPU per transaction in process: a one-chat send, then its delivery record.

python transaction_cpu.py REPO N ROUNDS [DATABASE_URL]   (default: a new SQLite file)
e.g. ... /path/to/checkout 2000 1 postgresql+psycopg://postgres@127.0.0.1:5432/fresh_db
"""
import sys, time, tempfile, uuid
sys.path.insert(0, sys.argv[1])
from gevent import monkey; monkey.patch_all()
from skyeim.db import Database
from skyeim.message import store
n, rounds = int(sys.argv[2]), int(sys.argv[3])
url = sys.argv[4] if len(sys.argv) > 4 else f"sqlite:///{tempfile.mkdtemp()}/m.db"
db = Database(url, store.metadata, pool_size=1)
for r in range(rounds):
    t0 = time.process_time()
    for i in range(n):
        a, b, mid = 1000 + i % 100, 2000 + i % 100, str(uuid.uuid4())
        db.run(store.send_messages, [store.NewMessage(mid, a, b, "hello %d" % i, 1)])
        db.run(store.mark_delivered_many, [(b, [(a, mid)])])
    print(f"{(time.process_time() - t0) / (2 * n) * 1000:.3f} ms CPU per transaction")
db.close()
