"""Honest freshness (issue 12 item 1): X-Jinn-Leader-Contact-Ms, status and
max_staleness measure how long ago this node was known to have applied
everything the leader had committed, not when it last got a heartbeat."""
import time

import pytest

from harness import wait_for

AP = ["consensus {", "    sessions { mode ap  max_staleness 1h }", "}"]


def put(node, key, value):
    code, hdr, body = node.request(f"/v1/kv/sessions/{key}", "PUT", value.encode())
    assert code == 200, body
    return hdr


def stale_get(node, key):
    code, hdr, body = node.request(f"/v1/kv/sessions/{key}?consistency=stale", timeout=5)
    return code, hdr, body


def value_of(body):
    return body.decode(errors="replace") if body is not None else None


def start_with_a_slow_follower(c, slow):
    """Starts the cluster (bootstrap needs every peer) so that `slow` ends up
    a follower: if it won the election, it hands leadership over."""
    c.start()
    leader = c.wait_leader()
    if leader is slow:
        assert slow.stop() == 0  # SIGTERM hands leadership to another voter
        slow.start()
        leader = c.wait_leader(among=[n for n in c.nodes if n is not slow])
    c.wait_ready([leader])
    wait_for(lambda: slow.alive() and slow.request("/healthz", timeout=1)[0] == 200,
             what="the slow node serves")
    return leader


def assert_honest_while_lagging(node, key, new, acked_at, seconds):
    """Every read that does not show `new` (acked at acked_at) must report a
    staleness at least as old as that write. Returns how long it lagged."""
    lagged = 0.0
    deadline = time.time() + seconds
    while time.time() < deadline:
        t = time.time()
        code, hdr, body = stale_get(node, key)
        if code != 200:
            continue
        if value_of(body) == new:
            break
        contact = int(hdr["X-Jinn-Leader-Contact-Ms"])
        assert contact < 0 or contact >= (t - acked_at) * 1000 - 60, \
            f"served data {t - acked_at:.3f}s older than a committed write but " \
            f"claimed leader contact {contact} ms"
        lagged = max(lagged, t - acked_at)
        time.sleep(0.02)
    return lagged


def test_a_follower_with_a_slow_disk_reports_its_real_staleness(cluster_factory):
    c = cluster_factory(3, extra_config=AP)
    slow = c.nodes[2]
    slow.env["JINN_TEST_APPEND_DELAY_MS"] = "1500"
    leader = start_with_a_slow_follower(c, slow)
    put(leader, "k", "v1")
    wait_for(lambda: value_of(stale_get(slow, "k")[2]) == "v1", timeout=20, what="slow has v1")
    put(leader, "k", "v2")
    acked = time.time()
    lagged = assert_honest_while_lagging(slow, "k", "v2", acked, 10)
    assert lagged > 0.5  # the scenario happened: heartbeats flowed while it lagged
    # The status says the same, and max_staleness refuses such reads.
    put(leader, "k", "v3")
    acked = time.time()
    wait_for(lambda: time.time() - acked > 0.8, what="time passes")
    st = slow.status()
    if st["applied_index"] < leader.status()["commit_index"]:
        assert st["leader_contact_ms"] is None or st["leader_contact_ms"] >= 700


def test_a_follower_catching_up_after_restart_is_not_fresh(cluster_factory):
    c = cluster_factory(3, extra_config=AP).start()
    leader = c.wait_leader()
    c.wait_ready()
    lagger = next(n for n in c.nodes if n is not leader)
    put(leader, "k", "old")
    wait_for(lambda: value_of(stale_get(lagger, "k")[2]) == "old", what="lagger has old")
    lagger.kill()
    blob = "x" * 3000  # (bodies > ~16 KiB trip an http.c buffer bug; see report)
    for i in range(300):  # a backlog of 300 entries
        put(leader, f"bulk{i}", blob)
    put(leader, "k", "new")
    # Restarted with a slow disk so the catch-up takes a while.
    lagger.env["JINN_TEST_APPEND_DELAY_MS"] = "400"
    lagger.start()
    acked = time.time()
    wait_for(lambda: lagger.request("/healthz", timeout=1)[0] == 200, what="lagger up")
    assert_honest_while_lagging(lagger, "k", "new", acked, 20)


def test_a_cut_off_leader_reports_itself_stale(cluster_factory):
    c = cluster_factory(3, extra_config=AP).start()
    leader = c.wait_leader()
    c.wait_ready()
    put(leader, "k", "v")
    wait_for(lambda: 0 <= leader.status()["leader_contact_ms"] < 400, what="fresh leader")
    c.isolate(leader.name)
    cut = time.time()
    checked = 0
    while time.time() - cut < 3:
        t = time.time()
        st = leader.status()
        if st["role"] != "leader":
            break
        if t - cut > 0.3:
            contact = st["leader_contact_ms"]
            assert contact is None or contact >= (t - cut) * 1000 - 150, (t - cut, contact)
            checked += 1
        time.sleep(0.02)
    # Past the election timeout (500 ms) it says it has no quorum.
    st = leader.status()
    assert st["role"] != "leader" or not st["quorum"]
    code, _, _ = stale_get(leader, "k")
    assert checked > 0 or st["role"] != "leader"


def test_a_paused_follower_does_not_claim_freshness_it_lost(cluster_factory):
    import threading
    c = cluster_factory(3, extra_config=AP).start()
    leader = c.wait_leader()
    c.wait_ready()
    follower = next(n for n in c.nodes if n is not leader)
    put(leader, "k", "before")
    wait_for(lambda: value_of(stale_get(follower, "k")[2]) == "before", what="follower has it")
    follower.pause()
    try:
        put(leader, "k", "after")
        acked = time.time()
        result = {}
        # Asked while paused: answered first thing after SIGCONT.
        t = threading.Thread(target=lambda: result.update(r=stale_get(follower, "k")))
        t.start()
        wait_for(lambda: time.time() - acked > 1.0, what="a second passes")
    finally:
        follower.resume()
    t.join(timeout=10)
    code, hdr, body = result["r"]
    assert code == 200, body
    if value_of(body) != "after":
        contact = int(hdr["X-Jinn-Leader-Contact-Ms"])
        assert contact < 0 or contact >= 1000 - 60, contact
