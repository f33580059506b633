"""A follower whose snapshot INSTALL fails after libraft took it
(JINN_TEST_SNAPSHOT_INSTALL_FAIL_ONCE_FILE: the next snapshot installed
from the leader is written, but its completion reports RAFT_IOERR, as a
failed fsync does). libraft 0.15 (replicationInstallSnapshot) resets its
log in memory to the snapshot BEFORE writing it and, told the write
failed, only rejects it: the node went on as a follower whose log in
memory no longer matched its disk, its state machine never restored
(applied index stuck, every read 503 too stale, nothing logged), and a
restart could refuse its data_dir as corrupted (R7, M1). Now it stops at
once, exit code 3, with one line of its own; restarted without the fault it
catches up with every acknowledged write."""
import json
import os
import urllib.parse

from harness import wait_for

STOP_LINE = "raft could not store a snapshot sent by the leader"
POLICIES = ["consensus {", "    app { mode ap  stale_reads true  max_staleness 24h }", "}"]
# The leader compacts its log every 16 entries, keeping 4: a follower that
# was away for 120 writes can only catch up by an installed snapshot.
SNAPSHOTS = ["snapshot_threshold 16", "snapshot_trailing 4"]


def put(node, key, value):
    return node.request(f"/v1/kv/app/{key}", "PUT", value.encode(), timeout=10.0)


def read_local(node, key):
    q = urllib.parse.urlencode({"consistency": "stale"})
    return node.request(f"/v1/kv/app/{key}?{q}")


def test_a_follower_whose_snapshot_install_fails_later_stops_and_catches_up(
        cluster_factory, tmp_path):
    c = cluster_factory(3, extra_config=POLICIES + SNAPSHOTS)
    for node in c.nodes:
        node.env["JINN_TEST_SNAPSHOT_INSTALL_FAIL_ONCE_FILE"] = str(
            tmp_path / f"snap-fail-once-{node.name}")
    c.start()
    leader = c.wait_leader()
    c.wait_ready()
    f = next(n for n in c.nodes if n is not leader)
    acked = {}  # key -> (value, revision from the 2xx reply)
    for i in range(5):
        code, _, out = put(leader, f"a{i}", f"va{i}")
        assert code == 200, out
        acked[f"a{i}"] = (f"va{i}", json.loads(out)["revision"])
    assert f.stop() == 0
    for i in range(120):
        code, _, out = put(leader, f"k{i}", f"v{i}")
        assert code == 200, out
        acked[f"k{i}"] = (f"v{i}", json.loads(out)["revision"])

    fault = f.env["JINN_TEST_SNAPSHOT_INSTALL_FAIL_ONCE_FILE"]
    open(fault, "w").close()  # the follower's next install is reported failed
    f.start()
    # It stops by itself, at once, exit code 3, one clear line (before: it
    # stayed up as a follower that could never apply or answer a read).
    wait_for(lambda: not f.alive(), timeout=30, what=f"{f.name} to stop by itself")
    assert f.proc.returncode == 3, f.proc.returncode
    assert not os.path.exists(fault)  # the hook fired, once
    lines = [x for x in f.log().splitlines() if STOP_LINE in x]
    assert len(lines) == 1 and " error " in lines[0] and "test fault" in lines[0], lines
    assert "its log in memory no longer matches its disk" in lines[0], lines
    assert "stopping this node" in lines[0], lines

    # The cluster goes on with the other two.
    code, _, out = put(leader, "after", "a")
    assert code == 200, out
    acked["after"] = ("a", json.loads(out)["revision"])
    last = json.loads(out)["index"]

    # Restarted without the fault, it starts on its data_dir, catches up and
    # holds every acknowledged write at the revision its reply gave.
    f.start()
    c.wait_ready(nodes=[f], timeout=30)
    wait_for(lambda: f.status()["applied_index"] >= last, timeout=30,
             what=f"{f.name} to apply index {last}")
    assert f.status()["role"] == "follower"
    for key, (value, rev) in sorted(acked.items()):
        code, headers, out = read_local(f, key)
        etag = {k.lower(): v for k, v in headers.items()}.get("etag")
        assert code == 200 and out == value.encode() and etag == f'"{rev}"', \
            (key, code, out, etag, rev)
    assert not [x for x in f.log().splitlines() if STOP_LINE in x][1:], "stopped twice"
