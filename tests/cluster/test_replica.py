"""Edge replicas (issue 17): `jinn replica` processes follow a 3-node cluster
over the WebSocket stream, apply exactly what the voters applied (same
digests), switch nodes when theirs dies without missing or repeating an
entry, go read-only without a primary heartbeat and leave it at the next
one, relay writes (read-your-write with min_index), and keep applying while
a local sqlite3 reader holds a read transaction."""
import json
import os
import sqlite3
import subprocess
import threading
import time

import pytest

from harness import JINN, wait_for

POLICIES = ["consensus {", "    app { mode ap  stale_reads true  max_staleness 1h }",
            "    other { mode ap  stale_reads true  max_staleness 1h }", "}"]


def jinn(*args, timeout=90):
    return subprocess.run([JINN, *args], capture_output=True, text=True, timeout=timeout)


def put(node, key, value):
    code, hdr, body = node.request(f"/v1/kv/app/{key}", "PUT", value)
    assert code == 200, (code, body)
    return int(hdr["X-Jinn-Index"])


def stale_get(node, key, min_index=None):
    q = "?consistency=stale" + (f"&min_index={min_index}" if min_index else "")
    return node.request(f"/v1/kv/app/{key}{q}", timeout=10)


def sql(node, db, *statements):
    body = {"statements": [{"sql": s} for s in statements]}
    return node.request(f"/v1/sql/{db}/exec", "POST", json.dumps(body).encode(),
                        {"Content-Type": "application/json"})


def query(node, db, q, consistency="stale", headers=None):
    code, hdr, body = node.request(f"/v1/sql/{db}/query?consistency={consistency}", "POST",
                                   json.dumps({"sql": q}).encode(), headers or {})
    return code, hdr, body


def rows(node, db, q, consistency="stale", headers=None):
    code, _, body = query(node, db, q, consistency, headers)
    assert code == 200, (code, body)
    return json.loads(body)["rows"]


def commit_index(cluster):
    return cluster.wait_leader().status()["commit_index"]


def caught_up(replica, cluster, timeout=30):
    target = commit_index(cluster)
    replica.wait_position(target, timeout)
    return target


@pytest.fixture
def cluster(cluster_factory):
    c = cluster_factory(3, extra_config=POLICIES + ["check_interval 0s"]).start()
    c.wait_leader()
    c.wait_ready()
    for n in c.nodes:
        wait_for(lambda: n.status()["leader"]["api"], what=f"{n.name} knows the leader's API")
    return c


def edge(cluster, sources=None, stale_after=None, name=None, extra=()):
    lines = POLICIES + list(extra)
    if stale_after is not None:
        lines.append(f"replica_stale_after {stale_after}")
    return cluster.add_replica(name=name, sources=sources, extra_config=lines)


def followers(cluster):
    leader = cluster.wait_leader()
    return leader, [n for n in cluster.nodes if n is not leader]


def write_everything(node):
    assert node.request("/v1/kv/app/k1", "PUT", b"v1")[0] == 200
    assert node.request("/v1/kv/app/k2", "PUT", b"v2")[0] == 200
    assert node.request("/v1/locks/l1?owner=me&ttl=60s", "POST", b"")[0] == 200
    assert node.request("/v1/queues/jobs", "POST", b"job-1")[0] == 201
    assert sql(node, "app", "CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)",
               "INSERT INTO t(v) VALUES ('a'), ('b')")[0] == 200
    assert sql(node, "other", "CREATE TABLE u(x)", "INSERT INTO u VALUES (1)")[0] == 200


def test_join_empty_then_follow(cluster):
    leader = cluster.wait_leader()
    write_everything(leader)
    r = edge(cluster).start()
    r.wait_state("streaming")
    caught_up(r, cluster)
    assert stale_get(r, "k1")[2] == b"v1"
    assert rows(r, "app", "SELECT v FROM t ORDER BY id") == [["a"], ["b"]]
    st = r.replica()
    assert st["source"] in ("n1", "n2", "n3")
    assert "installing a snapshot" in r.log()  # a new replica starts from a snapshot
    # new writes arrive as entries
    idx = put(leader, "k3", b"v3")
    r.wait_position(idx)
    assert stale_get(r, "k3")[2] == b"v3"
    assert r.request("/readyz")[0] == 200
    # the node it streams from lists it
    src = cluster[r.replica()["source"]]
    wait_for(lambda: any(x["name"] == r.name
                         for x in src.status()["stream"]["replicas"]),
             what="the source node lists the replica")
    assert r.stop() == 0


def test_join_far_behind_installs_a_snapshot(cluster_factory):
    c = cluster_factory(3, extra_config=POLICIES + ["check_interval 0s",
                                                   "stream_buffer_bytes 1MiB"]).start()
    leader = c.wait_leader()
    c.wait_ready()
    put(leader, "seed", b"x")
    r = edge(c).start()
    r.wait_state("streaming")
    caught_up(r, c)
    snapshots = r.log().count("installing a snapshot")
    assert r.stop() == 0
    # more than the nodes' rings hold, while the replica is away
    for i in range(24):  # ~2.4 MB
        put(leader, f"big{i}", os.urandom(50000).hex().encode())
    assert sql(leader, "app", "CREATE TABLE t(x)", "INSERT INTO t VALUES (42)")[0] == 200
    r.start()
    target = caught_up(r, c)
    assert r.log().count("installing a snapshot") > snapshots
    assert rows(r, "app", "SELECT x FROM t") == [[42]]
    assert stale_get(r, "big23")[2] == stale_get(leader, "big23")[2]
    r.wait_state("streaming")
    assert r.replica()["position"] >= target


def test_same_state_same_digest_and_check_entries_apply(cluster):
    leader = cluster.wait_leader()
    r = edge(cluster).start()
    r.wait_state("streaming")
    write_everything(leader)
    caught_up(r, cluster)
    res = jinn("check", "--addr", leader.url, "--json")
    out = json.loads(res.stdout)
    assert res.returncode == 0, (out, res.stderr)
    index = out["index"]
    digest = out["nodes"][0]["digest"]
    r.wait_position(index)
    assert r.alive()  # it applied the CHECK entry and did not stop
    code, _, body = r.request(f"/v1/internal/digest?index={index}")
    assert code == 200, body
    mine = json.loads(body)
    assert mine["state"] == "ready" and mine["digest"] == digest, mine
    # and the reads agree
    for key in ("k1", "k2"):
        assert stale_get(r, key)[2] == stale_get(leader, key)[2]
    for db, q in (("app", "SELECT * FROM t ORDER BY id"), ("other", "SELECT * FROM u")):
        assert rows(r, db, q) == rows(leader, db, q, "linearizable")
    code, _, body = r.request("/v1/queues/jobs")
    assert code == 200 and json.loads(body)["ready"] == 1, body
    code, _, body = r.request("/v1/locks/l1")
    assert code == 200 and json.loads(body)["owner"] == "me", body
    # more writes after the check keep flowing
    idx = put(leader, "after", b"1")
    r.wait_position(idx)
    assert r.alive()


class Writer:
    """Increments a counter through the leader as fast as it answers."""

    def __init__(self, cluster):
        self.cluster = cluster
        self.stop = threading.Event()
        self.ok = 0
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self):
        while not self.stop.is_set():
            leader = self.cluster.leader()
            if leader is None:
                time.sleep(0.05)
                continue
            try:
                code, _, _ = sql(leader, "app", "UPDATE c SET n = n + 1")
            except OSError:
                continue
            if code == 200:
                self.ok += 1

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join(timeout=30)


def test_source_killed_switches_without_missing_or_repeating(cluster):
    leader, (fa, fb) = followers(cluster)
    assert sql(leader, "app", "CREATE TABLE c(n INTEGER)", "INSERT INTO c VALUES (0)")[0] == 200
    r = edge(cluster, sources=[fa, fb]).start()
    r.wait_state("streaming")
    assert r.replica()["source"] == fa.name
    with Writer(cluster) as w:
        wait_for(lambda: w.ok >= 20, what="writes flowing")
        fa.kill()
        wait_for(lambda: r.replica()["source"] == fb.name, what="the replica switched to fb")
        before = w.ok
        wait_for(lambda: w.ok >= before + 20, what="writes after the switch")
    r.wait_state("streaming")
    caught_up(r, cluster)
    truth = rows(cluster.wait_leader(), "app", "SELECT n FROM c", "linearizable")
    assert truth[0][0] >= w.ok  # (unknown outcomes may add to it)
    assert rows(r, "app", "SELECT n FROM c") == truth
    assert r.log().count("replica: streaming from") >= 2


def test_leader_lost_read_only_until_a_new_primary_heartbeat(cluster):
    leader, (fa, fb) = followers(cluster)
    r = edge(cluster, stale_after="1s").start()
    r.wait_state("streaming")
    code, hdr, _ = r.request("/v1/kv/app/w", "PUT", b"1")
    assert code == 200
    r.wait_position(int(hdr["X-Jinn-Index"]))  # (the node it streams from may lag the quorum)
    # no quorum anywhere: no primary heartbeat from any node
    leader.kill()
    fb.kill()
    r.wait_state("read_only", timeout=20)
    code, _, body = r.request("/v1/kv/app/w", "PUT", b"2")
    assert code == 503 and json.loads(body)["error"] == "read_only", body
    code, hdr, body = stale_get(r, "w")
    assert code == 200 and body == b"1"
    contact = int(hdr["X-Jinn-Leader-Contact-Ms"])
    assert contact >= 900 or contact < 0, contact
    assert r.status()["replica"]["state"] == "read_only"
    assert r.request("/readyz")[0] != 200
    # a new leader (new term) through whichever node: read-only ends
    fb.start()
    new = cluster.wait_leader(among=[fa, fb], timeout=30)
    wait_for(lambda: r.replica()["state"] in ("streaming", "catching_up"), timeout=20,
             what="read-only ended")
    code, hdr, body = r.request("/v1/kv/app/w", "PUT", b"3")
    assert code == 200, body
    r.wait_position(int(hdr["X-Jinn-Index"]))
    assert stale_get(r, "w")[2] == b"3"
    assert new.status()["term"] > 1


def test_partitioned_replica_is_read_only_and_reads_say_how_stale(cluster):
    leader, (fa, _) = followers(cluster)
    idx = put(leader, "p", b"before")
    r = edge(cluster, sources=[fa], stale_after="1s").start()
    r.wait_state("streaming")
    r.wait_position(idx)
    fa.pause()  # the only node it can reach stops answering
    try:
        r.wait_state("read_only", timeout=20)
        code, _, body = r.request("/v1/kv/app/p", "PUT", b"x")
        assert code == 503 and json.loads(body)["error"] == "read_only", body
        code, _, body = sql(r, "app", "CREATE TABLE z(x)")
        assert code == 503 and json.loads(body)["error"] == "read_only", body
        code, hdr, body = stale_get(r, "p")
        assert code == 200 and body == b"before"
        contact = int(hdr["X-Jinn-Leader-Contact-Ms"])
        assert contact >= 900 or contact < 0, contact  # read-only: >= 1 s without one
        assert r.replica()["state"] == "read_only"
    finally:
        fa.resume()
    r.wait_state("streaming", timeout=30)
    code, hdr, body = r.request("/v1/kv/app/p", "PUT", b"after")
    assert code == 200, body


def test_relayed_writes_and_read_your_write(cluster):
    r = edge(cluster).start()
    r.wait_state("streaming")
    code, hdr, body = r.request("/v1/kv/app/ryw", "PUT", b"mine")
    assert code == 200, body
    idx = int(hdr["X-Jinn-Index"])
    code, hdr, body = stale_get(r, "ryw", min_index=idx)
    assert code == 200 and body == b"mine"
    code, hdr, body = sql(r, "app", "CREATE TABLE t(x)", "INSERT INTO t VALUES (7)")
    assert code == 200, body
    idx = int(hdr["X-Jinn-Index"])
    assert rows(r, "app", "SELECT x FROM t", headers={"X-Jinn-Min-Index": str(idx)}) == [[7]]
    # the write reached the cluster, not just the replica
    assert rows(cluster.wait_leader(), "app", "SELECT x FROM t", "linearizable") == [[7]]


def test_local_sqlite_reader_does_not_stall_the_replica(cluster):
    leader = cluster.wait_leader()
    assert sql(leader, "app", "CREATE TABLE t(id INTEGER PRIMARY KEY, b BLOB)")[0] == 200
    r = edge(cluster).start()
    r.wait_state("streaming")
    caught_up(r, cluster)
    path = os.path.join(r.data_dir, "sql", "app.db")
    # the embedded read of docs/replica.md: read-only, its own SQLite
    reader = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5,
                             isolation_level=None)
    reader.execute("BEGIN")
    assert reader.execute("SELECT count(*) FROM t").fetchone()[0] == 0
    # ~6 MB through the WAL: past the auto-checkpoint, which the reader blocks
    for i in range(30):
        assert sql(leader, "app", "INSERT INTO t(b) VALUES (randomblob(200000))")[0] == 200
    caught_up(r, cluster, timeout=60)
    assert rows(r, "app", "SELECT count(*) FROM t") == [[30]]
    assert reader.execute("SELECT count(*) FROM t").fetchone()[0] == 0  # its snapshot
    reader.execute("COMMIT")
    assert reader.execute("SELECT count(*) FROM t").fetchone()[0] == 30
    reader.close()
    wal = path + "-wal"
    size_at_release = os.path.getsize(wal) if os.path.exists(wal) else 0
    for i in range(30):
        assert sql(leader, "app", "INSERT INTO t(b) VALUES (randomblob(200000))")[0] == 200
    caught_up(r, cluster, timeout=60)
    assert rows(r, "app", "SELECT count(*) FROM t") == [[60]]
    # the checkpoint ran once the reader left: the WAL was reused, not grown
    assert os.path.getsize(wal) <= size_at_release + (1 << 20) if os.path.exists(wal) else True
    cli = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    assert cli.execute("SELECT count(*) FROM t").fetchone()[0] == 60
    cli.close()
    # the README's example: the sqlite3 shell, read-only
    out = subprocess.run(["sqlite3", "-readonly", path, "SELECT count(*) FROM t"],
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 0 and out.stdout.strip() == "60", out
    assert r.alive()
    r.wait_state("streaming")


def test_source_cut_from_the_cluster_is_left_for_a_node_with_a_leader(cluster):
    """R3 M2: the replica's source loses its raft links (its HTTP still
    answers, its heartbeats stop being primary): the replica used to stay
    on it, read-only, for as long as the partition lasted."""
    leader, (fa, fb) = followers(cluster)
    r = edge(cluster, sources=[fa, fb, leader], stale_after="1s").start()
    wait_for(lambda: r.replica(timeout=1)["source"] == fa.name, what=f"streams from {fa.name}")
    r.wait_state("streaming")
    cluster.isolate(fa.name)
    try:
        wait_for(lambda: r.replica(timeout=1)["source"] in (fb.name, leader.name), timeout=30,
                 what="moved to a node with a leader")
        r.wait_state("streaming", timeout=30)
        code, hdr, body = r.request("/v1/kv/app/m2", "PUT", b"moved")
        assert code == 200, body  # relayed: not read-only
        r.wait_position(int(hdr["X-Jinn-Index"]))
        assert stale_get(r, "m2")[2] == b"moved"
        assert "no primary heartbeat for" in r.log()
    finally:
        cluster.heal()


class FollowingReader:
    """The embedded reader of docs/replica.md: reopens its connection when
    data_dir/sql/GENERATION changed (each snapshot install replaces the
    database files under open connections)."""

    def __init__(self, data_dir, db):
        self.sql_dir = os.path.join(data_dir, "sql")
        self.path = os.path.join(self.sql_dir, db + ".db")
        self.gen, self.conn = None, None

    def generation(self):
        with open(os.path.join(self.sql_dir, "GENERATION")) as f:
            return f.read().strip()

    def query(self, q):
        gen = self.generation()
        if gen != self.gen:
            if self.conn is not None:
                self.conn.close()
            self.conn = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True)
            self.gen = gen
        return self.conn.execute(q).fetchall()


def test_snapshot_install_bumps_the_sql_generation_readers_watch(cluster):
    """R3 M4: a snapshot install renames new database files in; a reader's
    open connection keeps the old ones and reads frozen data with no error.
    The replica now says so: sql_generation in its status and the file
    data_dir/sql/GENERATION, bumped at every install."""
    leader = cluster.wait_leader()
    assert sql(leader, "app", "CREATE TABLE t(x)",
               *[f"INSERT INTO t VALUES ({i})" for i in range(10)])[0] == 200
    r = edge(cluster).start()
    r.wait_state("streaming")
    caught_up(r, cluster)
    gen = r.replica()["sql_generation"]
    assert gen >= 1  # a new replica starts from a snapshot
    follower = FollowingReader(r.data_dir, "app")
    assert follower.generation() == str(gen)
    assert follower.query("SELECT count(*) FROM t") == [(10,)]
    plain = sqlite3.connect(f"file:{follower.path}?mode=ro", uri=True)
    assert plain.execute("SELECT count(*) FROM t").fetchone()[0] == 10
    # a restarted replica installs a snapshot again (as after a cut-off)
    assert r.stop() == 0
    assert sql(leader, "app", *[f"INSERT INTO t VALUES ({i})" for i in range(16)])[0] == 200
    r.start()
    r.wait_state("streaming")
    caught_up(r, cluster)
    assert rows(r, "app", "SELECT count(*) FROM t") == [[26]]
    assert r.replica()["sql_generation"] == gen + 1
    assert follower.generation() == str(gen + 1)
    # the connection that did not look still reads the replaced file...
    assert plain.execute("SELECT count(*) FROM t").fetchone()[0] == 10
    plain.close()
    # ...the one that checks GENERATION reopens and reads the new state
    assert follower.query("SELECT count(*) FROM t") == [(26,)]
