"""A leader whose log write fails AFTER raft_apply took it (the disk's
answer, not raft_apply's: JINN_TEST_APPEND_FAIL_ONCE_FILE makes the next
write's completion report RAFT_IOERR, as a failed fsync does). libraft 0.15
(replication.c, appendLeaderCb) then answers only the request whose entries
start that write, drops every entry from there on from its log in memory
(other requests' entries too, which the followers may already hold with
the same term) and stays leader: the next entries reuse those indexes, and
a request still queued for one of them is answered with a newer entry's
result. Before, the leader went on (a 500 for the first request, the rest
left to be matched by index). Now the node stops at once, exit code 3, with
one line; every write that got a 2xx is on the surviving nodes at the
revision its reply gave, no two 2xx replies share an entry, and the old
leader, restarted without the fault, rejoins with its data."""
import json
import threading
import urllib.parse

from harness import wait_for

STOP_LINE = "raft could not write its log as leader"
# AP: each node's own copy can be read (stale reads), the old leader's too.
POLICIES = ["consensus {", "    app { mode ap  stale_reads true  max_staleness 24h }", "}"]
WRITERS = 6


def put(node, key, value):
    return node.request(f"/v1/kv/app/{key}", "PUT", value.encode(), timeout=10.0)


def read_local(node, key):
    q = urllib.parse.urlencode({"consistency": "stale"})
    return node.request(f"/v1/kv/app/{key}?{q}")


def test_a_leader_whose_log_write_fails_later_stops_and_no_reply_is_another_commands(
        cluster_factory, tmp_path):
    c = cluster_factory(3, extra_config=POLICIES)
    for node in c.nodes:
        node.env["JINN_TEST_APPEND_FAIL_ONCE_FILE"] = str(tmp_path / f"fail-once-{node.name}")
    c.start()
    leader = c.wait_leader()
    c.wait_ready()
    code, _, out = put(leader, "before", "b")
    assert code == 200, out

    acked = {}  # key -> (value, revision from the 2xx reply)
    other = []  # (key, code or exception) for the writes without a 2xx
    lock = threading.Lock()
    started = threading.Barrier(WRITERS + 1)

    def writer(w):
        started.wait()
        i = 0
        while True:
            key, value = f"w{w}-{i}", f"value-of-w{w}-{i}"
            i += 1
            try:
                code, _, out = put(leader, key, value)
            except Exception as e:  # the leader stopped with this request in flight
                with lock:
                    other.append((key, repr(e)))
                return
            with lock:
                if 200 <= code < 300:
                    acked[key] = (value, json.loads(out)["revision"])
                else:
                    other.append((key, code))
            if code >= 300 and not leader.alive():
                return

    threads = [threading.Thread(target=writer, args=(w,), daemon=True) for w in range(WRITERS)]
    for t in threads:
        t.start()
    started.wait()
    wait_for(lambda: len(acked) >= 3 * WRITERS, timeout=20, what="writes going on")
    fault = leader.env["JINN_TEST_APPEND_FAIL_ONCE_FILE"]
    open(fault, "w").close()  # the leader's next log write is reported failed

    # The leader stops by itself, at once, exit code 3, one clear line
    # (before: it stayed leader and went on answering).
    wait_for(lambda: not leader.alive(), timeout=15, what=f"{leader.name} to stop by itself")
    assert leader.proc.returncode == 3, leader.proc.returncode
    lines = [x for x in leader.log().splitlines() if STOP_LINE in x]
    assert len(lines) == 1 and " error " in lines[0] and "test fault" in lines[0], lines
    for t in threads:
        t.join(timeout=20)
        assert not t.is_alive()
    assert len(acked) >= 3 * WRITERS
    # No error reply either: the node stops before libraft answers anyone
    # (before: the write's first request got 503, outcome unknown), so the
    # writes in flight just see their connection close.
    assert other and all(isinstance(x, str) for _, x in other), other

    # No two 2xx replies for one entry (a reply matched by index to a newer
    # entry would share its revision with that entry's own reply or name a
    # revision the key never had).
    revisions = [rev for _, rev in acked.values()]
    assert len(set(revisions)) == len(revisions), "two 2xx replies for one entry"

    survivors = [n for n in c.nodes if n is not leader]
    new_leader = c.wait_leader(among=survivors, timeout=20)
    c.wait_ready(nodes=survivors)
    code, _, out = put(new_leader, "after", "a")
    assert code == 200, out
    last = json.loads(out)["index"]

    def check(node):
        wait_for(lambda: node.status()["applied_index"] >= last, timeout=20,
                 what=f"{node.name} to apply index {last}")
        for key, (value, rev) in sorted(acked.items()):
            code, headers, out = read_local(node, key)
            assert code == 200 and out == value.encode(), (node.name, key, code, out)
            etag = {k.lower(): v for k, v in headers.items()}.get("etag")
            assert etag == f'"{rev}"', (node.name, key, rev, etag)
        for key in ("before", "after"):
            code, _, out = read_local(node, key)
            assert code == 200, (node.name, key, code, out)

    for node in survivors:
        check(node)
    # Every survivor holds the same value for the writes without a 2xx
    # (committed or not, but the same everywhere).
    for key, _ in other:
        seen = {read_local(n, key)[0:3:2] for n in survivors}
        assert len(seen) == 1, (key, seen)

    # Restarted without the fault (the hook removed its file), the old
    # leader rejoins with its data and follows.
    leader.start()
    c.wait_ready(nodes=[leader], timeout=30)
    check(leader)
    assert leader.status()["role"] == "follower"
    code, _, out = put(new_leader, "last", "l")
    assert code == 200, out
    last_index = json.loads(out)["index"]
    wait_for(lambda: leader.status()["applied_index"] >= last_index, timeout=20,
             what=f"{leader.name} to apply the last write")


def test_a_follower_whose_log_write_fails_later_stops_and_rejoins(cluster_factory, tmp_path):
    """The same on a follower: libraft 0.15 (appendFollowerCb) only rejects
    the append and keeps the entries in its log in memory, not on its disk;
    the node stops at once (before: it went on, its log in memory ahead of
    its disk). The other follower keeps the quorum."""
    c = cluster_factory(3, extra_config=POLICIES)
    for node in c.nodes:
        node.env["JINN_TEST_APPEND_FAIL_ONCE_FILE"] = str(tmp_path / f"fail-once-{node.name}")
    c.start()
    leader = c.wait_leader()
    c.wait_ready()
    f = next(n for n in c.nodes if n is not leader)
    open(f.env["JINN_TEST_APPEND_FAIL_ONCE_FILE"], "w").close()
    acked = {}
    i = 0
    while f.alive() and i < 200:
        code, _, out = put(leader, f"k{i}", f"v{i}")
        assert code == 200, out
        acked[f"k{i}"] = (f"v{i}", json.loads(out)["revision"])
        i += 1
    wait_for(lambda: not f.alive(), timeout=15, what=f"{f.name} to stop by itself")
    assert f.proc.returncode == 3, f.proc.returncode
    lines = [x for x in f.log().splitlines() if "raft could not write its log as follower" in x]
    assert len(lines) == 1 and " error " in lines[0] and "test fault" in lines[0], lines
    code, _, out = put(leader, "after", "a")
    assert code == 200, out
    last = json.loads(out)["index"]

    f.start()
    c.wait_ready(nodes=[f], timeout=30)
    wait_for(lambda: f.status()["applied_index"] >= last, timeout=20,
             what=f"{f.name} to apply index {last}")
    assert f.status()["role"] == "follower"
    for key, (value, rev) in sorted(acked.items()):
        code, headers, out = read_local(f, key)
        etag = {k.lower(): v for k, v in headers.items()}.get("etag")
        assert code == 200 and out == value.encode() and etag == f'"{rev}"', \
            (key, code, out, etag, rev)


def test_a_leader_whose_failed_log_write_is_a_read_barrier_stops(cluster_factory, tmp_path):
    """The write that fails is a linearizable read's raft barrier (a
    RAFT_BARRIER entry, no command): libraft 0.15's appendLeaderCb answers
    only commands, so proposal_applied's check never sees it; without the
    guard's report the leader crashed inside libraft (SIGSEGV from the
    append callback, R7's p9). Now it stops at once, exit code 3, and the
    reader sees its connection close (outcome: a read, nothing to retry
    but the read)."""
    c = cluster_factory(3)
    for node in c.nodes:
        node.env["JINN_TEST_APPEND_FAIL_ONCE_FILE"] = str(tmp_path / f"fail-once-{node.name}")
    c.start()
    leader = c.wait_leader()
    c.wait_ready()
    code, _, out = put(leader, "k", "v")  # default namespace policy: CP
    assert code == 200, out
    last = json.loads(out)["index"]
    wait_for(lambda: leader.status()["applied_index"] >= last, timeout=10,
             what="the write applied on the leader")
    open(leader.env["JINN_TEST_APPEND_FAIL_ONCE_FILE"], "w").close()
    raised = None
    try:
        code, _, out = leader.request("/v1/kv/app/k?consistency=linearizable", timeout=15)
    except Exception as e:  # the leader stopped with the read in flight
        raised = e
    assert raised is not None, ("the read was answered", code, out)
    # The leader took the read (not refused: it stopped while the read waited).
    assert not isinstance(raised, ConnectionRefusedError), repr(raised)
    wait_for(lambda: not leader.alive(), timeout=15, what=f"{leader.name} to stop by itself")
    assert leader.proc.returncode == 3, leader.proc.returncode  # not -11 (SIGSEGV)
    lines = [x for x in leader.log().splitlines() if STOP_LINE in x]
    assert len(lines) == 1 and "test fault" in lines[0], lines
    assert "AddressSanitizer" not in leader.log()

    survivors = [n for n in c.nodes if n is not leader]
    new_leader = c.wait_leader(among=survivors, timeout=20)
    c.wait_ready(nodes=survivors)
    code, _, out = new_leader.request("/v1/kv/app/k?consistency=linearizable")
    assert code == 200 and out == b"v", (code, out)
