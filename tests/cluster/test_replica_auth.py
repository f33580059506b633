"""An edge replica with tokens on: its replica_token needs cluster:replica;
without a token (401) or with one lacking the rule (403) it is refused
before the upgrade and never applies anything. And it never holds the
cluster's internal key (R in its place), refuses node credentials and
agrees with the cluster's checks."""
import base64
import hashlib
import json
import os
import re
import socket
import struct
import subprocess
import time

from harness import JINN, wait_for
from test_tokens import ADMIN, BOOT, bearer, create, start

POLICIES = ["consensus {", "    app { mode ap  stale_reads true  max_staleness 1h }", "}"]


def test_replica_token_needs_the_replica_rule(cluster_factory, monkeypatch):
    monkeypatch.delenv("JINN_REPLICA_TOKEN", raising=False)
    c, leader = start(cluster_factory, extra=POLICIES)
    tok = create(leader, "edge", ["cluster:replica"])
    r = c.add_replica(name="r1", extra_config=POLICIES + [f"replica_token {tok}"]).start()
    r.wait_state("streaming")
    code, hdr, body = leader.request("/v1/kv/app/k", "PUT", b"v", c.auth_headers)
    assert code == 200, body
    r.wait_position(int(hdr["X-Jinn-Index"]))

    nothing = c.add_replica(name="r2", extra_config=POLICIES).start()
    wait_for(lambda: "the stream was refused: 401" in nothing.log(), timeout=15,
             what="401 without a token")
    kv_only = create(leader, "kvonly", ["kv:app/*:read"])
    wrong = c.add_replica(name="r3", extra_config=POLICIES + [f"replica_token {kv_only}"])
    wrong.start()
    wait_for(lambda: "the stream was refused: 403" in wrong.log(), timeout=15,
             what="403 without cluster:replica")
    for x in (nothing, wrong):
        st = x.replica()
        assert st["position"] == 0 and st["state"] != "streaming", st

    # the token from the environment works the same
    env = c.add_replica(name="r4", extra_config=POLICIES)
    env.env["JINN_REPLICA_TOKEN"] = tok
    env.start()
    env.wait_state("streaming")


# ---- K1: an edge replica never holds the cluster's internal key ----------------

# The first TOKEN_PUT (the bootstrap token, rules cluster:admin) carries the
# key right after its rules (cmd.c: u32 length + bytes, little-endian).
KEY_MARK = struct.pack("<I", 13) + b"cluster:admin" + struct.pack("<I", 32)


def files_under(path):
    for root, _, names in os.walk(path):
        for name in names:
            p = os.path.join(root, name)
            try:
                with open(p, "rb") as f:
                    yield p, f.read()
            except OSError:
                pass


def internal_key(node):
    """The key, read from a voter's raft log (the bootstrap TOKEN_PUT)."""
    for _, data in files_under(node.data_dir):
        at = data.find(KEY_MARK)
        if at >= 0:
            return data[at + len(KEY_MARK):at + len(KEY_MARK) + 32]
    return None


def replica_key(key):
    return hashlib.sha256(b"jinn-replica-key\0" + key).digest()


def holds(blob, key):
    return key in blob or key.hex().encode() in blob


def capture_stream(node, token, frm=0, seconds_after_data=1.0, deadline=15.0):
    """A raw /v1/stream session from position frm: every message, in order."""
    s = socket.create_connection(("127.0.0.1", node.http_port), timeout=5)
    wskey = base64.b64encode(os.urandom(16)).decode()
    s.sendall((f"GET /v1/stream?from={frm}&name=capture HTTP/1.1\r\nHost: 127.0.0.1\r\n"
               f"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
               f"Sec-WebSocket-Key: {wskey}\r\nAuthorization: Bearer {token}\r\n\r\n").encode())
    buf = b""
    while b"\r\n\r\n" not in buf:
        chunk = s.recv(65536)
        assert chunk, buf
        buf += chunk
    head, buf = buf.split(b"\r\n\r\n", 1)
    assert head.startswith(b"HTTP/1.1 101"), head

    def need(n):
        nonlocal buf
        while len(buf) < n:
            chunk = s.recv(1 << 20)
            if not chunk:
                raise EOFError
            buf += chunk

    messages, partial, data_at = [], b"", None
    end = time.monotonic() + deadline
    s.settimeout(0.5)
    while time.monotonic() < end:
        if data_at is not None and time.monotonic() > data_at + seconds_after_data:
            break
        try:
            need(2)
            b0, b1 = buf[0], buf[1]
            n, off = b1 & 0x7f, 2
            if n == 126:
                need(4)
                n, off = struct.unpack(">H", buf[2:4])[0], 4
            elif n == 127:
                need(10)
                n, off = struct.unpack(">Q", buf[2:10])[0], 10
            need(off + n)
        except socket.timeout:
            continue
        payload, buf = buf[off:off + n], buf[off + n:]
        op = b0 & 0x0f
        if op in (0, 1, 2):
            partial += payload
            if b0 & 0x80:
                messages.append(partial)
                if partial[:1] in (b"S", b"E") and data_at is None:
                    data_at = time.monotonic()
                partial = b""
        elif op == 8:
            break
    s.close()
    return messages


def records(messages):
    """(index, prev, bytes) of every record in the 'E' messages."""
    out = []
    for m in messages:
        if m[:1] != b"E":
            continue
        count, off = struct.unpack("<I", m[1:5])[0], 5
        for _ in range(count):
            index, prev, n = struct.unpack("<QQI", m[off:off + 20])
            out.append((index, prev, m[off + 20:off + 20 + n]))
            off += 20 + n
    return out


def test_replica_never_holds_the_internal_key(cluster_factory, monkeypatch):
    monkeypatch.delenv("JINN_REPLICA_TOKEN", raising=False)
    c, leader = start(cluster_factory, extra=POLICIES)
    tok = create(leader, "edge", ["cluster:replica", "kv:app/*:read"])
    key = internal_key(leader)
    assert key is not None and len(key) == 32, "the key is in the voter's raft log"
    r_key = replica_key(key)

    # what the stream sends from position 0 (snapshot and/or records)
    msgs = capture_stream(leader, tok)
    data = [m for m in msgs if m[:1] in (b"S", b"E")]
    assert data, msgs[:3]
    blob = b"".join(data)
    assert not holds(blob, key), "the stream carried the internal key"
    assert r_key in blob, "the replica's substitute R is what it gets"
    snaps = [m for m in data if m[:1] == b"S"]
    assert snaps, "a new replica starts from a snapshot"
    r = c.add_replica(name="r1", extra_config=POLICIES + [f"replica_token {tok}"]).start()
    r.wait_state("streaming")
    code, hdr, body = leader.request("/v1/kv/app/k", "PUT", b"v", ADMIN)
    assert code == 200, body
    r.wait_position(int(hdr["X-Jinn-Index"]))
    # a later token (no key in it) streams as a record, tokens work there
    later = create(leader, "later", ["kv:app/*:read"])
    wait_for(lambda: r.request("/v1/kv/app/k", headers=bearer(later))[0] == 200,
             what="the later token works on the replica")
    assert r.request("/v1/kv/app/k", headers=bearer(tok))[0] == 200

    # node and function credentials are refused on the replica, the key's and R's
    for k in (key, r_key):
        code, _, body = r.request("/v1/kv/app/k", headers=bearer("jinn-node." + k.hex()))
        assert code == 401, body
        code, _, body = r.request("/v1/status", headers=bearer("jinn-node." + k.hex()))
        assert code == 401, body
    # while the voters still take the real one (their own calls use it)
    assert leader.request("/v1/kv/app/k", headers=bearer("jinn-node." + key.hex()))[0] == 200

    # `jinn check` on the cluster: the replica compares with the redacted
    # digest and agrees (not halted)
    out = subprocess.run([JINN, "check", "--addr", leader.url], capture_output=True, text=True,
                         timeout=90, env={**os.environ, "JINN_TOKEN": BOOT})
    assert out.returncode == 0, (out.stdout, out.stderr)
    m = re.search(r"check at index (\d+): agreed", out.stdout)
    assert m, out.stdout
    index = int(m.group(1))
    assert re.search(r"edge replicas' digest [0-9a-f]{16}", out.stdout), out.stdout
    wait_for(lambda: f"check {index}: this replica agrees with the cluster" in r.log(),
             timeout=30, what="the replica agrees")
    code, _, body = leader.request("/v1/cluster/check", headers=ADMIN)
    doc = json.loads(body)
    assert doc["index"] == index and doc["state"] == "agreed", doc
    assert doc["majority_redacted"] and doc["majority_redacted"] != doc["majority"], doc
    assert "DIVERGENCE" not in r.log() and "differs" not in r.log()
    assert r.replica()["state"] == "streaming"
    code, _, _ = r.request("/v1/kv/app/k", headers=bearer(tok))
    assert code == 200

    # nothing the replica wrote holds the key
    r.stop()
    for path, content in files_under(r.data_dir):
        assert not holds(content, key), f"{path} holds the internal key"


def test_first_token_put_streams_with_r_in_place_of_the_key(cluster_factory):
    """The TOKEN_PUT that carries the key, streamed as a record: R in its
    place. A replica is connected before the first token is created, so the
    node keeps records (it keeps none while no replica is around)."""
    import wsclient
    c = cluster_factory(3).start()
    c.wait_ready()
    leader = c.wait_leader()
    ws, status, _, body = wsclient.connect(leader.http_port, "/v1/stream?from=0&name=early")
    assert status == 101, body
    code, _, out = leader.request(
        "/v1/tokens", "POST", json.dumps({"name": "first", "allow": ["cluster:admin"]}).encode())
    assert code == 201, out  # auth is off until the first token exists
    key = internal_key(leader)
    assert key is not None and len(key) == 32, "the key is in the voter's raft log"
    token_put, deadline = None, time.monotonic() + 20
    while token_put is None and time.monotonic() < deadline:
        kind, data = ws.recv(timeout=max(0.1, deadline - time.monotonic()))
        assert kind != "close", data
        if kind == "binary":
            assert not holds(data, key), "the stream carried the internal key"
            if data[:1] == b"E":
                token_put = next((e for _, _, e in wsclient.parse_records(data)
                                  if KEY_MARK in e), None)
    assert token_put is not None, "the stream sent the first TOKEN_PUT as a record"
    at = token_put.index(KEY_MARK) + len(KEY_MARK)
    assert token_put[at:at + 32] == replica_key(key)
    ws.close()
