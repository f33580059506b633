"""Running functions: the runner, its sandbox pools and the HTTP routes.

Guests: build/wasm/hello.wasm (tests/wasm/hello.c) and
build/wasm/run/behave.wasm (tests/wasm/run/behave.c), whose behaviour the
last segment of the request path picks (trap, loop, grow, notjson, ...).
`make cluster` builds them (the `wasm` target)."""
import hashlib
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.parse

import pytest

from harness import Cluster, http, loop_budget, wait_for
from conftest import SANITIZER_MARKS

ROOT = os.path.join(os.path.dirname(__file__), "..", "..")
WASM = os.path.join(ROOT, "build", "wasm")


def module(name):
    path = os.path.join(WASM, name + ".wasm")
    if not os.path.exists(path):
        subprocess.run(["make", "-C", ROOT, "build/wasm/" + name + ".wasm"], check=True,
                       stdout=subprocess.DEVNULL)
    with open(path, "rb") as f:
        return f.read()


def deploy(cluster, name, wasm, **settings):
    """PUT /v1/functions/NAME with settings as query parameters (lists
    repeat the parameter); returns the reply's JSON."""
    query = []
    for k, v in settings.items():
        for item in (v if isinstance(v, list) else [v]):
            query.append((k, str(item)))
    path = f"/v1/functions/{name}" + ("?" + urllib.parse.urlencode(query) if query else "")
    node = cluster.wait_leader()
    code, _, out = node.request(path, "PUT", wasm, {"Content-Type": "application/wasm"},
                                timeout=60)
    assert code in (200, 201), out
    return json.loads(out)


def call(node, path, method="GET", body=None, headers=None, timeout=30):
    return node.request(path, method, body, headers or {}, timeout=timeout)


def wait_served(node, path="/fn/behave/", expect=b"hello", timeout=120):
    """Polls until node answers path from a ready copy (its own or relayed)."""
    def ok():
        code, _, out = call(node, path, timeout=10)
        return code == 200 and expect in out
    wait_for(ok, timeout, interval=0.2, what=f"{node.name} serving {path}")


def wait_ready_here(node, name, timeout=120):
    def ready():
        fns = node.status().get("functions", {})
        return fns.get(name, {}).get("state") == "ready" and \
            fns[name]["pool"]["ready"] >= 1
    wait_for(ready, timeout, interval=0.2, what=f"{name} ready on {node.name}")


def sandbox_pids(node):
    """The node's sandbox processes (its children running `jinn sandbox`)."""
    out = subprocess.run(["ps", "-o", "pid=,args=", "--ppid", str(node.proc.pid)],
                         capture_output=True, text=True).stdout
    return [int(line.split()[0]) for line in out.splitlines() if " sandbox " in line]


def error_of(out):
    return json.loads(out)


@pytest.fixture(scope="module")
def one(tmp_path_factory):
    """One node with behave deployed (pool 2, timeout 2s, memory 4 MiB)."""
    c = Cluster(tmp_path_factory.mktemp("wasm_run"), n=1).start()
    try:
        c.wait_leader()
        c.wait_ready()
        deploy(c, "behave", module("run/behave"), timeout="2s", memory="4MiB", pool=2,
               env="VERSION=v1", arg=["--flag", "two words"])
        wait_ready_here(c.nodes[0], "behave")
        yield c
    finally:
        c.close()
        for n in c.nodes:
            log = n.log()
            if any(s in log for s in SANITIZER_MARKS):
                sys.stderr.write(log[-6000:])
                raise AssertionError(f"sanitizer report in the log of {n.name}")


def test_hello_runs_on_every_node_of_three(cluster_factory):
    c = cluster_factory(3).start()
    c.wait_leader()
    c.wait_ready()
    for n in c.nodes:
        wait_for(lambda: n.status()["leader"]["api"], what=f"{n.name} knows the leader's API")
    deploy(c, "hello", module("hello"), pool=1)
    for n in c.nodes:
        wait_ready_here(n, "hello")
        code, h, out = call(n, "/fn/hello")
        assert code == 200 and out == b"hello", (code, out)
        assert h["Content-Type"] == "text/plain"
        assert h["X-Jinn-Fn-Node"] == n.name  # ran here, not relayed
        # any method, any sub-path
        code, _, out = call(n, "/fn/hello/a/b?x=1", "POST", b"{}")
        assert code == 200 and out == b"hello"


def test_request_json_is_the_original_contract(one):
    n = one.nodes[0]
    code, h, out = call(n, "/fn/behave/echo?q=1", "POST", "héllo".encode(),
                        {"X-Request-Id": "trace-42", "content-type": "text/plain",
                         "x-multi": "a"})
    assert code == 201, out
    assert h["X-Request-Id"] == "trace-42"
    req = json.loads(out)
    assert req["method"] == "POST"
    assert req["uri"] == "/fn/behave/echo?q=1"
    assert req["body"] == "héllo"
    assert req["trace_id"] == "trace-42"
    # Go's canonical header keys, values as lists
    assert req["headers"]["Content-Type"] == ["text/plain"]
    assert req["headers"]["X-Multi"] == ["a"]
    # a traceparent's trace id is used when there is no X-Request-Id
    tp = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    code, _, out = call(n, "/fn/behave/echo", headers={"traceparent": tp})
    assert json.loads(out)["trace_id"] == "0af7651916cd43dd8448eb211c80319c"
    # without either, one is made up and returned
    code, h, out = call(n, "/fn/behave/echo")
    tid = json.loads(out)["trace_id"]
    assert len(tid) == 32 and h["X-Request-Id"] == tid


def test_args_and_env_reach_the_module(one):
    code, _, out = call(one.nodes[0], "/fn/behave/args")
    assert code == 200 and out == b"behave|--flag|two words", out
    assert call(one.nodes[0], "/fn/behave/")[2] == b"hello v1"


def test_body_that_is_not_utf8_is_refused_with_the_reason(one):
    code, _, out = call(one.nodes[0], "/fn/behave/echo", "POST", b"\xff\xfe\x00binary")
    assert code == 400, out
    assert "UTF-8" in error_of(out)["message"]


@pytest.mark.parametrize("what,kind", [("trap", "unreachable"), ("div", "division_by_zero"),
                                       ("oob", "out_of_bounds"),
                                       ("stack", "stack_exhausted")])
def test_trap_is_500_with_its_kind_and_the_next_call_works(one, what, kind):
    n = one.nodes[0]
    code, _, out = call(n, "/fn/behave/" + what)
    assert code == 500, out
    err = error_of(out)
    assert err["error"] == "trap" and err["kind"] == kind, err
    code, _, out = call(n, "/fn/behave/")
    assert code == 200 and out == b"hello v1"


def test_infinite_loop_is_504_at_the_timeout_and_the_next_call_works(one):
    n = one.nodes[0]
    t0 = time.monotonic()
    code, _, out = call(n, "/fn/behave/loop")
    took = time.monotonic() - t0
    assert code == 504, out
    assert error_of(out)["error"] == "timeout"
    assert 1.9 <= took < 6, took  # timeout=2s
    code, _, out = call(n, "/fn/behave/")
    assert code == 200 and out == b"hello v1"


def test_memory_is_bounded_by_the_setting(one):
    n = one.nodes[0]
    code, _, out = call(n, "/fn/behave/grow")
    assert code == 200, out
    mib = int(out.split()[1])
    print("grew", mib, "MiB")
    assert 0 <= mib < 4, out  # memory=4MiB, the module's own data included
    code, _, out = call(n, "/fn/behave/")
    assert code == 200 and out == b"hello v1"


def test_sandbox_killed_mid_call_is_500_crash_and_the_pool_recovers(one):
    n = one.nodes[0]
    result = {}

    def slow():
        result["r"] = call(n, "/fn/behave/sleep?ms=5000")

    before = sandbox_pids(n)
    assert len(before) == 2, before
    t = threading.Thread(target=slow)
    t.start()
    wait_for(lambda: n.status()["functions"]["behave"]["pool"]["busy"] == 1,
             what="the slow call running")
    for pid in before:
        os.kill(pid, 9)
    t.join(30)
    code, _, out = result["r"]
    assert code == 500, out
    err = error_of(out)
    assert err["error"] == "crash" and err["signal"] == 9, err
    wait_for(lambda: len(set(sandbox_pids(n)) - set(before)) == 2, 30,
             what="two new sandboxes")
    wait_ready_here(n, "behave")
    code, _, out = call(n, "/fn/behave/")
    assert code == 200 and out == b"hello v1"
    assert zombies(n) == []  # the killed ones were reaped


def test_output_that_is_not_json_is_502_and_logged(one):
    n = one.nodes[0]
    code, _, out = call(n, "/fn/behave/notjson", headers={"X-Request-Id": "nj-1"})
    assert code == 502, out
    assert error_of(out)["error"] == "bad_output"
    code, _, out = n.request("/v1/functions/behave/logs")
    assert code == 200, out
    lines = [l for l in json.loads(out)["lines"] if l["trace_id"] == "nj-1"]
    assert any("this is not json" in l["line"] for l in lines), lines
    assert "fn behave trace nj-1: bad output" in n.log()


def test_exit_without_output_is_500_exit(one):
    code, _, out = call(one.nodes[0], "/fn/behave/exit3")
    assert code == 500, out
    err = error_of(out)
    assert err["error"] == "exit" and err["code"] == 3


def test_stderr_lines_reach_the_log_with_the_trace_id(one):
    n = one.nodes[0]
    code, _, out = call(n, "/fn/behave/stderr", headers={"X-Request-Id": "se-7"})
    assert code == 200, out
    code, _, out = n.request("/v1/functions/behave/logs")
    lines = [l["line"] for l in json.loads(out)["lines"] if l["trace_id"] == "se-7"]
    assert lines == ["first line to stderr", "second line to stderr"], lines
    wait_for(lambda: "fn behave trace se-7: stderr: second line to stderr" in n.log(),
             what="the line in the node's log")


def test_response_headers_are_allow_listed(one):
    n = one.nodes[0]
    s = socket.create_connection(("127.0.0.1", n.http_port), timeout=10)
    s.sendall(b"GET /fn/behave/headers HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    raw = b""
    while True:
        chunk = s.recv(65536)
        if not chunk:
            break
        raw += chunk
    s.close()
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    assert lines[0].startswith(b"HTTP/1.1 418"), lines[0]
    assert body == b"teapot"
    assert b"X-Custom: one" in lines and b"X-Custom: two" in lines
    assert b"Set-Cookie: a=1" in lines
    assert not any(l.lower().startswith(b"injected") for l in lines), lines
    assert b"Content-Length: 6" in lines  # the function's 999 is not used
    assert b"X-Jinn-Fn-Node: " + n.name.encode() in lines
    assert b"forged" not in head


def test_head_gets_no_body_and_the_connection_stays_usable(one):
    n = one.nodes[0]
    s = socket.create_connection(("127.0.0.1", n.http_port), timeout=10)
    s.sendall(b"HEAD /fn/behave/ HTTP/1.1\r\nHost: x\r\n\r\n"
              b"HEAD /fn/behave/trap HTTP/1.1\r\nHost: x\r\n\r\n"
              b"GET /fn/behave/ HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    raw = b""
    while True:
        chunk = s.recv(65536)
        if not chunk:
            break
        raw += chunk
    s.close()
    parts = raw.split(b"HTTP/1.1 ")
    assert len(parts) == 4 and parts[0] == b"", raw
    first, second, third = parts[1:]
    # each HEAD answer ends with its head: no body bytes before the next
    assert first.startswith(b"200") and first.endswith(b"\r\n\r\n"), raw
    assert second.startswith(b"500") and second.endswith(b"\r\n\r\n"), raw
    assert third.startswith(b"200") and third.endswith(b"\r\n\r\nhello v1"), raw


def test_too_many_response_headers_are_cut_without_losing_ours(one):
    n = one.nodes[0]
    code, h, out = call(n, "/fn/behave/manyheaders", headers={"X-Request-Id": "mh-1"})
    assert code == 200 and out == b"many", out
    assert h["X-Request-Id"] == "mh-1" and h["X-Jinn-Fn-Node"] == n.name
    assert "X-H-0" in h and "X-H-299" not in h
    lines = [l["line"] for l in json.loads(n.request("/v1/functions/behave/logs")[2])["lines"]
             if l["trace_id"] == "mh-1"]
    assert any("response header(s) dropped" in l for l in lines), lines
    assert "headers too long" not in n.log()  # not one node log line per header


def test_function_route_prefix_and_unknown_names(cluster_factory):
    c = cluster_factory(1).start()
    c.wait_leader()
    c.wait_ready()
    n = c.nodes[0]
    deploy(c, "hello", module("hello"), pool=1, route="/api/hi")
    wait_ready_here(n, "hello")
    for path in ("/api/hi", "/api/hi/x/y?z=1"):
        code, _, out = call(n, path, "DELETE")
        assert code == 200 and out == b"hello", (path, code, out)
    assert call(n, "/api/hix")[0] == 404  # a prefix ends on a segment boundary
    assert call(n, "/fn/nope")[0] == 404
    assert call(n, "/fn/BAD%20name")[0] == 404
    assert call(n, "/v1/status")[0] == 200  # the API is never shadowed


def test_redeploy_while_invoked_finishes_on_the_old_version(one):
    n = one.nodes[0]
    results = []

    def slow():
        results.append(call(n, "/fn/behave/sleep?ms=1500"))

    threads = [threading.Thread(target=slow) for _ in range(2)]
    for t in threads:
        t.start()
    wait_for(lambda: n.status()["functions"]["behave"]["pool"]["busy"] == 2,
             what="both slow calls running")
    deploy(one, "behave", module("run/behave"), timeout="2s", memory="4MiB", pool=2,
           env="VERSION=v2")
    # new calls go to the new version at once (same module: a cache hit)
    wait_for(lambda: call(n, "/fn/behave/")[2] == b"hello v2", 60, interval=0.1,
             what="v2 served")
    for t in threads:
        t.join(30)
    assert sorted(r[0] for r in results) == [200, 200], results
    assert all(r[2] == b"slept v1" for r in results), results
    # the old pool's sandboxes went away
    wait_for(lambda: len(sandbox_pids(n)) == 2, 30, what="only v2's sandboxes left")
    deploy(one, "behave", module("run/behave"), timeout="2s", memory="4MiB", pool=2,
           env="VERSION=v1")
    wait_for(lambda: call(n, "/fn/behave/")[2] == b"hello v1", 60, interval=0.1,
             what="v1 again")


def test_queue_overflow_is_503_with_retry_after(cluster_factory):
    c = cluster_factory(1).start()
    c.wait_leader()
    c.wait_ready()
    n = c.nodes[0]
    deploy(c, "one", module("run/behave"), pool=1, timeout="20s")
    wait_ready_here(n, "one")
    # one slow call holds the only sandbox; 256 more fill the queue
    socks = []

    def send(path):
        s = socket.create_connection(("127.0.0.1", n.http_port), timeout=60)
        s.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        socks.append(s)
        return s

    send("/fn/one/sleep?ms=4000")
    wait_for(lambda: n.status()["functions"]["one"]["pool"]["busy"] == 1,
             what="the slow call running")
    for _ in range(256):
        send("/fn/one/")
    wait_for(lambda: n.status()["functions"]["one"]["pool"]["queued"] == 256,
             what="256 queued")
    code, h, out = call(n, "/fn/one/")
    assert code == 503, out
    assert error_of(out)["error"] == "busy"
    assert h["Retry-After"] == "1"
    # the queued ones are all served once the slow one is done
    for s in socks:
        data = b""
        while b"\r\n\r\n" not in data or not data.endswith((b"hello none", b"slept none")):
            chunk = s.recv(65536)
            assert chunk, data
            data += chunk
        assert data.startswith(b"HTTP/1.1 200"), data[:200]
        s.close()
    m = n.request("/metrics")[2].decode()
    assert 'jinn_fn_errors_total{function="one",kind="busy"} 1' in m


def test_delete_then_404(cluster_factory):
    c = cluster_factory(1).start()
    c.wait_leader()
    c.wait_ready()
    n = c.nodes[0]
    deploy(c, "gone", module("hello"), pool=1)
    wait_ready_here(n, "gone")
    assert call(n, "/fn/gone")[0] == 200
    code, _, out = n.request("/v1/functions/gone", "DELETE")
    assert code in (200, 204), out
    code, _, out = call(n, "/fn/gone")
    assert code == 404, out
    wait_for(lambda: sandbox_pids(n) == [], 30, what="the sandboxes killed and reaped")


def test_relay_from_a_node_whose_copy_is_not_ready(cluster_factory):
    c = cluster_factory(3)
    slow = c.nodes[2]
    slow.env = {"JINN_TEST_COMPILE_DELAY_MS": "600000"}
    c.start()
    c.wait_leader()
    c.wait_ready()
    for n in c.nodes:
        wait_for(lambda: n.status()["leader"]["api"], what=f"{n.name} knows the leader's API")
        wait_for(lambda: all(m.get("api") for m in n.status()["members"]),
                 what=f"{n.name} knows every API")
    deploy(c, "hello", module("hello"), pool=1)
    for n in c.nodes[:2]:
        wait_ready_here(n, "hello")
    assert slow.status()["functions"]["hello"]["state"] == "compiling"
    seen = set()
    for _ in range(6):
        code, h, out = call(slow, "/fn/hello")
        assert code == 200 and out == b"hello", (code, out)
        seen.add(h["X-Jinn-Fn-Node"])
    assert seen and slow.name not in seen, seen
    # a relayed call is never relayed again: it reaches the slow node
    # directly marked as a relay, and is refused there
    cid = slow.status()["cluster_id"]
    code, h, out = call(slow, "/fn/hello", headers={"X-Jinn-Fn-Relay": "n1",
                                                     "X-Jinn-Cluster": cid})
    assert code == 503, out
    assert error_of(out)["error"] == "function_not_ready"


def test_not_ready_anywhere_is_503_function_not_ready(cluster_factory):
    c = cluster_factory(1)
    c.nodes[0].env = {"JINN_TEST_COMPILE_DELAY_MS": "600000"}
    c.start()
    c.wait_leader()
    c.wait_ready()
    deploy(c, "hello", module("hello"), pool=1)
    code, h, out = call(c.nodes[0], "/fn/hello")
    assert code == 503, out
    assert error_of(out)["error"] == "function_not_ready"
    assert h["Retry-After"] == "1"


def test_metrics_and_status_show_the_function(one):
    n = one.nodes[0]
    call(n, "/fn/behave/")
    call(n, "/fn/behave/trap")
    m = n.request("/metrics")[2].decode()
    assert 'jinn_fn_invocations_total{function="behave"}' in m
    assert 'jinn_fn_errors_total{function="behave",kind="trap:unreachable"}' in m
    assert 'jinn_fn_duration_ms_bucket{function="behave",le="+Inf"}' in m
    assert 'jinn_fn_pool{function="behave",state="size"} 2' in m
    assert 'jinn_fn_ready{function="behave"} 1' in m
    st = n.status()["functions"]["behave"]
    assert st["state"] == "ready" and st["pool"]["size"] == 2
    assert st["invocations"] >= 2 and st["errors"]["trap:unreachable"] >= 1
    assert "duration_ms" not in st  # bounded work on the loop: quantiles are per function
    local = json.loads(n.request("/v1/functions/behave")[2])["local"]
    assert local["state"] == "ready" and local["duration_ms"]["p50"] > 0
    assert local["duration_ms"]["p99"] >= local["duration_ms"]["p50"]


def zombies(node):
    out = subprocess.run(["ps", "-o", "stat=", "--ppid", str(node.proc.pid)],
                         capture_output=True, text=True).stdout
    return [s for s in out.split() if s.startswith("Z")]


def test_sigterm_with_calls_in_flight_kills_and_reaps_the_sandboxes(cluster_factory):
    c = cluster_factory(1).start()
    c.wait_leader()
    c.wait_ready()
    n = c.nodes[0]
    deploy(c, "slow", module("run/behave"), pool=2, timeout="20s")
    wait_ready_here(n, "slow")
    pids = sandbox_pids(n)
    assert len(pids) == 2 and zombies(n) == []
    result = {}

    def slow():
        try:
            result["r"] = call(n, "/fn/slow/sleep?ms=15000", timeout=30)
        except Exception as e:  # the node may close the connection first
            result["r"] = e

    t = threading.Thread(target=slow)
    t.start()
    wait_for(lambda: n.status()["functions"]["slow"]["pool"]["busy"] == 1,
             what="the slow call running")
    t0 = time.monotonic()
    assert n.stop(timeout=30) == 0
    assert time.monotonic() - t0 < 10  # not held up by the 15 s call
    t.join(30)
    r = result["r"]
    assert isinstance(r, Exception) or r[0] == 503, r
    for pid in pids:
        wait_for(lambda: not os.path.exists(f"/proc/{pid}"), 10, what=f"sandbox {pid} gone")


def test_restart_uses_the_compile_cache(cluster_factory):
    c = cluster_factory(1).start()
    c.wait_leader()
    c.wait_ready()
    n = c.nodes[0]
    deploy(c, "hello", module("hello"), pool=1)
    wait_ready_here(n, "hello")
    assert n.status()["functions"]["hello"]["compile_ms"] > 0
    assert n.stop() == 0
    n.start()
    c.wait_ready()
    wait_ready_here(n, "hello")
    assert n.status()["functions"]["hello"]["compile_ms"] == 0  # a cache hit
    code, _, out = call(n, "/fn/hello")
    assert code == 200 and out == b"hello"


def test_invocations_and_failures_stay_within_the_loop_budget(one):
    """Spawning sandboxes, killing them, big request JSON: the loop never
    holds one stretch over the (sanitizer build's) 100 ms budget."""
    n = one.nodes[0]
    body = ("x" * 900000).encode()  # near max_body (1 MiB)
    with loop_budget(n, 100):
        for what in ("", "trap", "echo", "notjson", "stack", ""):
            code, _, out = call(n, "/fn/behave/" + what, "POST",
                                body if what == "echo" else None)
            if what == "echo":
                assert code == 201 and json.loads(out)["body"] == body.decode()
        killed = sandbox_pids(n)
        for pid in killed:
            os.kill(pid, 9)
        wait_for(lambda: len(set(sandbox_pids(n)) - set(killed)) == 2, 30,
                 what="two new sandboxes")
        wait_ready_here(n, "behave")
        assert call(n, "/fn/behave/")[0] == 200


def test_purge_while_a_relay_is_in_flight_leaves_the_relaying_node_sound(cluster_factory):
    """rev2 C1: a relay kept a bare pointer to the function's stats, which a
    purge applied meanwhile freed (heap use-after-free when the relay
    answered). The relaying node must stay up and sanitizer-clean."""
    c = cluster_factory(2)
    slow = c.nodes[1]
    slow.env = {"JINN_TEST_COMPILE_DELAY_MS": "600000"}
    c.start()
    c.wait_leader()
    c.wait_ready()
    for n in c.nodes:
        wait_for(lambda: all(m.get("api") for m in n.status()["members"]),
                 what=f"{n.name} knows every API")
    deploy(c, "sleepy", module("run/behave"), pool=1, timeout="20s")
    wait_ready_here(c.nodes[0], "sleepy")
    result = {}

    def relayed_call():
        try:
            result["r"] = call(slow, "/fn/sleepy/sleep?ms=2000", timeout=30)
        except Exception as e:
            result["r"] = e

    t = threading.Thread(target=relayed_call)
    t.start()
    wait_for(lambda: c.nodes[0].status()["functions"]["sleepy"]["pool"]["busy"] == 1,
             what="the relayed call running on the ready node")
    code, _, out = c.nodes[0].request("/v1/functions/sleepy?purge=1", "DELETE")
    assert code in (200, 204), out
    wait_for(lambda: slow.request("/v1/functions/sleepy")[0] == 404, 10,
             what="the purge applied on the relaying node")
    t.join(30)
    assert not t.is_alive()
    r = result["r"]
    assert not isinstance(r, Exception), r  # the relaying node answered
    assert slow.alive()
    assert slow.request("/healthz")[0] == 200


def distinct(wasm, i):
    """wasm plus a custom section naming i: same behaviour, another sha256."""
    payload = bytes([1]) + b"p" + i.to_bytes(4, "little")
    return wasm + b"\x00" + bytes([len(payload)]) + payload


def test_a_full_compile_queue_is_retried_not_failed(cluster_factory):
    """rev2 M2: compiles refused by a full compile queue were marked failed
    for good on that node. With the queue cut to one job (test hook), a
    restart without the compile cache offers all of them at once."""
    c = cluster_factory(1)
    n = c.nodes[0]
    n.env = {"JINN_TEST_COMPILE_QUEUE_MAX": "1"}
    c.start()
    c.wait_leader()
    c.wait_ready()
    hello = module("hello")
    names = [f"q{i}" for i in range(5)]
    for i, name in enumerate(names):
        deploy(c, name, distinct(hello, i), pool=1)

    def all_ready():
        fns = n.status().get("functions", {})
        states = [fns.get(name, {}).get("state") for name in names]
        assert "failed" not in states, fns
        return states == ["ready"] * len(names)

    wait_for(all_ready, 120, interval=0.2, what="every function compiled")
    assert n.stop() == 0
    shutil.rmtree(os.path.join(n.data_dir, "fn"))
    n.start()
    c.wait_ready()
    wait_for(all_ready, 120, interval=0.2, what="every function compiled again")
    for name in names:
        code, _, out = call(n, "/fn/" + name)
        assert code == 200 and out == b"hello", (code, out)


def test_redeploy_keeps_the_old_version_serving_until_the_new_one_is_ready(cluster_factory):
    """rev2 M4: a redeploy with new module bytes answered 503
    function_not_ready on every node for the compile time (the old warm pool
    was drained at once). Compiles start 3 s late here (test hook)."""
    c = cluster_factory(1)
    n = c.nodes[0]
    n.env = {"JINN_TEST_COMPILE_DELAY_MS": "3000"}
    c.start()
    c.wait_leader()
    c.wait_ready()
    behave = module("run/behave")
    v1 = deploy(c, "rd", behave, pool=1, env="VERSION=v1")
    wait_ready_here(n, "rd")
    v2 = deploy(c, "rd", distinct(behave, 2), pool=1, env="VERSION=v2")
    code, _, out = call(n, "/fn/rd/")
    assert (code, out) == (200, b"hello v1"), (code, out)
    st = n.status()["functions"]["rd"]
    assert st["state"] == "compiling" and st["version"] == v2["version"], st
    assert st["serving_version"] == v1["version"], st
    answers = []

    def switched():
        code, _, out = call(n, "/fn/rd/")
        answers.append((code, out))
        return out == b"hello v2"

    wait_for(switched, 60, interval=0.05, what="v2 served")
    assert answers[0] == (200, b"hello v1"), answers[:3]
    assert set(answers) <= {(200, b"hello v1"), (200, b"hello v2")}, set(answers)
    assert "serving_version" not in n.status()["functions"]["rd"]
    wait_for(lambda: len(sandbox_pids(n)) == 1, 30, what="v1's pool drained")


BIG_OUTPUT_WAT = r"""(module
  (import "wasi_snapshot_preview1" "fd_write" (func $w (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))
  (memory (export "memory") 80)
  (data (i32.const 64) "PREFIX")
  (func (export "_start")
    (local $p i32)
    (local.set $p (i32.const START))
    (block $done (loop $fill
      (br_if $done (i32.ge_u (local.get $p) (i32.const END)))
      (i32.store16 (local.get $p) (i32.const 0x2c30)) ;; "0,"
      (local.set $p (i32.add (local.get $p) (i32.const 2)))
      (br $fill)))
    (i32.store8 (i32.const END) (i32.const 0x30))
    (i32.store8 (i32.const END1) (i32.const 0x5d))
    (i32.store8 (i32.const END2) (i32.const 0x7d))
    (i32.store (i32.const 0) (i32.const 64))
    (i32.store (i32.const 4) (i32.const LEN))
    (drop (call $w (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)))
    (call $exit (i32.const CODE))))
"""


def big_output_module(tmp_path, size, code):
    """A module writing {"status":200,"body":"ok","x":[0,0,...]} of about
    size bytes (one JSON value per two bytes), then exiting with code."""
    prefix = b'{"status":200,"body":"ok","x":['
    pairs = (size - len(prefix) - 3) // 2
    end = len(prefix) + 2 * pairs
    wat = (BIG_OUTPUT_WAT.replace("PREFIX", prefix.decode().replace('"', '\\"'))
           .replace("START", str(64 + len(prefix))).replace("END2", str(64 + end + 2))
           .replace("END1", str(64 + end + 1)).replace("END", str(64 + end))
           .replace("LEN", str(end + 3)).replace("CODE", str(code)))
    src = tmp_path / f"big{code}.wat"
    out = tmp_path / f"big{code}.wasm"
    src.write_text(wat)
    subprocess.run(["wat2wasm", str(src), "-o", str(out)], check=True)
    return out.read_bytes()


def test_a_big_output_is_parsed_off_the_loop(cluster_factory, tmp_path):
    """rev2 M1: a module's stdout was parsed into a JSON tree on the loop
    (twice when it exited non-zero): 4 MiB of small values held the loop for
    seconds."""
    c = cluster_factory(1).start()
    c.wait_leader()
    c.wait_ready()
    n = c.nodes[0]
    deploy(c, "big", big_output_module(tmp_path, 4 << 20, 0), pool=1, timeout="60s")
    deploy(c, "bigexit", big_output_module(tmp_path, 4 << 20, 3), pool=1, timeout="60s")
    wait_ready_here(n, "big")
    wait_ready_here(n, "bigexit")
    with loop_budget(n, 100):
        for name in ("big", "bigexit"):
            code, h, out = call(n, "/fn/" + name, timeout=120)
            assert (code, out) == (200, b"ok"), (name, code, out[:200])
            assert h["X-Request-Id"]


FD_READ_OVERLAP_WAT = r"""(module
  (import "wasi_snapshot_preview1" "fd_read" (func $r (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_write" (func $w (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 300) "{\"status\":200,\"body\":\"ok\"}")
  (func (export "_start")
    ;; iov[0] = {0, 16} covers the iovec array itself, iov[1] = {100, 10}
    (i32.store (i32.const 0) (i32.const 0))
    (i32.store (i32.const 4) (i32.const 16))
    (i32.store (i32.const 8) (i32.const 100))
    (i32.store (i32.const 12) (i32.const 10))
    (drop (call $r (i32.const 0) (i32.const 0) (i32.const 2) (i32.const 200)))
    (i32.store (i32.const 16) (i32.const 300))
    (i32.store (i32.const 20) (i32.const 26))
    (drop (call $w (i32.const 1) (i32.const 16) (i32.const 1) (i32.const 24)))))
"""


def test_fd_read_into_its_own_iovec_array_does_not_crash_the_sandbox(cluster_factory,
                                                                     tmp_path):
    """rev2 m1: fd_read re-read the iovec array while copying; a buffer
    overlapping it rewrote the next iovec and the sandbox died (SIGSEGV)."""
    c = cluster_factory(1).start()
    c.wait_leader()
    c.wait_ready()
    n = c.nodes[0]
    src = tmp_path / "overlap.wat"
    src.write_text(FD_READ_OVERLAP_WAT)
    subprocess.run(["wat2wasm", str(src), "-o", str(tmp_path / "overlap.wasm")], check=True)
    deploy(c, "overlap", (tmp_path / "overlap.wasm").read_bytes(), pool=1)
    wait_ready_here(n, "overlap")
    for _ in range(2):
        code, _, out = call(n, "/fn/overlap", "POST", b"A" * 64)
        assert (code, out) == (200, b"ok"), (code, out)
    assert "crash" not in n.status()["functions"]["overlap"]["errors"]


LOG_SPAM_WAT = r"""(module
  (import "gojinn" "host_log" (func $log (param i32 i32 i32)))
  (import "wasi_snapshot_preview1" "fd_write" (func $w (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 0) "x")
  (data (i32.const 100) "{\"status\":200,\"body\":\"ok\"}")
  (func (export "_start")
    (local $i i32)
    (loop $l
      (call $log (i32.const 1) (i32.const 0) (i32.const 1))
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br_if $l (i32.lt_u (local.get $i) (i32.const 70000))))
    (i32.store (i32.const 16) (i32.const 100))
    (i32.store (i32.const 20) (i32.const 26))
    (drop (call $w (i32.const 1) (i32.const 16) (i32.const 1) (i32.const 24)))))
"""


def test_a_flood_of_one_byte_log_calls_is_bounded_by_count(cluster_factory, tmp_path):
    """rev2 m2: the per-invocation log budget was bytes only: 70000 one-byte
    host_log calls were 65536 LOG frames, each a ring line on the loop."""
    c = cluster_factory(1).start()
    c.wait_leader()
    c.wait_ready()
    n = c.nodes[0]
    src = tmp_path / "spam.wat"
    src.write_text(LOG_SPAM_WAT)
    subprocess.run(["wat2wasm", str(src), "-o", str(tmp_path / "spam.wasm")], check=True)
    deploy(c, "spam", (tmp_path / "spam.wasm").read_bytes(), pool=1, timeout="30s")
    wait_ready_here(n, "spam")
    before = n.status()["functions"]["spam"]["log_lines_suppressed"]
    code, _, out = call(n, "/fn/spam")
    assert (code, out) == (200, b"ok"), (code, out)
    logs = json.loads(n.request("/v1/functions/spam/logs")[2])["lines"]
    assert any("over the per-invocation limit" in e["line"] for e in logs), logs[-3:]
    # 1000 LOG frames reach the node (the sandbox drops the rest), not 65536
    st = n.status()["functions"]["spam"]
    assert st["log_lines_suppressed"] - before < 1100, st


FORGED_ID_WAT = r"""(module
  (import "wasi_snapshot_preview1" "fd_write" (func $w (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 100) "{\"status\":200,\"headers\":{\"X-Request-Id\":[\"forged\"]},\"body\":\"ok\"}")
  (func (export "_start")
    (i32.store (i32.const 16) (i32.const 100))
    (i32.store (i32.const 20) (i32.const 64))
    (drop (call $w (i32.const 1) (i32.const 16) (i32.const 1) (i32.const 24)))))
"""


def raw_get(node, path, extra=b""):
    s = socket.create_connection(("127.0.0.1", node.http_port), timeout=10)
    s.sendall(b"GET " + path.encode() + b" HTTP/1.1\r\nHost: x\r\nConnection: close\r\n" +
              extra + b"\r\n")
    raw = b""
    while True:
        chunk = s.recv(65536)
        if not chunk:
            break
        raw += chunk
    s.close()
    head, _, body = raw.partition(b"\r\n\r\n")
    return head.split(b"\r\n"), body


def test_request_headers_named_like_a_prefix_of_ours_reach_the_module(one):
    """rev2 m4: request headers were dropped when their name was a prefix of
    X-Jinn-Fn-Relay or X-Jinn-Cluster ("X", "X-", "X-Jinn", ...)."""
    n = one.nodes[0]
    code, _, out = call(n, "/fn/behave/echo", "POST", b"{}",
                        headers={"X": "1", "X-Jinn": "2", "X-Jinn-Fn": "3", "X-Other": "4"})
    assert code == 201, out
    headers = json.loads(out)["headers"]
    for name, value in (("X", "1"), ("X-Jinn", "2"), ("X-Jinn-Fn", "3"), ("X-Other", "4")):
        assert headers.get(name) == [value], (name, headers)


def test_a_module_cannot_add_a_second_x_request_id(cluster_factory, tmp_path):
    """rev2 m5: a module's X-Request-Id was sent besides jinn's own."""
    c = cluster_factory(1).start()
    c.wait_leader()
    c.wait_ready()
    n = c.nodes[0]
    src = tmp_path / "forged.wat"
    src.write_text(FORGED_ID_WAT)
    subprocess.run(["wat2wasm", str(src), "-o", str(tmp_path / "forged.wasm")], check=True)
    deploy(c, "forged", (tmp_path / "forged.wasm").read_bytes(), pool=1)
    wait_ready_here(n, "forged")
    lines, body = raw_get(n, "/fn/forged", b"X-Request-Id: mine-1\r\n")
    assert lines[0].startswith(b"HTTP/1.1 200") and body == b"ok", (lines, body)
    ids = [l for l in lines if l.lower().startswith(b"x-request-id:")]
    assert ids == [b"X-Request-Id: mine-1"], lines


RECURSE_WAT = r"""(module
  (import "wasi_snapshot_preview1" "fd_write" (func $w (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 100) "{\"status\":200,\"body\":\"ok\"}")
  (func $f (param i32) (result i32)
    (if (result i32) (i32.eqz (local.get 0))
      (then (i32.const 0))
      (else (i32.add (call $f (i32.sub (local.get 0) (i32.const 1))) (i32.const 1)))))
  (func (export "_start")
    (drop (call $f (i32.const DEPTH)))
    (i32.store (i32.const 16) (i32.const 100))
    (i32.store (i32.const 20) (i32.const 26))
    (drop (call $w (i32.const 1) (i32.const 16) (i32.const 1) (i32.const 24)))))
"""


def test_the_wasm_call_depth_is_the_documented_500(cluster_factory, tmp_path):
    """rev2 m3: pool.h said 10000 but modules are compiled with wasm2c's
    default of 500, which the sandbox can only lower; the docs say 500."""
    c = cluster_factory(1).start()
    c.wait_leader()
    c.wait_ready()
    n = c.nodes[0]
    for depth in (480, 520):
        src = tmp_path / f"r{depth}.wat"
        src.write_text(RECURSE_WAT.replace("DEPTH", str(depth)))
        subprocess.run(["wat2wasm", str(src), "-o", str(tmp_path / f"r{depth}.wasm")],
                       check=True)
        deploy(c, f"r{depth}", (tmp_path / f"r{depth}.wasm").read_bytes(), pool=1)
        wait_ready_here(n, f"r{depth}")
    code, _, out = call(n, "/fn/r480")
    assert (code, out) == (200, b"ok"), (code, out)
    code, _, out = call(n, "/fn/r520")
    assert code == 500 and error_of(out)["kind"] == "stack_exhausted", (code, out)


def test_a_redeploy_that_fails_to_compile_here_keeps_the_old_version_serving(
        cluster_factory):
    """rev2 M4: a new version that fails to compile on this node leaves the
    previous one serving, and the status says so. The compile is made to
    fail by a file where its cache directory would go."""
    c = cluster_factory(1).start()
    c.wait_leader()
    c.wait_ready()
    n = c.nodes[0]
    behave = module("run/behave")
    v1 = deploy(c, "rf", behave, pool=1, env="VERSION=v1")
    wait_ready_here(n, "rf")
    broken = distinct(behave, 3)
    with open(os.path.join(n.data_dir, "fn", hashlib.sha256(broken).hexdigest()), "w") as f:
        f.write("not a directory")
    v2 = deploy(c, "rf", broken, pool=1, env="VERSION=v2")
    st = wait_for(lambda: (lambda s: s if s["state"] == "failed" else None)(
        n.status()["functions"]["rf"]), 60, what="v2 failed to compile here")
    assert st["version"] == v2["version"] and st["serving_version"] == v1["version"], st
    for _ in range(3):
        code, _, out = call(n, "/fn/rf/")
        assert (code, out) == (200, b"hello v1"), (code, out)


def test_a_toolchain_change_rebuilds_the_compile_cache(cluster_factory, tmp_path):
    """rev2 m9: the cache key did not cover wasm-rt.h, wasm2c or cc: after
    an upgrade, objects built against other struct layouts were loaded. A
    changed header (test hook: JINN_TEST_WASM_RT_H names the file hashed)
    rebuilds; the same one is a cache hit."""
    c = cluster_factory(1).start()
    c.wait_leader()
    c.wait_ready()
    n = c.nodes[0]
    deploy(c, "hello", module("hello"), pool=1)
    wait_ready_here(n, "hello")
    header = tmp_path / "wasm-rt.h"
    with open("/usr/src/wasm2c/wasm-rt.h") as f:
        header.write_text(f.read() + "\n/* upgraded */\n")
    assert n.stop() == 0
    n.env = {"JINN_TEST_WASM_RT_H": str(header)}
    n.start()
    c.wait_ready()
    wait_ready_here(n, "hello")
    assert n.status()["functions"]["hello"]["compile_ms"] > 0  # rebuilt
    assert n.stop() == 0
    n.start()
    c.wait_ready()
    wait_ready_here(n, "hello")
    assert n.status()["functions"]["hello"]["compile_ms"] == 0  # the same tools: a hit
    code, _, out = call(n, "/fn/hello")
    assert code == 200 and out == b"hello"
