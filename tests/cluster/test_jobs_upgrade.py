"""Jobs and rolling upgrades (issue 14, J1): a deploy that uses no jobs
setting is still written as FN_DEPLOY (23), which a build from before jobs
applies; one with `cron` or `workers` is FN_DEPLOY2 (28), at which such a
build stops (exit 3, "upgrade this node") instead of applying it
differently; upgraded, it replays the entry and every replica agrees
(`jinn check`, whose digest leaves out the empty jobs section)."""
import json
import os
import subprocess

import pytest

from harness import JINN, wait_for
from test_fn_registry import HELLO, deploy, fn, wat
from test_upgrade import ROOT, start, version_of, wait_caught_up

PRE_JOBS_COMMIT = "99a21a1"  # main before jobs: functions (23-25), snapshot format 2


def pre_jobs_binary():
    out = os.path.join(ROOT, "build", "upgrade", PRE_JOBS_COMMIT)
    binary = os.path.join(out, "build", "jinn")
    if os.path.exists(binary):
        return binary
    if subprocess.run(["git", "-C", ROOT, "cat-file", "-e", PRE_JOBS_COMMIT + "^{commit}"],
                      capture_output=True).returncode != 0:
        pytest.fail(f"commit {PRE_JOBS_COMMIT} is not in this repository's history")
    tmp = out + ".tmp"
    subprocess.run(["rm", "-rf", tmp], check=True)
    os.makedirs(tmp)
    archive = subprocess.run(["git", "-C", ROOT, "archive", PRE_JOBS_COMMIT],
                             capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", tmp], input=archive, check=True)
    r = subprocess.run(["nice", "make", "-j2", f"REV=old-{PRE_JOBS_COMMIT}", "build/jinn"],
                       cwd=tmp, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    subprocess.run(["rm", "-rf", out], check=True)
    os.rename(tmp, out)
    return binary


def test_plain_deploy_reaches_old_builds_cron_deploy_stops_them(cluster_factory, tmp_path):
    old = pre_jobs_binary()
    c = cluster_factory(3)
    for n in c.nodes:
        start(n, old)
    c.wait_leader(timeout=30)
    c.wait_ready()
    assert all(version_of(n) == f"old-{PRE_JOBS_COMMIT}" for n in c.nodes)
    leader = c.wait_leader()
    new_node = next(n for n in c.nodes if n is not leader)
    old_nodes = [n for n in c.nodes if n is not new_node]
    assert new_node.stop() == 0
    start(new_node, JINN, bootstrap=False)
    wait_caught_up(c, new_node, "the upgraded node caught up")
    code, _, out = leader.request(f"/v1/cluster/leader/transfer?to={new_node.name}", "POST")
    assert code == 200, out
    wait_for(lambda: c.leader() is new_node, 30, what="the new build leads")
    module = wat(tmp_path, HELLO, "hello")

    # No jobs setting: type 23, applied by the old builds too.
    code, out = deploy(new_node, "plain", module, route="/plain")
    assert code == 201, out
    for n in old_nodes:
        wait_for(lambda n=n: fn(n, "GET", "/plain")[0] == 200, 30,
                 what=f"{n.name} (old build) applied the plain deploy")
        assert n.alive()
    # R1-F1/F2: while mixed, the replica check agrees: the digest leaves out
    # the default signing policy and the messages' leased_ms (an old build
    # has neither), so the upgraded node is not called diverged. A message
    # leased by hand gives every replica a lease to record.
    code, _, out = new_node.request("/v1/queues/mixed", "POST", b"{}")
    assert code == 201, out
    code, _, out = new_node.request("/v1/queues/mixed/fetch?worker=w1", "POST")
    assert code == 200, out
    r = subprocess.run([JINN, "check", "--addr", new_node.url], capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr

    # A schedule: type 28; the old builds stop at it, saying why.
    code, out = deploy(new_node, "tick", module, cron="@every 1h")
    assert code == 201, out  # committed on the new node's log with... a quorum
    for n in old_nodes:
        wait_for(lambda n=n: not n.alive(), 30, what=f"{n.name} (old build) stopped")
        assert n.proc.returncode == 3
        log = n.log()
        assert "this build does not know" in log and "upgrade this node" in log, log[-2000:]
    # Upgraded, they replay it and agree on the schedule.
    for n in old_nodes:
        start(n, JINN, bootstrap=False)
    c.wait_ready(timeout=60)
    leader = c.wait_leader(timeout=30)
    ticks = set()
    for n in c.nodes:
        code, out = fn(n, "GET", "/tick")
        assert code == 200, out
        ticks.add(out["cron_next_ms"])
    assert len(ticks) == 1 and ticks.pop() % 3600000 == 0
    r = subprocess.run([JINN, "check", "--addr", leader.url], capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    code, _, out = leader.request("/v1/status")
    assert json.loads(out)["formats"]["snapshot"] == 3
