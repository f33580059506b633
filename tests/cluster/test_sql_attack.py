"""A hostile client against /v1/sql: what one request may cost a node."""
import json
import threading

import pytest

from harness import loop_budget

POLICIES = ["consensus {", "    app { mode ap  stale_reads true }", "}"]


def exec_(node, db, *statements, timeout=10):
    body = {"statements": [s if isinstance(s, dict) else {"sql": s} for s in statements]}
    code, _, out = node.request(f"/v1/sql/{db}/exec", "POST", json.dumps(body).encode(),
                                {"Content-Type": "application/json"}, timeout=timeout)
    return code, json.loads(out) if out else None


def query(node, db, sql, params=None, timeout=30):
    body = {"sql": sql} | ({"params": params} if params is not None else {})
    code, _, out = node.request(f"/v1/sql/{db}/query", "POST", json.dumps(body).encode(), {},
                                timeout=timeout)
    return code, json.loads(out) if out else None


def peak_rss_mb(node):
    with open(f"/proc/{node.proc.pid}/status") as f:
        line = next(l for l in f if l.startswith("VmHWM:"))
    return int(line.split()[1]) / 1024


@pytest.fixture
def one(cluster_factory):
    c = cluster_factory(1, extra_config=POLICIES).start()
    c.wait_leader()
    c.wait_ready()
    return c


def test_one_query_cannot_hold_gigabytes(one):
    """A sort keeps every row in memory (temp_store=MEMORY): before, this
    150-byte query held 2.5 GB after 5 s on the release build, and eight
    at once exhaust the host. Now a query thread's SQLite memory is capped
    (JINN_SQL_QUERY_MEMORY_MAX, 256 MiB): "out of memory" for that query,
    the node and later queries are fine."""
    n = one.nodes[0]
    assert exec_(n, "app", "CREATE TABLE t(a)",
                 "INSERT INTO t VALUES(printf('%.*c', 1000000, 'x'))")[0] == 200
    before = peak_rss_mb(n)
    sql = ("WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 3000) "
           "SELECT x FROM c, t ORDER BY x || a")
    results = []

    def attack():
        results.append(query(n, "app", sql))

    threads = [threading.Thread(target=attack) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    grown = peak_rss_mb(n) - before
    for code, out in results:
        assert code == 400, (code, out)
        assert "out of memory" in out["message"], out
    # 3 x 256 MiB, plus the sanitizer build's quarantine and redzones
    # (release: ~740 MB; before: 1.9 GB on the sanitizer build, 5+ GB on
    # the release build, each bounded only by the 5 s time limit)
    assert grown < 1300, f"peak RSS grew {grown:.0f} MB"
    # the pooled readers still answer, and the node still writes
    assert query(n, "app", "SELECT length(a) FROM t") == (
        200, {"columns": ["length(a)"], "types": [None], "rows": [[1000000]]})
    assert exec_(n, "app", "INSERT INTO t VALUES(1)")[0] == 200
    code, out = query(n, "app", "SELECT count(*) FROM (SELECT a FROM t ORDER BY a)")
    assert code == 200 and out["rows"] == [[2]], (code, out)


# Not fixed yet (see the a2 report): sorts and DISTINCT compare records
# inside one VM step (OP_SorterSort, OP_IdxInsert), and records under
# METER_MIN (2 KiB) are not metered, so 30 000 rows of 2 000 bytes that
# differ only at the end cost ~15 NOCASE comparisons of 2 000 bytes each:
# 120-270 ms on the loop of every replica per exec on the release build
# (1.6 s on the sanitizer build); 16 such execs at once stalled every loop
# for ~1 s. A fix: charge comparisons to the budget (jinn's own BINARY,
# NOCASE and RTRIM collations that meter the bytes they compare and stop
# comparing once the budget is spent), or meter sorter records.
@pytest.mark.xfail(strict=True, reason="sort/DISTINCT comparisons are not charged to the "
                   "step budget: a loop stall far over 20 ms per exec")
def test_sort_of_long_keys_stays_within_the_loop_budget(one):
    n = one.nodes[0]
    assert exec_(n, "app", "CREATE TABLE t(a)")[0] == 200
    sql = ("INSERT INTO t(a) SELECT count(*) FROM (SELECT DISTINCT v COLLATE NOCASE FROM "
           "(WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 30000) "
           "SELECT printf('%.*c', 2000, 'a') || x AS v FROM c))")
    with loop_budget(n, 100):
        code, out = exec_(n, "app", sql, timeout=30)
    assert code in (200, 400), (code, out)
