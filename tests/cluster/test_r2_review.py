"""Reviewer R2's regression tests (h7/h8 merges: withdrawn lock waiters,
shutdown, full disks)."""
import json
import time
import re
import threading
import urllib.parse

from harness import wait_for


def lock(node, method, name, query="", timeout=10):
    path = "/v1/locks/" + urllib.parse.quote(name, safe="")
    if query:
        path += "?" + query
    code, _, out = node.request(path, method, None, {}, timeout=timeout)
    return code, (json.loads(out) if out else None)


def requests_total(node):
    _, _, out = node.request("/metrics", "GET", None, {}, timeout=5)
    m = re.search(rb"^jinn_http_requests_total (\d+)", out, re.M)
    return int(m.group(1))


def test_an_acquire_that_commits_during_shutdown_is_not_answered_as_refused(cluster_factory):
    """A waiting acquire still in flight when SIGTERM arrives commits while
    the node drains: it is in the replicated line, but the node can no
    longer withdraw it. Its answer must say so (outcome_unknown), not
    shutting_down, which a client takes as "not applied" and retries while
    the first acquire stays in line to be granted later (a ghost holder)."""
    c = cluster_factory(1, extra_config=["election_timeout 3s"])
    n = c.nodes[0]
    n.env["JINN_TEST_APPEND_DELAY_MS"] = "700"  # each commit takes 0.7 s
    c.start()
    c.wait_leader()
    c.wait_ready()
    code, first = lock(n, "POST", "sd", query="owner=holder&ttl=60s")
    assert code == 200, first
    out = {}

    def call(key, owner):
        try:
            out[key] = lock(n, "POST", "sd", query=f"owner={owner}&ttl=60s&wait=30s",
                            timeout=30)
        except OSError as e:
            out[key] = e

    # w1 is parked: shutdown keeps HTTP up while it is withdrawn.
    t1 = threading.Thread(target=call, args=("w1", "w1"))
    t1.start()
    wait_for(lambda: lock(n, "GET", "sd")[1]["waiting"] == 1, timeout=10, what="w1 in line")
    # w2 reached the node and its acquire is being committed (0.7 s).
    before = requests_total(n)
    t2 = threading.Thread(target=call, args=("w2", "w2"))
    t2.start()
    wait_for(lambda: requests_total(n) >= before + 2, timeout=5, what="w2 received")
    assert n.stop() == 0
    t1.join(timeout=30)
    t2.join(timeout=30)
    n.start()
    c.wait_leader()
    c.wait_ready()
    in_line = lock(n, "GET", "sd")[1]["waiting"]
    r = out.get("w2")
    if isinstance(r, tuple) and r[0] == 409:
        assert r[1]["granted"] is False and in_line == 0, (r, in_line)
    elif isinstance(r, tuple):
        # Still in line (it may be granted later): the answer must not say
        # it was refused or not applied.
        assert r[1]["error"] == "outcome_unknown", (r, in_line)


def test_a_new_leaders_stale_commit_index_does_not_vouch_for_freshness(cluster_factory):
    """After a failover, the new leader does not know the commit index until
    an entry of its own term commits (Raft 5.4.2): the commit index its
    AppendEntries carry can be below writes the old leader acknowledged.
    A node that has applied that stale index is not fresh: here the slow
    node must not serve data without the acknowledged write while
    claiming a leader contact younger than that write."""
    from test_freshness import AP, assert_honest_while_lagging, put, stale_get, \
        start_with_a_slow_follower, value_of
    c = cluster_factory(3, extra_config=AP)
    slow = c.nodes[2]
    slow.env["JINN_TEST_APPEND_DELAY_MS"] = "1500"
    leader = start_with_a_slow_follower(c, slow)
    put(leader, "k", "v1")
    wait_for(lambda: value_of(stale_get(slow, "k")[2]) == "v1", timeout=20, what="slow has v1")
    put(leader, "k", "v2")  # committed by the leader and the fast follower
    acked = time.time()
    leader.kill()  # before a heartbeat tells the others that v2 committed
    others = [n for n in c.nodes if n is not leader]
    c.wait_leader(among=others, timeout=20)
    assert_honest_while_lagging(slow, "k", "v2", acked, 10)
