"""A follower whose raft log append fails once (JINN_TEST_APPEND_FAULT_FILE
while one leader write arrives) is turned RAFT_UNAVAILABLE by libraft 0.15
(recvCb: an error from recvAppendEntries -> convertToUnavailable), a state
only raft_start leaves. Before, jinn kept running with /healthz 200, out of
the cluster for good and silent. Now it stops with exit code 3 and says why,
so a supervisor restarts it; restarted, it rejoins with its data and the
cluster keeps every acknowledged write (from attacker A4's
test_a4_follower_fault.py)."""
import json
import os

from harness import wait_for

STOP_LINE = "raft stopped taking part in the cluster"

# AP with stale reads: each node is read locally (what it holds, not the leader's)
POLICIES = ["consensus {", "    app { mode ap  stale_reads true  max_staleness 24h }", "}"]


def put(node, key, value):
    code, _, out = node.request(f"/v1/kv/app/{key}", "PUT", value.encode())
    return code, out


def test_a_follower_whose_append_fails_stops_and_rejoins_after_a_restart(cluster_factory,
                                                                          tmp_path):
    c = cluster_factory(3, extra_config=POLICIES)
    for node in c.nodes:
        node.env["JINN_TEST_APPEND_FAULT_FILE"] = str(tmp_path / f"fault-{node.name}")
    c.start()
    leader = c.wait_leader()
    c.wait_ready()
    acked = {}
    for i in range(5):
        code, out = put(leader, f"before{i}", f"b{i}")
        assert code == 200, out
        acked[f"before{i}"] = f"b{i}"

    f = next(n for n in c.nodes if n is not leader)
    fault = f.env["JINN_TEST_APPEND_FAULT_FILE"]
    open(fault, "w").close()
    # The other follower makes the quorum: the write is acknowledged.
    code, out = put(leader, "during", "d")
    assert code == 200, out
    acked["during"] = "d"

    # The follower stops by itself, with a clear line and exit code 3
    # (before: it stayed up, role "unavailable", /healthz 200, for good).
    wait_for(lambda: not f.alive(), timeout=15, what=f"{f.name} to stop by itself")
    assert f.proc.returncode == 3, f.proc.returncode
    lines = [x for x in f.log().splitlines() if STOP_LINE in x]
    assert len(lines) == 1 and " error " in lines[0], lines

    os.unlink(fault)
    for i in range(5):
        code, out = put(leader, f"after{i}", f"a{i}")
        assert code == 200, out
        acked[f"after{i}"] = f"a{i}"
    last = json.loads(out)["index"]

    f.start()
    c.wait_ready(nodes=[f], timeout=30)
    wait_for(lambda: f.status()["applied_index"] >= last, timeout=20,
             what=f"{f.name} to apply index {last}")
    assert f.status()["role"] == "follower"
    for node in c.nodes:
        for k, v in acked.items():
            code, _, out = node.request(f"/v1/kv/app/{k}?consistency=stale")
            assert code == 200 and out == v.encode(), (node.name, k, code, out)
    # And it takes part again: a write needs it once the other follower is gone.
    other = next(n for n in c.nodes if n is not leader and n is not f)
    other.stop()
    code, out = put(leader, "last", "l")
    assert code == 200, out
    wait_for(lambda: f.request("/v1/kv/app/last?consistency=stale")[2] == b"l", timeout=10,
             what=f"{f.name} to have the last write")
