"""Distributed locks on a real cluster: mutual exclusion with fencing,
paused and killed holders, minorities, token monotonicity, bad input."""
import json
import random
import signal
import subprocess
import sys
import threading
import time
import urllib.parse

import pytest

from harness import wait_for


def lock(node, method, name, suffix="", query="", body=None, timeout=10):
    path = "/v1/locks/" + urllib.parse.quote(name, safe="") + suffix
    if query:
        path += "?" + query
    code, _, out = node.request(path, method, body, {}, timeout=timeout)
    return code, (json.loads(out) if out else None)


def acquire(node, name, owner, ttl="2s"):
    return lock(node, "POST", name, query=f"owner={owner}&ttl={ttl}")


@pytest.fixture
def cluster(cluster_factory):
    c = cluster_factory(3).start()
    c.wait_leader()
    c.wait_ready()
    for n in c.nodes:
        wait_for(lambda: n.status()["leader"]["api"], what=f"{n.name} knows the leader's API")
    return c


def test_contenders_never_overlap_and_fencing_counts_exactly(cluster):
    successes = []
    lock_ = threading.Lock()
    rounds = 15

    def worker(wid):
        rnd = random.Random(wid)
        done = 0
        while done < rounds:
            node = rnd.choice(cluster.nodes)
            code, body = acquire(node, "counter-lock", f"w{wid}", "3s")
            if code != 200:
                continue
            token = body["token"]
            code, h, out = node.request("/v1/kv/pay/counter")
            current = int(out) if code == 200 else 0
            code, _, _ = node.request("/v1/kv/pay/counter", "PUT", str(current + 1).encode(),
                                      {"X-Jinn-Fence": f"counter-lock:{token}"})
            if code == 200:
                with lock_:
                    successes.append(token)
            lock(node, "DELETE", "counter-lock", query=f"token={token}")
            done += 1

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(5)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    code, _, out = cluster.nodes[0].request("/v1/kv/pay/counter")
    assert code == 200
    assert int(out) == len(successes) == 5 * rounds
    assert len(set(successes)) == len(successes)  # every grant has its own token


HOLDER = r'''
import json, sys, time, urllib.request
url, name = sys.argv[1], sys.argv[2]
def call(method, path, body=None, headers={}):
    req = urllib.request.Request(url + path, data=body, method=method, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=5) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code
req = urllib.request.Request(url + f"/v1/locks/{name}?owner=paused&ttl=1s", method="POST")
token = json.loads(urllib.request.urlopen(req, timeout=5).read())["token"]
print(token, flush=True)
sys.stdin.readline()  # the test pauses us here (SIGSTOP), then resumes us
print(call("PUT", "/v1/kv/pay/guarded", b"late", {"X-Jinn-Fence": f"{name}:{token}"}),
      call("POST", f"/v1/locks/{name}/refresh?token={token}"),
      call("DELETE", f"/v1/locks/{name}?token={token}"), flush=True)
'''


def test_paused_holder_cannot_touch_its_successors_lock(cluster):
    node = cluster.nodes[0]
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, node.url, "pausable"],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    old_token = int(holder.stdout.readline())
    holder.send_signal(signal.SIGSTOP)
    # Someone else gets it once the TTL has passed in cluster time.
    def successor():
        code, body = acquire(cluster.nodes[1], "pausable", "successor")
        return body if code == 200 else None
    new = wait_for(successor, timeout=15, what="the successor to acquire")
    assert new["token"] > old_token
    holder.send_signal(signal.SIGCONT)
    holder.stdin.write("go\n")
    holder.stdin.flush()
    fenced, refresh, release = holder.stdout.readline().split()
    assert holder.wait(timeout=10) == 0
    assert (fenced, refresh, release) == ("409", "409", "409")
    assert node.request("/v1/kv/pay/guarded")[0] == 404  # the late write never landed
    code, body = lock(node, "GET", "pausable")
    assert code == 200 and body["owner"] == "successor" and body["token"] == new["token"]


def test_killed_holder_lock_frees_itself_after_ttl_not_before(cluster):
    node = cluster.nodes[2]
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, node.url, "crashy"],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    sent = time.monotonic()
    int(holder.stdout.readline())
    holder.kill()
    holder.wait()
    wait_for(lambda: lock(node, "GET", "crashy")[0] == 404, timeout=10, what="the lock to expire")
    # Safety bound, not a speed claim: never free before its 1 s TTL.
    assert time.monotonic() - sent >= 1.0
    assert acquire(node, "crashy", "next")[0] == 200


def test_minority_node_cannot_acquire_refresh_or_release(cluster):
    leader = cluster.leader()
    lonely = next(n for n in cluster.nodes if n is not leader)
    code, body = acquire(leader, "m", "owner", "30s")
    assert code == 200
    cluster.isolate(lonely.name)
    wait_for(lambda: lonely.status()["quorum"] is False, what="the cut-off node notices")
    assert acquire(lonely, "other", "x")[0] == 503
    assert lock(lonely, "POST", "m", "/refresh", f"token={body['token']}")[0] == 503
    assert lock(lonely, "DELETE", "m", query=f"token={body['token']}")[0] == 503
    assert lock(lonely, "GET", "m")[0] == 503  # locks are CP: no stale answers
    cluster.heal()
    wait_for(lambda: lonely.status()["quorum"], what="healed")
    code, shown = lock(lonely, "GET", "m")
    assert code == 200 and shown["token"] == body["token"]
    wait_for(lambda: acquire(lonely, "other", "x")[0] == 200, what="acquire after healing")


def test_tokens_grow_across_leader_kill_and_full_restart(cluster):
    tokens = []

    def grab_and_release(owner):
        def once():
            for n in cluster.live():
                code, body = acquire(n, "mono", owner, "10s")
                if code == 200:
                    lock(n, "DELETE", "mono", query=f"token={body['token']}")
                    return body["token"]
            return None
        tokens.append(wait_for(once, timeout=20, what="a grant"))

    grab_and_release("a")
    cluster.leader().kill()
    grab_and_release("b")
    for n in cluster.nodes:
        n.kill()
    cluster.start()
    cluster.wait_leader()
    cluster.wait_ready()
    grab_and_release("c")
    assert tokens == sorted(tokens) and len(set(tokens)) == 3, tokens


def test_bad_input(cluster):
    n = cluster.nodes[0]
    cases = [
        (lock(n, "POST", "x"), "owner is required"),
        (lock(n, "POST", "x", query="owner=a&ttl=0s"), "ttl"),
        (lock(n, "POST", "x", query="owner=a&ttl=9999h"), "ttl"),
        (lock(n, "POST", "x", query="owner=a&ttl=fast"), "ttl"),
        (lock(n, "POST", "x", "/refresh", "token=abc"), "token"),
        (lock(n, "DELETE", "x", query="token=-1"), "token"),
        (lock(n, "DELETE", "x", query="token=99999999999999999999"), "token"),
        (lock(n, "POST", "x", "/refresh", "token=18446744073709551615"), "token"),
        (lock(n, "DELETE", "x"), "token"),
        (lock(n, "POST", "x", body=b"{owner"), "JSON"),
        (lock(n, "POST", "x", body=b'{"owner": ["a"]}'), "string"),
    ]
    for (code, body), text in cases:
        assert code == 400, body
        assert text in body["message"], body
    for fence in ("nocolon", ":5", "lock:", "lock:0", "lock:x1"):
        code, _, out = n.request("/v1/kv/pay/k", "PUT", b"v", {"X-Jinn-Fence": fence})
        assert code == 400, (fence, out)
    code, _, out = n.request("/v1/kv/pay/k", "PUT", b"v", {"X-Jinn-Fence": "nolock:7"})
    assert code == 409 and json.loads(out)["error"] == "conflict"
    # JSON bodies work like query parameters.
    code, body = lock(n, "POST", "viajson", body=b'{"owner": "j", "ttl": "5s"}')
    assert code == 200 and body["owner"] == "j" and body["state"] == "leader"
    code, body = lock(n, "POST", "viajson", "/refresh", body=json.dumps(
        {"token": body["token"]}).encode())
    assert code == 200


def test_waiting_acquires_are_granted_in_arrival_order(cluster):
    holder = cluster.nodes[0]
    code, first = acquire(holder, "line", "first", "30s")
    assert code == 200
    results, threads = {}, []

    def waiter(i):
        node = cluster.nodes[i % 3]
        results[i] = lock(node, "POST", "line", query=f"owner=w{i}&ttl=30s&wait=20s",
                          timeout=40)

    for i in range(3):
        t = threading.Thread(target=waiter, args=(i,))
        t.start()
        threads.append(t)
        # Each must be in line before the next arrives, so the order is known.
        wait_for(lambda: lock(holder, "GET", "line")[1]["waiting"] == i + 1,
                 what=f"waiter {i} in line")
    token = first["token"]
    for i in range(3):
        assert lock(holder, "DELETE", "line", query=f"token={token}")[0] == 200
        threads[i].join(timeout=20)
        code, body = results[i]
        assert code == 200 and body["owner"] == f"w{i}" and body["token"] > token
        token = body["token"]
    assert lock(holder, "DELETE", "line", query=f"token={token}")[0] == 200
    # A wait that ends first is refused, and never granted later.
    acquire(holder, "line", "blocker", "30s")
    code, body = lock(holder, "POST", "line", query="owner=late&wait=300ms", timeout=20)
    assert code == 409 and body["state"] == "follower"
    assert lock(holder, "POST", "line", query="owner=x&wait=10m")[0] == 400



def _raw_waiting_acquire(node, name, owner):
    """Sends a waiting acquire on a raw socket and returns the socket."""
    import socket
    s = socket.create_connection(("127.0.0.1", node.http_port), timeout=10)
    path = "/v1/locks/" + urllib.parse.quote(name, safe="")
    s.sendall((f"POST {path}?owner={owner}&ttl=30s&wait=20s HTTP/1.1\r\n"
               "Host: x\r\nContent-Length: 0\r\n\r\n").encode())
    return s


@pytest.mark.parametrize("via", ["leader", "follower"])
def test_a_waiter_whose_client_went_away_leaves_the_line(cluster, via):
    """Issue 12 item 3: a gone waiter must not be granted (ghost holder),
    also when its acquire was relayed by a follower."""
    leader = cluster.wait_leader()
    code, first = acquire(leader, "ghost", "holder", "30s")
    assert code == 200
    entry = leader if via == "leader" else next(n for n in cluster.nodes if n is not leader)
    s = _raw_waiting_acquire(entry, "ghost", "gone")
    wait_for(lambda: lock(leader, "GET", "ghost")[1]["waiting"] == 1, what="waiter in line")
    s.close()
    # Withdrawn from the replicated line by a command, well before its wait.
    wait_for(lambda: lock(leader, "GET", "ghost")[1]["waiting"] == 0, timeout=5,
             what="the gone waiter leaves the line")
    assert lock(leader, "DELETE", "ghost", query=f"token={first['token']}")[0] == 200
    code, body = lock(leader, "GET", "ghost")
    assert code == 404, body  # nobody holds it: no ghost


def test_a_waiter_on_a_stopping_leader_is_withdrawn_and_told(cluster):
    """Issue 12 item 3: shutdown refuses a waiter only after it left the line."""
    leader = cluster.wait_leader()
    code, first = acquire(leader, "bye", "holder", "30s")
    assert code == 200
    result = {}

    def waiter():
        try:
            result["r"] = lock(leader, "POST", "bye", query="owner=waiter&ttl=30s&wait=20s",
                               timeout=30)
        except OSError as e:
            result["error"] = e

    t = threading.Thread(target=waiter)
    t.start()
    wait_for(lambda: lock(leader, "GET", "bye")[1]["waiting"] == 1, what="waiter in line")
    assert leader.stop() == 0
    t.join(timeout=30)
    others = [n for n in cluster.nodes if n is not leader]
    new = cluster.wait_leader(among=others)
    cluster.wait_ready([new])
    assert lock(new, "GET", "bye")[1]["waiting"] == 0
    assert lock(new, "DELETE", "bye", query=f"token={first['token']}")[0] == 200
    code, body = lock(new, "GET", "bye")
    assert code == 404, body
    # The client was told, after the withdrawal applied: not granted.
    r = result.get("r")
    assert r is not None, "the stopping leader answered nothing"
    assert r[0] == 409 and r[1]["granted"] is False, r
