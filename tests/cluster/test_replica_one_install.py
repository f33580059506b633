"""R5 M1: a replica connection closed while its snapshot decodes on a
worker (a close frame in the same read as the snapshot's tail) used to
reconnect at once; the source sent a snapshot again and a second install
ran in parallel over the same sql/NAME.db.restore images (a valid snapshot
refused as corrupt, an older one committed while a newer decoded). Now the
stream owns the install: no reconnect until it is swapped in (or refused)
and its unused state freed. Adapted from R5's reproduction
(test_r5_double_install.py), which showed two installs at once in 11/11
runs on the old code."""
import base64, hashlib, json, socket, struct, threading, time

import pytest
import wsclient
from harness import wait_for
from test_replica import rows
from test_replica_client import frame, heartbeat, GUID, replica

JSON = {"Content-Type": "application/json"}


def capture(n):
    """The hello and the first 'S' a node streams from 0."""
    ws, status, _, _ = wsclient.connect(n.http_port, "/v1/stream?from=0&name=cap", timeout=60)
    assert status == 101
    hello = None
    while True:
        kind, data = ws.recv(timeout=60)
        if kind == "text":
            m = json.loads(data)
            if m["type"] == "hello":
                hello = m
        elif data[:1] == b"S":
            ws.close()
            return hello, data


def serve(sock, hello, snaps, delay, log):
    """Connection 0: the first snapshot and a close frame in one write (the
    replica reads both at once); connection 1: the second snapshot after
    delay; later ones: the hello only."""
    def one(c, k):
        try:
            c.settimeout(30)
            data = b""
            while b"\r\n\r\n" not in data:
                data += c.recv(4096)
            hdrs = {}
            for line in data.split(b"\r\n\r\n")[0].decode().split("\r\n")[1:]:
                a, b = line.split(":", 1)
                hdrs[a.strip().lower()] = b.strip()
            log.append(time.monotonic())
            acc = base64.b64encode(hashlib.sha1(hdrs["sec-websocket-key"].encode() + GUID).digest())
            c.sendall(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                      b"Connection: Upgrade\r\nSec-WebSocket-Accept: " + acc + b"\r\n\r\n")
            c.sendall(frame(json.dumps(hello).encode()))
            c.sendall(frame(heartbeat(hello["node"], position=0, commit=0)))
            if k == 0:
                time.sleep(1.2)  # a stable connection: the old code reconnected at once
                close = struct.pack("!BB", 0x88, 2) + struct.pack("!H", 1001)
                c.sendall(frame(snaps[0], text=False) + close)
            elif k == 1:
                time.sleep(delay)
                c.sendall(frame(snaps[1], text=False))
            time.sleep(20)
        except OSError:
            pass
        finally:
            c.close()
    k = 0
    while True:
        try:
            c, _ = sock.accept()
        except OSError:
            return
        threading.Thread(target=one, args=(c, k), daemon=True).start()
        k += 1


def exec_all(n, stmts):
    for at in range(0, len(stmts), 16):
        body = json.dumps({"statements": [{"sql": s} for s in stmts[at:at + 16]]}).encode()
        code, _, out = n.request("/v1/sql/app/exec", "POST", body, JSON, timeout=60)
        assert code == 200, out


def install_events(lg):
    """The install lines in order: ('start', index) and ('end', index)."""
    ev = []
    for line in lg.splitlines():
        if "installing a snapshot at " in line:
            ev.append(("start", int(line.split("installing a snapshot at ")[1].split()[0])))
        elif "replica: snapshot at " in line and ("swapped in" in line or "refused" in line):
            ev.append(("end", int(line.split("replica: snapshot at ")[1].split()[0])))
    return ev


@pytest.mark.parametrize("large_first", [True, False])
def test_one_install_at_a_time(cluster_factory, large_first):
    """large_first: a 43 MB snapshot, then (after the close) a later small
    one; else a large later one after an older small one. Either way the
    second install starts only after the first ended, no valid snapshot is
    refused, and the replica ends at the later snapshot's state."""
    big = ["CREATE TABLE t(id INTEGER PRIMARY KEY, b BLOB)"] + \
        ["INSERT INTO t(b) VALUES (randomblob(900000))"] * 48
    c = cluster_factory(1, extra_config=["max_body 2MiB", "check_interval 0s"]).start()
    c.wait_ready()
    n = c.wait_leader()
    exec_all(n, big if large_first else big[:2])
    hello, snap_a = capture(n)
    # a later snapshot: a second cluster whose log is longer
    c2 = cluster_factory(1, extra_config=["max_body 2MiB", "check_interval 0s"]).start()
    c2.wait_ready()
    n2 = c2.wait_leader()
    exec_all(n2, big[:2] if large_first else big)
    for _ in range(70):
        exec_all(n2, ["SELECT 1"])
    _, snap_b = capture(n2)
    a = struct.unpack_from("<Q", snap_a, 1)[0]
    b = struct.unpack_from("<Q", snap_b, 1)[0]
    assert b > a, (a, b)
    b_rows = [[1]] if large_first else [[48]]
    # first the later large one, then the older small one: the older must
    # not be swapped in over (or while) the newer decodes
    snaps = [snap_a, snap_b] if large_first else [snap_b, snap_a]
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(8)
    port = sock.getsockname()[1]
    log = []
    threading.Thread(target=serve, args=(sock, hello, snaps, 0.1, log), daemon=True).start()
    r = replica(cluster_factory, [f"ws://127.0.0.1:{port}"], extra=["replica_max_snapshot 1GiB"])
    r.start()
    try:
        if large_first:
            # both installs run, one after the other
            wait_for(lambda: sum(1 for e in install_events(r.log()) if e[0] == "end") >= 2
                     or not r.alive(), timeout=120, what="two installs ended")
        else:
            # the older one is refused before decoding (older than the state)
            wait_for(lambda: r.alive() and r.replica()["position"] == b and len(log) >= 2,
                     timeout=120, what="the later snapshot installed and a reconnect")
            wait_for(lambda: "older than the position" in r.log() or not r.alive(),
                     timeout=30, what="the second connection's older snapshot refused")
    finally:
        sock.close()
    assert r.alive()
    lg = r.log()
    ev = install_events(lg)
    # one at a time: starts and ends alternate
    for i, e in enumerate(ev):
        assert e[0] == ("start" if i % 2 == 0 else "end"), ev
    assert "not a readable database" not in lg
    assert "refused" not in lg or not large_first, lg
    wait_for(lambda: r.replica()["position"] == b, timeout=30, what="the later position")
    assert rows(r, "app", "SELECT count(*) FROM t") == b_rows
