"""Tokens and rolling upgrades (F1): the `cluster:replica` rule came after
the release fbe5ee0, whose apply refuses it (invalid rules: no token
stored). A token using it is written as TOKEN_PUT2 (32), at which such a
build stops (exit 3, "upgrade this node") instead of storing nothing while
the upgraded replicas store the token; tokens with rules it knows are still
TOKEN_PUT (29) and reach it. Upgraded, it replays the entry and every
replica agrees (`jinn check`)."""
import json
import os
import subprocess

import pytest

from harness import JINN, wait_for
from test_upgrade import ROOT, start, version_of, wait_caught_up

PREV_COMMIT = "fbe5ee0"  # the release before cluster:replica (c12b58b)
BOOT = "boot-secret-0123456789abcdef"
ADMIN = {"Authorization": "Bearer " + BOOT}
EDGE = ["kv:app/*:read", "cluster:replica"]


def prev_binary():
    out = os.path.join(ROOT, "build", "upgrade", PREV_COMMIT)
    binary = os.path.join(out, "build", "jinn")
    if os.path.exists(binary):
        return binary
    if subprocess.run(["git", "-C", ROOT, "cat-file", "-e", PREV_COMMIT + "^{commit}"],
                      capture_output=True).returncode != 0:
        pytest.fail(f"commit {PREV_COMMIT} is not in this repository's history")
    tmp = out + ".tmp"
    subprocess.run(["rm", "-rf", tmp], check=True)
    os.makedirs(tmp)
    archive = subprocess.run(["git", "-C", ROOT, "archive", PREV_COMMIT],
                             capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", tmp], input=archive, check=True)
    r = subprocess.run(["nice", "make", "-j2", f"REV=old-{PREV_COMMIT}", "build/jinn"],
                       cwd=tmp, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    subprocess.run(["rm", "-rf", out], check=True)
    os.rename(tmp, out)
    return binary


def token_names(node):
    code, _, out = node.request("/v1/tokens", headers=ADMIN)
    assert code == 200, out
    return {t["name"]: t for t in json.loads(out)["tokens"]}


def create(node, name, allow):
    body = json.dumps({"name": name, "allow": allow}).encode()
    code, _, out = node.request("/v1/tokens", "POST", body, ADMIN)
    assert code == 201, out


def test_replica_rule_token_stops_an_old_node_instead_of_diverging(cluster_factory):
    old = prev_binary()
    c = cluster_factory(3, extra_config=[f"bootstrap_token {BOOT}"])
    c.auth_headers = ADMIN
    for n in c.nodes:
        start(n, old)
    c.wait_leader(timeout=30)
    c.wait_ready()
    assert all(version_of(n) == f"old-{PREV_COMMIT}" for n in c.nodes)
    for n in c.nodes:
        wait_for(lambda n=n: "bootstrap" in token_names(n), 30,
                 what=f"{n.name} applied the bootstrap token")
    # Two nodes on this build, the leader among them; one old follower.
    leader = c.wait_leader()
    first = next(n for n in c.nodes if n is not leader)
    assert first.stop() == 0
    start(first, JINN, bootstrap=False)
    wait_caught_up(c, first, f"{first.name} (new build) caught up")
    code, _, out = leader.request(f"/v1/cluster/leader/transfer?to={first.name}", "POST",
                                  headers=ADMIN)
    assert code == 200, out
    wait_for(lambda: c.leader() is first, 30, what="the new build leads")
    assert leader.stop() == 0
    start(leader, JINN, bootstrap=False)
    wait_caught_up(c, leader, f"{leader.name} (new build) caught up")
    new_nodes = [first, leader]
    old_node = next(n for n in c.nodes if n not in new_nodes)
    assert version_of(old_node) == f"old-{PREV_COMMIT}"

    # Rules the old build knows: TOKEN_PUT (29), applied there too.
    create(c.wait_leader(), "plain", ["kv:app/*:read"])
    wait_for(lambda: "plain" in token_names(old_node), 30,
             what="the old build applied the plain token")
    assert old_node.alive()

    # cluster:replica: TOKEN_PUT2 (32). Committed by the new nodes; the old
    # one stops at it, saying why, rather than store nothing.
    create(c.wait_leader(), "edge", EDGE)
    for n in new_nodes:
        wait_for(lambda n=n: "edge" in token_names(n), 30, what=f"{n.name} stored edge")
        assert token_names(n)["edge"]["allow"] == EDGE, token_names(n)
    wait_for(lambda: not old_node.alive(), 30, what="the old build stopped")
    assert old_node.proc.returncode == 3
    log = old_node.log()
    assert "type 32" in log and "upgrade this node" in log, log[-2000:]

    # Upgraded, it replays the entry and agrees with the others.
    start(old_node, JINN, bootstrap=False)
    wait_caught_up(c, old_node, f"{old_node.name} (upgraded) caught up")
    assert token_names(old_node)["edge"]["allow"] == EDGE
    r = subprocess.run([JINN, "check", "--addr", c.wait_leader().url], capture_output=True,
                       text=True, timeout=60, env={**os.environ, "JINN_TOKEN": BOOT})
    assert r.returncode == 0, r.stdout + r.stderr
    for n in new_nodes:
        assert "fatal apply" not in n.log()
