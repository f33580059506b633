"""Work queues on a real cluster: failover of workers, nak delays, dead
letters, idempotent publishing, minorities and bad input."""
import json
import signal
import threading
import time

import pytest

from harness import wait_for

QUEUES = ["queues {", "    jobs { ack_wait 1s  max_deliver 10  backoff 200ms }",
          "    flaky { ack_wait 5s  max_deliver 2  backoff 100ms }", "}"]


def q(node, method, path, body=None, headers=None, timeout=10):
    code, h, out = node.request("/v1/queues" + path, method, body, headers or {},
                                timeout=timeout)
    try:
        return code, json.loads(out) if out else None
    except ValueError:
        return code, out


@pytest.fixture
def cluster(cluster_factory):
    c = cluster_factory(3, extra_config=QUEUES).start()
    c.wait_leader()
    c.wait_ready()
    for n in c.nodes:
        wait_for(lambda: n.status()["leader"]["api"], what=f"{n.name} knows the leader's API")
    return c


def test_killed_node_workers_jobs_are_redelivered_none_lost(cluster):
    total = 60
    for i in range(total):
        code, body = q(cluster.nodes[i % 3], "POST", "/jobs", f"job-{i}".encode())
        assert code == 201, body
    leader = cluster.leader()
    doomed = next(n for n in cluster.nodes if n is not leader)
    survivors = [n for n in cluster.nodes if n is not doomed]
    # Workers on the doomed node lease jobs and never finish them.
    held = []
    for w in range(2):
        code, jobs = q(doomed, "POST", f"/jobs/fetch?worker=doomed-{w}&max=5")
        assert code == 200
        held += [j["seq"] for j in jobs]
    assert len(held) == 10
    doomed.kill()
    deliveries, acked, lock = {}, set(), threading.Lock()
    stop = threading.Event()

    def worker(node, name):
        while not stop.is_set():
            code, jobs = q(node, "POST", f"/jobs/fetch?worker={name}&max=4&wait=500ms",
                           timeout=15)
            if code != 200:
                continue  # electing: try again
            for j in jobs:
                with lock:
                    deliveries.setdefault(j["seq"], []).append(j["delivery"])
                code, _ = q(node, "POST", f"/jobs/{j['seq']}/ack?worker={name}")
                if code == 200:
                    with lock:
                        acked.add(j["seq"])

    threads = [threading.Thread(target=worker, args=(n, f"{n.name}-w{k}"))
               for n in survivors for k in range(2)]
    for t in threads:
        t.start()
    try:
        wait_for(lambda: len(acked) == total, timeout=60, what="every job acked")
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert len(acked) == total  # none lost
    # Only the jobs whose leases died with their workers were delivered again.
    redelivered = {seq for seq, ds in deliveries.items() if max(ds) > 1}
    assert redelivered == set(held), (redelivered, held)
    st = q(survivors[0], "GET", "/jobs")[1]
    assert (st["ready"], st["leased"], st["dead"], st["acked"]) == (0, 0, 0, total)


def test_nak_delay_is_respected_in_cluster_time(cluster):
    n = cluster.nodes[0]
    seq = q(n, "POST", "/jobs", b"retry-me")[1]["seq"]
    [job] = q(n, "POST", "/jobs/fetch?worker=w")[1]
    assert job["seq"] == seq and job["delivery"] == 1
    t0 = time.monotonic()
    assert q(n, "POST", f"/jobs/{seq}/nak?worker=w&delay=800ms&reason=try+later")[0] == 200
    assert q(n, "POST", "/jobs/fetch?worker=w")[1] == []  # not yet
    assert q(n, "GET", "/jobs")[1]["delayed"] == 1

    def redelivered():
        code, jobs = q(n, "POST", "/jobs/fetch?worker=w&wait=2s", timeout=10)
        return jobs if code == 200 and jobs else None
    [again] = wait_for(redelivered, timeout=10, what="redelivery after the delay")
    assert time.monotonic() - t0 >= 0.8  # safety bound: never before the delay
    assert again["seq"] == seq and again["delivery"] == 2


def test_max_deliver_dead_letters_with_reason_and_requeue(cluster):
    n = cluster.nodes[1]
    seq = q(n, "POST", "/flaky", b"poison")[1]["seq"]
    for attempt in (1, 2):
        def got():
            code, jobs = q(n, "POST", "/flaky/fetch?worker=w&wait=2s", timeout=10)
            return jobs if code == 200 and jobs else None
        [job] = wait_for(got, timeout=10, what=f"delivery {attempt}")
        assert job["delivery"] == attempt
        assert q(n, "POST", f"/flaky/{seq}/nak?worker=w&reason=crash+{attempt}")[0] == 200
    dead = q(n, "GET", "/flaky/dead")[1]["dead"]
    assert [(d["seq"], d["reason"], d["delivery"]) for d in dead] == [(seq, "crash 2", 2)]
    assert q(n, "GET", "/flaky")[1]["dead"] == 1
    assert q(n, "POST", f"/flaky/dead/{seq}/requeue")[0] == 200
    [job] = q(n, "POST", "/flaky/fetch?worker=w")[1]
    assert (job["seq"], job["delivery"]) == (seq, 1)
    assert q(n, "POST", f"/flaky/{seq}/term?worker=w&reason=give+up")[0] == 200
    assert q(n, "DELETE", f"/flaky/dead/{seq}")[0] == 200
    assert q(n, "GET", "/flaky")[1]["dead"] == 0


def test_idempotent_publish_under_retries(cluster):
    first = q(cluster.nodes[0], "POST", "/jobs", b"once", {"Idempotency-Key": "order-77"})
    again = q(cluster.nodes[2], "POST", "/jobs", b"once", {"Idempotency-Key": "order-77"})
    assert first[0] == 201 and again[0] == 200
    assert again[1] == {"seq": first[1]["seq"], "duplicate": True}
    assert q(cluster.nodes[1], "GET", "/jobs")[1]["published"] == 1


def test_minority_node_cannot_publish_fetch_or_ack(cluster):
    leader = cluster.leader()
    lonely = next(n for n in cluster.nodes if n is not leader)
    seq = q(leader, "POST", "/jobs", b"x")[1]["seq"]
    [job] = q(lonely, "POST", "/jobs/fetch?worker=lonely-w")[1]
    cluster.isolate(lonely.name)
    wait_for(lambda: lonely.status()["quorum"] is False, what="the cut-off node notices")
    assert q(lonely, "POST", "/jobs", b"lost?")[0] == 503
    assert q(lonely, "POST", "/jobs/fetch?worker=w")[0] == 503
    assert q(lonely, "POST", f"/jobs/{job['seq']}/ack?worker=lonely-w")[0] == 503
    assert q(lonely, "GET", "/jobs")[0] == 503
    cluster.heal()
    wait_for(lambda: lonely.status()["quorum"], what="healed")
    st = q(lonely, "GET", "/jobs")[1]
    assert st["published"] == 1 and st["acked"] == 0  # nothing it said was applied
    assert seq == job["seq"]


def test_bad_input(cluster):
    n = cluster.nodes[0]
    q(n, "POST", "/jobs", b"x")
    cases = [
        (q(n, "POST", "/jobs/fetch"), 400, "worker"),
        (q(n, "POST", "/jobs/fetch?worker=w&max=0"), 400, "max"),
        (q(n, "POST", "/jobs/fetch?worker=w&max=9999"), 400, "max"),
        (q(n, "POST", "/jobs/fetch?worker=w&wait=-1s"), 400, "wait"),
        (q(n, "POST", "/jobs/fetch?worker=w&ack_wait=0s"), 400, "ack_wait"),
        (q(n, "POST", "/jobs/1/nak?worker=w&delay=-2s"), 400, "delay"),
        (q(n, "POST", "/jobs/abc/ack?worker=w"), 400, "seq"),
        (q(n, "POST", "/jobs/99999999999999999999/ack?worker=w"), 400, "seq"),
        (q(n, "POST", "/jobs/-1/ack?worker=w"), 400, "seq"),
        (q(n, "POST", "/jobs/fetch?worker=w&max=99999999999999999999"), 400, "max"),
        (q(n, "POST", "/jobs/fetch?worker=w&max=-1"), 400, "max"),
        (q(n, "POST", "/jobs/fetch?worker=w&max="), 400, "max"),
        (q(n, "POST", "/jobs/fetch", b'{"worker": "w", "max": -3}'), 400, "max"),
        (q(n, "POST", "/jobs/1/ack?worker=w&delivery=99999999999999999999"), 400, "delivery"),
        (q(n, "POST", "/jobs/999999/ack?worker=w"), 404, "no such message"),
        (q(n, "POST", "/bad%20name"), 400, "queue name"),
        (q(n, "POST", "/jobs", b"x", {"Idempotency-Key": "k" * 300}), 400, "Idempotency-Key"),
        (q(n, "POST", "/jobs/fetch", b"[1]"), 400, "object"),
        (q(n, "GET", "/nosuchqueue"), 404, "no such queue"),
    ]
    for (code, body), want, text in cases:
        assert code == want, body
        assert text in body["message"], body
    assert q(n, "POST", "/jobs", b"x" * (1024 * 1024 + 1))[0] == 413


def _fetch_in_background(node, path, results, timeout=60):
    def run():
        try:
            results.append(q(node, "POST", path, timeout=timeout)[0])
        except Exception as e:  # the node went away: the connection ends
            results.append(repr(e))
    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t


def test_sigterm_to_follower_relaying_a_long_poll_fetch_exits(cluster):
    leader = cluster.leader()
    follower = next(n for n in cluster.nodes if n is not leader)
    results = []
    t = _fetch_in_background(follower, "/jobs/fetch?worker=relayed&wait=60s", results)
    # The relay is open when the leader holds the parked fetch.
    wait_for(lambda: "jinn_forwards_total 1" in
             follower.request("/metrics")[2].decode(), what="the fetch to be relayed")
    time.sleep(0.2)  # let the leader park it (nothing observable to poll there)
    t0 = time.monotonic()
    follower.proc.send_signal(signal.SIGTERM)
    code = follower.proc.wait(timeout=15)
    took = time.monotonic() - t0
    print(f"follower exit after SIGTERM with a relayed long-poll: {took * 1000:.0f} ms")
    assert code == 0, follower.log()[-3000:]
    assert took < 5
    assert "exiting anyway" not in follower.log()
    t.join(timeout=5)
    assert results and results[0] != 200  # answered (an error) or cut, never hung
    # The data_dir lock was released: the node restarts and rejoins.
    follower.start()
    wait_for(lambda: follower.status()["role"] == "follower", timeout=20,
             what="the restarted follower to rejoin")
    wait_for(lambda: q(follower, "POST", "/jobs", b"after-restart")[0] == 201, timeout=20,
             what="a publish through the restarted follower")


def test_sigterm_to_leader_with_parked_and_proposed_fetches_exits_cleanly(cluster):
    # Repeat to catch the moment a FETCH is in the log but not yet applied.
    for rnd in range(3):
        leader = cluster.wait_leader()
        cluster.wait_ready()
        results, threads = [], []
        for w in range(12):
            threads.append(_fetch_in_background(
                leader, f"/jobs/fetch?worker=p{rnd}-{w}&wait=30s", results))
        wait_for(lambda: f'jinn_http_connections_open' in leader.request("/metrics")[2].decode()
                 and int(next(line.split()[1] for line in
                              leader.request("/metrics")[2].decode().splitlines()
                              if line.startswith("jinn_http_connections_open"))) >= 13,
                 what="the fetches to be parked")
        time.sleep(0.1)
        # A publish wakes every parked fetcher: each proposes a FETCH on the
        # next loop turn; SIGTERM lands while they are in the log.
        code, body = q(leader, "POST", "/jobs", f"wake-{rnd}".encode())
        assert code == 201, body
        leader.proc.send_signal(signal.SIGTERM)
        code = leader.proc.wait(timeout=20)
        assert code == 0, leader.log()[-3000:]
        for t in threads:
            t.join(timeout=10)
        assert len(results) == 12  # every client got an answer or a closed connection
        leader.start()
        wait_for(lambda: leader.status()["role"] in ("follower", "leader"), timeout=20,
                 what="the old leader to rejoin")
    # (the conftest fails the test on any sanitizer report in a log)


def test_fetch_reply_stops_at_its_byte_limit(cluster):
    """A fetch leases no more than fit in a reply of 8 MiB
    (JINN_QUEUE_FETCH_REPLY_MAX, payloads counted as the reply encodes
    them), the first message always; the rest stay ready for the next."""
    leader = cluster.wait_leader()
    text = b"a" * 1000000  # 1 000 096 bytes in the reply: 8 fit
    for _ in range(10):
        assert q(leader, "POST", "/big", text)[0] == 201
    code, got = q(leader, "POST", "/big/fetch?worker=w&max=256", timeout=60)
    assert code == 200 and len(got) == 8, (code, len(got))
    assert all(m["payload"] == text.decode() for m in got)
    code, got = q(leader, "POST", "/big/fetch?worker=w&max=256", timeout=60)
    assert code == 200 and len(got) == 2, (code, len(got))
    # Control characters are 6 bytes each as \u00XX: 200 000 of them cost
    # 1 200 096, so 6 fit.
    ctl = b"\x01" * 200000
    for _ in range(8):
        assert q(leader, "POST", "/ctl", ctl)[0] == 201
    code, got = q(leader, "POST", "/ctl/fetch?worker=w&max=256", timeout=60)
    assert code == 200 and len(got) == 6, (code, len(got))
    assert got[0]["payload"] == ctl.decode()
    code, got = q(leader, "POST", "/ctl/fetch?worker=w&max=256", timeout=60)
    assert code == 200 and len(got) == 2, (code, len(got))
    code, body = q(leader, "GET", "/big")
    assert code == 200 and body["leased"] == 10 and body["ready"] == 0, body
