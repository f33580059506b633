"""Raft snapshots of a large state do not hold the event loop (D6).

Debian's libraft 0.15 reports raft_io version 1 from raft_uv_init although it
has async_work, and jinn enabled its two-step snapshot (in-memory sections on
the loop, SQL images and the CRC on libraft's worker) only for io version 2:
every snapshot ran whole on the loop. With ~40 MB of SQLite, each snapshot
copied and checksummed all of it between two applies (release build: 650 ms
busy with 140k queued messages and 150 MB of KV; leaders changed under load).
Here a node holding a ~40 MB database takes several snapshots while its loop
monitor counts CPU-busy stalls."""
import json
import os
import re

from harness import Cluster, loop_budget, wait_for


def exec_sql(node, sql, timeout=30):
    body = json.dumps({"statements": [{"sql": sql}]}).encode()
    code, _, out = node.request("/v1/sql/big/exec", "POST", body,
                                {"Content-Type": "application/json"}, timeout=timeout)
    assert code == 200, out


def snapshot_indexes(node):
    out = set()
    for name in os.listdir(node.data_dir):
        m = re.match(r"snapshot-\d+-(\d+)-\d+\.meta$", name)
        if m:
            out.add(int(m.group(1)))
    return out


def test_snapshots_of_a_large_database_leave_the_loop_free(tmp_path):
    c = Cluster(tmp_path, n=1, extra_config=["snapshot_threshold 16"])
    try:
        c.start()
        n = c.wait_leader()
        exec_sql(n, "CREATE TABLE t(id INTEGER PRIMARY KEY, b BLOB)")
        # 40 x 1 MB of random bytes (seeded from the entry): ~40 MB of image.
        for _ in range(40):
            exec_sql(n, "INSERT INTO t(b) VALUES(randomblob(1000000))")
        before = snapshot_indexes(n)
        # The old code took 150+ ms of loop CPU per snapshot of this state on
        # the sanitizer build; the async path pins the database on the loop
        # and leaves the copy and CRC to the worker.
        # A snapshot of this size takes ~1 s to write; libraft starts the
        # next one on an apply past the threshold, so keep writing.
        with loop_budget(n, 100):
            i = 0

            def written_through_two_snapshots():
                nonlocal i
                i += 1
                code, _, out = n.request(f"/v1/kv/small/k{i}", "PUT", b"x")
                assert code == 200, out
                return len(snapshot_indexes(n) - before) >= 2

            wait_for(written_through_two_snapshots, timeout=30,
                     what="two snapshots taken during the writes")
        code, _, out = n.request("/v1/sql/big/query", "POST",
                                 json.dumps({"sql": "SELECT count(*), sum(length(b)) FROM t"}).encode(),
                                 {"Content-Type": "application/json"})
        assert code == 200 and b"40000000" in out, out
    finally:
        c.close()
