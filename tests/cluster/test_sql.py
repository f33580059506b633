"""Replicated SQL on a real cluster: failover without lost or torn
transactions, the read-only switch, determinism, bad input."""
import json
import os
import sqlite3
import threading
import time

import pytest

from harness import wait_for

POLICIES = ["consensus {", "    app { mode ap  stale_reads true }", "}"]


def exec_(node, db, *statements, timeout=10):
    body = {"statements": [s if isinstance(s, dict) else {"sql": s} for s in statements]}
    code, _, out = node.request(f"/v1/sql/{db}/exec", "POST", json.dumps(body).encode(),
                                {"Content-Type": "application/json"}, timeout=timeout)
    return code, json.loads(out) if out else None


def query(node, db, sql, params=None, consistency=None, timeout=10):
    path = f"/v1/sql/{db}/query" + (f"?consistency={consistency}" if consistency else "")
    body = {"sql": sql} | ({"params": params} if params is not None else {})
    code, h, out = node.request(path, "POST", json.dumps(body).encode(), {}, timeout=timeout)
    return code, json.loads(out) if out else None


def checksum(node, db):
    code, _, out = node.request(f"/v1/sql/{db}")
    return json.loads(out)["checksum"] if code == 200 else None


def converged(cluster, nodes, db):
    target = cluster.leader(among=nodes).status()["commit_index"]
    for n in nodes:
        wait_for(lambda: n.status()["applied_index"] >= target, what=f"{n.name} caught up")
    sums = {checksum(n, db) for n in nodes}
    return len(sums) == 1 and None not in sums


@pytest.fixture
def cluster(cluster_factory):
    c = cluster_factory(3, extra_config=POLICIES).start()
    c.wait_leader()
    c.wait_ready()
    for n in c.nodes:
        wait_for(lambda: n.status()["leader"]["api"], what=f"{n.name} knows the leader's API")
    return c


def test_leader_killed_mid_workload_loses_and_tears_nothing(cluster):
    leader = cluster.leader()
    assert exec_(leader, "app", "CREATE TABLE pairs(txn INTEGER, half INTEGER)")[0] == 200
    writer = next(n for n in cluster.nodes if n is not leader)
    acked, stop = [], threading.Event()

    def write():
        txn = 0
        while not stop.is_set():
            txn += 1
            try:
                code, _ = exec_(writer, "app",
                                {"sql": "INSERT INTO pairs VALUES(?, 1)", "params": [txn]},
                                {"sql": "INSERT INTO pairs VALUES(?, 2)", "params": [txn]},
                                timeout=8)
            except Exception:
                continue
            if code == 200:
                acked.append(txn)
            else:
                stop.wait(0.05)  # client back-off while the cluster elects

    t = threading.Thread(target=write)
    t.start()
    wait_for(lambda: len(acked) >= 20, what="some acknowledged transactions")
    leader.kill()
    before = len(acked)
    survivors = [n for n in cluster.nodes if n is not leader]
    cluster.wait_leader(among=survivors)
    wait_for(lambda: len(acked) >= before + 40, timeout=30, what="writes after the failover")
    stop.set()
    t.join()
    wait_for(lambda: converged(cluster, survivors, "app"), what="replicas identical")
    for n in survivors:
        code, res = query(n, "app", "SELECT txn, count(*) FROM pairs GROUP BY txn",
                          consistency="stale")
        assert code == 200
        counts = dict(res["rows"])
        assert all(c == 2 for c in counts.values()), "a transaction was half-applied"
        missing = [txn for txn in acked if txn not in counts]
        assert not missing, f"{n.name} lost acknowledged transactions {missing[:5]}"


def test_isolated_node_is_read_only_then_writes_resume(cluster):
    leader = cluster.leader()
    assert exec_(leader, "app", "CREATE TABLE kv(k TEXT PRIMARY KEY, v TEXT)",
                 "INSERT INTO kv VALUES('colour', 'blue')")[0] == 200
    lonely = next(n for n in cluster.nodes if n is not leader)
    wait_for(lambda: query(lonely, "app", "SELECT v FROM kv", consistency="stale")[1]["rows"]
             == [["blue"]], what="replicated")
    cluster.isolate(lonely.name)
    wait_for(lambda: lonely.status()["sql"] == "read_only", what="read-only mode")
    code, body = exec_(lonely, "app", "UPDATE kv SET v = 'red'", timeout=3)
    assert code == 503 and body["error"] == "read_only"
    assert query(lonely, "app", "SELECT v FROM kv")[1]["rows"] == [["blue"]]  # AP reads work
    new_leader = cluster.wait_leader(among=[n for n in cluster.nodes if n is not lonely])
    assert exec_(new_leader, "app", "UPDATE kv SET v = 'green'")[0] == 200
    cluster.heal()
    wait_for(lambda: lonely.status()["sql"] == "read_write", what="writes resume")
    assert exec_(lonely, "app", "UPDATE kv SET v = 'violet'")[0] == 200
    wait_for(lambda: query(lonely, "app", "SELECT v FROM kv")[1]["rows"] == [["violet"]],
             what="the healed node applies")


def test_nondeterministic_sql_keeps_replicas_identical(cluster):
    n = cluster.nodes[0]
    assert exec_(n, "app", "CREATE TABLE t(id INTEGER PRIMARY KEY, r INT, b BLOB, at TEXT, "
                 "d TEXT, j REAL)")[0] == 200
    for i in range(30):
        code, body = exec_(cluster.nodes[i % 3], "app",
                           "INSERT INTO t(r, b, at, d, j) VALUES(random(), randomblob(8), "
                           "CURRENT_TIMESTAMP, date('now'), julianday('now'))",
                           "UPDATE t SET r = r + abs(random() % 10) WHERE id = (SELECT max(id) FROM t)")
        assert code == 200, body
    wait_for(lambda: converged(cluster, cluster.nodes, "app"), what="identical replicas")
    rows = [query(m, "app", "SELECT * FROM t ORDER BY id", consistency="stale")[1]["rows"]
            for m in cluster.nodes]
    assert rows[0] == rows[1] == rows[2] and len(rows[0]) == 30


def test_bad_input(cluster):
    n = cluster.nodes[0]
    assert exec_(n, "app", "CREATE TABLE t(a INT)")[0] == 200
    code, body = exec_(n, "app", "INSERT INTO t VALUES(1)", "SELEC nonsense")
    assert code == 400 and "syntax error" in body["message"] and "statement 2" in body["message"]
    assert query(n, "app", "SELECT count(*) FROM t")[1]["rows"] == [[0]]  # untouched
    assert query(n, "nosuchdb", "SELECT 1")[0] == 404
    code, body = exec_(n, "app", {"sql": "INSERT INTO t VALUES(?)", "params": [1, 2]})
    assert code == 400 and "parameters" in body["message"]
    code, body = query(n, "app", "DELETE FROM t")
    assert code == 400 and "read-only" in body["message"]
    code, body = query(n, "app", "SELECT 1; SELECT 2")
    assert code == 400
    for bad in (b"{}", b'{"statements": []}', b'{"statements": [{"sql": 5}]}',
                b'{"statements": [{"sql": "SELECT 1", "extra": 1}]}', b"not json"):
        code, _, out = n.request("/v1/sql/app/exec", "POST", bad)
        assert code == 400, (bad, out)
    code, _, _ = n.request("/v1/sql/app/exec", "POST",
                           json.dumps({"statements": [{"sql": "x" * (1 << 20)}]}).encode())
    assert code == 413
    assert exec_(n, "bad%21name", "SELECT 1")[0] == 400


def test_clean_shutdown_after_queries(cluster):
    n = cluster.nodes[0]
    assert exec_(n, "app", "CREATE TABLE t(a INT)", "INSERT INTO t VALUES(1)")[0] == 200
    for m in cluster.nodes:
        for _ in range(3):
            wait_for(lambda: query(m, "app", "SELECT a FROM t", consistency="stale")[0] == 200,
                     what="a query")
    for m in cluster.nodes:
        assert m.stop() == 0  # no leaked reader connections, no sanitizer report


def test_fenced_exec(cluster):
    n = cluster.nodes[1]
    assert exec_(n, "app", "CREATE TABLE t(a INT)")[0] == 200
    code, _, out = n.request("/v1/locks/db-writer?owner=me&ttl=30s", "POST")
    token = json.loads(out)["token"]

    def fenced(fence):
        body = json.dumps({"statements": [{"sql": "INSERT INTO t VALUES(1)"}]}).encode()
        code, _, out = n.request("/v1/sql/app/exec", "POST", body, {"X-Jinn-Fence": fence})
        return code, json.loads(out)
    assert fenced(f"db-writer:{token}")[0] == 200
    code, body = fenced(f"db-writer:{token - 1}")
    assert code == 409 and body["error"] == "conflict"
    assert fenced("db-writer")[0] == 400
    assert query(n, "app", "SELECT count(*) FROM t",
                 consistency="linearizable")[1]["rows"] == [[1]]


# ---- sandbox, determinism, bounds (issue 11) ---------------------------------

def all_alive(cluster):
    return all(n.alive() and n.status()["role"] for n in cluster.nodes)


def test_fts3_tokenizer_cannot_crash_the_cluster(cluster):
    n = cluster.leader()
    code, body = exec_(n, "app", "SELECT fts3_tokenizer('evil', X'4141414141414141')")
    assert code == 400 and "not authorized" in body["message"]
    code, body = exec_(n, "app", "CREATE VIRTUAL TABLE v USING fts3(a, tokenize=evil)")
    assert code == 400
    code, body = query(n, "app", "SELECT hex(fts3_tokenizer('simple'))")
    assert code in (400, 404)
    assert exec_(n, "app", "CREATE VIRTUAL TABLE docs USING fts5(body)",
                 "INSERT INTO docs VALUES('hello world')")[0] == 200
    code, body = query(n, "app", "SELECT rowid FROM docs WHERE docs MATCH 'hello'")
    assert code == 200 and body["rows"] == [[1]], body
    assert all_alive(cluster)


def test_temp_schema_and_history_functions_are_refused(cluster):
    n = cluster.leader()
    assert exec_(n, "app", "CREATE TABLE t(a)")[0] == 200
    for sql in ("CREATE TEMP TRIGGER tr AFTER INSERT ON main.t BEGIN "
                "INSERT INTO t VALUES(0); END",
                "CREATE TEMP TABLE tt(a)", "CREATE TEMP VIEW v AS SELECT 1",
                "INSERT INTO t SELECT total_changes()", "INSERT INTO t SELECT changes()",
                "INSERT INTO t SELECT last_insert_rowid()", "PRAGMA journal_mode=delete",
                "ATTACH '/etc/hostname' AS h", "BEGIN", "VACUUM INTO '/tmp/jinn-stolen.db'"):
        code, body = exec_(n, "app", sql)
        assert code == 400, (sql, body)
    assert not os.path.exists("/tmp/jinn-stolen.db")


def test_exec_results_per_statement(cluster):
    n = cluster.leader()
    assert exec_(n, "app", "CREATE TABLE t(a)", "INSERT INTO t VALUES(1)")[0] == 200
    code, body = exec_(n, "app", "UPDATE t SET a = 2", "SELECT count(*) FROM t",
                       "CREATE TABLE u(b)")
    assert code == 200
    assert [r["rows_affected"] for r in body["results"]] == [1, 0, 0]
    assert exec_(n, "app", "INSERT INTO t VALUES(3);\r\n")[0] == 200
    code, body = query(n, "app", "SELECT count(*) FROM t;\r\n")
    assert code == 200 and body["rows"] == [[2]]


def test_query_is_read_only_and_never_pins_a_snapshot(cluster):
    n = cluster.leader()
    assert exec_(n, "app", "CREATE TABLE t(a)")[0] == 200
    for sql in ("ATTACH '/etc/hostname' AS h", "PRAGMA database_list",
                "SELECT * FROM pragma_database_list", "BEGIN", "SAVEPOINT s",
                "SELECT load_extension('x')", "SELECT sqlite_version()"):
        code, body = query(n, "app", sql)
        assert code == 400, (sql, body)
    # Before: BEGIN left a pooled reader inside a read transaction, and
    # linearizable reads on it answered an old count forever.
    for i in range(1, 7):
        assert exec_(n, "app", {"sql": "INSERT INTO t VALUES(?)", "params": [i]})[0] == 200
        for _ in range(3):
            assert query(n, "app", "BEGIN")[0] == 400
            code, body = query(n, "app", "SELECT count(*) FROM t", consistency="linearizable")
            assert code == 200 and body["rows"] == [[i]]


def test_query_result_is_bounded_inside_values(cluster):
    n = cluster.leader()
    assert exec_(n, "app", "CREATE TABLE t(a)")[0] == 200
    t0 = time.monotonic()
    code, body = query(n, "app", "SELECT hex(zeroblob(200000000))")
    assert code == 400 and "too big" in body["message"]
    code, body = query(n, "app", "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 "
                       "FROM c WHERE x < 40) SELECT x, zeroblob(1000000) FROM c")
    assert code == 400 and "larger than" in body["message"]
    assert time.monotonic() - t0 < 5


def test_hostile_statements_stall_nothing(cluster):
    leader = cluster.leader()
    assert exec_(leader, "app", "CREATE TABLE t(a)")[0] == 200
    term = leader.status()["term"]
    writer = next(n for n in cluster.nodes if n is not leader)
    latencies, stop = [], threading.Event()

    def put_load():
        i = 0
        while not stop.is_set():
            i += 1
            t0 = time.monotonic()
            code, _, _ = writer.request(f"/v1/kv/app/k{i % 50}", "PUT", b"v", timeout=10)
            latencies.append((time.monotonic() - t0, code))

    t = threading.Thread(target=put_load)
    t.start()
    try:
        wait_for(lambda: len(latencies) >= 20, what="a put load")
        hostile = [
            "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c "
            "WHERE x < 100000000) INSERT INTO t SELECT count(*) FROM c",
            "INSERT INTO t VALUES(replace(printf('%.*c', 900000000, 'a'), 'a', 'bb'))",
            "INSERT INTO t VALUES(printf('%.*c', 900000000, 'a'))",
            "INSERT INTO t VALUES(zeroblob(300000000))",
            "INSERT INTO t VALUES(replace(printf('%.*c', 1000000, 'a'), 'a', 'bb'))",
        ]
        for _ in range(3):
            for sql in hostile:
                t0 = time.monotonic()
                code, body = exec_(leader, "app", sql)
                assert code == 400, (sql, body)
                assert time.monotonic() - t0 < 2, sql
        n_before = len(latencies)
        wait_for(lambda: len(latencies) >= n_before + 20, what="puts after the hostile SQL")
    finally:
        stop.set()
        t.join()
    assert all(code == 200 for _, code in latencies)
    worst = max(lat for lat, _ in latencies)
    assert worst < 1.0, f"a put took {worst:.3f} s"
    assert all(n.status()["term"] == term for n in cluster.nodes), "an election happened"
    code, body = query(leader, "app", "SELECT count(*), ifnull(max(length(a)), 0) FROM t")
    assert body["rows"] == [[0, 0]]


def test_outside_lock_stops_the_replica_instead_of_forking(cluster):
    leader = cluster.leader()
    assert exec_(leader, "app", "CREATE TABLE t(a)", "INSERT INTO t VALUES(1)")[0] == 200
    victim = next(n for n in cluster.nodes if n is not leader)
    wait_for(lambda: query(victim, "app", "SELECT count(*) FROM t",
                           consistency="stale")[1]["rows"] == [[1]], what="replicated")
    # An operator's sqlite3 shell holds the write lock on one replica's file.
    outside = sqlite3.connect(os.path.join(victim.data_dir, "sql", "app.db"), timeout=0)
    outside.execute("BEGIN IMMEDIATE")
    try:
        assert exec_(leader, "app", "INSERT INTO t VALUES(2)")[0] == 200  # the others commit
        wait_for(lambda: not victim.alive(), timeout=20, what="the replica stops")
    finally:
        outside.rollback()
        outside.close()
    assert victim.proc.returncode > 0  # a clean exit with a code, not a signal (abort)
    assert "cannot apply what the others did; stopping" in victim.log()
    victim.start()
    survivors = [n for n in cluster.nodes if n is not victim]
    wait_for(lambda: victim.alive() and query(victim, "app", "SELECT count(*) FROM t",
                                              consistency="stale")[1]["rows"] == [[2]],
             timeout=30, what="the restarted replica catches up")
    wait_for(lambda: converged(cluster, survivors + [victim], "app"), what="identical replicas")


def test_snapshot_restore_swaps_files_and_drops_idle_readers(cluster_factory):
    c = cluster_factory(3, extra_config=POLICIES + ["snapshot_threshold 16",
                                                    "snapshot_trailing 4"]).start()
    c.wait_leader()
    c.wait_ready()
    leader = c.leader()
    assert exec_(leader, "app", "CREATE TABLE t(a)")[0] == 200
    f = next(n for n in c.nodes if n is not leader)
    wait_for(lambda: query(f, "app", "SELECT count(*) FROM t", consistency="stale")[0] == 200,
             what="the follower has the database")
    for _ in range(3):  # leaves an idle reader in the pool
        assert query(f, "app", "SELECT count(*) FROM t", consistency="stale")[0] == 200
    path = os.path.join(f.data_dir, "sql", "app.db")
    inode = os.stat(path).st_ino
    c.isolate(f.name)
    for i in range(60):
        assert exec_(leader, "app", {"sql": "INSERT INTO t VALUES(?)", "params": [i]})[0] == 200
    c.heal()
    wait_for(lambda: query(f, "app", "SELECT count(*) FROM t",
                           consistency="stale")[1]["rows"] == [[60]],
             timeout=30, what="the follower catches up from a snapshot")
    assert os.stat(path).st_ino != inode, "no snapshot was installed"
    assert not os.path.exists(path + ".restore")

    def stale_fds():
        out = []
        for fd in os.listdir(f"/proc/{f.proc.pid}/fd"):
            try:
                target = os.readlink(f"/proc/{f.proc.pid}/fd/{fd}")
            except OSError:
                continue
            if "/sql/app.db" in target and target.endswith("(deleted)"):
                out.append(target)
        return out

    # Before: idle readers of the replaced files stayed open for good.
    assert query(f, "app", "SELECT count(*) FROM t", consistency="stale")[1]["rows"] == [[60]]
    assert stale_fds() == []
