"""The replica's stream client against scripted stream servers (Python,
contracts17 section 3): the upgrade request it sends, the read-only switch
driven by primary heartbeats, a silent node given up for the next URL, a
node of another cluster refused, and a record that does not follow the
replica's position never applied (it reconnects from the same position)."""
import base64
import hashlib
import json
import os
import socket
import struct
import threading
import time

import subprocess

import pytest

from harness import JINN, free_port, wait_for

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
CLUSTER_A = "00000000000000aa"
CLUSTER_B = "00000000000000bb"


def frame(payload, text=True):
    """One unmasked (server) frame."""
    op = 0x1 if text else 0x2
    n = len(payload)
    if n < 126:
        head = struct.pack("!BB", 0x80 | op, n)
    elif n < 65536:
        head = struct.pack("!BBH", 0x80 | op, 126, n)
    else:
        head = struct.pack("!BBQ", 0x80 | op, 127, n)
    return head + payload


def heartbeat(node="f1", primary=True, position=0, commit=0, term=2):
    return json.dumps({
        "type": "heartbeat", "node": node,
        "leader_id": "0000000000000001" if primary else None,
        "leader_name": "n1" if primary else None,
        "leader_api": "http://127.0.0.1:1" if primary else None,
        "term": term, "commit": commit, "position": position, "time_ms": 1000,
        "quorum": primary, "leader_contact_ms": 0 if primary else -1}).encode()


class FakeNode:
    """Accepts stream connections and follows a script: `mode` decides what
    each connection gets (changeable while it runs)."""

    def __init__(self, name, cluster=CLUSTER_A):
        self.name = name
        self.cluster = cluster
        self.port = free_port()
        self.requests = []  # (request line, headers dict)
        self.times = []  # when each request arrived (monotonic)
        self.mode = "primary"  # primary | no_quorum | silent | refuse | bad_prev | huge_term
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", self.port))
        self.sock.listen(16)
        self.sock.settimeout(0.2)
        self.stopped = False
        self.conns = []
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def url(self):
        return f"ws://127.0.0.1:{self.port}"

    def _accept(self):
        while not self.stopped:
            try:
                c, _ = self.sock.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            self.conns.append(c)
            threading.Thread(target=self._serve, args=(c,), daemon=True).start()

    def _serve(self, c):
        try:
            c.settimeout(10)
            data = b""
            while b"\r\n\r\n" not in data:
                chunk = c.recv(4096)
                if not chunk:
                    return
                data += chunk
            head = data.split(b"\r\n\r\n")[0].decode()
            lines = head.split("\r\n")
            headers = {}
            for line in lines[1:]:
                k, v = line.split(":", 1)
                headers[k.strip().lower()] = v.strip()
            self.requests.append((lines[0], headers))
            self.times.append(time.monotonic())
            if self.mode == "refuse":
                body = b'{"error":"conflict","message":"another cluster"}'
                c.sendall(b"HTTP/1.1 409 Conflict\r\nContent-Length: %d\r\n\r\n%s"
                          % (len(body), body))
                return
            accept = base64.b64encode(
                hashlib.sha1(headers["sec-websocket-key"].encode() + GUID).digest())
            c.sendall(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                      b"Connection: Upgrade\r\nSec-WebSocket-Accept: " + accept + b"\r\n\r\n")
            c.sendall(frame(json.dumps({"type": "hello", "v": 1, "cluster": self.cluster,
                                        "node": self.name}).encode()))
            sent_bad = False
            while not self.stopped:
                mode = self.mode
                if mode == "silent":
                    time.sleep(0.05)
                    continue
                c.sendall(frame(heartbeat(self.name, primary=(mode != "no_quorum"))))
                if mode in ("big_snapshot", "big_snapshot_fragments") and not sent_bad:
                    # an 'S' of 2 MiB + 9 bytes: over a 1 MiB replica_max_snapshot,
                    # in one frame, or in 4 KiB fragments as jinn's nodes send it
                    snap = b"S" + struct.pack("<Q", 5) + b"\0" * (2 << 20)
                    sent_bad = True
                    if mode == "big_snapshot":
                        c.sendall(frame(snap, text=False))
                    else:
                        for off in range(0, len(snap), 4096):
                            op = 0x2 if off == 0 else 0x0
                            fin = 0x80 if off + 4096 >= len(snap) else 0
                            part = snap[off:off + 4096]
                            c.sendall(struct.pack("!BBH", fin | op, 126, len(part)) + part)
                if mode == "ping_flood":
                    # pings as fast as it can, never reading the pongs
                    # (heartbeats between them: the stream looks alive)
                    c.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
                    ping = struct.pack("!BB", 0x89, 125) + b"p" * 125
                    t0 = time.monotonic()
                    while self.mode == "ping_flood" and time.monotonic() - t0 < 0.2:
                        c.sendall(ping * 500)
                    continue
                if mode == "huge_term" and not sent_bad:
                    # one primary heartbeat with a lying term, then the true ones
                    c.sendall(frame(heartbeat(self.name, term=2**62)))
                    sent_bad = True
                if mode == "bad_prev" and not sent_bad:
                    # index 6 after prev 5: not the replica's position (0)
                    rec = struct.pack("<QQI", 6, 5, 8) + b"J" + b"\0" * 7
                    c.sendall(frame(b"E" + struct.pack("<I", 1) + rec, text=False))
                    sent_bad = True
                time.sleep(0.2)
        except OSError:
            pass
        finally:
            c.close()

    def close(self):
        self.stopped = True
        self.sock.close()
        for c in self.conns:
            try:
                c.close()
            except OSError:
                pass


@pytest.fixture
def fakes():
    made = []

    def make(*a, **kw):
        f = FakeNode(*a, **kw)
        made.append(f)
        return f

    yield make
    for f in made:
        f.close()


def replica(cluster_factory, urls, extra=()):
    c = cluster_factory(1)  # not started: only a directory for the replica
    r = c.add_replica(name="r1", sources=[], extra_config=list(extra))
    r.stream_urls = lambda: urls
    return r


def state(r):
    return r.replica(timeout=2)["state"]


def test_the_upgrade_request_and_streaming_state(cluster_factory, fakes):
    f = fakes("f1")
    r = replica(cluster_factory, [f.url], ["replica_token tok-0123456789abcdef"]).start()
    r.wait_state("streaming")
    line, headers = f.requests[0]
    assert line == "GET /v1/stream?from=0&name=r1 HTTP/1.1", line
    assert headers["upgrade"].lower() == "websocket"
    assert "upgrade" in headers["connection"].lower()
    assert headers["sec-websocket-version"] == "13"
    assert len(base64.b64decode(headers["sec-websocket-key"])) == 16
    assert headers["authorization"] == "Bearer tok-0123456789abcdef"
    assert headers["host"] == f"127.0.0.1:{f.port}"
    assert r.replica()["source"] == "f1"
    assert r.stop() == 0


def test_read_only_without_a_primary_heartbeat_and_back(cluster_factory, fakes):
    f = fakes("f1")
    r = replica(cluster_factory, [f.url], ["replica_stale_after 1s"]).start()
    r.wait_state("streaming")
    f.mode = "no_quorum"  # heartbeats keep coming, but no leader with a quorum
    t0 = time.monotonic()
    r.wait_state("read_only", timeout=10)
    assert time.monotonic() - t0 >= 0.8
    code, _, body = r.request("/v1/kv/app/k", "PUT", b"x")
    assert code == 503 and json.loads(body)["error"] == "read_only"
    # (R3 M2: with no primary heartbeat for replica_stale_after the replica
    # tries the next URL, here the same one again: it may be a balancer)
    wait_for(lambda: "trying the next node" in r.log(), timeout=10, what="the node left")
    f.mode = "primary"
    r.wait_state("streaming", timeout=10)
    assert all("from=0" in line for line, _ in f.requests)


def test_a_silent_node_is_left_for_the_next(cluster_factory, fakes):
    a, b = fakes("fa"), fakes("fb")
    r = replica(cluster_factory, [a.url, b.url]).start()
    wait_for(lambda: r.replica(timeout=1)["source"] == "fa", what="streams from fa")
    a.mode = "silent"  # the TCP connection stays open: only the silence tells
    t0 = time.monotonic()
    wait_for(lambda: r.replica(timeout=1)["source"] == "fb", timeout=10, what="switched to fb")
    assert time.monotonic() - t0 >= 1.2  # 2 heartbeats + 1 s of silence
    assert "silent for" in r.log()
    assert b.requests[0][0].startswith("GET /v1/stream?from=0&cluster=" + CLUSTER_A)
    r.wait_state("streaming")


def test_a_node_of_another_cluster_is_refused(cluster_factory, fakes):
    a = fakes("fa", CLUSTER_A)
    other = fakes("fx", CLUSTER_B)
    r = replica(cluster_factory, [a.url, other.url]).start()
    wait_for(lambda: r.replica(timeout=1)["source"] == "fa", what="streams from fa")
    a.close()
    wait_for(lambda: len(other.requests) >= 2, timeout=15, what="tries the other node")
    assert "belongs to cluster " + CLUSTER_B in r.log()
    # it says which cluster it follows, and never streams from the other
    assert all(f"cluster={CLUSTER_A}" in line for line, _ in other.requests)
    assert r.replica()["source"] != "fx"


def test_a_refused_upgrade_is_logged_and_retried(cluster_factory, fakes):
    f = fakes("f1")
    f.mode = "refuse"
    r = replica(cluster_factory, [f.url]).start()
    wait_for(lambda: len(f.requests) >= 3, timeout=15, what="retries with backoff")
    assert "the stream was refused: 409" in r.log()
    f.mode = "primary"
    r.wait_state("streaming", timeout=15)


def test_a_record_off_the_position_is_never_applied(cluster_factory, fakes):
    f = fakes("f1")
    r = replica(cluster_factory, [f.url]).start()
    r.wait_state("streaming")
    f.mode = "bad_prev"
    wait_for(lambda: len(f.requests) >= 2, timeout=15, what="a reconnect")
    assert "does not follow position 0" in r.log()
    assert r.replica()["position"] == 0
    assert all("from=0" in line for line, _ in f.requests)  # resumes from where it is
    assert r.alive()
    # a node that ends every stream at once is retried with a backoff, not
    # at every tick (100 + 200 + 400 ms before the 4th request, +-20 %)
    wait_for(lambda: len(f.requests) >= 5, timeout=15, what="more reconnects")
    first = next(i for i, (line, _) in enumerate(f.requests) if i > 0)
    assert f.times[first + 3] - f.times[first] >= 0.45, f.times


def test_a_node_without_a_primary_is_left_for_the_next(cluster_factory, fakes):
    """R3 M2: a node that lost the cluster keeps sending heartbeats, only no
    primary ones; the replica used to stay on it, read-only for ever, while
    the next listed node had a leader."""
    a, b = fakes("fa"), fakes("fb")
    r = replica(cluster_factory, [a.url, b.url], ["replica_stale_after 1s"]).start()
    wait_for(lambda: r.replica(timeout=1)["source"] == "fa", what="streams from fa")
    r.wait_state("streaming")
    a.mode = "no_quorum"  # the connection stays open and keeps sending heartbeats
    t0 = time.monotonic()
    wait_for(lambda: r.replica(timeout=1)["source"] == "fb", timeout=10, what="moved to fb")
    assert time.monotonic() - t0 >= 0.8  # replica_stale_after without a primary one
    r.wait_state("streaming", timeout=10)
    log = r.log()
    assert "no primary heartbeat for" in log and "(fa has no leader)" in log, log
    assert "trying the next node" in log
    # resumed from its position, on the cluster it follows
    assert b.requests[0][0].startswith("GET /v1/stream?from=0&cluster=" + CLUSTER_A)


def test_no_primary_anywhere_cycles_until_one_appears(cluster_factory, fakes):
    """R3 M2: with no primary node at all it cycles through the list (with
    the usual backoff), read-only, and streams again once a node has a
    leader."""
    a, b = fakes("fa"), fakes("fb")
    a.mode = b.mode = "no_quorum"
    r = replica(cluster_factory, [a.url, b.url], ["replica_stale_after 1s"]).start()
    wait_for(lambda: len(a.requests) >= 2 and len(b.requests) >= 2, timeout=30,
             what="both nodes tried twice")
    assert state(r) == "read_only"
    n = len(a.requests) + len(b.requests)
    # each connection is given replica_stale_after: not a reconnect per tick
    assert n <= 2 + 2 * (time.monotonic() - a.times[0]), (n, a.times, b.times)
    b.mode = "primary"
    wait_for(lambda: r.replica(timeout=1)["source"] == "fb", timeout=20, what="settles on fb")
    r.wait_state("streaming", timeout=10)


def test_a_snapshot_over_the_limit_is_refused_clearly_and_not_refetched(cluster_factory,
                                                                       fakes):
    """R3 M3 + m4: a snapshot over replica_max_snapshot used to be logged as
    "closed by the node (1002 protocol error)" and fetched again every 2 s."""
    f = fakes("f1")
    f.mode = "big_snapshot_fragments"
    r = replica(cluster_factory, [f.url], ["replica_max_snapshot 1MiB"]).start()
    wait_for(lambda: "over the limit" in r.log(), timeout=15, what="the refusal logged")
    log = r.log()
    assert ("refused a snapshot of more than %d bytes over the limit %d (replica_max_snapshot)"
            % (1 << 20, 1 << 20)) in log, log
    assert "closed by the node" not in log
    assert r.replica()["position"] == 0
    # it waits long before fetching the same snapshot again: an absence over
    # a window (the old code was back within 2 s)
    time.sleep(5)
    assert len(f.requests) == 1, f.times
    assert r.alive()


def test_a_snapshot_frame_over_the_limit_says_its_size(cluster_factory, fakes):
    """R3 M3: one frame a little over the limit (what wslay lets through to
    the frame-header check): its exact size is logged."""
    f = fakes("f1")
    f.mode = "big_snapshot"
    r = replica(cluster_factory, [f.url], ["replica_max_snapshot 2MiB"]).start()
    wait_for(lambda: "over the limit" in r.log(), timeout=15, what="the refusal logged")
    assert ("refused a snapshot of %d bytes over the limit %d" % ((2 << 20) + 9, 2 << 20)
            in r.log()), r.log()


def test_one_heartbeat_with_a_huge_term_does_not_lock_the_replica_out(cluster_factory, fakes):
    """A3 m1: one heartbeat with term 2**62 (a hostile or MITM ws:// source)
    made the replica ignore every true heartbeat after it (term 2 < 2**62):
    read-only for good. The term remembered now expires with the read-only
    switch, so the true heartbeats count again within replica_stale_after."""
    f = fakes("f1")
    r = replica(cluster_factory, [f.url], ["replica_stale_after 1s"]).start()
    r.wait_state("streaming")
    assert r.status()["term"] == 2
    f.mode = "huge_term"
    wait_for(lambda: f"(term {2**62})" in r.log(), timeout=10, what="the lying term taken")
    t0 = time.monotonic()
    wait_for(lambda: r.status()["term"] == 2 and state(r) == "streaming", timeout=10,
             what="the true term heard again")
    assert time.monotonic() - t0 < 5  # replica_stale_after (1 s) + a heartbeat, with room
    # and it stays so: every true heartbeat counts again
    deadline = time.monotonic() + 1.5
    while time.monotonic() < deadline:
        st = r.status()
        assert st["term"] == 2 and st["replica"]["state"] == "streaming", st
        time.sleep(0.1)


def _rss_kb(pid):
    with open(f"/proc/{pid}/status") as fh:
        return next(int(line.split()[1]) for line in fh if line.startswith("VmRSS"))


def test_a_node_that_pings_and_never_reads_is_left(cluster_factory, fakes):
    """A3 m4: the replica answered every ping at once and queued the pongs
    in libuv without a bound (RSS grew with the sender's rate); now more
    than 64 KiB waiting to go out ends the stream, and it reconnects."""
    f = fakes("f1")
    r = replica(cluster_factory, [f.url]).start()
    r.wait_state("streaming")
    before = _rss_kb(r.proc.pid)
    f.mode = "ping_flood"
    wait_for(lambda: "the node does not read what this replica sends" in r.log(), timeout=30,
             what="the stream left")
    peak = _rss_kb(r.proc.pid)
    f.mode = "primary"
    wait_for(lambda: len(f.requests) >= 2, timeout=15, what="a reconnect")
    r.wait_state("streaming", timeout=15)
    assert r.alive()
    print("replica RSS (kB) before the flood, when it left:", before, peak)
    assert peak - before < 64 * 1024, (before, peak)  # kB: the kernel's buffers, not more


def test_cli_usage(tmp_path):
    out = subprocess.run([JINN, "replica"], capture_output=True, text=True, timeout=30)
    assert out.returncode == 2 and "config file is required" in out.stderr
    out = subprocess.run([JINN, "replica", "--help"], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0 and "usage: jinn replica -c FILE" in out.stdout
    conf = tmp_path / "r.conf"
    conf.write_text("{\n server_name r1\n data_dir %s\n replica_of ws://127.0.0.1:1\n"
                    " cluster_peers n1=127.0.0.1:7001\n}\n" % (tmp_path / "d"))
    out = subprocess.run([JINN, "replica", "-c", str(conf)], capture_output=True, text=True,
                         timeout=30)
    assert out.returncode == 2 and "cluster_peers" in out.stderr, out.stderr
    assert not (tmp_path / "d").exists()  # refused before anything was written
    out = subprocess.run([JINN, "help"], capture_output=True, text=True, timeout=30)
    assert "jinn replica -c FILE" in out.stdout
