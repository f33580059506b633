"""Upgrades (issue 16, item 7): a rolling upgrade of a 3-node cluster from
the previous release keeps serving, and a node that meets a command its
build does not know stops with a clear message instead of skipping it.

The previous release is built from git in the test (git archive of a fixed
commit, `make build/jinn`), cached under build/upgrade/COMMIT/ so later runs
start at once. OLD_COMMIT speaks command format 2 and snapshot format 1 with
the same raft transport preamble as this build, but it predates command type
22 (LOCK_ORPHANS), which every leader of this build writes first in its term:
exactly the case the upgrade policy is about."""
import json
import os
import subprocess
import threading

import pytest

import harness
from harness import JINN, wait_for

OLD_COMMIT = "2ccc785"  # Merge branch 'a3', 2026-11-27 07:19 (before LOCK_ORPHANS)
ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))


def old_binary():
    out = os.path.join(ROOT, "build", "upgrade", OLD_COMMIT)
    binary = os.path.join(out, "build", "jinn")
    if os.path.exists(binary):
        return binary
    if subprocess.run(["git", "-C", ROOT, "cat-file", "-e", OLD_COMMIT + "^{commit}"],
                      capture_output=True).returncode != 0:
        pytest.fail(f"commit {OLD_COMMIT} is not in this repository's history")
    tmp = out + ".tmp"
    subprocess.run(["rm", "-rf", tmp], check=True)
    os.makedirs(tmp)
    archive = subprocess.run(["git", "-C", ROOT, "archive", OLD_COMMIT], capture_output=True,
                             check=True).stdout
    subprocess.run(["tar", "-x", "-C", tmp], input=archive, check=True)
    r = subprocess.run(["nice", "make", "-j2", f"REV=old-{OLD_COMMIT}", "build/jinn"], cwd=tmp,
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    subprocess.run(["rm", "-rf", out], check=True)
    os.rename(tmp, out)
    return binary


def start(node, binary, bootstrap=None):
    """Starts node with binary (the harness starts harness.JINN)."""
    saved = harness.JINN
    harness.JINN = binary
    try:
        node.start(bootstrap=bootstrap)
    finally:
        harness.JINN = saved


def version_of(node):
    return node.status()["version"]


class Writer(threading.Thread):
    """Writes KV keys through whichever nodes answer; keeps what was
    acknowledged."""

    def __init__(self, cluster):
        super().__init__(daemon=True)
        self.cluster = cluster
        self.stop = threading.Event()
        self.acked = []
        self.failed = 0

    def run(self):
        i = 0
        while not self.stop.is_set():
            i += 1
            for n in self.cluster.live():
                try:
                    code, _, _ = n.request(f"/v1/kv/up/k{i}", "PUT", f"v{i}".encode(),
                                           timeout=5)
                except OSError:
                    code = 0
                if code in (200, 201):
                    self.acked.append(i)
                    break
                self.failed += 1


def wait_caught_up(cluster, node, what, timeout=60):
    """Waits until node has applied everything the cluster had committed
    when the wait began, and answers /readyz with 200.

    The target is sampled once, not compared live: a follower learns a
    commit index from the leader's next message, so while the Writer runs
    (a new entry every millisecond or so) its applied_index trails the
    leader's current commit_index by an entry or two at any instant. The
    live comparison held only when the Writer happened to pause, and timed
    out now and then on a node that was fully caught up (the same with the
    old build on both sides)."""
    def leader_commit():
        leader = cluster.leader()
        return leader.status()["commit_index"] if leader is not None else None

    target = wait_for(leader_commit, timeout, what="a leader's commit index")
    wait_for(lambda: node.status()["applied_index"] >= target and
             node.request("/readyz", timeout=1.0)[0] == 200, timeout,
             what=f"{what} (applied_index >= {target})")


@pytest.fixture
def old_cluster(cluster_factory):
    old = old_binary()
    c = cluster_factory(3)
    for n in c.nodes:
        start(n, old)
    c.wait_leader(timeout=30)
    c.wait_ready()
    for n in c.nodes:
        assert version_of(n) == f"old-{OLD_COMMIT}"
    return c


def seed(leader):
    code, _, out = leader.request(
        "/v1/sql/app/exec", "POST",
        json.dumps({"statements": [{"sql": "CREATE TABLE t(x)"},
                                   {"sql": "INSERT INTO t VALUES (1), (2)"}]}).encode())
    assert code == 200, out
    assert leader.request("/v1/queues/jobs", "POST", b"job-1")[0] == 201
    code, _, out = leader.request("/v1/locks/owner?owner=alice&ttl=1h", "POST")
    assert code == 200, out


def check_seeded(node):
    code, _, out = node.request("/v1/sql/app/query", "POST",
                                json.dumps({"sql": "SELECT count(*) FROM t"}).encode())
    assert code == 200 and json.loads(out)["rows"] == [[2]], out
    code, _, out = node.request("/v1/queues/jobs")
    assert code == 200 and json.loads(out)["ready"] == 1, out
    code, _, out = node.request("/v1/locks/owner")
    assert code == 200 and json.loads(out)["owner"] == "alice", out


def test_rolling_upgrade_from_previous_release_keeps_serving(old_cluster):
    c = old_cluster
    seed(c.wait_leader())
    writer = Writer(c)
    writer.start()
    try:
        wait_for(lambda: len(writer.acked) >= 20, 30, what="writes to the old cluster")
        # Followers first, the leader last: a leader of this build writes
        # command type 22 at the start of its term, which the old build
        # cannot apply (see test_old_node_stops_at_an_unknown_command).
        leader = c.wait_leader()
        order = [n for n in c.nodes if n is not leader] + [leader]
        for n in order:
            before = len(writer.acked)
            assert n.stop() == 0
            start(n, JINN, bootstrap=False)
            wait_caught_up(c, n, f"{n.name} (new build) caught up")
            assert version_of(n) != f"old-{OLD_COMMIT}"
            assert n.status()["formats"]["command"] >= 2
            wait_for(lambda: len(writer.acked) >= before + 10, 60,
                     what=f"writes served after upgrading {n.name}")
    finally:
        writer.stop.set()
        writer.join(30)
    c.wait_ready()
    leader = c.wait_leader()
    for i in writer.acked:
        code, _, out = leader.request(f"/v1/kv/up/k{i}")
        assert code == 200 and out == f"v{i}".encode(), (i, code, out)
    check_seeded(leader)
    r = subprocess.run([JINN, "check", "--addr", leader.url], capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    for n in c.nodes:
        assert "fatal apply" not in n.log()


def test_old_node_stops_at_an_unknown_command_and_catches_up_once_upgraded(old_cluster):
    c = old_cluster
    leader = c.wait_leader()
    seed(leader)
    new_node = next(n for n in c.nodes if n is not leader)
    old_nodes = [n for n in c.nodes if n is not new_node]
    assert new_node.stop() == 0
    start(new_node, JINN, bootstrap=False)
    wait_caught_up(c, new_node, "the upgraded node caught up")
    # Leadership to the new build: its first command is type 22.
    code, _, out = leader.request(f"/v1/cluster/leader/transfer?to={new_node.name}", "POST")
    assert code == 200, out
    # Its first command goes with the first proposal of its term: a write
    # (else only a timer's due work would make one, whenever that comes).
    # The old nodes stop on it, so the write itself may find no quorum.
    wait_for(lambda: new_node.status()["role"] == "leader", 30, what="the new build leads")
    try:
        new_node.request("/v1/kv/up/first", "PUT", b"x", timeout=5)
    except Exception:
        pass
    # The old nodes stop at that entry, saying why, exit code 3; they do not skip it.
    for n in old_nodes:
        wait_for(lambda: not n.alive(), 30, what=f"{n.name} (old build) stopped")
        assert n.proc.returncode == 3
        log = n.log()
        assert "this build does not know" in log and "upgrade this node" in log, log[-2000:]
    # Upgraded, they replay the entry and the cluster serves everything.
    for n in old_nodes:
        start(n, JINN, bootstrap=False)
    c.wait_ready(timeout=60)
    leader = c.wait_leader(timeout=30)
    check_seeded(leader)
    assert leader.request("/v1/kv/up/after", "PUT", b"x")[0] in (200, 201)
    r = subprocess.run([JINN, "check", "--addr", leader.url], capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
