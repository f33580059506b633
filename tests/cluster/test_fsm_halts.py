"""State-machine robustness over HTTP (issue 10 items 2 and 4): requests
that used to crash every replica for good, and the bounded watch history."""
import json
import threading
import urllib.parse

import pytest

from harness import wait_for


def lock(node, method, name, query="", timeout=15):
    path = "/v1/locks/" + urllib.parse.quote(name, safe="")
    if query:
        path += "?" + query
    code, _, out = node.request(path, method, None, {}, timeout=timeout)
    return code, (json.loads(out) if out else None)


@pytest.fixture
def cluster(cluster_factory):
    c = cluster_factory(3).start()
    c.wait_leader()
    c.wait_ready()
    return c


def test_equal_ttl_locks_with_waiters_do_not_crash_the_cluster(cluster):
    """Locks A and B with ttl=1s, then one waiting acquire on each: both
    expire in one command, which grants both with the same token. Every
    node used to abort in link_lock, and again on every restart."""
    node = cluster.leader()
    for name in ("A", "B"):
        code, body = lock(node, "POST", name, "owner=first&ttl=1s")
        assert code == 200, body
    results = {}

    def waiter(name):
        results[name] = lock(node, "POST", name, "owner=second&ttl=1s&wait=10s")

    threads = [threading.Thread(target=waiter, args=(n,)) for n in ("A", "B")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=20)
    for name in ("A", "B"):
        code, body = results[name]
        assert code == 200, (name, body)
        assert body["owner"] == "second"
    for n in cluster.nodes:
        assert n.alive(), n.log()[-3000:]
    # Both grants expire (the old code also lost one from the expiry index).
    for n in cluster.nodes:
        wait_for(lambda: all(lock(n, "GET", name)[0] == 404 for name in ("A", "B")),
                 timeout=10, what=f"both locks expire on {n.name}")
    # A restarted node replays the entries that used to crash it.
    victim = next(n for n in cluster.nodes if n is not cluster.leader())
    target = cluster.leader().status()["applied_index"]
    assert victim.stop() == 0
    victim.start()
    wait_for(lambda: victim.status()["applied_index"] >= target, timeout=20,
             what="the restarted node catches up")
    wait_for(lambda: lock(victim, "GET", "A")[0] == 404, timeout=10, what="replayed state")
    assert victim.alive(), victim.log()[-3000:]
    for n in cluster.nodes:
        assert "Assertion" not in n.log() and "fatal apply" not in n.log()
