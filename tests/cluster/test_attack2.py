"""Hostile-client regressions (attacker A3) against read-your-writes,
freshness, lock withdrawal, cluster time and full disks."""
import json
import socket
import time

import pytest

from harness import wait_for


def test_min_index_that_cannot_be_read_is_refused_not_ignored(cluster_factory):
    """A min_index too long for its buffer or badly escaped was taken as
    absent: the read was served at once, before the index it asked for."""
    c = cluster_factory(1, extra_config=["request_timeout 2s"]).start()
    n = c.wait_leader(timeout=30)
    code, hdr, body = n.request("/v1/kv/app/k", "PUT", b"v")
    assert code == 200, body
    assert int(hdr["X-Jinn-Index"]) >= 1
    for q in ("0" * 40 + "5", "9" * 38, "%ZZ", "1%00", "1%0099999"):
        code, _, body = n.request("/v1/kv/app/k?min_index=" + q)
        assert code == 400, (q, code, body)  # the old code: 200 "v"
    # The same value through the header was already refused.
    code, _, body = n.request("/v1/kv/app/k", headers={"X-Jinn-Min-Index": "9" * 38})
    assert code == 400, body
    # Given twice, the first alone was read: min_index=1&min_index=999999
    # answered at once.
    for path, hdr in (("/v1/kv/app/k?min_index=1&min_index=999999", {}),
                      ("/v1/kv/app/k?min_index=1", {"X-Jinn-Min-Index": "999999"})):
        code, _, body = n.request(path, headers=hdr)
        assert code == 400, (path, hdr, code, body)
    code, _, body = raw_exchange(n, "GET /v1/kv/app/k HTTP/1.1\r\nHost: x\r\n"
                                    "X-Jinn-Min-Index: 1\r\nX-Jinn-Min-Index: 999999\r\n"
                                    "Connection: close\r\n\r\n")
    assert code == 400, body
    # A well-formed value still works.
    code, _, body = n.request("/v1/kv/app/k?min_index=" + "0" * 20 + "1")
    assert code == 200 and body == b"v", body


def raw_exchange(node, text):
    port = int(node.url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(text.encode())
        data = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), head, body


def _raw_request(node, text):
    port = int(node.url.rsplit(":", 1)[1])
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    s.sendall(text.encode())
    return s


def test_a_waiter_whose_leader_died_is_not_granted_the_lock(cluster_factory):
    """docs/api.md: "A disconnected client's place in line is withdrawn ...
    so no lock passes to a holder nobody is listening for". A kill -9 of the
    leader disconnects the waiting client too, but its place in line stays:
    when the holder's ttl ends the lock goes to the vanished waiter."""
    c = cluster_factory(3, extra_config=["request_timeout 2s"]).start()
    leader = c.wait_leader(timeout=30)
    c.wait_ready(timeout=30)
    code, _, body = leader.request("/v1/locks/L?owner=a&ttl=2s", "POST", b"")
    assert code == 200, body
    s = _raw_request(leader, "POST /v1/locks/L?owner=b&ttl=60s&wait=2m HTTP/1.1\r\n"
                             "Host: x\r\nContent-Length: 0\r\n\r\n")
    wait_for(lambda: json.loads(leader.request("/v1/locks/L")[2]).get("waiting") == 1, 10,
             what="b waits in line")
    leader.kill()
    s.close()
    rest = [n for n in c.nodes if n is not leader]
    new = c.wait_leader(among=rest, timeout=30)

    def a_gone():
        code, _, body = new.request("/v1/locks/L")
        return code == 404 or json.loads(body)["owner"] != "a"
    wait_for(a_gone, 20, what="a's ttl ends")
    code, _, body = new.request("/v1/locks/L")
    # The old code: 200 {"owner":"b","expires_in_ms":60000,...}, nobody to use it.
    assert code == 404 or json.loads(body)["owner"] != "b", body


def test_time_left_counts_down_between_entries(cluster_factory):
    """Cluster time only moves when an entry applies, and with nothing due
    no entry is written: a lock granted for 60s was shown with
    "expires_in_ms": 60000 (GET, list, a refused acquire) and a key with a
    60s ttl with 60000 in a listing, for the whole minute."""
    c = cluster_factory(1).start()
    n = c.wait_leader(timeout=30)
    c.wait_ready(timeout=30)  # past the fresh-cluster window (the test below)
    code, _, body = n.request("/v1/locks/L?owner=a&ttl=60s", "POST", b"")
    assert code == 200, body
    code, _, body = n.request("/v1/kv/app/k?ttl=60s", "PUT", b"v")
    assert code == 200, body
    time.sleep(1.5)  # the subject: real time passes with no entry written
    code, _, body = n.request("/v1/locks/L")
    assert code == 200 and json.loads(body)["expires_in_ms"] <= 59000, body
    code, _, body = n.request("/v1/locks")
    assert code == 200 and json.loads(body)["locks"][0]["expires_in_ms"] <= 59000, body
    code, _, body = n.request("/v1/locks/L?owner=b", "POST", b"")
    assert code == 409 and json.loads(body)["expires_in_ms"] <= 59000, body
    code, _, body = n.request("/v1/kv/app?values=1")
    assert code == 200, body
    assert json.loads(body)["keys"][0]["expires_in_ms"] <= 59000, body
    # Never more than was granted, never negative.
    assert json.loads(n.request("/v1/locks/L")[2])["expires_in_ms"] >= 50000


def test_a_fresh_clusters_first_locks_and_ttls_last_their_ttl(cluster_factory):
    """A new leader stamps commands with the cluster time it knows before it
    is ready; a fresh cluster knows none, so writes accepted in the first
    moments after the first election were stamped 0. A lock or key granted
    for 60s then expired at the first stamped entry (the next tick): 0 + 60s
    is long past the wall clock. Every client that locks right after
    `jinn run --bootstrap` lost its lock within 100 ms."""
    c = cluster_factory(1).start()
    n = c.nodes[0]
    wait_for(lambda: n.status()["role"] == "leader", 30, interval=0.005, what="leader")
    code, _, body = n.request("/v1/locks/L?owner=a&ttl=60s", "POST", b"")
    assert code == 200, body
    code, _, body = n.request("/v1/kv/app/k?ttl=60s", "PUT", b"v")
    assert code == 200, body
    c.wait_ready(timeout=30)
    code, _, body = n.request("/v1/kv/app/other", "PUT", b"x")  # a stamped entry
    assert code == 200, body
    code, _, body = n.request("/v1/locks/L")
    assert code == 200 and json.loads(body)["owner"] == "a", body  # the old code: 404
    code, _, body = n.request("/v1/kv/app/k")
    assert code == 200 and body == b"v", body
    st = json.loads(n.request("/v1/status")[2])
    assert abs(st["cluster_time_ms"] - time.time() * 1000) < 60000, st
