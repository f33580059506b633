"""The key-value store on a real cluster: API, races, TTLs, watches,
partitions and a linearizability check under faults."""
import json
import random
import threading
import time
import urllib.parse

import pytest

from harness import wait_for
from linearizability import check

POLICIES = ["consensus {", "    pay { mode cp }",
            "    web { mode ap  stale_reads true }",
            "    edge { mode ap  max_staleness 1s }", "}"]


def kv(node, method, ns, key=None, body=None, headers=None, query="", timeout=10):
    path = "/v1/kv/" + urllib.parse.quote(ns, safe="")
    if key is not None:
        path += "/" + urllib.parse.quote(key, safe="")
    if query:
        path += "?" + query
    return node.request(path, method, body, headers or {}, timeout=timeout)


def put(node, ns, key, value, **kw):
    return kv(node, "PUT", ns, key, value.encode() if isinstance(value, str) else value, **kw)


@pytest.fixture
def cluster(cluster_factory):
    c = cluster_factory(3, extra_config=POLICIES).start()
    c.wait_leader()
    c.wait_ready()
    for n in c.nodes:  # every node can forward to the leader
        wait_for(lambda: n.status()["leader"]["api"], what=f"{n.name} knows the leader's API")
    return c


def test_put_get_conditions_and_listing(cluster):
    n = cluster.nodes[1]
    code, h, out = put(n, "pay", "acct/1", "100")
    assert code == 200, out
    rev = json.loads(out)["revision"]
    assert h["ETag"] == f'"{rev}"'
    code, h, out = kv(n, "GET", "pay", "acct/1")
    assert (code, out, h["ETag"]) == (200, b"100", f'"{rev}"')
    assert h["X-Jinn-Consistency"] == "linearizable"
    # create-only and compare-and-set
    code, _, out = put(n, "pay", "acct/1", "x", headers={"If-None-Match": "*"})
    assert code == 412 and json.loads(out)["revision"] == rev
    code, _, out = put(n, "pay", "acct/1", "90", headers={"If-Match": f'"{rev + 1000}"'})
    assert code == 412 and json.loads(out)["revision"] == rev
    code, _, out = put(n, "pay", "acct/1", "90", headers={"If-Match": f'"{rev}"'})
    assert code == 200
    rev2 = json.loads(out)["revision"]
    assert rev2 > rev
    # listing, paging and values
    for i in range(5):
        assert put(n, "pay", f"acct/{i + 2}", f"v{i}")[0] == 200
    code, _, out = kv(n, "GET", "pay", query="prefix=acct/&limit=4&values=1")
    page = json.loads(out)
    assert [k["key"] for k in page["keys"]] == ["acct/1", "acct/2", "acct/3", "acct/4"]
    assert page["more"] is True and page["keys"][0]["value"] == "90"
    code, _, out = kv(n, "GET", "pay", query="prefix=acct/&start_after=acct/4")
    assert [k["key"] for k in json.loads(out)["keys"]] == ["acct/5", "acct/6"]
    # binary values round-trip; listings show them as base64
    blob = bytes(range(256))
    assert put(n, "web", "blob", blob)[0] == 200
    assert kv(n, "GET", "web", "blob", query="consistency=linearizable")[2] == blob
    listed = json.loads(kv(n, "GET", "web", query="values=1&consistency=linearizable")[2])
    assert "value_base64" in listed["keys"][0]
    # delete, conditional delete, missing key
    assert kv(n, "DELETE", "pay", "acct/2", headers={"If-Match": '"1"'})[0] == 412
    assert kv(n, "DELETE", "pay", "acct/2")[0] == 200
    assert kv(n, "DELETE", "pay", "acct/2")[0] == 404
    assert kv(n, "GET", "pay", "acct/2")[0] == 404


def test_bad_input_gets_clear_4xx(cluster):
    n = cluster.nodes[0]
    cases = [
        (put(n, "pay", "k", "v", headers={"If-Match": "abc"}), 400, "If-Match"),
        (put(n, "pay", "k", "v", headers={"If-Match": '"0"'}), 400, "If-Match"),
        (put(n, "pay", "k", "v", headers={"If-None-Match": "foo"}), 400, "If-None-Match"),
        (put(n, "pay", "k" * 1025, "v"), 400, "key"),
        (put(n, "bad ns!", "k", "v"), 400, "namespace"),
        (put(n, "..", "k", "v"), 400, "namespace"),  # dot segments: unreachable by URL
        (put(n, ".", "k", "v"), 400, "namespace"),
        (put(n, "pay", "k", "v", query="ttl=soon"), 400, "ttl"),
        (put(n, "pay", "k", "v", query="ttl=0s"), 400, "ttl"),
        (kv(n, "GET", "pay", "k", query="consistency=stale"), 400, "not allowed"),
        (kv(n, "GET", "pay", "k", query="consistency=maybe"), 400, "consistency"),
        (kv(n, "GET", "pay", query="limit=100000"), 400, "limit"),
        (kv(n, "GET", "pay", query="watch=1&timeout=1h"), 400, "timeout"),
        (put(n, "pay", "k", b"x" * (1024 * 1024 + 1)), 413, ""),
    ]
    for (code, _, out), want, text in cases:
        assert code == want, out
        if want != 413:
            assert text in json.loads(out)["message"], out
    assert kv(n, "GET", "pay", "k")[0] == 404  # nothing was written


def test_racing_creates_exactly_one_wins(cluster):
    results = []
    lock = threading.Lock()

    def racer(i):
        node = cluster.nodes[i % 3]
        code, _, _ = put(node, "pay", "lock", f"owner-{i}", headers={"If-None-Match": "*"})
        with lock:
            results.append((code, i))

    threads = [threading.Thread(target=racer, args=(i,)) for i in range(24)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    winners = [i for code, i in results if code == 200]
    assert len(winners) == 1, results
    assert all(code == 412 for code, i in results if i not in winners), results
    assert kv(cluster.nodes[0], "GET", "pay", "lock")[2] == f"owner-{winners[0]}".encode()


def test_ttl_expires_at_the_same_revision_everywhere(cluster):
    n = cluster.nodes[0]
    code, _, out = put(n, "web", "session", "s1", query="ttl=400ms")
    assert code == 200
    rev = json.loads(out)["revision"]
    expired = {}
    for node in cluster.nodes:
        def seen():
            _, _, o = kv(node, "GET", "web", query=f"watch=1&after={rev}&timeout=5s")
            evs = [e for e in json.loads(o)["events"] if e["type"] == "expire"]
            return evs[0] if evs else None
        expired[node.name] = wait_for(seen, timeout=10, what=f"expiry seen on {node.name}")
    assert len({e["revision"] for e in expired.values()}) == 1, expired
    for node in cluster.nodes:
        assert kv(node, "GET", "web", "session", query="consistency=stale")[0] == 404


def test_watch_misses_nothing_across_a_leader_change(cluster):
    leader = cluster.leader()
    watcher_node = next(n for n in cluster.nodes if n is not leader)
    start = json.loads(kv(watcher_node, "GET", "web", query="consistency=linearizable")[2])
    events, stop = [], threading.Event()

    def watch():
        after = start["revision"]
        while not stop.is_set():
            code, _, out = kv(watcher_node, "GET", "web",
                              query=f"watch=1&prefix=w/&after={after}&timeout=1s")
            if code != 200:
                time.sleep(0.05)  # the node may be electing; retry
                continue
            body = json.loads(out)
            events.extend(body["events"])
            after = body["revision"]

    t = threading.Thread(target=watch)
    t.start()
    acked = {}
    writer = next(n for n in cluster.nodes if n is not leader and n is not watcher_node)
    for i in range(40):
        if i == 15:
            leader.kill()
        def attempt():
            code, _, out = put(writer, "web", f"w/{i}", f"v{i}", timeout=6)
            return json.loads(out)["revision"] if code == 200 else None
        acked[f"w/{i}"] = wait_for(attempt, timeout=20, what=f"write {i}")
    wait_for(lambda: any(e["key"] == "w/39" for e in events), what="the last event")
    stop.set()
    t.join()
    revisions = [e["revision"] for e in events]
    assert revisions == sorted(revisions)
    seen = {(e["key"], e["revision"]) for e in events}
    for key, rev in acked.items():
        assert (key, rev) in seen, (key, rev)


def test_partition_cp_refuses_ap_serves_stale_then_converges(cluster):
    leader = cluster.leader()
    lonely = next(n for n in cluster.nodes if n is not leader)
    assert put(leader, "pay", "balance", "10")[0] == 200
    assert put(leader, "web", "theme", "dark")[0] == 200
    wait_for(lambda: kv(lonely, "GET", "web", "theme", query="consistency=stale")[2] == b"dark",
             what="replicated")
    cluster.isolate(lonely.name)
    majority = [n for n in cluster.nodes if n is not lonely]
    wait_for(lambda: lonely.status()["quorum"] is False, what="lonely node notices")
    # CP: refused, fast, with Retry-After; nothing it accepted is applied later.
    t0 = time.monotonic()
    code, h, _ = kv(lonely, "GET", "pay", "balance")
    assert code == 503 and h["Retry-After"] == "1"
    code, _, _ = put(lonely, "pay", "balance", "0")
    assert code == 503
    assert time.monotonic() - t0 < 6
    # AP: the last value it knew, saying how stale it is.
    code, h, out = kv(lonely, "GET", "web", "theme")
    assert (code, out) == (200, b"dark")
    assert h["X-Jinn-Consistency"] == "stale" and int(h["X-Jinn-Leader-Contact-Ms"]) != 0
    # AP with max_staleness 1s: refused once the contact is older than that.
    wait_for(lambda: kv(lonely, "GET", "edge", "x")[0] == 503, what="max_staleness refusal")
    assert json.loads(kv(lonely, "GET", "edge", "x")[2])["error"] == "too_stale"
    # The majority keeps accepting writes.
    new_leader = cluster.wait_leader(among=majority)
    assert put(new_leader, "web", "theme", "light")[0] == 200
    assert put(new_leader, "pay", "balance", "20")[0] == 200
    cluster.heal()
    wait_for(lambda: kv(lonely, "GET", "web", "theme")[2] == b"light", timeout=15,
             what="the healed node to converge")
    wait_for(lambda: int(kv(lonely, "GET", "web", "theme")[1]["X-Jinn-Leader-Contact-Ms"]) < 500,
             what="fresh AP reads")
    assert kv(lonely, "GET", "pay", "balance")[2] == b"20"


def test_history_is_linearizable_under_faults(cluster):
    keys = ["x", "y"]
    history = {k: [] for k in keys}
    lock = threading.Lock()
    stop = threading.Event()
    clock0 = time.monotonic()
    counter = [0]

    def now():
        return time.monotonic() - clock0

    def client(cid):
        rnd = random.Random(cid)
        known = {}  # key -> (revision, value) last read
        while not stop.is_set():
            node = rnd.choice(cluster.nodes)
            if not node.alive():
                continue
            key = rnd.choice(keys)
            r = rnd.random()
            with lock:
                counter[0] += 1
                value = f"c{cid}-{counter[0]}"
            # The kind is known before the request: a write that dies with the
            # connection must still count as "may have happened".
            if r < 0.45:
                op = {"invoke": now()}
            elif r < 0.75 or key not in known:
                op = {"invoke": now(), "kind": "write", "value": value}
            else:
                rev, expect = known[key]
                op = {"invoke": now(), "kind": "cas", "expect": expect, "value": value,
                      "ok": True}
            try:
                if r < 0.45:
                    code, h, out = kv(node, "GET", "pay", key, timeout=3)
                    if code == 200:
                        op.update(kind="read", result=out.decode())
                        known[key] = (int(h["ETag"].strip('"')), out.decode())
                    elif code == 404:
                        op.update(kind="read", result=None)
                    else:
                        continue  # a refused read is no observation
                elif op["kind"] == "write":
                    code, _, out = put(node, "pay", key, value, timeout=3)
                    if code != 200:
                        err = json.loads(out)["error"] if out else ""
                        if err in ("no_leader", "not_leader", "forward_failed"):
                            continue  # definitely not applied
                        op["complete"] = None
                else:
                    code, _, out = put(node, "pay", key, value, timeout=3,
                                       headers={"If-Match": f'"{rev}"'})
                    op["ok"] = code == 200
                    if code not in (200, 412):
                        err = json.loads(out)["error"] if out else ""
                        if err in ("no_leader", "not_leader", "forward_failed"):
                            continue
                        op["complete"] = None
                        op["ok"] = True  # may have been applied
            except Exception:
                # Timed out on our side: a write may or may not have happened.
                if op.get("kind") in ("write", "cas"):
                    op["complete"] = None
                    op["ok"] = True
                else:
                    continue
            if "kind" not in op:
                continue
            op.setdefault("complete", now())
            with lock:
                history[key].append(op)

    threads = [threading.Thread(target=client, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    try:
        time.sleep(1.5)  # a workload window, not a wait for state
        leader = cluster.leader()
        leader.kill()
        cluster.wait_leader(among=[n for n in cluster.nodes if n is not leader])
        time.sleep(1.0)
        leader.start()
        victim = cluster.nodes[1]
        cluster.isolate(victim.name)
        time.sleep(1.5)
        cluster.heal()
        time.sleep(1.0)
    finally:
        stop.set()
        for t in threads:
            t.join()
    total = sum(len(h) for h in history.values())
    assert total > 100, total
    for key in keys:
        ok = check(history[key])
        assert ok, f"history of {key} is not linearizable ({len(history[key])} ops)"


def test_numeric_query_parameters_are_strict(cluster):
    n = cluster.nodes[0]
    assert put(n, "pay", "num", "v")[0] == 200
    huge = "99999999999999999999"  # > 2^64: wrapped to -1 before
    cases = [
        ("GET", f"watch=1&after={huge}", "after"),
        ("GET", "watch=1&after=9223372036854775808", "after"),  # > 2^63-1
        ("GET", "watch=1&after=-1", "after"),
        ("GET", "watch=1&after=", "after"),
        ("GET", "watch=1&after=+1", "after"),
        ("GET", "watch=1&after=1%20", "after"),
        ("GET", "watch=1&after=0x10", "after"),
        ("GET", f"watch={huge}", "watch"),
        ("GET", "watch=2", "watch"),
        ("GET", "watch=-0", "watch"),
        ("GET", "limit=0", "limit"),
        ("GET", "limit=", "limit"),
        ("GET", "limit=-5", "limit"),
        ("GET", f"limit={huge}", "limit"),
        ("GET", "limit=1001", "limit"),
        ("GET", "limit=1e2", "limit"),
        ("GET", "values=2", "values"),
        ("GET", f"values={huge}", "values"),
    ]
    for method, query, name in cases:
        code, _, out = kv(n, method, "pay", query=query, timeout=5)
        assert code == 400, (query, out)
        assert name in json.loads(out)["message"], (query, out)
    # The bounds themselves are fine.
    code, _, out = kv(n, "GET", "pay", query="limit=1")
    assert code == 200 and len(json.loads(out)["keys"]) == 1, out
    code, _, out = kv(n, "GET", "pay", query="limit=1000")
    assert code == 200, out
    code, _, out = kv(n, "GET", "pay", query="watch=1&after=9223372036854775807&timeout=100ms")
    assert code == 200, out
    assert json.loads(out)["revision"] >= 0, out
