"""The function registry (PUT/GET/DELETE /v1/functions, rollback): deploy
validation of hostile modules and settings, versions, rollback, delete,
forwarding from followers, every node agreeing, restarts and snapshots.
Modules are built at test time with wat2wasm."""
import json
import os
import socket
import subprocess
import urllib.parse

import pytest

from harness import JINN, loop_budget, wait_for

FN_MODULE_MAX = 16 << 20

HELLO = """
(module
  (import "gojinn" "host_log" (func $log (param i32 i32 i32)))
  (memory (export "memory") 1)
  (func (export "_start")))
"""

HELLO2 = """
(module
  (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))
  (memory (export "memory") 1)
  (func (export "_start") (call $exit (i32.const 0))))
"""

HOST_NOPE = """
(module
  (import "gojinn" "host_nope" (func (param i32)))
  (memory (export "memory") 1)
  (func (export "_start")))
"""

START_SECTION = """
(module
  (memory (export "memory") 1)
  (func $init)
  (start $init)
  (func (export "_start")))
"""

# Passes jinn's own inspection (imports, exports) but not wasm-validate:
# _start leaves a value on the stack.
BAD_BODY = """
(module
  (memory (export "memory") 1)
  (func (export "_start") (i32.const 1)))
"""

# Valid wasm, but SIMD: Debian 12's wasm2c aborts on it, so deploy refuses it
# (wasm-validate --disable-simd) instead of committing what no node compiles.
SIMD = """
(module
  (memory (export "memory") 1)
  (func (export "_start") (drop (v128.const i64x2 0 0))))
"""

BIG_MEMORY = """
(module
  (memory (export "memory") 100)
  (func (export "_start")))
"""


def wat(tmp_path, text, name="m"):
    src = tmp_path / f"{name}.wat"
    out = tmp_path / f"{name}.wasm"
    src.write_text(text)
    subprocess.run(["wat2wasm", "--no-check", str(src), "-o", str(out)], check=True)
    return out.read_bytes()


def with_custom_section(module, size):
    """module plus a custom section of size payload bytes (a big but valid module)."""
    name = b"pad"
    payload = bytes([len(name)]) + name + b"\0" * size
    n, leb = len(payload), b""
    while True:
        byte = n & 0x7F
        n >>= 7
        leb += bytes([byte | (0x80 if n else 0)])
        if not n:
            break
    return module + b"\0" + leb + payload


def fn(node, method, path, body=None, timeout=20):
    code, _, out = node.request("/v1/functions" + path, method, body, {}, timeout=timeout)
    try:
        return code, json.loads(out) if out else None
    except ValueError:
        return code, out


def deploy(node, name, module, **params):
    pairs = []
    for k, v in params.items():
        for x in v if isinstance(v, list) else [v]:
            pairs.append((k, x))
    q = ("?" + urllib.parse.urlencode(pairs)) if pairs else ""
    return fn(node, "PUT", f"/{name}{q}", module)


@pytest.fixture
def one(cluster_factory):
    c = cluster_factory(1).start()
    c.wait_leader()
    c.wait_ready()
    return c


@pytest.fixture
def three(cluster_factory):
    c = cluster_factory(3).start()
    c.wait_leader()
    c.wait_ready()
    for n in c.nodes:
        wait_for(lambda: n.status()["leader"]["api"], what=f"{n.name} knows the leader's API")
    return c


def test_hostile_deploys_are_refused_with_the_reason(one, tmp_path):
    node = one.nodes[0]
    hello = wat(tmp_path, HELLO, "hello")

    code, out = deploy(node, "f", b"")
    assert code == 400 and "empty" in out["message"], out
    code, out = deploy(node, "f", os.urandom(3000))
    assert code == 400, out
    code, out = deploy(node, "f", hello[: len(hello) - 3])  # truncated
    assert code == 400, out
    code, out = deploy(node, "f", wat(tmp_path, HOST_NOPE, "nope"))
    assert code == 400 and "host_nope" in out["message"], out
    code, out = deploy(node, "f", wat(tmp_path, START_SECTION, "start"))
    assert code == 400 and "start" in out["message"], out
    # Only wasm-validate sees this one; its message comes back, without our path.
    code, out = deploy(node, "f", wat(tmp_path, BAD_BODY, "badbody"))
    assert code == 400 and out["message"].startswith("wasm-validate:"), out
    assert "fn-validate" not in out["message"] and "module.wasm" in out["message"], out
    code, out = deploy(node, "f", wat(tmp_path, SIMD, "simd"))
    assert code == 400 and out["message"].startswith("wasm-validate:"), out
    assert "simd" in out["message"].lower(), out
    # The module's own memory is larger than the limit.
    code, out = deploy(node, "f", wat(tmp_path, BIG_MEMORY, "bigmem"), memory="1MiB")
    assert code == 400 and "memory" in out["message"], out

    for bad in ["F", "-f", "_f", "f.g", "a" * 65, "f%2Fg", "f%00", "%C3%A9"]:
        code, out = deploy(node, bad, hello)
        assert code in (400, 404), (bad, code, out)
    for params, word in [({"timeout": "0s"}, "timeout"), ({"timeout": "301s"}, "timeout"),
                         ({"timeout": "2h"}, "timeout"), ({"memory": "1000"}, "memory"),
                         ({"memory": "8GiB"}, "memory"), ({"pool": "0"}, "pool"),
                         ({"pool": "65"}, "pool"), ({"route": "/v1/kv"}, "route"),
                         ({"route": "/fn/x"}, "route"), ({"route": "nope"}, "route"),
                         ({"route": "/a//b"}, "route"), ({"route": "/a/../b"}, "route"),
                         ({"env": "1X=y"}, "env"), ({"env": "novalue"}, "env"),
                         ({"db": "bad db"}, "db"), ({"ns": ""}, "ns"),
                         ({"ns": ".."}, "ns"), ({"ns": "."}, "ns"),
                         ({"kv_read": ""}, "kv_read"), ({"colour": "blue"}, "colour"),
                         ({"route": ["/a", "/b"]}, "twice"),
                         ({"kv_read": b"\xff"}, "UTF-8")]:
        code, out = deploy(node, "f", hello, **params)
        assert code == 400 and word in out["message"], (params, out)
    code, out = deploy(node, "f", hello, env=[f"K{i}=v" for i in range(65)])
    assert code == 400 and "env" in out["message"], out
    code, out = deploy(node, "f", hello, arg=["x" * 5000])
    assert code == 400, out

    # Over the module limit: 413 before the body is even read in full.
    code, out = deploy(node, "f", with_custom_section(hello, FN_MODULE_MAX))
    assert code == 413, out
    # Nothing of it was deployed.
    code, out = fn(node, "GET", "")
    assert code == 200 and out["functions"] == [], out
    # A module over max_body (1 MiB) but under the module limit is fine.
    code, out = deploy(node, "big", with_custom_section(hello, 3 << 20))
    assert code == 201, out
    assert node.alive()


def test_versions_rollback_delete_purge(one, tmp_path):
    node = one.nodes[0]
    hello, hello2 = wat(tmp_path, HELLO, "h1"), wat(tmp_path, HELLO2, "h2")
    code, out = deploy(node, "greet", hello, route="/hello", timeout="2s", memory="64MiB",
                       pool="4", env=["A=1", "B=two words"], arg=["x", "y"],
                       kv_read=["pub/"], kv_write=["greet/"], db="app", ns="fns")
    assert code == 201 and out["version"] == 1 and len(out["sha256"]) == 64, out
    # The same module and settings again: no new version.
    code, again = deploy(node, "greet", hello, route="/hello", timeout="2s", memory="64MiB",
                         pool="4", env=["A=1", "B=two words"], arg=["x", "y"],
                         kv_read=["pub/"], kv_write=["greet/"], db="app", ns="fns")
    assert code == 200 and again["version"] == 1 and again["unchanged"], again
    code, out = fn(node, "GET", "/greet")
    assert code == 200 and out["version"] == 1 and out["route"] == "/hello", out
    s = out["versions_kept"][0]["settings"]
    assert s == {"route": "/hello", "timeout_ms": 2000, "memory_limit": 64 << 20,
                 "pool_size": 4, "env": ["A=1", "B=two words"], "args": ["x", "y"],
                 "kv_read": ["pub/"], "kv_write": ["greet/"], "db": "app", "ns": "fns",
                 "workers": 1, "cron": ""}, s

    code, out = deploy(node, "greet", hello2, route="/hello")
    assert code == 201 and out["version"] == 2, out
    code, out = deploy(node, "greet", hello, route="/hello")  # new settings: version 3
    assert code == 201 and out["version"] == 3, out
    # Another function cannot take the route.
    code, out = deploy(node, "other", hello, route="/hello")
    assert code == 409 and "greet" in out["message"], out
    code, out = deploy(node, "other", hello, route="/hello/sub")  # a longer one is fine
    assert code == 201, out

    code, out = fn(node, "POST", "/greet/rollback")
    assert code == 200 and out["version"] == 2, out
    code, out = fn(node, "POST", "/greet/rollback?version=1")
    assert code == 200 and out["version"] == 1, out
    code, out = fn(node, "POST", "/greet/rollback")  # nothing before 1
    assert code == 404, out
    code, out = fn(node, "POST", "/greet/rollback?version=9")
    assert code == 404, out

    code, out = fn(node, "DELETE", "/greet")
    assert code == 200 and out["version"] == 1, out
    code, out = fn(node, "GET", "/greet")
    assert code == 200 and out["deleted"] and out["version"] is None, out
    assert len(out["versions_kept"]) == 3
    code, out = fn(node, "DELETE", "/greet")
    assert code == 404, out
    # While greet is deleted its route is free; taking it blocks greet's rollback.
    code, out = deploy(node, "thief", hello, route="/hello")
    assert code == 201, out
    code, out = fn(node, "POST", "/greet/rollback")
    assert code == 409, out
    code, out = fn(node, "DELETE", "/thief?purge=1")
    assert code == 200, out
    code, out = fn(node, "POST", "/greet/rollback")  # deleted: back to the newest (3)
    assert code == 200 and out["version"] == 3, out

    # Versions kept: the 5 most recent.
    for i in range(6):
        code, out = deploy(node, "greet", hello2, route="/hello", arg=[str(i)])
        assert code == 201, out
    code, out = fn(node, "GET", "/greet")
    assert [v["version"] for v in out["versions_kept"]] == [5, 6, 7, 8, 9], out
    assert out["version"] == 9

    # The bytes of a kept version, and of the active one.
    code, h, body = node.request("/v1/functions/greet/module?version=5")
    assert code == 200 and body == hello2 and h.get("X-Jinn-Fn-Version") == "5", (code, h)
    code, h, body = node.request("/v1/functions/greet/module")
    assert code == 200 and body == hello2 and h.get("X-Jinn-Fn-Version") == "9", (code, h)
    code, _, body = node.request("/v1/functions/greet/module?version=1")
    assert code == 404, body

    code, out = fn(node, "GET", "?limit=1")
    assert code == 200 and [f["name"] for f in out["functions"]] == ["greet"] and out["more"]
    code, out = fn(node, "GET", "?after=greet")
    assert code == 200 and [f["name"] for f in out["functions"]] == ["other"]
    assert not out["more"]
    code, out = fn(node, "DELETE", "/other?purge=1")
    assert code == 200, out
    code, out = fn(node, "GET", "/other")
    assert code == 404, out


def test_follower_deploy_forwarded_every_node_agrees_restart_keeps(three, tmp_path):
    leader = three.leader()
    follower = next(n for n in three.nodes if n is not leader)
    hello = wat(tmp_path, HELLO, "hello")
    code, out = deploy(follower, "hello", with_custom_section(hello, 2 << 20), route="/hi")
    assert code == 201 and out["version"] == 1, out
    sha = out["sha256"]
    code, out = deploy(follower, "hello", hello, route="/hi")
    assert code == 201 and out["version"] == 2, out
    for n in three.nodes:
        wait_for(lambda: fn(n, "GET", "/hello")[1].get("version") == 2,
                 what=f"{n.name} has version 2")
        code, out = fn(n, "GET", "/hello")
        assert [v["sha256"] for v in out["versions_kept"]][0] == sha

    # A replica check agrees, functions included.
    code, _, body = leader.request("/v1/cluster/check", "POST", b"", {}, timeout=20)
    assert code in (200, 202), body
    wait_for(lambda: json.loads(leader.request("/v1/cluster/check")[2]).get("done"),
             timeout=20, what="check done")
    check = json.loads(leader.request("/v1/cluster/check")[2])
    assert check["state"] == "agreed", check

    for n in three.nodes:
        n.stop()
    # A validation's temporary module left by a crash is removed at start.
    stray = os.path.join(leader.data_dir, "fn-validate-1-1.wasm")
    with open(stray, "wb") as f:
        f.write(hello)
    for n in three.nodes:
        n.start()
    three.wait_leader()
    three.wait_ready()
    for n in three.nodes:
        wait_for(lambda: (fn(n, "GET", "/hello")[1] or {}).get("version") == 2,
                 timeout=20, what=f"{n.name} keeps version 2 after restart")
    assert not os.path.exists(stray)


def test_snapshot_carries_functions_to_a_wiped_node(cluster_factory, tmp_path):
    c = cluster_factory(3, extra_config=["snapshot_threshold 16", "snapshot_trailing 4"])
    c.start()
    c.wait_leader()
    c.wait_ready()
    leader = c.leader()
    hello = wat(tmp_path, HELLO, "hello")
    code, out = deploy(leader, "snap", hello)
    assert code == 201, out
    for i in range(60):  # past the snapshot threshold
        code, _, _ = leader.request(f"/v1/kv/default/k{i}", "PUT", b"v", {})
        assert code in (200, 201)
    victim = next(n for n in c.nodes if n is not leader)
    victim.stop()
    victim.wipe()
    victim.start()  # no --bootstrap: waits as a non-member
    wait_for(lambda: victim.status().get("role") is not None, what="wiped node up")
    code, _, body = leader.request(f"/v1/cluster/members/{victim.name}", "DELETE", None, {})
    assert code == 200, body
    code, _, body = leader.request("/v1/cluster/members", "POST",
                                   json.dumps({"name": victim.name,
                                               "address": victim.advertised}).encode(), {})
    assert code in (200, 201), body
    wait_for(lambda: (fn(victim, "GET", "/snap")[1] or {}).get("version") == 1,
             timeout=30, what="the wiped node learns the function from a snapshot")
    assert "snapshot restored" in victim.log()


def test_wasm_validate_missing_names_wabt(cluster_factory, tmp_path):
    c = cluster_factory(1)
    c.nodes[0].env = {"PATH": "/nonexistent"}
    c.start()
    c.wait_leader()
    c.wait_ready()
    code, out = deploy(c.nodes[0], "f", wat(tmp_path, HELLO, "hello"))
    assert code == 500 and "wabt" in out["message"], out
    code, out = fn(c.nodes[0], "GET", "")
    assert out["functions"] == []


def cli(node, *args):
    return subprocess.run([JINN, "fn", *args, "--addr", node.url], capture_output=True,
                          text=True, timeout=60)


def test_cli_deploy_ls_show_rollback_rm_call(one, tmp_path):
    node = one.nodes[0]
    wat(tmp_path, HELLO, "hello")
    wat(tmp_path, HELLO2, "hello2")
    r = cli(node, "deploy", "hello", str(tmp_path / "hello.wasm"), "--route", "/hi",
            "--timeout", "2s", "--memory", "64MiB", "--pool", "3", "--env", "A=1",
            "--env", "B=2", "--arg", "x", "--kv-read", "p/", "--kv-write", "q/", "--db", "app",
            "--ns", "fns")
    assert r.returncode == 0 and r.stdout.startswith("hello v1 "), (r.stdout, r.stderr)
    r = cli(node, "deploy", "hello", str(tmp_path / "hello.wasm"), "--route", "/hi",
            "--timeout", "2s", "--memory", "64MiB", "--pool", "3", "--env", "A=1",
            "--env", "B=2", "--arg", "x", "--kv-read", "p/", "--kv-write", "q/", "--db", "app",
            "--ns", "fns")
    assert r.returncode == 0 and "(unchanged)" in r.stdout, (r.stdout, r.stderr)
    r = cli(node, "deploy", "hello", str(tmp_path / "hello2.wasm"), "--route", "/hi")
    assert r.returncode == 0 and r.stdout.startswith("hello v2 "), (r.stdout, r.stderr)
    r = cli(node, "show", "hello", "--json")
    out = json.loads(r.stdout)
    assert out["version"] == 2 and out["versions_kept"][0]["settings"]["env"] == ["A=1", "B=2"]
    assert out["versions_kept"][0]["settings"]["pool_size"] == 3
    r = cli(node, "ls")
    assert r.returncode == 0 and r.stdout.startswith("hello\tv2\t") and "/hi" in r.stdout, r
    r = cli(node, "rollback", "hello")
    assert r.returncode == 0 and "v1 active" in r.stdout, (r.stdout, r.stderr)
    r = cli(node, "rollback", "hello", "--version", "2")
    assert r.returncode == 0 and "v2 active" in r.stdout, (r.stdout, r.stderr)
    r = cli(node, "rm", "hello")
    assert r.returncode == 0, r.stderr
    r = cli(node, "ls")
    assert "deleted" in r.stdout, r.stdout
    r = cli(node, "rm", "hello", "--purge")
    assert r.returncode == 0, r.stderr
    # Refusals: the node's message, exit 1; bad usage, exit 2.
    (tmp_path / "junk.wasm").write_bytes(b"junk")
    r = cli(node, "deploy", "bad", str(tmp_path / "junk.wasm"))
    assert r.returncode == 1 and "400" in r.stderr, r.stderr
    r = cli(node, "deploy", "bad", str(tmp_path / "missing.wasm"))
    assert r.returncode == 1 and "cannot open" in r.stderr, r.stderr
    r = cli(node, "show", "nosuch")
    assert r.returncode == 1 and "404" in r.stderr, r.stderr
    r = cli(node, "deploy", "x")
    assert r.returncode == 2, r.stderr
    r = cli(node, "ls", "--route", "/x")
    assert r.returncode == 2, r.stderr
    for verb in ["deploy", "ls", "show", "rm", "rollback", "call", "logs"]:
        r = cli(node, verb, "--help")
        assert r.returncode == 0 and "usage: jinn fn" in r.stdout, (verb, r)
    # A call that is not answered 2xx exits non-zero and prints the body.
    r = cli(node, "call", "nosuch", "--data", "{}")
    assert r.returncode == 1 and r.stdout.strip(), (r.stdout, r.stderr)


def test_big_module_bodies_are_bounded_and_keep_the_loop_free(one, tmp_path):
    node = one.nodes[0]
    hello = wat(tmp_path, HELLO, "hello")
    # Bodies over max_body are taken on this route only...
    code, _, _ = node.request("/v1/kv/default/k", "PUT", b"x" * (2 << 20), {})
    assert code == 413
    # ...and at most 4 at once: a fifth waits for none of them (503 busy).
    socks = []
    try:
        for i in range(4):
            s = socket.create_connection(("127.0.0.1", node.http_port))
            s.sendall(f"PUT /v1/functions/slow{i} HTTP/1.1\r\nHost: x\r\n"
                      f"Content-Length: {8 << 20}\r\n\r\n".encode() + b"\0" * 1024)
            socks.append(s)

        def fifth_refused():
            s = socket.create_connection(("127.0.0.1", node.http_port))
            try:
                s.settimeout(0.5)
                s.sendall(f"PUT /v1/functions/fifth HTTP/1.1\r\nHost: x\r\n"
                          f"Content-Length: {8 << 20}\r\n\r\n".encode())
                try:
                    return s.recv(4096)  # nothing while a slot waits for our body
                except socket.timeout:
                    return None
            finally:
                s.close()
        reply = wait_for(fifth_refused, what="a fifth big body refused")
        assert reply.startswith(b"HTTP/1.1 503") and b"busy" in reply, reply
    finally:
        for s in socks:
            s.close()
    # Once they are gone, a big deploy goes through, without stalling the
    # loop (hashing and the temporary file are on the thread pool).
    big = with_custom_section(hello, 15 << 20)
    with loop_budget(node, 100):
        code, out = wait_for(lambda: (lambda r: r if r[0] != 503 else None)(
            deploy(node, "big", big)), timeout=20, what="deploy once the slots are free")
    assert code == 201, out


def metric(node, name):
    code, _, out = node.request("/metrics")
    assert code == 200
    for line in out.decode().splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"{name} not in /metrics")


def test_unchanged_redeploy_is_answered_after_a_linearized_read(three, tmp_path):
    """rev1 M3: "200 unchanged" was answered from the local state at once; a
    deposed leader (or a new one before its first commit) could report a
    version as live that a committed DELETE had already taken down. It is
    now answered after a raft barrier, and still costs no log entry."""
    leader = three.leader()
    hello = wat(tmp_path, HELLO, "hello")
    code, out = deploy(leader, "f", hello, route="/f")
    assert code == 201, out
    before = metric(leader, "jinn_reads_linearized_total")
    code, headers, out = leader.request("/v1/functions/f?route=/f", "PUT", hello, {})
    out = json.loads(out)
    assert code == 200 and out["unchanged"] is True and out["version"] == 1, out
    assert metric(leader, "jinn_reads_linearized_total") >= before + 1
    # Nothing through the log: a committed entry's reply carries its index.
    assert "x-jinn-index" not in {k.lower() for k in headers}, headers
    # The same through a follower (forwarded), and after a delete the same
    # module is a new version, not "unchanged".
    follower = next(n for n in three.nodes if n is not leader)
    code, out = deploy(follower, "f", hello, route="/f")
    assert code == 200 and out["unchanged"] is True, out
    code, out = fn(leader, "DELETE", "/f")
    assert code == 200, out
    code, out = deploy(leader, "f", hello, route="/f")
    assert code == 201 and out["version"] == 2 and out["unchanged"] is False, out


def gated_wasm_validate(tmp_path):
    """A wasm-validate that waits for tmp_path/go before running the real
    one: a deploy can be held in validation for as long as a test needs."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    gate, started = tmp_path / "go", tmp_path / "started"
    tool = bindir / "wasm-validate"
    tool.write_text("#!/bin/sh\n"
                    f"touch {started}\n"
                    f"while [ ! -e {gate} ]; do sleep 0.05; done\n"
                    'exec /usr/bin/wasm-validate "$@"\n')
    tool.chmod(0o755)
    return {"PATH": f"{bindir}:/usr/bin:/bin"}, gate, started


def test_one_deploy_at_a_time(cluster_factory, tmp_path):
    """rev1 M1: each deploy is a log entry of up to 16 MiB on every replica;
    the leader admits one at a time, and refuses another meanwhile with 503
    busy and Retry-After (before any byte reaches the log)."""
    import threading
    c = cluster_factory(1)
    env, gate, started = gated_wasm_validate(tmp_path)
    c.nodes[0].env = env
    c.start()
    c.wait_leader()
    c.wait_ready()
    node = c.nodes[0]
    hello, hello2 = wat(tmp_path, HELLO, "hello"), wat(tmp_path, HELLO2, "hello2")
    first = {}
    t = threading.Thread(target=lambda: first.update(r=deploy(node, "a", hello)))
    t.start()
    try:
        # The first deploy is admitted and held in validation...
        wait_for(started.exists, timeout=30, what="the first deploy in validation")
        # ...so a second one is refused at once.
        code, headers, out = node.request("/v1/functions/b", "PUT", hello2, {})
        assert code == 503, (code, out)
        assert b"busy" in out and b"one at a time" in out, out
        assert {k.lower(): v for k, v in headers.items()}.get("retry-after") == "1", headers
        # The CLI retries a deploy refused as busy (a PUT: nothing applied)
        # and says so; it succeeds once the first deploy is through.
        mod_b = tmp_path / "b.wasm"
        mod_b.write_bytes(hello2)
        err_file = tmp_path / "cli.err"
        with open(err_file, "w") as err_out:
            cli = subprocess.Popen([JINN, "fn", "deploy", "b", str(mod_b), "--addr", node.url],
                                   stdout=subprocess.PIPE, stderr=err_out, text=True)
        wait_for(lambda: "busy; retrying" in err_file.read_text(), timeout=10,
                 what="the CLI retrying a busy deploy")
    finally:
        gate.touch()
        t.join(30)
    assert first["r"][0] == 201, first
    out, _ = cli.communicate(timeout=30)
    assert cli.returncode == 0, out + err_file.read_text()
    code, out = fn(node, "GET", "/b")
    assert code == 200 and out["version"] == 1, out


def snapshot_files(node):
    return [f for f in os.listdir(node.data_dir) if f.startswith("snapshot-")]


def segment_bytes(node):
    total = 0
    for f in os.listdir(node.data_dir):
        parts = f.split("-")
        if f.startswith("open-") or (len(parts) == 2 and all(p.isdigit() for p in parts)):
            total += os.path.getsize(os.path.join(node.data_dir, f))
    return total


def test_module_total_refused_before_the_log_and_deploys_force_snapshots(one, tmp_path):
    """rev1 M1: deploys piled up in every replica's in-memory log (and its
    segments) until 8192 + 2048 entries passed. The handler now refuses what
    apply would (here the 64 MiB module total) without a log entry, and a
    node takes a raft snapshot after 64 MiB of deploys, which releases the
    log behind it."""
    node = one.nodes[0]
    hello = wat(tmp_path, HELLO, "hello")
    mods = [with_custom_section(hello + b"\0\x02\x01" + bytes([i]), 15 << 20)
            for i in range(5)]  # a distinct empty custom section keeps them apart
    assert len({m[:100] for m in mods}) == 5
    for i in range(4):
        code, out = fn(node, "PUT", f"/big{i}", mods[i], timeout=60)
        assert code == 201, out
    assert snapshot_files(node) == []  # 60 MiB deployed: under the trigger
    code, headers, out = node.request("/v1/functions/big4", "PUT", mods[4], {}, timeout=60)
    out = json.loads(out)
    assert code == 507 and "would pass the 64 MiB limit" in out["message"], out
    # Refused by the handler, not at apply: no log entry (a committed
    # entry's reply carries its index).
    assert "x-jinn-index" not in {k.lower() for k in headers}, headers
    code, out = fn(node, "DELETE", "/big0?purge=1")
    assert code == 200, out
    code, out = fn(node, "PUT", "/big4", mods[4], timeout=60)
    assert code == 201, out
    # 75 MiB of deploys since start: a snapshot, and the log behind it goes.
    wait_for(lambda: snapshot_files(node), timeout=60, what="a snapshot forced by deploy bytes")
    wait_for(lambda: segment_bytes(node) < 40 << 20, timeout=60,
             what="the segments holding the deploys released")
    code, out = fn(node, "GET", "/big4")
    assert code == 200 and out["version"] == 1, out
