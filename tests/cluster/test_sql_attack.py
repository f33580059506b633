"""A hostile client against /v1/sql: what one request may cost a node."""
import json
import os
import threading

import pytest

from harness import loop_budget, wait_for

POLICIES = ["consensus {", "    app { mode ap  stale_reads true }", "}"]


def exec_(node, db, *statements, timeout=10):
    body = {"statements": [s if isinstance(s, dict) else {"sql": s} for s in statements]}
    code, _, out = node.request(f"/v1/sql/{db}/exec", "POST", json.dumps(body).encode(),
                                {"Content-Type": "application/json"}, timeout=timeout)
    return code, json.loads(out) if out else None


def query(node, db, sql, params=None, consistency=None, timeout=30):
    path = f"/v1/sql/{db}/query" + (f"?consistency={consistency}" if consistency else "")
    body = {"sql": sql} | ({"params": params} if params is not None else {})
    code, _, out = node.request(path, "POST", json.dumps(body).encode(), {}, timeout=timeout)
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



HOSTILE_WORKLOAD = [
    "CREATE TABLE t(id INTEGER PRIMARY KEY, a, b DEFAULT (random()), "
    "c DEFAULT CURRENT_TIMESTAMP, d AS (printf('%08x|%s', b & 255, a)))",
    "CREATE TABLE auto(id INTEGER PRIMARY KEY AUTOINCREMENT, v)",
    "CREATE VIRTUAL TABLE ft USING fts5(a, b, tokenize = 'porter unicode61 remove_diacritics 2',"
    " prefix = '2 3')",
    "CREATE VIRTUAL TABLE tri USING fts5(a, tokenize = 'trigram', detail = 'column')",
    "CREATE VIRTUAL TABLE ext USING fts5(a, content = 't', content_rowid = 'id')",
    "CREATE VIRTUAL TABLE rt USING rtree(id, x0, x1, y0, y1, +label)",
    "CREATE TABLE log(x, at DEFAULT (julianday('now', 'localtime')))",
    "CREATE TRIGGER tr AFTER INSERT ON t BEGIN INSERT INTO log(x) VALUES(new.a || randomblob(2));"
    " INSERT INTO ft VALUES(new.a, hex(randomblob(3))); END",
    "CREATE VIEW v AS SELECT a, count(*) OVER (PARTITION BY length(a)) AS n FROM t",
    "INSERT INTO t(a) VALUES('Crème brûlée'), ('naïve café'), ('ÆSIR ß'), ('x' || char(0) || 'y')",
    "REPLACE INTO t(id, a) VALUES(9223372036854775807, 'max')",
    "INSERT INTO t(a) SELECT a || random() FROM t",
    "INSERT INTO t(a) SELECT a FROM t WHERE id > 3 LIMIT 5",
    "INSERT INTO auto(v) SELECT group_concat(a, ',') FROM t",
    "DELETE FROM auto",
    "INSERT INTO auto(v) VALUES(round(2.675, 2)), (0.1 + 0.2), (1e308 * 10), (-0.0), (1.0 / 3)",
    "INSERT INTO ext(ext) VALUES('rebuild')",
    "INSERT INTO ft(ft, rank) VALUES('rank', 'bm25(10.0, 5.0)')",
    "INSERT INTO ft(ft) VALUES('optimize')",
    "INSERT INTO tri SELECT a FROM t",
    "INSERT INTO rt SELECT id % 1000, abs(random() % 100), 100 + abs(random() % 100), 1.1, 2.2, a FROM t "
    "WHERE id < 1000",
    "ANALYZE",
    "INSERT INTO log(x) SELECT json_group_array(json_object('a', a, 'n', n)) FROM v",
    "UPDATE t SET a = upper(a) WHERE rowid IN (SELECT rowid FROM t ORDER BY b LIMIT 3)",
    "INSERT INTO log(x) SELECT rowid FROM ft WHERE ft MATCH 'cr*' ORDER BY rank",
]

CHECK_QUERIES = [
    "SELECT * FROM t",
    "SELECT id, quote(v) FROM auto",
    "SELECT hex(x), at FROM log",
    "SELECT rowid, a, b, bm25(ft), highlight(ft, 0, '[', ']') FROM ft WHERE ft MATCH 'caf*' "
    "ORDER BY rank",
    "SELECT rowid FROM tri WHERE tri MATCH 'rèm'",
    "SELECT * FROM rt WHERE x0 < 50",
    "SELECT * FROM sqlite_schema",
    "SELECT * FROM sqlite_stat1",
    "SELECT * FROM v",
]


def test_hostile_workload_keeps_replicas_identical_through_snapshots(cluster_factory):
    c = cluster_factory(3, extra_config=POLICIES + ["snapshot_threshold 16",
                                                    "snapshot_trailing 4"]).start()
    c.wait_leader()
    c.wait_ready()
    leader = c.leader()
    f = next(n for n in c.nodes if n is not leader)
    assert exec_(leader, "app", "CREATE TABLE warm(x)")[0] == 200
    wait_for(lambda: query(f, "app", "SELECT 1 FROM warm", consistency="stale")[0] == 200,
             what="the follower has the database")
    path = os.path.join(f.data_dir, "sql", "app.db")
    inode = os.stat(path).st_ino
    c.isolate(f.name)
    for sql in HOSTILE_WORKLOAD:
        code, out = exec_(leader, "app", sql)
        assert code == 200, (sql, out)
    for i in range(20):  # past the snapshot threshold
        assert exec_(leader, "app", "INSERT INTO t(a) VALUES(random())")[0] == 200
    c.heal()

    def answers(node):
        out = []
        for q in CHECK_QUERIES:
            code, body = query(node, "app", q, consistency="stale")
            out.append((code, body))
        return out

    target = leader.status()["commit_index"]
    for n in c.nodes:
        # a snapshot sent while the follower was cut off is retried only
        # after libraft's install_snapshot_timeout (30 s)
        wait_for(lambda: n.status()["applied_index"] >= target, timeout=45,
                 what=f"{n.name} caught up")
        wait_for(lambda: query(n, "app", CHECK_QUERIES[0], consistency="stale")[0] == 200,
                 timeout=30, what=f"{n.name} is fresh")
    assert os.stat(path).st_ino != inode, "no snapshot was installed"
    first = answers(leader)
    assert all(code == 200 for code, _ in first), [(q, b) for q, (code, b) in zip(CHECK_QUERIES, first) if code != 200]
    for n in c.nodes:
        assert answers(n) == first, n.name
    # and after a kill -9 and restart of the follower that took the snapshot
    f.kill()
    f.start()
    wait_for(lambda: f.status()["applied_index"] >= target, timeout=30,
             what="the restarted follower caught up")
    # Stale reads need a fresh node: one that has heard from the leader
    # since its restart (docs/api.md, freshness), not only replayed its log.
    wait_for(lambda: query(f, "app", CHECK_QUERIES[0], consistency="stale")[0] == 200,
             timeout=30, what="the restarted follower is fresh")
    assert answers(f) == first


def test_values_json_cannot_carry_are_errors_not_dropped(one):
    """Text that is not UTF-8 and infinite reals have no JSON form:
    jinn_sql_column_json returned NULL and the row silently came back one
    value short ([[1]] for SELECT 1, x). Now the query says why."""
    n = one.nodes[0]
    assert exec_(n, "app", "CREATE TABLE t(a, b)",
                 "INSERT INTO t VALUES(1, CAST(x'ff' AS TEXT))",
                 "INSERT INTO t VALUES(2, 1e308 * 10)")[0] == 200
    code, out = query(n, "app", "SELECT a, b FROM t WHERE a = 1")
    assert code == 400 and "column 2: text that is not valid UTF-8" in out["message"], out
    code, out = query(n, "app", "SELECT a, b FROM t WHERE a = 2")
    assert code == 400 and "column 2: an infinite real" in out["message"], out
    code, out = query(n, "app", "SELECT a, hex(b) FROM t ORDER BY a")
    assert code == 200 and out["rows"] == [[1, "FF"], [2, "496E66"]], out
