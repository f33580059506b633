"""The HTTP server's limits and framing, over raw sockets."""
import json
import os
import urllib.parse
import socket
import time

import pytest

from harness import loop_budget, wait_for


@pytest.fixture
def node(cluster_factory):
    c = cluster_factory(1, extra_config=["max_body 4KiB", "read_timeout 300ms",
                                         "idle_timeout 1s"]).start()
    c.wait_leader()
    c.wait_ready()
    return c.nodes[0]


def exchange(node, raw, read_until_close=True, timeout=5):
    s = socket.create_connection(("127.0.0.1", node.http_port), timeout=timeout)
    s.sendall(raw)
    data = b""
    try:
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
            if not read_until_close and b"\r\n\r\n" in data:
                head, _, rest = data.partition(b"\r\n\r\n")
                length = int([l for l in head.split(b"\r\n") if l.lower().startswith(
                    b"content-length:")][0].split(b":")[1])
                if len(rest) >= length:
                    break
    finally:
        s.close()
    return data


def status_of(resp):
    return int(resp.split(b" ", 2)[1])


def test_keep_alive_and_pipelining(node):
    two = (b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
           b"GET /v1/status HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    resp = exchange(node, two)
    assert resp.count(b"HTTP/1.1 200 OK") == 2
    assert b"Connection: keep-alive" in resp and b"Connection: close" in resp


def test_malformed_request_is_400_and_closes(node):
    resp = exchange(node, b"GET / HTTP/9.9\r\n\r\n")
    assert status_of(resp) == 400
    assert json.loads(resp.split(b"\r\n\r\n", 1)[1])["error"] == "bad_request"
    assert b"Connection: close" in resp


def test_header_limit_is_431(node):
    resp = exchange(node, b"GET /healthz HTTP/1.1\r\nX-Big: " + b"a" * 20000 + b"\r\n\r\n")
    assert status_of(resp) == 431


def test_target_limit_is_414(node):
    resp = exchange(node, b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\n\r\n")
    assert status_of(resp) == 414


def test_body_limit_is_413(node):
    resp = exchange(node, b"POST /v1/internal/nodes HTTP/1.1\r\nContent-Length: 5000\r\n\r\n")
    assert status_of(resp) == 413
    big_chunk = b"%x\r\n" % 5000 + b"a" * 5000 + b"\r\n0\r\n\r\n"
    resp = exchange(node, b"POST /v1/internal/nodes HTTP/1.1\r\nTransfer-Encoding: chunked"
                          b"\r\n\r\n" + big_chunk)
    assert status_of(resp) == 413


def test_chunked_body_is_accepted(node):
    body = json.dumps({"id": 5, "name": "chunky", "api": "http://127.0.0.1:5"}).encode()
    raw = (b"PUT /v1/kv/ns/chunky HTTP/1.1\r\nTransfer-Encoding: chunked\r\n"
           b"Connection: close\r\n\r\n" + b"%x\r\n" % len(body) + body + b"\r\n0\r\n\r\n")
    assert status_of(exchange(node, raw)) == 200


def test_unknown_path_404_and_wrong_method_405(node):
    assert status_of(exchange(node, b"GET /nope HTTP/1.1\r\nConnection: close\r\n\r\n")) == 404
    resp = exchange(node, b"DELETE /v1/status HTTP/1.1\r\nConnection: close\r\n\r\n")
    assert status_of(resp) == 405
    resp = exchange(node, b"GET /v1/%zz HTTP/1.1\r\nConnection: close\r\n\r\n")
    assert status_of(resp) == 404


def test_slow_request_is_408(node):
    s = socket.create_connection(("127.0.0.1", node.http_port), timeout=5)
    s.sendall(b"GET /healthz HTTP/1.1\r\nHost:")  # and then nothing
    t0 = time.monotonic()
    data = b""
    while True:
        chunk = s.recv(4096)
        if not chunk:
            break
        data += chunk
    s.close()
    assert status_of(data) == 408
    assert time.monotonic() - t0 < 4  # read_timeout is 300ms; generous bound


def test_idle_connection_is_closed(node):
    s = socket.create_connection(("127.0.0.1", node.http_port), timeout=5)
    assert s.recv(1) == b""  # closed by the server after idle_timeout
    s.close()


def test_metrics_text_format(node):
    code, headers, body = node.request("/metrics")
    assert code == 200
    assert headers["Content-Type"].startswith("text/plain")
    text = body.decode()
    assert "jinn_raft_is_leader 1" in text
    assert 'jinn_http_responses_total{class="2xx"}' in text
    for line in text.splitlines():
        assert line.startswith("#") or len(line.split(" ")) == 2, line


def test_client_gone_before_reply_does_not_crash(node):
    for _ in range(20):
        s = socket.create_connection(("127.0.0.1", node.http_port))
        body = json.dumps({"id": 9, "name": "gone", "api": "http://127.0.0.1:9"}).encode()
        s.sendall(b"PUT /v1/kv/ns/gone HTTP/1.1\r\nContent-Length: %d\r\n\r\n" % len(body)
                  + body)
        s.close()
    wait_for(lambda: node.request("/healthz")[0] == 200, what="node still healthy")
    assert node.stop() == 0


# ---- request buffer ownership (issue 10, item 1) and HTTP-level item 8 ----

BIG_BODY = 1 << 20  # the default max_body


@pytest.fixture
def big(cluster_factory):
    c = cluster_factory(1, extra_config=["max_body 1MiB"]).start()
    c.wait_leader()
    c.wait_ready()
    return c.nodes[0]


class Responses:
    """Reads responses (with a Content-Length) one by one from a socket,
    keeping whatever arrived after the current one."""

    def __init__(self, sock):
        self.sock = sock
        self.buf = b""

    def _fill(self, what):
        chunk = self.sock.recv(65536)
        assert chunk, f"connection closed mid-{what}: {self.buf[:200]!r}"
        self.buf += chunk

    def next(self):
        while b"\r\n\r\n" not in self.buf:
            self._fill("head")
        head, _, rest = self.buf.partition(b"\r\n\r\n")
        lines = head.split(b"\r\n")
        length = int([l for l in lines if l.lower().startswith(b"content-length:")][0]
                     .split(b":")[1])
        self.buf = rest
        while len(self.buf) < length:
            self._fill("body")
        body, self.buf = self.buf[:length], self.buf[length:]
        return int(lines[0].split(b" ")[1]), head, body


def read_response(s):
    """One response from a socket that has nothing else to send."""
    r = Responses(s)
    out = r.next()
    assert r.buf == b"", "unexpected bytes after the response"
    return out


def put_raw(key, value, extra=b""):
    return (b"PUT /v1/kv/ns/%s HTTP/1.1\r\nHost: x\r\nIf-None-Match: *\r\n%s"
            b"Content-Length: %d\r\n\r\n" % (key, extra, len(value)) + value)


def send_in_pieces(s, raw, piece):
    for i in range(0, len(raw), piece):
        s.sendall(raw[i:i + piece])


@pytest.mark.parametrize("size", [0, 1, 3000, 4097, 20000, 300000, BIG_BODY])
@pytest.mark.parametrize("pattern", ["one_write", "small_pieces"])
def test_body_sizes_and_read_patterns_store_exact_bytes(big, size, pattern):
    value = os.urandom(size)
    key = b"k-%d-%s" % (size, pattern.encode())
    raw = put_raw(key, value)
    with socket.create_connection(("127.0.0.1", big.http_port), timeout=20) as s:
        if pattern == "one_write":
            s.sendall(raw)
        else:
            # Small pieces make the server read the head and the body over
            # many callbacks, growing its buffer between them.
            send_in_pieces(s, raw, 7 if size <= 20000 else 4096)
        code, head, body = read_response(s)
        assert code == 200, body
        s.sendall(b"GET /v1/kv/ns/%s HTTP/1.1\r\nHost: x\r\n\r\n" % key)
        code, head, body = read_response(s)
        assert code == 200
        assert body == value


def test_expect_100_continue_then_large_body(big):
    value = os.urandom(200000)
    raw = put_raw(b"cont", value, b"Expect: 100-continue\r\n")
    head_end = raw.index(b"\r\n\r\n") + 4
    with socket.create_connection(("127.0.0.1", big.http_port), timeout=20) as s:
        s.sendall(raw[:head_end])
        got = b""
        while b"\r\n\r\n" not in got:
            got += s.recv(4096)
        assert got.startswith(b"HTTP/1.1 100 Continue\r\n\r\n")
        send_in_pieces(s, raw[head_end:], 1000)
        code, _, body = read_response(s)
        assert code == 200, body
    assert big.request("/v1/kv/ns/cont")[2] == value


def test_pipelined_requests_after_large_body(big):
    value = os.urandom(500000)
    raw = (put_raw(b"pipe", value, b"If-Match: \"999\"\r\n").replace(b"If-None-Match: *\r\n", b"")
           + put_raw(b"pipe", value)
           + b"GET /v1/kv/ns/pipe HTTP/1.1\r\nHost: x\r\n\r\n"
           + b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    with socket.create_connection(("127.0.0.1", big.http_port), timeout=20) as s:
        s.sendall(raw)
        r = Responses(s)
        # If-Match against a missing key is read from the request head: it
        # must come from the live buffer, not freed memory.
        assert r.next()[0] in (404, 412)
        assert r.next()[0] == 200
        code, _, body = r.next()
        assert code == 200 and body == value
        assert r.next()[0] == 200


def test_max_body_exact_is_stored_and_one_more_is_413(big):
    value = os.urandom(BIG_BODY)
    code, _, body = big.request("/v1/kv/ns/exact", "PUT", value)
    assert code == 200, body
    assert big.request("/v1/kv/ns/exact")[2] == value
    resp = exchange(big, put_raw(b"over", value + b"x"))
    assert status_of(resp) == 413
    chunked = (b"PUT /v1/kv/ns/over HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"
               + b"%x\r\n" % (BIG_BODY + 1) + value + b"x\r\n0\r\n\r\n")
    assert status_of(exchange(big, chunked)) == 413
    assert big.request("/v1/kv/ns/over")[0] == 404


def test_write_without_length_is_411(node):
    for method in (b"PUT", b"POST"):
        resp = exchange(node, method + b" /v1/kv/ns/nolen HTTP/1.1\r\nHost: x\r\n"
                        b"Connection: close\r\n\r\n")
        assert status_of(resp) == 411, resp
        assert json.loads(resp.split(b"\r\n\r\n", 1)[1])["error"] == "length_required"
    assert node.request("/v1/kv/ns/nolen")[0] == 404
    # An explicit empty body is still a value.
    resp = exchange(node, b"PUT /v1/kv/ns/empty HTTP/1.1\r\nContent-Length: 0\r\n"
                    b"Connection: close\r\n\r\n")
    assert status_of(resp) == 200


def test_chunked_trailers_are_validated(node):
    base = b"PUT /v1/kv/ns/tr HTTP/1.1\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
    ok = exchange(node, base + b"3\r\nabc\r\n0\r\nX-Checksum: 1\r\n\r\n")
    assert status_of(ok) == 200
    assert node.request("/v1/kv/ns/tr")[2] == b"abc"
    for bad in (b"0\r\nno colon here\r\n\r\n", b"0\r\n: empty-name\r\n\r\n",
                b"0\r\nBad Name: x\r\n\r\n", b"0\r\nX-Ctl: a\x01b\r\n\r\n",
                b"0\r\n" + b"X-Long: " + b"a" * 5000 + b"\r\n\r\n",
                b"0\r\n" + b"".join(b"X-%d: y\r\n" % i for i in range(100)) + b"\r\n"):
        resp = exchange(node, base + b"3\r\nxyz\r\n" + bad)
        assert status_of(resp) in (400, 431), (bad[:40], resp[:80])
    assert node.request("/v1/kv/ns/tr")[2] == b"abc"


def test_key_up_to_the_limit_percent_encoded(big):
    key = "é" * 512  # 1024 bytes of UTF-8, 3072 bytes percent-encoded
    path = "/v1/kv/ns/" + urllib.parse.quote(key, safe="")
    code, _, body = big.request(path, "PUT", b"v")
    assert code == 200, body
    code, _, body = big.request(path)
    assert code == 200 and body == b"v"
    code, _, body = big.request("/v1/kv/ns/" + "%41" * 1024)
    assert code == 404  # fine, just absent
    for n in (1025, 1100, 2000):
        code, _, body = big.request("/v1/kv/ns/" + "%41" * n, "PUT", b"v")
        assert code == 400
        assert "percent" not in json.loads(body)["message"], body


# ---- bounded watch replies, slow readers, the loop budget (item 4) ----------

def metric(node, name):
    body = node.request("/metrics")[2].decode()
    for line in body.splitlines():
        if line.startswith(name + " "):
            return float(line.split(" ")[1])
    raise AssertionError(f"{name} not in /metrics")


WATCH_MAX_REPLY = 1 << 20


def rss_mb(node):
    with open(f"/proc/{node.proc.pid}/status") as f:
        line = next(l for l in f if l.startswith("VmRSS:"))
    return int(line.split()[1]) / 1024


def test_watch_far_behind_gets_bounded_replies(big):
    value = os.urandom(512 * 1024)  # not UTF-8: base64 in the events, ~700 KB each
    revs = []
    for i in range(40):
        code, _, body = big.request("/v1/kv/w/k%02d" % i, "PUT", value)
        assert code == 200, body
        revs.append(json.loads(body)["revision"])
    seen = []
    after = revs[0] - 1
    with loop_budget(big, 100):
        while True:
            code, _, body = big.request(f"/v1/kv/w?watch=1&after={after}&timeout=1s",
                                        timeout=30)
            assert code == 200, body
            # one reply: the byte limit plus at most one event past it
            assert len(body) < WATCH_MAX_REPLY + 2 * len(value), len(body)
            reply = json.loads(body)
            seen += [e["revision"] for e in reply["events"]]
            after = reply["revision"]
            if not reply["more"]:
                break
    assert seen == revs
    assert after == revs[-1]


def test_watch_after_beyond_any_revision_is_400(node):
    code, _, body = node.request("/v1/kv/ns?watch=1&after=99999999999999999999")
    assert code == 400, body
    code, _, body = node.request("/v1/kv/ns?watch=1&after=9223372036854775808")
    assert code == 400, body


def test_watchers_that_never_read_stay_bounded(big):
    value = os.urandom(900 * 1024)
    for i in range(30):
        assert big.request("/v1/kv/s/k%02d" % i, "PUT", value)[0] == 200
    socks = []
    rss_before = rss_mb(big)
    try:
        with loop_budget(big, 100):
            for _ in range(10):
                s = socket.create_connection(("127.0.0.1", big.http_port))
                s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
                s.sendall(b"GET /v1/kv/s?watch=1&after=1 HTTP/1.1\r\nHost: x\r\n\r\n")
                socks.append(s)
                # The node answers others at once. (This also paces the
                # watchers: the budget is per request; ten that arrive in
                # one loop turn cost ten times one.)
                t0 = time.monotonic()
                assert big.request("/healthz", timeout=2)[0] == 200
                assert time.monotonic() - t0 < 1.0
        queued = metric(big, "jinn_http_output_queued_bytes")
        assert queued < 10 * (WATCH_MAX_REPLY + 4 * len(value)), queued
        # Each reply is one bounded step (the kernel's socket buffers hold
        # most of it), so the node's memory barely moves.
        assert rss_mb(big) - rss_before < 150
        for s in socks:
            assert s.recv(16).startswith(b"HTTP/1.1 200")
    finally:
        for s in socks:
            s.close()
    wait_for(lambda: metric(big, "jinn_http_output_queued_bytes") == 0,
             what="queued output released when the clients left")


# ---- file descriptors (item 5) ----------------------------------------------

def test_descriptor_limit_bounds_connections_and_node_survives(cluster_factory):
    c = cluster_factory(1, extra_config=["idle_timeout 30s"])
    c.nodes[0].rlimit_nofile = (128, 128)
    c.start()
    c.wait_leader()
    c.wait_ready()
    n = c.nodes[0]
    assert metric(n, "jinn_http_connections_max") == 64  # 128 minus a reserve of 64
    exec_body = json.dumps({"statements": [{"sql": "CREATE TABLE t(x)"}]}).encode()
    socks = []
    try:
        # Nearly every client slot taken by idle connections: raft and SQL
        # still have their reserve.
        for _ in range(60):
            socks.append(socket.create_connection(("127.0.0.1", n.http_port), timeout=2))
        code, _, body = n.request("/v1/sql/fdtest/exec", "POST", exec_body,
                                  {"Content-Type": "application/json"})
        assert code == 200, body
        assert n.request("/v1/kv/ns/during", "PUT", b"v")[0] == 200
        # Far more clients than slots: the extra ones are turned away.
        for _ in range(200):
            try:
                socks.append(socket.create_connection(("127.0.0.1", n.http_port), timeout=2))
            except OSError:
                break
        assert n.alive()
    finally:
        for s in socks:
            s.close()
    wait_for(lambda: n.request("/healthz", timeout=1)[0] == 200, what="serving again")
    assert n.request("/v1/kv/ns/after", "PUT", b"v")[0] == 200
    assert n.alive()


def test_explicit_max_connections_over_the_limit_is_clamped(cluster_factory):
    c = cluster_factory(1, extra_config=["max_connections 5000"])
    c.nodes[0].rlimit_nofile = (256, 256)
    c.start()
    c.wait_leader()
    n = c.nodes[0]
    assert metric(n, "jinn_http_connections_max") == 192
    assert "max_connections 5000 clamped to 192" in n.log()


def test_reply_over_the_output_limit_is_refused_not_queued(big):
    # 20 values of 1 MiB listed with values=1: ~28 MB of JSON, over the
    # 16 MiB (or 2 x max_body) a single reply may queue.
    value = os.urandom(BIG_BODY)
    for i in range(20):
        assert big.request("/v1/kv/lim/k%02d" % i, "PUT", value)[0] == 200
    code, _, body = big.request("/v1/kv/lim?values=1&limit=100", timeout=30)
    assert code == 500, body[:200]
    assert "output limit" in json.loads(body)["message"]
    assert metric(big, "jinn_http_replies_refused_total") == 1
    # The connection and the node go on; smaller pages work.
    code, _, body = big.request("/v1/kv/lim?values=1&limit=5", timeout=30)
    assert code == 200 and len(json.loads(body)["keys"]) == 5


def test_one_change_waking_many_watchers_stays_within_the_loop_budget(big):
    # 40 watchers parked; one 1 MiB change wakes them all: ~56 MB of replies,
    # built over several loop turns instead of one.
    code, _, body = big.request("/v1/kv/fan/seed", "PUT", b"x")
    rev = json.loads(body)["revision"]
    socks = []
    try:
        for _ in range(40):
            s = socket.create_connection(("127.0.0.1", big.http_port), timeout=30)
            s.sendall(b"GET /v1/kv/fan?watch=1&after=%d&timeout=60s HTTP/1.1\r\nHost: x\r\n\r\n"
                      % rev)
            socks.append(s)
        wait_for(lambda: metric(big, "jinn_kv_watchers") == 40, what="40 parked watchers")
        value = os.urandom(BIG_BODY)
        with loop_budget(big, 100):
            code, _, body = big.request("/v1/kv/fan/big", "PUT", value, timeout=30)
            assert code == 200, body
            new_rev = json.loads(body)["revision"]
            for s in socks:
                code, _, body = Responses(s).next()
                assert code == 200
                reply = json.loads(body)
                assert [e["revision"] for e in reply["events"]] == [new_rev]
                assert reply["revision"] == new_rev
    finally:
        for s in socks:
            s.close()
