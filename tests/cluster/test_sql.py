"""Replicated SQL on a real cluster: failover without lost or torn
transactions, the read-only switch, determinism, bad input."""
import json
import threading

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
    assert query(n, "app", "SELECT count(*) FROM t")[1]["rows"] == [[1]]
