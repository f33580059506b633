"""SIGTERM on a leader with linearizable reads in flight: every read the node
received before the signal gets an HTTP answer (200, or 503 shutting_down), none a
closed connection. Before, HTTP stayed up only for lock waits and
unanswered proposals, and waiting reads were failed after HTTP had stopped
(from attacker A4's test_a4_sigterm.py)."""
import threading
import time

from harness import wait_for


def metric(node, name):
    code, _, out = node.request("/metrics")
    assert code == 200
    for line in out.decode().splitlines():
        if line.startswith(name + " "):
            return int(float(line.split()[1]))
    raise AssertionError(f"no {name} in /metrics")


# (A test that every read *sent* before SIGTERM under load is answered was
# dropped: a request still in the client's or the kernel's buffer when HTTP
# closes is reset whatever the node does, 2 in 470 CI runs. What the node
# promises is that reads it has received are answered: the test below
# checks that with reads it has counted as received.)


def test_sigterm_answers_reads_parked_on_an_isolated_leader(cluster_factory):
    """Reads queued behind a barrier that cannot commit (the leader lost
    its quorum) are answered at SIGTERM, not dropped."""
    c = cluster_factory(3, extra_config=["election_timeout 3s"])
    c.start()
    leader = c.wait_leader(timeout=30)
    c.wait_ready(timeout=30)
    assert leader.request("/v1/kv/default/x", "PUT", b"v")[0] == 200
    c.isolate(leader.name)
    base = metric(leader, "jinn_read_barriers_total")
    polls = [0]

    def received():
        polls[0] += 1  # this /metrics request counts itself
        return metric(leader, "jinn_http_requests_total") - polls[0]

    base_req = received()
    results = []

    def one():
        t = time.time()
        try:
            code, _, out = leader.request("/v1/kv/default/x?read=linearizable", timeout=40)
            out = out.decode(errors="replace")
        except Exception as e:
            code, out = -1, repr(e)
        results.append((t, code, out[:100]))

    ts = [threading.Thread(target=one) for _ in range(10)]
    for t in ts:
        t.start()
    # All 10 reads received; one barrier runs (it cannot commit), the other
    # reads queue behind it.
    wait_for(lambda: received() >= base_req + 10, timeout=5, what="10 reads received")
    wait_for(lambda: metric(leader, "jinn_read_barriers_total") >= base + 1, timeout=5,
             what="a read barrier in flight")
    assert not results, results  # still parked
    sig = time.time()
    rc = leader.stop(timeout=60)
    took = time.time() - sig
    for t in ts:
        t.join(60)
    print(f"\nexit {rc} after {took:.2f}s; answers {sorted((r[1], r[2][:70]) for r in results)}")
    assert rc == 0 and took < 12, (rc, took)
    assert len(results) == 10
    assert all(r[1] != -1 for r in results), [r for r in results if r[1] == -1]
    # The queued reads get the node's shutdown error; the one behind the
    # barrier gets what the barrier ended with (leadership lost: no_leader).
    assert all(r[1] == 503 for r in results), results
    assert sum('"shutting_down"' in r[2] for r in results) >= 9, results

