"""Limits per token and per client address (issue 15 item 6, src/limit.c).

Every node of the harness listens and dials from 127.0.0.1, so 127.0.0.1 is
the cluster members' address (peers); clients here connect from other
loopback addresses (127.0.0.2, 127.0.0.3), which Linux routes to lo."""
import http.client
import json
import socket
import threading

import pytest

from harness import wait_for

CLIENT_A = "127.0.0.2"
FLOOD = "127.0.0.3"


def request(node, path, method="GET", body=None, source=CLIENT_A, timeout=10.0, headers=None):
    """(status, headers dict lower-cased, body bytes) from source address."""
    conn = http.client.HTTPConnection("127.0.0.1", node.http_port, timeout=timeout,
                                      source_address=(source, 0))
    try:
        hdrs = dict(headers or {})
        if body is not None and not isinstance(body, bytes):
            body = json.dumps(body).encode()
            hdrs.setdefault("Content-Type", "application/json")
        conn.request(method, path, body=body, headers=hdrs)
        r = conn.getresponse()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read()
    finally:
        conn.close()


def open_idle(node, source, n):
    socks = []
    for _ in range(n):
        s = socket.create_connection(("127.0.0.1", node.http_port), timeout=5,
                                     source_address=(source, 0))
        socks.append(s)
    return socks


def read_reply(s):
    data = b""
    s.settimeout(5)
    while True:
        chunk = s.recv(65536)
        if not chunk:
            return data
        data += chunk


def status_of(s):
    """Sends one request on s and returns the reply's status line."""
    try:
        s.sendall(b"GET /v1/status HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    except OSError:
        pass  # a refused connection may be closed already; its reply is read below
    data = read_reply(s)
    return data.split(b"\r\n", 1)[0], data


def follower_of(c):
    leader = c.wait_leader()
    return leader, next(n for n in c.nodes if n is not leader)


@pytest.fixture
def limited(cluster_factory):
    c = cluster_factory(3, extra_config=["limit_conns_per_addr 4", "max_connections 40",
                                         "reserved_conns 16"]).start()
    c.wait_leader()
    c.wait_ready()
    return c


def test_one_address_over_its_connection_cap_is_refused_others_served(limited):
    leader, follower = follower_of(limited)
    held = open_idle(leader, FLOOD, 4)
    try:
        # The fifth connection from the flooding address is answered 429
        # with Retry-After and closed.
        extra = socket.create_connection(("127.0.0.1", leader.http_port), timeout=5,
                                         source_address=(FLOOD, 0))
        line, data = status_of(extra)
        extra.close()
        assert line == b"HTTP/1.1 429 Too Many Requests", data
        assert b"\r\nRetry-After: 1\r\n" in data
        assert b'"error":"too_many_requests"' in data
        _, _, metrics = request(leader, "/metrics", source=CLIENT_A)
        assert b"jinn_limit_connections_refused_total 1\n" in metrics, metrics
        # Another address is served, and so is a write forwarded by a
        # follower (a peer, from 127.0.0.1) to the leader.
        st, _, _ = request(leader, "/v1/status", source=CLIENT_A)
        assert st == 200
        st, _, body = request(follower, "/v1/kv/default/fwd", "PUT", b"v", source=CLIENT_A)
        assert st == 200, body
        st, _, body = request(leader, "/v1/kv/default/fwd", source=CLIENT_A)
        assert st == 200 and body == b"v", body
    finally:
        for s in held:
            s.close()
    # Closed connections give the room back.
    wait_for(lambda: request(leader, "/v1/status", source=FLOOD)[0] == 200,
             what="the flooding address is served again")


def test_the_reserve_is_kept_for_peers(limited):
    leader, follower = follower_of(limited)
    # 40 - 16 = 24 connections for clients: six addresses of 4 take them.
    held = []
    try:
        for i in range(6):
            held += open_idle(leader, f"127.0.1.{i + 1}", 4)
        extra = socket.create_connection(("127.0.0.1", leader.http_port), timeout=5,
                                         source_address=("127.0.2.1", 0))
        line, data = status_of(extra)
        extra.close()
        assert line == b"HTTP/1.1 503 Service Unavailable", data
        assert b"\r\nRetry-After: 1\r\n" in data
        # Forwarding from a follower still gets through on the reserve.
        st, _, body = request(follower, "/v1/kv/default/reserved", "PUT", b"x",
                              source=CLIENT_A)
        assert st == 200, body
    finally:
        for s in held:
            s.close()


@pytest.fixture
def rated(cluster_factory):
    c = cluster_factory(3, extra_config=["limit_rate 3"]).start()
    c.wait_leader()
    c.wait_ready()
    return c


@pytest.fixture
def concurrent(cluster_factory):
    c = cluster_factory(1, extra_config=["limit_concurrent 2"]).start()
    c.wait_leader()
    c.wait_ready()
    return c


def test_a_token_over_its_rate_gets_429_with_retry_after(rated):
    leader, follower = follower_of(rated)
    codes = []
    for _ in range(10):
        st, hdrs, body = request(leader, "/v1/kv/default/k", source=CLIENT_A)
        codes.append(st)
        if st == 429:
            assert int(hdrs["retry-after"]) >= 1
            assert json.loads(body)["error"] == "too_many_requests"
    assert 429 in codes and codes[0] != 429, codes
    # The limits are the client's, not the cluster's: the follower (a peer)
    # forwards a write to the leader whose anonymous bucket is empty.
    st, _, body = request(follower, "/v1/kv/default/k", "PUT", b"1", source=CLIENT_A)
    assert st == 200, body
    # Health probes are not limited.
    st, _, _ = request(leader, "/healthz", source=CLIENT_A)
    assert st == 200
    # The bucket refills.
    wait_for(lambda: request(leader, "/v1/kv/default/k", source=CLIENT_A)[0] == 200,
             what="the bucket refills")


def test_long_polls_count_toward_concurrency(concurrent):
    leader = concurrent.wait_leader()
    results = []

    def fetch(worker):
        results.append(request(leader, "/v1/queues/jobs/fetch", "POST",
                               {"worker": worker, "wait": "20s"}, source=CLIENT_A,
                               timeout=30))

    # Two long-polls hold both of the token's slots while they wait...
    threads = [threading.Thread(target=fetch, args=(f"w{i}",)) for i in range(2)]
    for t in threads:
        t.start()
    # ...so, once both wait, a third request is over the cap. (A request
    # sent while only one waits is the second and is served.)
    wait_for(lambda: request(leader, "/v1/status", source=CLIENT_A)[0] == 429,
             timeout=10, what="third request refused")
    st, hdrs, body = request(leader, "/v1/status", source=CLIENT_A)
    assert st == 429 and "retry-after" in hdrs, body
    # Publishing (from a peer address: not this token) answers one waiter,
    # which gives its slot back.
    st, _, body = request(leader, "/v1/queues/jobs", "POST", b"hello", source="127.0.0.1")
    assert st in (200, 201), body
    wait_for(lambda: len(results) >= 1, timeout=10, what="one fetch answered")
    assert results[0][0] == 200, results
    wait_for(lambda: request(leader, "/v1/status", source=CLIENT_A)[0] == 200,
             what="a slot is free again")
    request(leader, "/v1/queues/jobs", "POST", b"two", source="127.0.0.1")
    for t in threads:
        t.join(30)
    assert len(results) == 2 and all(r[0] == 200 for r in results), results


def test_watches_count_toward_concurrency(concurrent):
    leader = concurrent.wait_leader()
    results = []

    def watch():
        results.append(request(leader, "/v1/kv/default?watch=1&prefix=w&timeout=20s",
                               source=CLIENT_A, timeout=30))

    threads = [threading.Thread(target=watch) for _ in range(2)]
    for t in threads:
        t.start()
    wait_for(lambda: request(leader, "/v1/status", source=CLIENT_A)[0] == 429,
             timeout=10, what="third request refused while two watches wait")
    # A change (written from a peer address) answers both watches: both
    # slots come back.
    st, _, body = request(leader, "/v1/kv/default/w1", "PUT", b"x", source="127.0.0.1")
    assert st == 200, body
    for t in threads:
        t.join(30)
    assert len(results) == 2 and all(r[0] == 200 for r in results), results
    st, _, _ = request(leader, "/v1/status", source=CLIENT_A)
    assert st == 200
    st, _, _ = request(leader, "/v1/status", source=CLIENT_A)
    assert st == 200


def test_a_client_gone_mid_long_poll_gives_its_slot_back(concurrent):
    leader = concurrent.wait_leader()
    for i in range(2):
        s = socket.create_connection(("127.0.0.1", leader.http_port), timeout=5,
                                     source_address=(CLIENT_A, 0))
        body = json.dumps({"worker": f"gone{i}", "wait": "2s"}).encode()
        s.sendall(b"POST /v1/queues/gone/fetch HTTP/1.1\r\nHost: x\r\n"
                  b"Content-Type: application/json\r\nContent-Length: "
                  + str(len(body)).encode() + b"\r\n\r\n" + body)
        s.close()
    # Both slots come back once the abandoned polls end (answered to no one);
    # the node keeps serving this token afterwards, again and again.
    wait_for(lambda: request(leader, "/v1/status", source=CLIENT_A)[0] == 200,
             timeout=10, what="the slots of abandoned long-polls come back")
    for _ in range(5):
        st, _, _ = request(leader, "/v1/status", source=CLIENT_A)
        assert st == 200


def test_with_tokens_on_a_client_on_a_members_host_is_limited(cluster_factory):
    """Attacker A2 (M5): every request from a member's address (127.0.0.1
    here) skipped the limits, even with tokens on, when a client can prove
    nothing about being a peer. Now only proof counts: an admin token is
    privileged, a narrow token from 127.0.0.1 gets its 429 like anyone."""
    boot = "boot-secret-0123456789abcdef"
    admin = {"Authorization": "Bearer " + boot}
    c = cluster_factory(1, extra_config=[f"bootstrap_token {boot}", "limit_rate 3"])
    c.auth_headers = admin
    c.start()
    c.wait_ready()
    leader = c.wait_leader()
    wait_for(lambda: request(leader, "/v1/tokens", source="127.0.0.1", headers=admin)[0] == 200,
             what="the bootstrap token applied")
    made = []

    def create():
        # 503 busy until the leader has seen its bootstrap token applied
        st, _, body = request(leader, "/v1/tokens", "POST",
                              {"name": "narrow", "allow": ["kv:default/*:read"]},
                              source="127.0.0.1", headers=admin)
        assert st in (201, 503), body
        made.append(body)
        return st == 201
    wait_for(create, what="token narrow created")
    narrow = {"Authorization": "Bearer " + json.loads(made[-1])["token"]}
    codes = [request(leader, "/v1/kv/default/k", source="127.0.0.1", headers=narrow)[0]
             for _ in range(12)]
    assert 429 in codes, codes
    # The admin token may use the capacity kept for admins and peers.
    codes = [request(leader, "/v1/kv/default/k", source="127.0.0.1", headers=admin)[0]
             for _ in range(12)]
    assert 429 not in codes, codes
