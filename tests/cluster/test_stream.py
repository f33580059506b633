"""GET /v1/stream (issue 17, node side): the WebSocket feed of edge
replicas. Joining empty (snapshot, then records), joining caught up,
resuming inside the ring, positions not on the chain, refusals before the
upgrade (400/401/403/409/503), a replica that never reads (cut off, the
node unaffected), one that sends data (closed), and the record chain
(prev == previous index) across a few hundred writes and a leader change."""
import json
import threading
import time

from harness import http, loop_budget, wait_for
import wsclient

BOOT = "boot-secret-0123456789abcdef"
ADMIN = {"Authorization": "Bearer " + BOOT}


class Feed:
    """Reads a stream, keeping what arrived."""

    def __init__(self, ws):
        self.ws = ws
        self.hello = None
        self.heartbeats = []
        self.snapshots = []  # (index, bytes)
        self.records = []    # (index, prev, bytes)
        self.order = []      # "hello" | "heartbeat" | "S" | "E", as received

    def read_one(self, timeout=10.0):
        kind, data = self.ws.recv(timeout)
        if kind == "close":
            raise AssertionError(f"stream closed: {data}")
        if kind == "text":
            doc = json.loads(data)
            self.order.append(doc["type"])
            if doc["type"] == "hello":
                self.hello = doc
            else:
                assert doc["type"] == "heartbeat", doc
                self.heartbeats.append(doc)
        elif data[:1] == b"S":
            self.order.append("S")
            self.snapshots.append(wsclient.parse_snapshot(data))
        else:
            self.order.append("E")
            self.records.extend(wsclient.parse_records(data))

    def until(self, pred, timeout=15.0, what="stream condition"):
        deadline = time.monotonic() + timeout
        while not pred(self):
            left = deadline - time.monotonic()
            assert left > 0, f"timed out waiting for {what}; got {self.order[-10:]}"
            self.read_one(left)

    @property
    def position(self):
        last_s = self.snapshots[-1][0] if self.snapshots else 0
        return self.records[-1][0] if self.records else last_s


def stream(node, query, headers=None, **kw):
    return wsclient.connect(node.http_port, "/v1/stream?" + query, headers, **kw)


def put(node, key, value, headers=None):
    code, hdrs, body = node.request(f"/v1/kv/ns/{key}", "PUT", value, headers)
    assert code == 200, body
    return int(hdrs.get("X-Jinn-Index") or hdrs.get("x-jinn-index"))


def check_chain(feed, start):
    """Every record continues the previous one (or the snapshot)."""
    pos = start
    for index, prev, _ in feed.records:
        assert prev == pos, f"record {index} has prev {prev}, expected {pos}"
        assert index > prev
        pos = index
    return pos


def one_node(cluster_factory, extra=()):
    c = cluster_factory(n=1, extra_config=list(extra)).start()
    c.wait_ready()
    return c, c.wait_leader()


def test_join_empty_gets_snapshot_then_records(cluster_factory):
    c, leader = one_node(cluster_factory)
    for i in range(5):
        put(leader, f"k{i}", b"v%d" % i)
    ws, status, _, body = stream(leader, "from=0&name=edge-1")
    assert status == 101, body
    feed = Feed(ws)
    feed.until(lambda f: f.snapshots, what="the snapshot")
    # hello, a heartbeat right after it, then the snapshot (more heartbeats
    # while it is encoded on the thread pool)
    assert feed.order[:2] == ["hello", "heartbeat"], feed.order
    assert set(feed.order[2:-1]) <= {"heartbeat"} and feed.order[-1] == "S", feed.order
    st = leader.status()
    assert feed.hello == {"type": "hello", "v": 1, "cluster": st["cluster_id"], "node": "n1"}
    hb = feed.heartbeats[0]
    assert hb["leader_name"] == "n1" and hb["leader_id"] is not None and hb["quorum"] is True
    assert hb["term"] >= 1 and hb["time_ms"] > 0 and hb["leader_contact_ms"] >= 0
    snap_index, snap = feed.snapshots[0]
    assert snap[:8] == b"JINNSNAP"
    assert snap_index == hb["position"] and snap_index > 0
    idx = [put(leader, f"after{i}", b"x%d" % i) for i in range(3)]
    feed.until(lambda f: f.records and f.records[-1][0] >= idx[-1], what="the new records")
    check_chain(feed, snap_index)
    assert [r[0] for r in feed.records] == idx
    assert b"after2" in feed.records[-1][2] and b"x2" in feed.records[-1][2]
    # heartbeats keep coming, position follows the records
    feed.until(lambda f: f.heartbeats[-1]["position"] == idx[-1], what="a heartbeat at the end")
    assert feed.heartbeats[-1]["commit"] == idx[-1]
    s = wait_for(lambda: leader.status()["stream"], what="stream status")
    rep = s["replicas"][0]
    assert rep["name"] == "edge-1" and rep["addr"] == "127.0.0.1"
    assert rep["position"] == idx[-1] and rep["lag_entries"] == 0
    assert rep["state"] == "streaming" and rep["bytes_sent"] > len(snap)
    assert s["bytes_sent"] >= rep["bytes_sent"] and s["buffer_bytes"] > 0
    metrics = leader.request("/metrics")[2].decode()
    assert "jinn_stream_replicas 1" in metrics
    # a second replica joining while the records after that snapshot are
    # still in the ring gets the same encoding (one snapshot taken in all)
    ws2, status, _, _ = stream(leader, "from=0&name=edge-2")
    assert status == 101
    second = Feed(ws2)
    second.until(lambda f: f.records and f.records[-1][0] == idx[-1])
    assert second.snapshots == feed.snapshots
    check_chain(second, snap_index)
    assert leader.status()["stream"]["snapshots"] == 1
    ws2.close()
    ws.close()
    wait_for(lambda: leader.status()["stream"]["replicas"] == [], what="the replica to leave")


def test_caught_up_resume_and_off_chain(cluster_factory):
    c, leader = one_node(cluster_factory)
    ws, status, _, _ = stream(leader, "from=0&name=a")
    assert status == 101
    first = Feed(ws)
    first.until(lambda f: f.snapshots)
    idx = [put(leader, f"k{i}", b"v%d" % i) for i in range(6)]
    first.until(lambda f: f.records and f.records[-1][0] == idx[-1])
    pos = check_chain(first, first.snapshots[0][0])

    # caught up: nothing but heartbeats until the next write, no snapshot
    ws2, status, _, _ = stream(leader, f"from={pos}&name=b&cluster={first.hello['cluster']}")
    assert status == 101
    second = Feed(ws2)
    second.until(lambda f: len(f.heartbeats) >= 2, what="two heartbeats")
    assert "S" not in second.order and "E" not in second.order
    nxt = put(leader, "next", b"n")
    second.until(lambda f: f.records)
    assert second.records[0][:2] == (nxt, pos) and "S" not in second.order

    # resume inside the ring: exactly the records after the position
    mid = first.records[2][0]
    ws3, status, _, _ = stream(leader, f"from={mid}&name=c")
    assert status == 101
    third = Feed(ws3)
    third.until(lambda f: f.records and f.records[-1][0] == nxt)
    assert "S" not in third.order
    expect = [r for r in first.records if r[0] > mid] + [second.records[0]]
    assert third.records == expect

    # a position on no chain of this node (before its first record's prev
    # and not a record): a snapshot
    ws4, status, _, _ = stream(leader, "from=1&name=d")
    assert status == 101
    fourth = Feed(ws4)
    fourth.until(lambda f: f.snapshots and f.position == nxt)
    assert fourth.order.count("S") == 1
    check_chain(fourth, fourth.snapshots[0][0])

    # past the leader's log: no replica can be there (A3 m3), refused
    _, status, _, body = stream(leader, f"from={nxt + 1000000}&name=e")
    assert status == 409 and b"past the end of this leader's log" in body, body
    # ahead of the records, not of the log (a linearizable read's barrier):
    # heartbeats only, "waiting" in status
    code, hdrs, _ = leader.request("/v1/kv/ns/next")
    assert code == 200
    barrier = int(hdrs.get("X-Jinn-Applied-Index") or hdrs.get("x-jinn-applied-index"))
    assert barrier > nxt
    ws5, status, _, body = stream(leader, f"from={barrier}&name=e")
    assert status == 101, body
    fifth = Feed(ws5)
    fifth.until(lambda f: len(f.heartbeats) >= 3, what="three heartbeats")
    assert "S" not in fifth.order and "E" not in fifth.order
    reps = {r["name"]: r for r in leader.status()["stream"]["replicas"]}
    assert reps["e"]["state"] == "waiting"
    for w in (ws, ws2, ws3, ws4, ws5):
        w.close()


def test_refusals_before_upgrade(cluster_factory):
    c, leader = one_node(cluster_factory, ["stream_max_replicas 2"])
    cid = leader.status()["cluster_id"]
    other = "0123456789abcdef" if cid != "0123456789abcdef" else "fedcba9876543210"
    for q in ["from=abc&name=a", "name=a", "from=0", "from=0&name=", "from=0&name=a/b",
              "from=0&name=" + "x" * 65, "from=0&name=a&bogus=1", "from=0&name=a&from=1",
              "from=0&name=a&cluster=XYZ", "from=0&name=a&cluster=" + cid.upper(),
              "from=-1&name=a", "from=01&name=a", "from=99999999999999999999&name=a"]:
        ws, status, _, body = stream(leader, q)
        assert ws is None and status == 400, (q, status, body)
    ws, status, _, body = stream(leader, f"from=0&name=a&cluster={other}")
    assert status == 409 and cid in body.decode(), body
    # not a WebSocket handshake: a plain GET
    code, _, body = leader.request("/v1/stream?from=0&name=a")
    assert code == 400, body
    code, _, body = http(leader.url + "/v1/stream?from=0&name=a",
                         headers={"Upgrade": "websocket", "Connection": "Upgrade",
                                  "Sec-WebSocket-Version": "8",
                                  "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ=="})
    assert code == 400, body
    # the replicas limit: 503 past it, room again once one leaves
    a, status, _, _ = stream(leader, "from=0&name=a")
    assert status == 101
    b, status, _, _ = stream(leader, "from=0&name=b")
    assert status == 101
    ws, status, _, body = stream(leader, "from=0&name=c")
    assert status == 503 and b"too many replicas" in body, body
    a.close()
    wait_for(lambda: stream(leader, "from=0&name=c")[1] == 101, what="room for a replica")
    b.close()


def test_token_needs_cluster_replica(cluster_factory):
    c = cluster_factory(n=1, extra_config=[f"bootstrap_token {BOOT}"])
    c.auth_headers = ADMIN
    c.start()
    c.wait_ready()
    leader = c.wait_leader()

    def create(name, allow):
        body = json.dumps({"name": name, "allow": allow}).encode()
        code, _, out = wait_for(lambda: (lambda r: r if r[0] == 201 else None)(
            leader.request("/v1/tokens", "POST", body, ADMIN)), what="token created")
        return json.loads(out)["token"]

    replica = create("edge", ["cluster:replica"])
    reader = create("reader", ["kv:*:read"])
    ws, status, _, _ = stream(leader, "from=0&name=a")
    assert status == 401
    ws, status, _, _ = stream(leader, "from=0&name=a", {"Authorization": "Bearer " + reader})
    assert status == 403
    ws, status, _, _ = stream(leader, "from=0&name=a", {"Authorization": "Bearer " + replica})
    assert status == 101
    Feed(ws).until(lambda f: f.snapshots)
    ws.close()
    ws, status, _, _ = stream(leader, "from=0&name=b", ADMIN)
    assert status == 101
    ws.close()
    # cluster:replica allows the stream, nothing else
    code = leader.request("/v1/kv/ns/k", headers={"Authorization": "Bearer " + replica})[0]
    assert code == 403
    code = leader.request("/v1/status", headers={"Authorization": "Bearer " + replica})[0]
    assert code == 403


def test_replica_sending_data_is_closed(cluster_factory):
    c, leader = one_node(cluster_factory)
    ws, status, _, _ = stream(leader, "from=0&name=a")
    assert status == 101
    feed = Feed(ws)
    feed.until(lambda f: f.snapshots)
    ws.send_frame(0x9, b"ping?")  # control frames are fine
    ws.send_frame(0x2, b"hello")  # data is not
    deadline = time.monotonic() + 10
    while True:
        kind, data = ws.recv(max(0.1, deadline - time.monotonic()))
        if kind == "close":
            assert data[0] == 1003, data
            break
    wait_for(lambda: leader.status()["stream"]["replicas"] == [], what="the replica dropped")
    # an unmasked frame (a protocol violation) is closed too
    ws, status, _, _ = stream(leader, "from=0&name=b")
    assert status == 101
    ws.send_frame(0x9, b"", mask=False)
    deadline = time.monotonic() + 10
    while True:
        kind, data = ws.recv(max(0.1, deadline - time.monotonic()))
        if kind == "close":
            assert data[0] == 1002, data
            break


def test_slow_replica_is_cut_off_node_unaffected(cluster_factory):
    c, leader = one_node(cluster_factory, ["stream_max_lag_bytes 1MiB",
                                           "stream_buffer_bytes 4MiB"])
    put(leader, "k", b"v")
    pos = leader.status()["stream"]["position"]
    # a replica that never reads (a tiny receive buffer), and one that does
    slow, status, _, _ = stream(leader, f"from={pos}&name=slow", rcvbuf=4096)
    assert status == 101
    fast_ws, status, _, _ = stream(leader, f"from={pos}&name=fast")
    assert status == 101
    fast = Feed(fast_ws)
    stop = threading.Event()
    errors = []

    def read_fast():
        try:
            while not stop.is_set():
                fast.read_one(30)
        except Exception as e:  # noqa: BLE001 (reported below)
            if not stop.is_set():
                errors.append(e)

    t = threading.Thread(target=read_fast, daemon=True)
    t.start()
    value = b"x" * 60000
    last = 0
    with loop_budget(leader, 100):
        for i in range(120):  # ~7 MiB of records
            last = put(leader, f"big{i % 8}", value)
        wait_for(lambda: leader.status()["stream"]["cut_off"] >= 1, what="the slow replica cut")
    # its connection ends within the 1 s linger, however little it reads
    wait_for(lambda: [r["name"] for r in leader.status()["stream"]["replicas"]] == ["fast"],
             what="the slow replica's connection closed")
    s = leader.status()["stream"]
    assert s["buffer_bytes"] <= 4 * 1048576 + 1048576 + 65536
    # the fast one got everything, in order
    wait_for(lambda: fast.records and fast.records[-1][0] == last, timeout=30,
             what="the fast replica caught up")
    stop.set()
    assert not errors, errors
    check_chain(fast, pos)
    assert "jinn_stream_cut_off_total 1" in leader.request("/metrics")[2].decode()
    # the node still serves writes and new replicas
    put(leader, "after", b"ok")
    ws, status, _, _ = stream(leader, "from=0&name=again")
    assert status == 101
    Feed(ws).until(lambda f: f.snapshots)
    slow.sock.close()
    fast_ws.close()
    ws.close()


def test_record_chain_across_leader_change(cluster_factory):
    c = cluster_factory(n=3).start()
    c.wait_ready()
    leader = c.wait_leader()
    follower = next(n for n in c.nodes if n is not leader)
    ws, status, _, body = stream(follower, "from=0&name=chain")
    assert status == 101, body
    feed = Feed(ws)
    feed.until(lambda f: f.snapshots)
    written = []
    for i in range(150):
        written.append(put(leader, f"k{i}", b"a%d" % i))
    to = next(n for n in c.nodes if n is not leader and n is not follower)
    code, _, out = leader.request(f"/v1/cluster/leader/transfer?to={to.name}", "POST", b"")
    assert code == 200, out
    new = c.wait_leader()
    assert new is not leader
    for i in range(150):
        written.append(put(new, f"j{i}", b"b%d" % i))
    feed.until(lambda f: f.records and f.records[-1][0] >= written[-1], timeout=60,
               what="all the writes streamed")
    check_chain(feed, feed.snapshots[0][0])
    got = {r[0] for r in feed.records}
    assert set(written) <= got
    # a heartbeat names the new leader
    feed.until(lambda f: f.heartbeats[-1]["leader_name"] == new.name, what="the new leader")
    assert feed.heartbeats[-1]["node"] == follower.name
    assert len(feed.snapshots) == 1
    ws.close()


def test_node_installing_a_snapshot_resends_one(cluster_factory):
    """A follower that falls behind the leader's log installs a snapshot;
    the replica streaming from it gets a new snapshot at the index the
    follower now stands at, and the records after it chain from there."""
    c = cluster_factory(n=3, extra_config=["snapshot_threshold 16",
                                           "snapshot_trailing 4"]).start()
    c.wait_ready()
    leader = c.wait_leader()
    follower = next(n for n in c.nodes if n is not leader)
    ws, status, _, _ = stream(follower, "from=0&name=r")
    assert status == 101
    feed = Feed(ws)
    feed.until(lambda f: f.snapshots)
    c.isolate(follower.name)  # raft traffic to and from it dropped; HTTP still up
    try:
        for i in range(80):
            put(leader, f"k{i}", b"v%d" % i)
    finally:
        c.heal()
    wait_for(lambda: "snapshot restored" in follower.log(), timeout=30,
             what="the follower installing the leader's snapshot")
    last = put(leader, "after", b"x")
    feed.until(lambda f: len(f.snapshots) >= 2 and f.position >= last, timeout=30,
               what="a second snapshot and the records after it")
    # each snapshot restarts the chain; records between them chain too
    pos, snaps = None, iter(feed.snapshots)
    for kind in feed.order:
        if kind == "S":
            pos = next(snaps)[0]
    tail = [r for r in feed.records if r[0] > feed.snapshots[-1][0]]
    p = feed.snapshots[-1][0]
    for index, prev, _ in tail:
        assert prev == p, (index, prev, p)
        p = index
    # the node may commit entries of its own after the last write (a
    # leader's no-op, an announcement): the chain reaches the write, maybe
    # beyond it
    assert p >= last and pos == feed.snapshots[-1][0]
    assert last in [r[0] for r in tail] or feed.snapshots[-1][0] >= last
    ws.close()


def test_stream_over_tls(cluster_factory, tmp_path):
    """wss://: the upgrade keeps the connection's TLS session."""
    from test_http_tls import one_tls_node
    c = one_tls_node(cluster_factory, tmp_path)
    c.start()
    c.wait_ready()
    leader = c.wait_leader()
    ws, status, _, body = wsclient.connect(leader.http_port, "/v1/stream?from=0&name=tls",
                                           context=c.https_context)
    assert status == 101, body
    feed = Feed(ws)
    feed.until(lambda f: f.snapshots)
    big = b"y" * 300000  # several TLS records and WebSocket frames
    idx = put(leader, "k", big)
    feed.until(lambda f: f.records and f.records[-1][0] == idx)
    assert big in feed.records[-1][2]
    check_chain(feed, feed.snapshots[0][0])
    ws.send_frame(0x9, b"are you there")  # a ping through TLS is answered
    deadline = time.monotonic() + 10
    while True:
        _, op, payload = ws.recv_frame(max(0.1, deadline - time.monotonic()))
        if op == 0xA:
            assert payload == b"are you there"
            break
    ws.close()


def test_restart_replays_the_same_chain(cluster_factory):
    """A node restarted from its own snapshot plus log stands at the same
    chain: a replica at the node's old position resumes without a
    snapshot; one from an older position gets records or a snapshot no
    older than it, never a broken chain."""
    c, leader = one_node(cluster_factory, ["snapshot_threshold 16", "snapshot_trailing 4"])
    ws, status, _, _ = stream(leader, "from=0&name=before")
    assert status == 101
    before = Feed(ws)
    idx = [put(leader, f"k{i}", b"v%d" % i) for i in range(40)]
    before.until(lambda f: f.records and f.records[-1][0] == idx[-1])
    ws.close()
    leader.stop()
    leader.start()
    c.wait_ready()
    wait_for(lambda: leader.status()["stream"]["position"] == idx[-1], timeout=20,
             what="the log replayed")
    ws, status, _, _ = stream(leader, f"from={idx[-1]}&name=after")
    assert status == 101
    after = Feed(ws)
    nxt = put(leader, "next", b"n")
    after.until(lambda f: f.records and f.records[-1][0] >= nxt)
    assert "S" not in after.order
    check_chain(after, idx[-1])  # (the restarted node may apply commands of its own)
    # from before what the restarted node's snapshot covers: a snapshot no
    # older than the position asked for, then the chain from it
    mid = idx[-3]
    ws2, status, _, _ = stream(leader, f"from={mid}&name=mid")
    assert status == 101
    again = Feed(ws2)
    again.until(lambda f: f.position >= nxt)
    if again.snapshots:
        assert again.snapshots[0][0] >= mid
        check_chain(again, again.snapshots[0][0])
    else:
        check_chain(again, mid)
        assert again.records[:2] == [r for r in before.records if r[0] > mid]
    ws.close()
    ws2.close()


def test_replica_not_reading_is_cut_off_below_the_lag_bound(cluster_factory):
    """With a lag bound too large to be reached, a replica whose transport
    takes nothing for 100 heartbeats (here 1 s) while bytes wait for it is
    cut off rather than holding its slot and its share of the ring
    forever; one that reads stays."""
    c, leader = one_node(cluster_factory, ["stream_heartbeat 10ms",
                                           "stream_max_lag_bytes 1GiB",
                                           "stream_buffer_bytes 1GiB"])
    pos = leader.status()["stream"]["position"]
    slow, status, _, _ = stream(leader, f"from={pos}&name=idle", rcvbuf=2048)
    assert status == 101
    ok_ws, status, _, _ = stream(leader, f"from={pos}&name=reader")
    assert status == 101
    ok = Feed(ok_ws)
    stop = threading.Event()

    def read_ok():
        while not stop.is_set():
            try:
                ok.read_one(5)
            except Exception:  # noqa: BLE001 (checked below through ok.records)
                return

    t = threading.Thread(target=read_ok, daemon=True)
    t.start()
    value = b"z" * 60000
    last = 0
    for i in range(150):  # ~9 MiB: more than the kernel buffers between them
        last = put(leader, f"big{i % 8}", value)
    wait_for(lambda: leader.status()["stream"]["cut_off"] >= 1, timeout=30,
             what="the replica that reads nothing cut off")
    assert "not reading" in leader.log()
    wait_for(lambda: ok.records and ok.records[-1][0] == last, timeout=30,
             what="the reader has everything")
    stop.set()
    check_chain(ok, pos)
    wait_for(lambda: [r["name"] for r in leader.status()["stream"]["replicas"]] == ["reader"],
             what="only the reader left")
    slow.sock.close()
    ok_ws.close()


def _rss_mb(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def test_ping_flood_without_reading_is_bounded_and_cut_off(cluster_factory):
    """R3 C1: a client that sends pings and never reads made the node queue
    a pong per ping without limit (GBs in seconds). The node stops reading
    a connection whose output is backed up and cuts off one whose pongs
    cannot leave: memory stays bounded, the client is cut off within a
    few seconds, the node keeps answering."""
    c, leader = one_node(cluster_factory)
    pid = leader.proc.pid
    before = _rss_mb(pid)
    ws, status, _, _ = stream(leader, "from=0&name=flood", rcvbuf=4096)
    assert status == 101
    frame = bytes([0x89, 0x80 | 125]) + b"\0\0\0\0" + b"p" * 125
    chunk = frame * 2000
    stop = threading.Event()
    sent = [0]

    def flood():
        ws.sock.settimeout(None)
        try:
            while not stop.is_set():
                ws.sock.sendall(chunk)
                sent[0] += len(chunk)
        except OSError:
            return

    t = threading.Thread(target=flood, daemon=True)
    t.start()
    peak = before
    deadline = time.monotonic() + 6
    cut = False
    while time.monotonic() < deadline:
        peak = max(peak, _rss_mb(pid))
        if leader.status()["stream"]["cut_off"] >= 1:
            cut = True
            break
        time.sleep(0.05)
    stop.set()
    assert cut, f"not cut off within 6 s; sent {sent[0] >> 20} MiB, RSS {peak:.0f} MB"
    assert "not reading" in leader.log()
    assert peak - before < 64, f"node RSS grew {peak - before:.0f} MB"
    t0 = time.monotonic()
    assert leader.request("/healthz")[0] == 200
    assert time.monotonic() - t0 < 0.5
    wait_for(lambda: leader.status()["stream"]["replicas"] == [], what="the flooder gone")
    ws.sock.close()


def test_heartbeat_never_waits_behind_a_backlog(cluster_factory):
    """R3 M1: a heartbeat queued behind a backlog reached a slow replica
    seconds late, which then dated it from its receipt and claimed to be
    fresh. A heartbeat is only queued with little ahead of it: for every
    heartbeat received, the first write acknowledged after the heartbeat's
    position was acknowledged no long before the heartbeat arrived (the
    heartbeat was made before that write applied). One still arrives once
    the backlog drained."""
    c, leader = one_node(cluster_factory, ["stream_heartbeat 50ms"])
    pos = leader.status()["stream"]["position"]
    ws, status, _, _ = stream(leader, f"from={pos}&name=slow", rcvbuf=4096)
    assert status == 101
    acks = {}  # index -> monotonic time acknowledged
    stop = threading.Event()

    def writer():
        value = b"w" * 16384
        i = 0
        while not stop.is_set():
            idx = put(leader, f"w{i % 16}", value)
            acks[idx] = time.monotonic()
            i += 1
            time.sleep(0.01)

    t = threading.Thread(target=writer, daemon=True)
    t.start()
    beats = []  # (received at, position)
    last_record = pos
    rate = 300e3  # bytes/s the replica reads
    t_end = time.monotonic() + 6
    while time.monotonic() < t_end:
        kind, data = ws.recv(10)
        assert kind != "close", data
        if kind == "text":
            doc = json.loads(data)
            if doc["type"] == "heartbeat":
                beats.append((time.monotonic(), doc["position"]))
        else:
            if data[:1] == b"E":
                last_record = wsclient.parse_records(data)[-1][0]
            time.sleep(len(data) / rate)
    stop.set()
    t.join(10)
    final = max(acks)
    # the rest, read at full speed: a heartbeat follows the drained backlog
    deadline = time.monotonic() + 30
    while not any(p >= final for _, p in beats) or last_record < final:
        assert time.monotonic() < deadline, "no heartbeat after the backlog drained"
        kind, data = ws.recv(10)
        assert kind != "close", data
        if kind == "text" and json.loads(data)["type"] == "heartbeat":
            beats.append((time.monotonic(), json.loads(data)["position"]))
        elif kind == "binary" and data[:1] == b"E":
            last_record = wsclient.parse_records(data)[-1][0]
    worst = 0.0
    checked = 0
    for at, p in beats:
        later = [a for i, a in acks.items() if i > p]
        if later:
            checked += 1
            worst = max(worst, at - min(later))
    assert checked >= 1
    assert worst < 1.0, f"a heartbeat arrived {worst:.1f} s after it was made"
    ws.close()


def test_ring_kept_only_while_replicas_are_around(cluster_factory):
    """R3 m1: every node kept up to stream_buffer_bytes of records though
    no replica ever connected. Records are kept only while a replica is
    connected and for a short time (50 heartbeats, at least 1 s) after the
    last one left; a replica joining behind an empty ring gets a
    snapshot."""
    c, leader = one_node(cluster_factory, ["stream_heartbeat 20ms"])
    for i in range(20):
        put(leader, f"a{i}", b"x" * 4096)
    assert leader.status()["stream"]["buffer_bytes"] == 0
    pos = leader.status()["stream"]["position"]
    ws, status, _, _ = stream(leader, f"from={pos}&name=r")
    assert status == 101
    feed = Feed(ws)
    last = 0
    for i in range(5):
        last = put(leader, f"b{i}", b"y" * 4096)
    feed.until(lambda f: f.records and f.records[-1][0] == last, what="the new records")
    assert leader.status()["stream"]["buffer_bytes"] > 0
    check_chain(feed, pos)
    ws.close()
    wait_for(lambda: leader.status()["stream"]["buffer_bytes"] == 0, timeout=15,
             what="the ring let go once no replica is around")
    put(leader, "c", b"z")
    ws, status, _, _ = stream(leader, f"from={pos}&name=r2")
    assert status == 101
    feed = Feed(ws)
    feed.until(lambda f: f.snapshots, what="a snapshot (the ring no longer has the records)")
    assert feed.snapshots[0][0] >= last
    ws.close()


def test_cached_snapshot_counted_and_dropped(cluster_factory):
    """R3 M5: the snapshot made for a joining replica stayed in memory
    forever, counted nowhere. It is reported as stream.snapshot_bytes (and
    jinn_stream_snapshot_bytes) and dropped a few seconds after no replica
    needs it."""
    c, leader = one_node(cluster_factory)
    for i in range(10):
        put(leader, f"s{i}", b"q" * 10000)
    ws, status, _, _ = stream(leader, "from=0&name=r")
    assert status == 101
    feed = Feed(ws)
    feed.until(lambda f: f.snapshots, what="the snapshot")
    snap_len = len(feed.snapshots[0][1])
    held = leader.status()["stream"]["snapshot_bytes"]
    assert held >= snap_len > 100000
    code, _, body = leader.request("/metrics")
    assert code == 200 and b"jinn_stream_snapshot_bytes %d" % held in body
    ws.close()
    wait_for(lambda: leader.status()["stream"]["snapshot_bytes"] == 0, timeout=15,
             what="the cached snapshot dropped")


def test_ring_reset_invalidates_the_cached_snapshot(cluster_factory):
    """R3 m2: a ring reset other than a restore (out of memory; here the
    ring let go when no replica is around) kept the cached snapshot
    usable although the records after it were gone, so a joining replica
    was handed an outdated snapshot. Every reset invalidates it."""
    c, leader = one_node(cluster_factory, ["stream_heartbeat 20ms"])
    put(leader, "a", b"1")
    ws, status, _, _ = stream(leader, "from=0&name=a")
    assert status == 101
    feed = Feed(ws)
    feed.until(lambda f: f.snapshots, what="the first snapshot")
    first = feed.snapshots[0][0]
    assert leader.status()["stream"]["recording"] is True
    ws.close()
    # no write in between: the records after the snapshot are all still
    # "in" the (empty) ring when it is let go
    wait_for(lambda: leader.status()["stream"]["recording"] is False, timeout=15,
             what="the ring let go (no replica)")
    assert leader.status()["stream"]["snapshot_bytes"] > 0  # still cached
    put(leader, "b", b"2")  # not kept: nothing continues the old snapshot
    last = put(leader, "c", b"3")
    assert last > first
    ws, status, _, _ = stream(leader, "from=0&name=b")
    assert status == 101
    feed = Feed(ws)
    feed.until(lambda f: f.snapshots, what="a snapshot")
    assert feed.snapshots[0][0] >= last, (feed.snapshots[0][0], last)
    ws.close()


def test_a_position_ahead_of_the_node_holds_no_slot(cluster_factory):
    """A3 m3: from=2^64-1 (or any position no node reaches) was accepted and
    waited for ever on heartbeats alone, so a few clients that read their
    heartbeats held every stream_max_replicas slot. The leader (whose log
    holds every committed entry) refuses a position past its log at the
    handshake; a follower, which may lag a true replica, lets it wait 25
    heartbeats, then closes 1008 "ahead of this node" so the replica moves
    to another node."""
    c = cluster_factory(n=3, extra_config=["stream_max_replicas 2",
                                           "stream_heartbeat 40ms"]).start()
    c.wait_ready()
    leader = c.wait_leader()
    put(leader, "k", b"v")
    # the leader: refused before the upgrade, no slot taken
    for i in range(3):
        _, status, _, body = stream(leader, f"from=18446744073709551615&name=s{i}")
        assert status == 409 and b"past the end of this leader's log" in body, body
    ws, status, _, _ = stream(leader, "from=0&name=real")
    assert status == 101
    ws.close()
    # a follower: both slots taken by clients ahead of it, which read
    # their heartbeats (so no other bound cuts them off)
    f = next(n for n in c.nodes if n is not leader)
    last = f.status()["last_index"]
    feeds = []
    t0 = time.monotonic()
    for i, frm in enumerate([18446744073709551615, last + 1000]):
        w, status, _, body = stream(f, f"from={frm}&name=s{i}")
        assert status == 101, body
        feeds.append(Feed(w))
    _, status, _, body = stream(f, "from=0&name=real")
    assert status == 503 and b"too many replicas" in body, body
    for feed in feeds:
        deadline = time.monotonic() + 15
        kind, data = feed.ws.recv(10)
        while kind != "close":
            assert time.monotonic() < deadline, "not cut off"
            kind, data = feed.ws.recv(10)
        assert data == (1008, "ahead of this node"), data
    waited = time.monotonic() - t0
    assert waited >= 0.9, waited  # 25 heartbeats of 40 ms, at least 1 s
    wait_for(lambda: f.status()["stream"]["replicas"] == [], what="the slots freed")
    ws, status, _, body = stream(f, "from=0&name=real")
    assert status == 101, body
    ws.close()
    assert "ahead of this node" in f.log()


def test_clients_that_force_snapshots_and_never_read_hold_a_bounded_number(cluster_factory):
    """A5 C1: a `from` at the node's position with a wrong `at` (or any
    position the ring cannot serve, newer than the cached snapshot) makes
    the node encode a new snapshot for that client; one that then never
    reads held its own full copy of the state until the 'not reading' cut
    (14 clients: +2.8 GB with a 200 MB state). Now at most two snapshots
    besides the cached one are on their way out: the other clients wait
    (heartbeats go on), and once the holders are gone the next is encoded."""
    c, n = one_node(cluster_factory, ["max_body 2MiB"])
    val = b"v" * (1 << 20)
    for i in range(12):  # 12 MiB of state: far more than the socket buffers hold
        put(n, f"big{i}", val)
    holders = []
    for i in range(6):
        put(n, "tick", str(i).encode())
        st = n.status()["stream"]
        pos, before = st["position"], st["snapshots"]
        ws, code, _, _ = stream(n, f"from={pos}&at=1&name=h{i}", rcvbuf=4096)
        assert code == 101
        holders.append(ws)
        if i < 3:
            # an encoding of its own (newer than the cached one): cached +
            # two on their way out
            wait_for(lambda: n.status()["stream"]["snapshots"] > before, timeout=20,
                     what=f"client {i}'s encoding")
        else:
            wait_for(lambda: len(n.status()["stream"].get("replicas", [])) == i + 1,
                     what=f"client {i} attached")
    # no more while the three are held, over several heartbeats
    deadline = time.monotonic() + 2.0
    while time.monotonic() < deadline:
        assert n.status()["stream"]["snapshots"] == 3, n.status()["stream"]
        time.sleep(0.1)
    # three hold a snapshot they do not read (megabytes sent into their
    # buffers), three were sent heartbeats only
    sent = sorted(r["bytes_sent"] for r in n.status()["stream"]["replicas"])
    assert all(b < 64 << 10 for b in sent[:3]) and all(b > 200 << 10 for b in sent[3:]), sent
    for ws in holders[:3]:
        ws.sock.close()
    # the holders gone, the waiting clients get the next encoding
    wait_for(lambda: n.status()["stream"]["snapshots"] >= 4, timeout=20,
             what="an encoding once the holders left")
    for ws in holders[3:]:
        ws.sock.close()
    # a replica that reads gets its snapshot and the records after it
    put(n, "tick", b"last")
    ws, st, _, _ = stream(n, "from=0&name=reader")
    assert st == 101
    kinds = []
    while "S" not in kinds:
        kind, msg = ws.recv(timeout=20)
        if kind == "binary":
            kinds.append(chr(msg[0]))
    ws.close()


def test_a_replica_kept_waiting_for_a_snapshot_slot_goes_elsewhere(cluster_factory):
    """R8: clients that force fresh snapshots and read just fast enough to
    escape the 'not reading' cut can hold both snapshot slots for as long
    as their downloads take (hours at a trickle); a replica needing a new
    snapshot meanwhile waited, with heartbeats, so it never moved to
    another node. Past 150 heartbeats of waiting for a slot it is closed
    1008 and goes to its next listed node."""
    c, n = one_node(cluster_factory, ["max_body 2MiB", "stream_heartbeat 20ms"])
    val = b"v" * (1 << 20)
    for i in range(24):  # downloads of 10 s or more at the holders' pace
        put(n, f"big{i}", val)
    stop = threading.Event()

    def trickle(ws):  # about 2 MB/s: writes complete well within the 2 s cut
        ws.sock.settimeout(0.5)
        while not stop.is_set():
            try:
                if not ws.sock.recv(65536):
                    return
            except OSError:
                pass
            time.sleep(0.03)

    holders, threads = [], []
    try:
        for i in range(3):
            put(n, "tick", str(i).encode())
            st = n.status()["stream"]
            pos, before = st["position"], st["snapshots"]
            ws, code, _, _ = stream(n, f"from={pos}&at=1&name=h{i}", rcvbuf=65536)
            assert code == 101
            holders.append(ws)
            t = threading.Thread(target=trickle, args=(ws,), daemon=True)
            t.start()
            threads.append(t)
            wait_for(lambda: n.status()["stream"]["snapshots"] > before, timeout=20,
                     what=f"client {i}'s encoding")
        put(n, "tick", b"w")
        pos = n.status()["stream"]["position"]
        ws, code, _, _ = stream(n, f"from={pos}&at=1&name=waiter")
        assert code == 101
        t0 = time.monotonic()
        while True:  # heartbeats only, then the close
            kind, msg = ws.recv(timeout=15)
            assert kind != "binary", "a snapshot while both slots are held"
            if kind == "close":
                break
        assert msg == (1008, "no snapshot slot: others are downloading"), msg
        assert time.monotonic() - t0 >= 2.5  # 150 heartbeats of 20 ms
        assert n.status()["stream"]["snapshots"] == 3
    finally:
        stop.set()
        for ws in holders:
            ws.sock.close()
        for t in threads:
            t.join(timeout=5)
