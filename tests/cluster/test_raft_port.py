"""The raft port takes hostile bytes (issue 15): libraft 0.15 trusts what
a peer declares, so jinn parses the handshake, its own preamble and every
message header before libraft sees a byte. Each single packet here used to
kill a node inside libraft's decoding (or reserve what it declared); now the
connection is refused, counted and logged, and the node keeps serving with
its term unchanged."""
import os
import random
import socket
import struct
import subprocess
import time

from harness import JINN, wait_for


def handshake(server_id, address=b"127.0.0.1:9\0", declared=None):
    pad = address + b"\0" * ((8 - len(address) % 8) % 8)
    return struct.pack("<QQQ", 1, server_id, len(pad) if declared is None else declared) + pad


def preamble(cluster, sender, target=0, flags=0):
    return b"JNPG" + bytes([1, flags, 0, 0]) + struct.pack("<QQQ", cluster, sender, target)


def probe_answer(node, cluster=0, source="127.0.0.1"):
    """A probe naming cluster: (the node's id, the cluster id it answers,
    the answer's flags)."""
    with socket.socket() as s:
        s.bind((source, 0))
        s.settimeout(5)
        s.connect(("127.0.0.1", node.raft_port))
        s.sendall(handshake(99, b"probe\0\0\0") + preamble(cluster, 99, 0, flags=1))
        data = b""
        while len(data) < 24:
            chunk = s.recv(24 - len(data))
            assert chunk, "no probe answer"
            data += chunk
    assert data[:4] == b"JNPA"
    node_id, cluster_id = struct.unpack("<QQ", data[8:24])
    return node_id, cluster_id, data[6]


def probe(node):
    """The node's id and cluster id, as anyone can learn them without TLS
    (the id from a probe; the cluster id from its status: a probe answers
    it only to who names it)."""
    node_id, _, _ = probe_answer(node)
    cid = node.status().get("cluster_id")
    return node_id, int(cid, 16) if cid else 0


def metric(node, name):
    code, _, body = node.request("/metrics")
    assert code == 200
    for line in body.decode().splitlines():
        if line.startswith(name + " "):
            return int(float(line.split()[1]))
    raise AssertionError(f"{name} not in /metrics")


def send(node, data, linger=0.3):
    """Sends data on the raft port; returns what the node answered before
    closing (or within linger seconds)."""
    got = b""
    with socket.create_connection(("127.0.0.1", node.raft_port), timeout=5) as s:
        s.sendall(data)
        s.settimeout(linger)
        try:
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    break
                got += chunk
        except (socket.timeout, ConnectionResetError):
            pass
    return got


def admitted(node, sender=77):
    """A handshake and preamble the node accepts without TLS (the cluster id
    is public: a probe answers it)."""
    _, cluster = probe(node)
    assert cluster != 0
    return handshake(sender) + preamble(cluster, sender)


def admitted_as(node, member):
    """A hello claiming to be member (its id and configured address): what
    reaches the message checks now that non-members stop at the hello."""
    member_id, cluster = probe(member)
    assert cluster != 0
    return (handshake(member_id, member.advertised.encode() + b"\0")
            + preamble(cluster, member_id))


def assert_serving(c, node, term, refused_before):
    """The node is alive, the cluster still writes, the term did not move
    and the connection was counted as refused."""
    assert node.proc.poll() is None, "node died"
    wait_for(lambda: metric(node, "jinn_raft_connections_refused_total") > refused_before, 10,
             what="the connection counted as refused")
    leader = c.wait_leader()
    code, _, out = leader.request("/v1/kv/ns/after", "PUT", b"ok")
    assert code == 200, out
    assert node.status()["term"] == term


def message(mtype, header, payload=b""):
    return struct.pack("<QQ", mtype, len(header)) + header + payload


# libraft 0.15 message types
APPEND_ENTRIES, REQUEST_VOTE, INSTALL_SNAPSHOT = 1, 3, 5


def known_crashes(c, target):
    """(name, bytes) of each single packet the issue lists, after a valid
    hello from a member's id and address (admitted_as) where the crash is in
    message decoding, so the message checks themselves are what refuses it."""
    ok = admitted_as(target, next(n for n in c.nodes if n is not target))
    return [
        ("header length 7", ok + struct.pack("<QQ", REQUEST_VOTE, 7) + b"\0" * 7),
        ("AppendEntries 64-byte header of 0xff", ok + struct.pack("<QQ", APPEND_ENTRIES, 64)
         + b"\xff" * 64),
        ("address length 7 without NUL", struct.pack("<QQQ", 1, 77, 7) + b"1234567"
         + preamble(0, 77)),
        ("address length 16 without NUL", struct.pack("<QQQ", 1, 77, 16) + b"x" * 16
         + preamble(0, 77)),
        ("type 0", ok + struct.pack("<QQ", 0, 24) + b"\0" * 24),
        ("AppendEntries with entries past the payload", ok + message(
            APPEND_ENTRIES, struct.pack("<QQQQQ", 1, 0, 0, 0, 2)
            + struct.pack("<QB3xI", 1, 1, 1) + struct.pack("<QB3xI", 1, 1, 1) + b"\0" * 8,
            b"\0" * 2)),
        ("InstallSnapshot with an unterminated address", ok + message(
            INSTALL_SNAPSHOT, struct.pack("<QQQQQ", 1, 1, 1, 1, 9 + 8 + 4)
            + b"\x01" + struct.pack("<Q", 1) + struct.pack("<Q", 5) + b"abcd"
            + struct.pack("<Q", 8) + b"\0" * 8, b"\0" * 8)),
    ]


def test_each_known_crash_is_refused_and_the_node_keeps_serving(cluster_factory):
    c = cluster_factory(3).start()
    c.wait_leader(timeout=30)
    c.wait_ready(timeout=30)
    for target in c.nodes:
        for name, data in known_crashes(c, target):
            term = target.status()["term"]
            before = metric(target, "jinn_raft_connections_refused_total")
            send(target, data)
            try:
                assert_serving(c, target, term, before)
            except AssertionError as e:
                raise AssertionError(f"{target.name}, {name}: {e}") from e
    assert "refused" in c.nodes[0].log()


def test_declared_lengths_reserve_nothing(cluster_factory):
    """64 handshakes declaring a 1 GiB address took VmSize from 760 MB to
    66 GB; now an address over JINN_RAFT_ADDRESS_MAX is refused at once, and
    a header declaring 16 MiB of entries is only held as it arrives."""
    c = cluster_factory(1).start()
    n = c.wait_leader(timeout=30)

    def vmsize():
        with open(f"/proc/{n.proc.pid}/status") as f:
            for line in f:
                if line.startswith("VmSize:"):
                    return int(line.split()[1]) * 1024

    ok = admitted(n)
    before = vmsize()
    socks = []
    try:
        # (a dial may be refused outright: at most 16 hellos per address
        # are pending at once)
        for _ in range(64):
            try:
                s = socket.create_connection(("127.0.0.1", n.raft_port), timeout=5)
                socks.append(s)
                s.sendall(struct.pack("<QQQ", 1, 77, 1 << 30))
            except OSError:
                pass
        for _ in range(30):
            try:
                s = socket.create_connection(("127.0.0.1", n.raft_port), timeout=5)
                socks.append(s)
                # an AppendEntries header declaring 2^20 entries, never sent
                s.sendall(ok + struct.pack("<QQ", APPEND_ENTRIES, 48 + 16 * (1 << 20)))
            except OSError:
                pass
        time.sleep(0.5)  # give the node the time to allocate, if it did
        grown = vmsize() - before
        assert grown < 512 << 20, f"VmSize grew by {grown >> 20} MiB"
        code, _, out = n.request("/v1/kv/ns/k", "PUT", b"v")
        assert code == 200, out
    finally:
        for s in socks:
            s.close()


def test_random_bytes_and_truncated_handshakes(cluster_factory):
    c = cluster_factory(3).start()
    c.wait_leader(timeout=30)
    c.wait_ready(timeout=30)
    target = c.nodes[1]
    term = target.status()["term"]
    before = metric(target, "jinn_raft_connections_refused_total")
    rng = random.Random(15)
    ok = admitted(target)
    for i in range(40):
        blob = bytes(rng.getrandbits(8) for _ in range(rng.randint(1, 600)))
        send(target, blob, linger=0.05)
        # truncated: a valid prefix, then the connection ends
        send(target, ok[:rng.randint(1, len(ok) - 1)], linger=0.05)
        # a valid hello, then random message bytes
        send(target, ok + blob, linger=0.05)
    assert_serving(c, target, term, before)


def test_a_hello_that_never_ends_is_closed(cluster_factory):
    c = cluster_factory(1).start()
    n = c.wait_leader(timeout=30)
    before = metric(n, "jinn_raft_connections_refused_total")
    with socket.create_connection(("127.0.0.1", n.raft_port), timeout=10) as s:
        s.sendall(handshake(77)[:20])
        start = time.monotonic()
        assert s.recv(10) == b""  # closed by the node
        assert time.monotonic() - start < 8
    assert metric(n, "jinn_raft_connections_refused_total") > before


def test_one_packet_does_not_bind_a_joining_node_to_a_foreign_cluster(cluster_factory):
    """(open_attack_findings.py) A node started without --bootstrap used to
    learn its cluster id from the first dialler: one 64-byte packet claiming
    cluster 0xdead bound it for good. Now, without TLS, it takes its
    leader's cluster id once raft follows one."""
    c = cluster_factory(3).start()
    c.wait_leader(timeout=30)
    c.wait_ready(timeout=30)
    n4 = c.add_node()
    n4.start(bootstrap=False)
    wait_for(lambda: n4.status()["role"] == "joining", 20, what="n4 waits to be added")
    with socket.create_connection(("127.0.0.1", n4.raft_port), timeout=5) as s:
        s.sendall(handshake(77) + preamble(0xDEAD, 77))
        s.recv(64)
    leader = c.wait_leader()
    out = subprocess.run([JINN, "members", "add", f"n4={n4.advertised}", "--addr", leader.url],
                         capture_output=True, text=True, timeout=150)
    assert out.returncode == 0, out.stderr
    wait_for(lambda: n4.status()["applied_index"] >= leader.status()["commit_index"], 30,
             what="n4 catches up")
    _, cluster = probe(n4)
    assert cluster == probe(leader)[1]


def test_idle_dials_do_not_take_the_places_of_peers(cluster_factory):
    """A flood of dials that never finish their hello (from another
    address) gets at most 16 places; a restarted peer still reconnects."""
    import threading
    c = cluster_factory(3).start()
    leader = c.wait_leader(timeout=30)
    c.wait_ready(timeout=30)
    stop = threading.Event()
    held = []

    def flood():
        while not stop.is_set():
            try:
                s = socket.socket()
                s.bind(("127.0.0.2", 0))
                s.settimeout(1)
                s.connect(("127.0.0.1", leader.raft_port))
                held.append(s)
            except OSError:
                pass
            while len(held) > 200:
                held.pop(0).close()

    t = threading.Thread(target=flood, daemon=True)
    t.start()
    try:
        follower = next(n for n in c.nodes if n is not leader)
        follower.kill()
        for i in range(20):
            code, _, out = leader.request(f"/v1/kv/ns/f{i}", "PUT", b"x")
            assert code == 200, out
        target = leader.status()["commit_index"]
        follower.start()
        wait_for(lambda: follower.status()["applied_index"] >= target, 30,
                 what="the restarted follower reconnects and catches up")
        assert "from this address" in leader.log()
    finally:
        stop.set()
        t.join()
        for s in held:
            s.close()


def test_a_term_of_2_64_minus_1_is_refused(cluster_factory):
    """(atk3 C1, term_max.py) One RequestVote with term 2^64-1 and the
    disrupt-leader flag, from a peer claiming a member's id (plaintext: the
    cluster id is public), was taken and persisted: the next election's term
    wrapped to 0 and the cluster never had a leader again. Terms and indexes
    >= 2^63 are now refused."""
    c = cluster_factory(3).start()
    leader = c.wait_leader(timeout=30)
    c.wait_ready(timeout=30)
    target = next(n for n in c.nodes if n is not leader)
    other = next(n for n in c.nodes if n is not leader and n is not target)
    other_id, cluster = probe(other)
    term = target.status()["term"]
    before = metric(target, "jinn_raft_connections_refused_total")
    u64max = (1 << 64) - 1
    hello = handshake(other_id, other.advertised.encode() + b"\0") + preamble(cluster, other_id)
    send(target, hello + message(REQUEST_VOTE, struct.pack("<QQQQQ", u64max, other_id, u64max,
                                                           u64max, 1)), linger=1)
    assert_serving(c, target, term, before)
    assert target.status()["term"] < 1 << 63


def test_a_non_member_is_neither_admitted_nor_dialled(cluster_factory):
    """(atk3 C2, reflect.py, client_flood.py) libraft 0.15 makes an outbound
    client, never freed and redialling every 200 ms, for every server id it
    hears from: one pre-vote RequestVote per made-up id grew fds, CPU and
    loop stalls without bound, and made the node dial any address named in
    the handshake. Only members of the configuration, at their configured
    address, now reach raft, and raft dials nothing else."""
    import threading
    c = cluster_factory(3).start()
    leader = c.wait_leader(timeout=30)
    c.wait_ready(timeout=30)
    target = next(n for n in c.nodes if n is not leader)
    other = next(n for n in c.nodes if n is not leader and n is not target)
    other_id, cluster = probe(other)
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(64)
    ours = b"127.0.0.1:%d\0" % srv.getsockname()[1]
    hits = []

    def accept():
        while True:
            try:
                s, _ = srv.accept()
            except OSError:
                return
            hits.append(s)

    threading.Thread(target=accept, daemon=True).start()
    try:
        before = metric(target, "jinn_raft_connections_refused_total")
        for sid in (0x6666, 0x6667, other_id):  # made-up ids, a member's id at our address
            got = send(target, handshake(sid, ours) + preamble(cluster, sid)
                       + message(REQUEST_VOTE, struct.pack("<QQQQQ", 1, sid, 0, 0, 2)))
            assert got == b"", f"id {sid:#x} was answered: {got[:24]!r}"
        wait_for(lambda: metric(target, "jinn_raft_connections_refused_total") >= before + 3, 10,
                 what="the three hellos counted as refused")
        # libraft would redial every 200 ms: watch for 3 s
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline and not hits:
            time.sleep(0.05)
        assert hits == [], f"the node dialled us {len(hits)} times"
        assert "not a member of the raft configuration" in target.log()
        code, _, out = leader.request("/v1/kv/ns/after", "PUT", b"ok")
        assert code == 200, out
    finally:
        srv.close()
        for s in hits:
            s.close()


def test_a_handshake_address_with_control_bytes_is_refused(cluster_factory):
    """(atk3 m1, log_inject.py) The handshake address is where libraft
    answers, and it reached the log as it came: "127.0.0.1:PORT\\n<line>"
    was dialled (atoi) and forged log lines. A node waiting to be added
    (no configuration: it takes the ids that reach it) now refuses an
    address that is not host:port before anything else."""
    c = cluster_factory(1).start()
    c.wait_leader(timeout=30)
    n2 = c.add_node()
    n2.start(bootstrap=False)
    wait_for(lambda: n2.status()["role"] == "joining", 20, what="n2 waits to be added")
    before = metric(n2, "jinn_raft_connections_refused_total")
    forged = b"127.0.0.1:9\n2026-01-01T00:00:00.000Z n2 info  FORGED LINE\0"
    got = send(n2, handshake(0x7777, forged) + preamble(0xBEEF, 0x7777)
               + message(REQUEST_VOTE, struct.pack("<QQQQQ", 1, 0x7777, 0, 0, 2)), linger=1)
    assert got == b"", f"admitted: {got[:24]!r}"
    wait_for(lambda: metric(n2, "jinn_raft_connections_refused_total") > before, 10,
             what="the hello counted as refused")
    assert "not host:port" in n2.log()
    assert not any(line.startswith("2026-01-01") for line in n2.log().splitlines())


# ---- atk3 M1-M4 and the probe answer (issue 15 continues) --------------------

def closed(s):
    """Whether the node closed socket s (without waiting)."""
    s.setblocking(False)
    try:
        while True:
            data = s.recv(65536)
            if not data:
                return True
    except BlockingIOError:
        return False
    except OSError:
        return True
    finally:
        s.setblocking(True)


def answer_of(s):
    data = b""
    while len(data) < 24:
        chunk = s.recv(24 - len(data))
        if not chunk:
            break
        data += chunk
    return data


def test_a_probe_or_a_refusal_does_not_reveal_the_cluster_id(cluster_factory):
    """A probe answered anyone with the cluster id (and a hello naming a
    wrong cluster was refused with ours in the answer). Now a probe learns
    "yours" or "another one", and a refused dialler learns nothing."""
    c = cluster_factory(1).start()
    n = c.wait_leader(timeout=30)
    _, cluster = probe(n)
    assert cluster != 0
    for named in (0, 0x1234):
        _, answered, flags = probe_answer(n, cluster=named)
        assert answered == 0, f"a probe naming {named:#x} learned {answered:#x}"
        assert flags & 4, "the answer says: another cluster"
    _, answered, flags = probe_answer(n, cluster=cluster)
    assert answered == cluster and not flags & 4
    got = send(n, handshake(77) + preamble(0x1234, 77), linger=1)
    assert got[:4] == b"JNPA" and got[5] == 1, got[:24]  # PG_WRONG_CLUSTER
    assert struct.unpack("<Q", got[16:24])[0] == 0


def test_a_dial_that_sends_nothing_is_closed_within_a_second(cluster_factory):
    """(atk3 M1) An inbound connection has JINN_PG_FIRST_BYTE_MS (500 ms)
    to begin its hello (it had the whole 3 s hello deadline)."""
    c = cluster_factory(1).start()
    n = c.wait_leader(timeout=30)
    before = metric(n, "jinn_raft_connections_refused_total")
    with socket.create_connection(("127.0.0.1", n.raft_port), timeout=10) as s:
        start = time.monotonic()
        assert s.recv(10) == b""
        took = time.monotonic() - start
    assert took < 1.5, f"closed after {took:.2f} s"
    wait_for(lambda: metric(n, "jinn_raft_connections_refused_total") > before, 10,
             what="counted as refused")


def test_a_full_hello_table_gives_way_to_a_new_dial(cluster_factory):
    """(atk3 M1) 64 places for connections in their hello (16 per address)
    were shared and first come, first kept: hellos begun and never finished
    from 4 addresses held all of them, and every new dial (a peer's
    reconnect, a probe) was refused until they timed out. Now the oldest
    gives way to the newcomer."""
    c = cluster_factory(1).start()
    n = c.wait_leader(timeout=30)
    held = []
    try:
        for a in range(2, 6):
            for _ in range(16):
                s = socket.socket()
                s.bind((f"127.0.0.{a}", 0))
                s.settimeout(5)
                s.connect(("127.0.0.1", n.raft_port))
                s.sendall(handshake(77)[:8])  # begun: 3 s before it times out
                held.append(s)
        for _ in range(3):
            node_id, _, _ = probe_answer(n)
            assert node_id == n.status()["id"]
        # the first probe got in by evicting (not by a hello timing out)
        wait_for(lambda: "the oldest gives way" in n.log(), 10, what="the eviction logged")
        assert sum(closed(s) for s in held) >= 1  # the first probe took a place
    finally:
        for s in held:
            s.close()


def test_connections_in_a_members_name_are_capped_per_member(cluster_factory):
    """(atk3 M4) 64 admitted places were shared, first come, first kept,
    without an idle timeout: connections claiming a member (plaintext: no
    authentication) took every place, and a restarting peer stayed out.
    Now at most two per server id are admitted, the newest kept."""
    c = cluster_factory(3).start()
    leader = c.wait_leader(timeout=30)
    c.wait_ready(timeout=30)
    target = next(n for n in c.nodes if n is not leader)
    other = next(n for n in c.nodes if n is not leader and n is not target)
    hello = admitted_as(target, other)
    held = []
    try:
        for _ in range(8):
            s = socket.create_connection(("127.0.0.1", target.raft_port), timeout=5)
            s.sendall(hello)
            got = answer_of(s)
            assert got[:4] == b"JNPA" and got[5] == 0, got
            held.append(s)
        wait_for(lambda: sum(closed(s) for s in held[:6]) == 6, 3,
                 what="the six oldest replaced")
        code, _, out = leader.request("/v1/kv/ns/after", "PUT", b"ok")
        assert code == 200, out
    finally:
        for s in held:
            s.close()


def test_an_idle_admitted_connection_is_closed(cluster_factory):
    """(atk3 M4) An admitted connection carrying no message is closed after
    10 election timeouts (it was kept for ever)."""
    c = cluster_factory(3, extra_config=["election_timeout 300ms",
                                         "heartbeat_timeout 100ms"]).start()
    leader = c.wait_leader(timeout=30)
    c.wait_ready(timeout=30)
    target = next(n for n in c.nodes if n is not leader)
    other = next(n for n in c.nodes if n is not leader and n is not target)
    with socket.create_connection(("127.0.0.1", target.raft_port), timeout=15) as s:
        s.sendall(admitted_as(target, other))
        got = answer_of(s)
        assert got[:4] == b"JNPA" and got[5] == 0, got
        start = time.monotonic()
        try:
            assert s.recv(10) == b""
        except socket.timeout:
            raise AssertionError("still open after 15 s") from None
        took = time.monotonic() - start
    assert 2 < took < 10, f"closed after {took:.1f} s (10 election timeouts: 3 s)"
    code, _, out = leader.request("/v1/kv/ns/after", "PUT", b"ok")
    assert code == 200, out


def test_a_trickled_huge_reservation_does_not_block_append_entries(cluster_factory):
    """(atk3 M2) The reservation budget was shared and the stall timer
    restarted on every byte: one connection in the leader's name declaring
    2 GiB, then trickling, made the follower refuse every AppendEntries
    carrying entries. Now a message has a deadline its bytes do not extend,
    and a reservation arriving below JINN_RAFT_MIN_RATE gives way when
    another message needs the budget."""
    import threading
    c = cluster_factory(3).start()
    leader = c.wait_leader(timeout=30)
    c.wait_ready(timeout=30)
    target = next(n for n in c.nodes if n is not leader)
    stop = threading.Event()
    s = socket.create_connection(("127.0.0.1", target.raft_port), timeout=5)
    try:
        s.sendall(admitted_as(target, leader))
        got = answer_of(s)
        assert got[:4] == b"JNPA" and got[5] == 0, got
        s.sendall(message(APPEND_ENTRIES, struct.pack("<QQQQQ", 1, 0, 0, 0, 1)
                          + struct.pack("<QB3xI", 1, 1, 1 << 31) + b"\0" * 8))

        def trickle():
            while not stop.wait(2):
                try:
                    s.sendall(b"\0")
                except OSError:
                    return

        threading.Thread(target=trickle, daemon=True).start()
        for i in range(10):
            code, _, out = leader.request(f"/v1/kv/ns/t{i}", "PUT", b"x")
            assert code == 200, out
        goal = leader.status()["commit_index"]
        wait_for(lambda: target.status()["applied_index"] >= goal, 20,
                 what="the follower keeps receiving entries")
        wait_for(lambda: closed(s), 10, what="the slow reservation closed")
    finally:
        stop.set()
        s.close()


def test_made_up_ids_do_not_keep_a_joining_node_from_being_added(cluster_factory):
    """A node waiting to be added admitted the first 8 server ids that
    reached it, then only those: 8 made-up ids first kept it from ever
    being added. Now the id heard from least recently gives way."""
    c = cluster_factory(3).start()
    leader = c.wait_leader(timeout=30)
    c.wait_ready(timeout=30)
    n4 = c.add_node()
    n4.start(bootstrap=False)
    wait_for(lambda: n4.status()["role"] == "joining", 20, what="n4 waits to be added")
    held = []
    try:
        for i in range(8):
            s = socket.create_connection(("127.0.0.1", n4.raft_port), timeout=5)
            s.sendall(handshake(0x7000 + i) + preamble(0xBEEF, 0x7000 + i))
            got = answer_of(s)
            assert got[:4] == b"JNPA" and got[5] == 0, got
            held.append(s)
        out = subprocess.run([JINN, "members", "add", f"n4={n4.advertised}", "--addr",
                              leader.url], capture_output=True, text=True, timeout=150)
        assert out.returncode == 0, out.stderr
        code, _, body = leader.request("/v1/kv/ns/new", "PUT", b"x")
        assert code == 200, body
        wait_for(lambda: n4.status()["applied_index"] >= leader.status()["commit_index"], 30,
                 what="n4 catches up")
        assert n4.status()["cluster_id"] == leader.status()["cluster_id"]
    finally:
        for s in held:
            s.close()


def test_a_peers_host_has_places_of_its_own(cluster_factory):
    """(atk3 M1) Dials from the host of a configured peer have their own
    places in the hello table: a flood from other addresses neither keeps
    them out nor is evicted by them (127.0.0.1 is every peer's host here)."""
    c = cluster_factory(3).start()
    leader = c.wait_leader(timeout=30)
    c.wait_ready(timeout=30)
    held = []
    try:
        for a in range(2, 6):
            for _ in range(16):
                s = socket.socket()
                s.bind((f"127.0.0.{a}", 0))
                s.settimeout(5)
                s.connect(("127.0.0.1", leader.raft_port))
                s.sendall(handshake(77)[:8])
                held.append(s)
        for _ in range(3):
            node_id, _, _ = probe_answer(leader)  # from a peer's host
            assert node_id == leader.status()["id"]
        code, _, out = leader.request("/v1/kv/ns/after", "PUT", b"ok")
        assert code == 200, out
        assert "the oldest gives way" not in leader.log()
    finally:
        for s in held:
            s.close()
