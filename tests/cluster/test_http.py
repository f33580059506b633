"""The HTTP server's limits and framing, over raw sockets."""
import json
import socket
import time

import pytest

from harness import wait_for


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
