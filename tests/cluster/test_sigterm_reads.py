"""SIGTERM on a leader with linearizable reads in flight: every read sent
before the signal gets an HTTP answer (200, or 503 shutting_down), none a
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


def dropped(results, sig):
    """Requests sent before the signal that got no HTTP answer (a refused
    connect is a request sent after HTTP stopped: fine)."""
    return [r for r in results if r[1] == -1 and r[0] < sig
            and "Refused" not in r[2]]


def test_sigterm_answers_linearizable_reads_under_load(cluster_factory):
    c = cluster_factory(3)
    c.start()
    leader = c.wait_leader()
    c.wait_ready()
    assert leader.request("/v1/kv/default/x", "PUT", b"v")[0] == 200
    results = []
    sig = [None]

    def loop():
        while True:
            t = time.time()
            try:
                code, _, out = leader.request("/v1/kv/default/x?read=linearizable", timeout=30)
                out = out.decode(errors="replace")
            except Exception as e:
                code, out = -1, repr(e)
            results.append((t, code, out[:100]))
            if sig[0] is not None and t > sig[0]:
                return

    ts = [threading.Thread(target=loop) for _ in range(12)]
    for t in ts:
        t.start()
    base = metric(leader, "jinn_reads_linearized_total")
    wait_for(lambda: metric(leader, "jinn_reads_linearized_total") >= base + 100, timeout=20,
             what="100 linearizable reads served")
    sig[0] = time.time()
    rc = leader.stop(timeout=60)
    took = time.time() - sig[0]
    for t in ts:
        t.join(60)
    lost = dropped(results, sig[0])
    codes = sorted({r[1] for r in results})
    print(f"\nexit {rc} after {took:.2f}s; {len(results)} reads, codes {codes}, dropped {len(lost)}")
    assert rc == 0 and took < 12, (rc, took)
    assert not lost, lost[:5]
    assert {r[1] for r in results if r[0] < sig[0] and r[1] != -1} <= {200, 503}, codes


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

