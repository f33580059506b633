"""FR4 (issue 17, A3's M2 and M3): a replica's position names a chain, not
only an index; a replica at its source's position has applied what the
source had applied (barriers included)."""
import time

import pytest

from harness import wait_for

POLICIES = ["consensus {", "    app { mode ap  stale_reads true  max_staleness 1h }", "}"]


def put(n, k, v):
    code, h, body = n.request(f"/v1/kv/app/{k}", "PUT", v)
    assert code == 200, body
    return int(h["X-Jinn-Index"])


def test_rebootstrapped_cluster_replaces_the_replica_state(cluster_factory):
    """M2: every node wiped and bootstrapped again from the same config has
    the same cluster id; the running replica must not apply the new chain on
    top of the old state, but install a snapshot of the new one."""
    c = cluster_factory(3, extra_config=POLICIES + ["check_interval 0s"]).start()
    leader = c.wait_leader()
    c.wait_ready()
    for n in c.nodes:
        wait_for(lambda: n.status()["leader"]["api"], what="api")
    old_id = leader.status()["cluster_id"]
    r = c.add_replica(extra_config=POLICIES + ["replica_stale_after 1s"]).start()
    r.wait_state("streaming")
    for _ in range(2):  # a term the new cluster starts below
        leader.kill()
        leader.start(bootstrap=False)
        leader = c.wait_leader()
    last = 0
    for i in range(20):
        last = put(leader, f"old{i}", b"old")
    r.wait_position(last)
    old_term = leader.status()["term"]
    assert r.request("/v1/kv/app/old0?consistency=stale")[0] == 200
    for n in c.nodes:
        n.kill()
    for n in c.nodes:
        n.wipe()
    for n in c.nodes:
        n.start(bootstrap=True)
    leader = c.wait_leader(timeout=30)
    c.wait_ready()
    assert leader.status()["cluster_id"] == old_id  # what let the replica in
    # the new cluster writes past the replica's old position
    idx = 0
    i = 0
    while idx <= last + 5:
        idx = put(leader, f"new{i % 5}", b"new")
        i += 1

    def has_new_state():
        code, _, _ = r.request("/v1/kv/app/new0?consistency=stale")
        return code == 200 and r.replica()["position"] >= idx
    wait_for(has_new_state, timeout=30, what="the replica on the new cluster's chain")
    code, _, body = r.request("/v1/kv/app/old0?consistency=stale")
    assert code == 404, (code, body, r.log()[-3000:])
    code, _, body = r.request("/v1/kv/app/new0?consistency=stale")
    assert code == 200 and body == b"new", (code, body)
    assert "installing a snapshot" in r.log()
    # the old cluster's higher term does not make it ignore the new leader
    new_term = leader.status()["term"]
    assert new_term < old_term  # what the scenario is about
    wait_for(lambda: r.status()["term"] == leader.status()["term"], timeout=20,
             what="the replica following the new cluster's leader")
    r.wait_state("streaming", timeout=20)


def test_replica_resumes_on_the_same_chain_without_a_snapshot(cluster_factory):
    """The time check keeps the ordinary resume: a replica whose source
    restarts resumes from its position (no second snapshot)."""
    c = cluster_factory(3, extra_config=POLICIES + ["check_interval 0s"]).start()
    leader = c.wait_leader()
    c.wait_ready()
    for n in c.nodes:
        wait_for(lambda: n.status()["leader"]["api"], what="api")
    r = c.add_replica(extra_config=POLICIES).start()
    r.wait_state("streaming")
    last = put(leader, "a", b"1")
    r.wait_position(last)
    src = r.replica()["source"]
    snaps = r.log().count("installing a snapshot")
    node = next(n for n in c.nodes if n.name == src)
    node.kill()
    if node is leader:
        leader = c.wait_leader(among=[n for n in c.nodes if n is not node])
    # Resumed at its position on another node first: a node keeps records
    # only while a replica streams from it, so a write before the replica
    # got there would (rightly) reach it as a snapshot.
    wait_for(lambda: r.replica()["source"] not in (None, src) and
             r.replica()["state"] == "streaming", timeout=30,
             what="the replica streams from another node")
    assert r.log().count("installing a snapshot") == snaps, r.log()[-3000:]
    last = put(leader, "b", b"2")
    r.wait_position(last, timeout=30)
    assert r.log().count("installing a snapshot") == snaps, r.log()[-3000:]
    assert r.request("/v1/kv/app/b?consistency=stale")[0] == 200


def test_min_index_from_a_voter_linearizable_read(cluster_factory):
    """M3: a linearizable read on a voter reports a barrier's index; the same
    index as min_index on a caught-up replica answers at once."""
    c = cluster_factory(3, extra_config=POLICIES + ["check_interval 0s",
                                                    "request_timeout 5s"]).start()
    leader = c.wait_leader()
    c.wait_ready()
    for n in c.nodes:
        wait_for(lambda: n.status()["leader"]["api"], what="api")
    code, h, _ = leader.request("/v1/kv/app/k", "PUT", b"v")
    assert code == 200
    r = c.add_replica(extra_config=POLICIES).start()
    r.wait_state("streaming")
    r.wait_position(int(h["X-Jinn-Index"]))
    results = []
    for _ in range(3):
        code, h, body = leader.request("/v1/kv/app/k?consistency=linearizable")
        assert code == 200, body
        seen = int(h["X-Jinn-Applied-Index"])
        t0 = time.monotonic()
        code, h2, body = r.request(f"/v1/kv/app/k?consistency=stale&min_index={seen}",
                                   timeout=10)
        took = time.monotonic() - t0
        results.append((seen, r.replica()["position"], code, round(took, 2)))
        assert code == 200, (results, body)
        assert body == b"v"
        assert int(h2["X-Jinn-Applied-Index"]) >= seen
        assert took < 2.0, results  # a heartbeat or two, not the request timeout
    # and through the replica itself (the read relayed to the leader)
    code, h, body = r.request("/v1/kv/app/k?consistency=linearizable")
    assert code == 200, body
    seen = int(h["X-Jinn-Applied-Index"])
    t0 = time.monotonic()
    code, _, body = r.request(f"/v1/kv/app/k?consistency=stale&min_index={seen}", timeout=10)
    assert code == 200 and time.monotonic() - t0 < 2.0, (seen, code, body)


def test_stream_at_names_the_chain(cluster_factory):
    """The protocol itself: `at` equal to the node's cluster time at the
    position resumes (no snapshot); any other time gets a snapshot, at the
    position or later; a malformed `at` is 400. Heartbeats carry
    `applied`."""
    from test_stream import Feed, one_node, put, stream
    c, leader = one_node(cluster_factory)
    ws, status, _, _ = stream(leader, "from=0&name=a")
    assert status == 101
    first = Feed(ws)
    first.until(lambda f: f.snapshots)
    idx = [put(leader, f"k{i}", b"v%d" % i) for i in range(6)]
    first.until(lambda f: f.records and f.records[-1][0] == idx[-1])
    pos = idx[-1]
    first.until(lambda f: f.heartbeats and f.heartbeats[-1]["position"] == pos,
                what="a heartbeat at the last position")
    hb = first.heartbeats[-1]
    assert hb["applied"] >= hb["position"], hb
    at = hb["time_ms"]  # the cluster time at pos (no command since)

    ws2, status, _, _ = stream(leader, f"from={pos}&name=b&at={at}")
    assert status == 101
    same = Feed(ws2)
    same.until(lambda f: len(f.heartbeats) >= 2, what="two heartbeats")
    assert "S" not in same.order and "E" not in same.order

    ws3, status, _, _ = stream(leader, f"from={pos}&name=c&at={at + 1}")
    assert status == 101
    other = Feed(ws3)
    other.until(lambda f: f.snapshots, what="a snapshot for another chain")
    assert other.snapshots[0][0] >= pos

    mid = first.records[2][0]
    ws4, status, _, _ = stream(leader, f"from={mid}&name=d&at=1")
    assert status == 101
    old = Feed(ws4)
    old.until(lambda f: f.snapshots, what="a snapshot for another chain")
    assert old.snapshots[0][0] >= pos and "E" not in old.order[:old.order.index("S")]

    for q in (f"from={pos}&name=e&at=x1", f"from={pos}&name=e&at=", f"from={pos}&name=e&at=01",
              f"from={pos}&name=e&at=1&at=1"):
        w, status, _, body = stream(leader, q)
        assert status == 400, (q, status, body)
    for w in (ws, ws2, ws3, ws4):
        w.close()


# the scripted node answers the relayed PUT by failing its upgrade (no key)
@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_writes_relayed_only_to_a_replica_of_host(cluster_factory):
    """m6: a heartbeat names leader_api http://127.0.0.1:1, a host no
    replica_of URL names: a client's write (and its Authorization) goes to
    the node the replica streams from instead, never there."""
    from test_replica_client import FakeNode, replica
    f = FakeNode("f1")
    try:
        r = replica(cluster_factory, [f.url]).start()
        r.wait_state("streaming")
        r.request("/v1/kv/app/k", "PUT", b"x",
                  headers={"Authorization": "Bearer client-secret-0123456789"})

        def relayed():
            return [(line, h) for line, h in f.requests if line.startswith("PUT ")]
        wait_for(relayed, timeout=10, what="the write relayed to the source node")
        line, headers = relayed()[0]
        assert line.startswith("PUT /v1/kv/app/k "), line
        assert headers.get("authorization") == "Bearer client-secret-0123456789"
        assert headers.get("host") == f"127.0.0.1:{f.port}"
    finally:
        f.close()
