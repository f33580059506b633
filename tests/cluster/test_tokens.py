"""Scoped tokens (issue 15 item 3): bootstrap, rules, forwarding, revocation,
hostile credentials, restart (log replay and snapshot)."""
import json
import os
import socket

import pytest

from harness import http, wait_for

BOOT = "boot-secret-0123456789abcdef"
ADMIN = {"Authorization": "Bearer " + BOOT}


def bearer(t):
    return {"Authorization": "Bearer " + t}


def start(cluster_factory, n=3, extra=()):
    c = cluster_factory(n=n, extra_config=[f"bootstrap_token {BOOT}", *extra])
    c.auth_headers = ADMIN
    c.start()
    c.wait_ready()
    leader = c.wait_leader()
    # The leader proposes the bootstrap token; every node serves it once applied.
    for node in c.nodes:
        wait_for(lambda: has_bootstrap(node), what=f"{node.name} applied the bootstrap token")
    return c, leader


def has_bootstrap(node):
    code, _, body = node.request("/v1/tokens", headers=ADMIN)
    return code == 200 and "bootstrap" in [x["name"] for x in json.loads(body)["tokens"]]


def follower_of(c, leader):
    return next(n for n in c.nodes if n is not leader)


def create(node, name, allow, **kw):
    body = json.dumps({"name": name, "allow": allow, **kw}).encode()
    code, _, out = node.request("/v1/tokens", "POST", body, ADMIN)
    assert code == 201, out
    doc = json.loads(out)
    assert doc["name"] == name and doc["token"].startswith(f"jinn.{name}.")
    return doc["token"]


def code_of(node, path, method="GET", body=None, token=None, headers=None):
    h = dict(headers or {})
    if token is not None:
        h.update(bearer(token))
    return node.request(path, method, body, h)[0]


def test_auth_off_without_tokens(cluster_factory):
    """Laptop mode: no bootstrap token, no token ever created: as before."""
    c = cluster_factory(n=1).start()
    c.wait_ready()
    c.wait_leader()
    n = c.nodes[0]
    assert code_of(n, "/v1/kv/a/b", "PUT", b"v") == 200
    assert code_of(n, "/v1/kv/a/b") == 200
    assert code_of(n, "/v1/queues") == 200


def test_401_403_and_every_rule_kind_through_a_follower(cluster_factory):
    c, leader = start(cluster_factory)
    f = follower_of(c, leader)

    # 401: no token, a bad one, a wrong scheme; JSON body and WWW-Authenticate.
    for h in ({}, bearer("nope-nope-nope-nope"), {"Authorization": "Basic " + BOOT},
              bearer("jinn.bootstrap." + "0" * 64), bearer("jinn-node." + "0" * 64)):
        code, headers, body = f.request("/v1/kv/app/x", headers=h)
        assert code == 401, (h, body)
        assert headers.get("WWW-Authenticate", "").startswith("Bearer")
        assert json.loads(body)["error"] == "unauthorized"
    assert f.request("/healthz")[0] == 200
    assert f.request("/readyz")[0] == 200
    assert f.request("/v1/status")[0] == 401

    code, _, body = f.request("/v1/sql/shop/exec", "POST",
                              b'{"statements":[{"sql":"CREATE TABLE t(a)"}]}', ADMIN)
    assert code == 200, body
    kv = create(f, "kv1", ["kv:app/*:read,write", "kv:ro/*:read"])
    lock = create(f, "lock1", ["lock:orders*"])
    q = create(f, "q1", ["queue:emails:publish", "queue:jobs:consume"])
    sql = create(f, "sql1", ["sql:shop:read"])
    fn = create(f, "fn1", ["fn:*:invoke"])
    anyone = [kv, lock, q, sql, fn]

    # (token, method, path, body, expected) - sent to a follower, so writes
    # are forwarded and checked again by the leader.
    table = [
        (kv, "PUT", "/v1/kv/app/x", b"v", 200),
        (kv, "GET", "/v1/kv/app/x", None, 200),
        (kv, "GET", "/v1/kv/app", None, 200),           # listing inside its prefix
        (kv, "DELETE", "/v1/kv/app/x", None, 200),
        (kv, "PUT", "/v1/kv/other/x", b"v", 403),
        (kv, "GET", "/v1/kv/other/x", None, 403),
        (kv, "GET", "/v1/kv/other", None, 403),
        (kv, "PUT", "/v1/kv/ro/x", b"v", 403),          # read only
        (kv, "GET", "/v1/kv/ro/x", None, 404),          # allowed, absent
        (kv, "GET", "/v1/kv/appx/y", None, 403),        # "app/*" is not "app*"
        (lock, "POST", "/v1/locks/orders-1", b'{"owner":"w1","ttl":"10s"}', 200),
        (lock, "GET", "/v1/locks/orders-1", None, 200),
        (lock, "POST", "/v1/locks/billing", b'{"owner":"w1"}', 403),
        (lock, "GET", "/v1/locks", None, 403),          # listing needs lock:*
        (q, "POST", "/v1/queues/emails", b"hello", 201),
        (q, "POST", "/v1/queues/emails/fetch", b'{"worker":"w"}', 403),
        (q, "POST", "/v1/queues/jobs", b"x", 403),
        (q, "GET", "/v1/queues", None, 403),
        (q, "GET", "/v1/queues/emails/dead", None, 403),
        (sql, "POST", "/v1/sql/shop/query", b'{"sql":"SELECT 1"}', 200),
        (sql, "POST", "/v1/sql/shop/exec", b'{"statements":[{"sql":"CREATE TABLE u(a)"}]}',
         403),
        (sql, "POST", "/v1/sql/other/query", b'{"sql":"SELECT 1"}', 403),
        (fn, "GET", "/fn/nothere", None, 404),          # allowed to invoke, none exists
        (fn, "PUT", "/v1/functions/f", b"\0asm", 403),  # invoke is not deploy
        (kv, "GET", "/fn/nothere", None, 403),          # existence is not told
    ]
    for tok in anyone:
        table += [
            (tok, "GET", "/v1/status", None, 403),       # it names every function
            (tok, "GET", "/v1/tokens", None, 403),
            (tok, "POST", "/v1/tokens", b'{"name":"x","allow":["cluster:admin"]}', 403),
            (tok, "DELETE", "/v1/tokens/bootstrap", None, 403),
            (tok, "GET", "/metrics", None, 403),
            (tok, "GET", "/v1/snapshot", None, 403),
            (tok, "GET", "/v1/cluster/members", None, 403),
            (tok, "POST", "/v1/internal/nodes", b"{}", 403),
        ]
    for tok, method, path, body, want in table:
        code, _, out = f.request(path, method, body, bearer(tok))
        assert code == want, (tok.split(".")[1], method, path, code, out)
        if code == 403:
            doc = json.loads(out)
            assert doc["error"] == "forbidden"
            # nothing about the resource asked for, nor others'
            assert path.split("/")[-1] not in doc["message"], doc

    # A fenced write needs the fence lock too (its 409 would tell about it).
    assert code_of(f, "/v1/kv/app/f", "PUT", b"v", token=kv,
                   headers={"X-Jinn-Fence": "orders-1:1"}) == 403
    # The same through the leader directly (no forwarding).
    assert code_of(leader, "/v1/kv/app/y", "PUT", b"v", token=kv) == 200
    assert code_of(leader, "/v1/kv/other/y", "PUT", b"v", token=kv) == 403


def test_revocation_on_every_node_after_one_commit(cluster_factory):
    c, leader = start(cluster_factory)
    f = follower_of(c, leader)
    t = create(f, "gone", ["kv:app/*:read,write"])
    for n in c.nodes:
        wait_for(lambda: code_of(n, "/v1/kv/app/a", token=t) == 404, what="token known")
    code, _, body = f.request("/v1/tokens/gone", "DELETE", None, ADMIN)
    assert code == 200, body
    # The leader applied the revocation before answering: refused there at
    # once, and a write sent to any follower is refused by the leader's check.
    assert code_of(leader, "/v1/kv/app/a", token=t) == 401
    for n in c.nodes:
        assert code_of(n, "/v1/kv/app/a", "PUT", b"v", token=t) == 401
    for n in c.nodes:
        wait_for(lambda: code_of(n, "/v1/kv/app/a", token=t) == 401,
                 what=f"revocation applied on {n.name}")
    assert f.request("/v1/tokens/gone", "DELETE", None, ADMIN)[0] == 404

    def listed(node):
        body = node.request("/v1/tokens", headers=ADMIN)[2]
        return [x["name"] for x in json.loads(body)["tokens"]]
    # (KV reads may be linearizable, answered by the leader: the listing is
    # this node's own applied table.)
    for n in c.nodes:
        wait_for(lambda: listed(n) == ["bootstrap"], what=f"{n.name} lists the revocation")


def test_token_requests_are_strict(cluster_factory):
    c, leader = start(cluster_factory, n=1)
    n = c.nodes[0]

    def post(doc):
        return n.request("/v1/tokens", "POST", json.dumps(doc).encode(), ADMIN)

    bad = [
        {"name": "x", "allow": []},
        {"name": "x", "allow": ["kv:*"]},                    # kv needs actions
        {"name": "x", "allow": ["kv:a/*:read,read"]},
        {"name": "x", "allow": ["kv:a*b:read"]},             # * only at the end
        {"name": "x", "allow": ["kv::read"]},
        {"name": "x", "allow": ["lock:a:hold"]},             # locks name no action
        {"name": "x", "allow": ["queue:q:read"]},
        {"name": "x", "allow": ["cluster:*"]},
        {"name": "x", "allow": ["nosuch:a:read"]},
        {"name": "x", "allow": ["kv:a b:read"]},
        {"name": "x", "allow": ["kv:\u00e9:read"]},
        {"name": "x", "allow": ["kv:a:read", "kv:a:write"]},  # same pattern twice
        {"name": "x", "allow": [f"kv:n{i}/*:read" for i in range(65)]},
        {"name": "x", "allow": ["kv:" + "a" * 2000 + ":read"]},
        {"name": "X", "allow": ["cluster:admin"]},
        {"name": "", "allow": ["cluster:admin"]},
        {"name": "a" * 65, "allow": ["cluster:admin"]},
        {"name": "x", "allow": ["cluster:admin"], "ttl_ms": 5},
        {"name": "x", "allow": ["cluster:admin"], "extra": 1},
    ]
    for doc in bad:
        code, _, body = post(doc)
        assert code == 400, (doc, body)
    code, _, body = post({"name": "bootstrap", "allow": ["cluster:admin"]})
    assert code == 409, body
    # Canonical form: actions in a fixed order.
    t = create(n, "canon", ["kv:a/*:write,read", "queue:q:admin,publish", "fn:f:deploy,invoke"])
    toks = json.loads(n.request("/v1/tokens", headers=ADMIN)[2])["tokens"]
    canon = next(x for x in toks if x["name"] == "canon")
    assert canon["allow"] == ["kv:a/*:read,write", "queue:q:publish,admin", "fn:f:invoke,deploy"]
    assert "token" not in canon and all("hash" not in x and "salt" not in x for x in toks)
    assert code_of(n, "/v1/kv/a/b", "PUT", b"v", token=t) == 200
    # 64 rules are fine.
    create(n, "many", [f"kv:n{i}/*:read" for i in range(64)])
    # A token that expires (cluster time).
    short = create(n, "short", ["kv:a/*:read"], ttl_ms=1000)
    assert code_of(n, "/v1/kv/a/b", token=short) == 200
    # ...even on an idle cluster (no entry moves cluster time meanwhile).
    wait_for(lambda: code_of(n, "/v1/kv/a/b", token=short) == 401,
             timeout=10, interval=0.2, what="token expired")


def raw_request(node, head):
    s = socket.create_connection(("127.0.0.1", node.http_port), timeout=5)
    try:
        s.sendall(head)
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = s.recv(4096)
            if not chunk:
                break
            data += chunk
        return int(data.split(b" ", 2)[1]) if data else 0
    finally:
        s.close()


def test_hostile_credentials(cluster_factory):
    c, leader = start(cluster_factory, n=1)
    n = c.nodes[0]
    t = create(n, "good", ["kv:app/*:read"])
    for value in [b"Bearer " + b"A" * 6000, b"Bearer " + t.encode() + b"\x00x",
                  b"Bearer " + t.encode()[:-1] + b"\xc3\xa9", b"Bearer ",
                  b"Bearer  " + t.encode(), b"bearer" + t.encode(),
                  b"Bearer jinn." + b"." * 100, b"Bearer jinn.good",
                  b"Bearer jinn.good." + b"0" * 64, b"Bearer jinn-node.",
                  b"Bearer " + t.encode() + b"0"]:
        code = raw_request(n, b"GET /v1/kv/app/x HTTP/1.1\r\nHost: x\r\nAuthorization: " +
                           value + b"\r\n\r\n")
        assert code in (400, 401, 431), (value[:40], code)
    # Two Authorization headers: which one counts is not guessed.
    code = raw_request(n, b"GET /v1/kv/app/x HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " +
                       t.encode() + b"\r\nAuthorization: Bearer " + BOOT.encode() + b"\r\n\r\n")
    assert code == 401
    # The good token still works, case-insensitive scheme.
    assert code_of(n, "/v1/kv/app/x", headers={"Authorization": "bearer " + t}) == 404
    assert n.alive()


def test_tokens_survive_restart_log_and_snapshot(cluster_factory):
    c, leader = start(cluster_factory, extra=["snapshot_threshold 16", "snapshot_trailing 4"])
    f = follower_of(c, leader)
    t = create(f, "keep", ["kv:app/*:read,write"])
    gone = create(f, "gone", ["kv:app/*:read,write"])
    assert f.request("/v1/tokens/gone", "DELETE", None, ADMIN)[0] == 200
    # Enough writes for snapshots to be taken and the log compacted.
    for i in range(60):
        assert code_of(leader, f"/v1/kv/app/k{i}", "PUT", b"v", token=t) == 200
    wait_for(lambda: all(has_snapshot(n) for n in c.nodes), timeout=20,
             what="snapshots taken")
    for n in c.nodes:
        n.stop()
    for n in c.nodes:
        n.start()
    c.wait_ready()
    leader = c.wait_leader()
    for n in c.nodes:
        wait_for(lambda: code_of(n, "/v1/kv/app/k1", token=t) == 200, timeout=20,
                 what=f"{n.name} knows the token after restart")
        assert code_of(n, "/v1/kv/app/k1", token=gone) == 401
        assert code_of(n, "/v1/kv/app/k1") == 401
    # The bootstrap token is not created again (the table was not empty).
    names = [x["name"] for x in json.loads(leader.request("/v1/tokens", headers=ADMIN)[2])["tokens"]]
    assert names == ["bootstrap", "keep"]


def has_snapshot(node):
    for _, _, files in os.walk(node.data_dir):
        if any(f.startswith("snapshot-") and not f.endswith(".meta") for f in files):
            return True
    return False


def test_bootstrap_from_environment_and_revoked_bootstrap(cluster_factory):
    c = cluster_factory(n=1)
    c.auth_headers = ADMIN
    c.nodes[0].env["JINN_BOOTSTRAP_TOKEN"] = BOOT
    c.start()
    c.wait_ready()
    n = c.nodes[0]
    wait_for(lambda: has_bootstrap(n), what="bootstrap")
    admin2 = create(n, "admin2", ["cluster:admin"])
    assert n.request("/v1/tokens/bootstrap", "DELETE", None, bearer(admin2))[0] == 200
    # Revoked: the configured value no longer works, and it is not re-created.
    assert n.request("/v1/tokens", headers=ADMIN)[0] == 401
    n.stop()
    n.start()
    c.auth_headers = bearer(admin2)
    c.wait_ready()
    c.wait_leader()
    assert n.request("/v1/tokens", headers=ADMIN)[0] == 401
    toks = json.loads(n.request("/v1/tokens", headers=bearer(admin2))[2])["tokens"]
    assert [x["name"] for x in toks] == ["admin2"]
    # All tokens revoked: auth stays on (it never silently turns off).
    assert n.request("/v1/tokens/admin2", "DELETE", None, bearer(admin2))[0] == 200
    assert n.request("/v1/kv/a/b", "PUT", b"v")[0] == 401


def test_cli_token_create_ls_revoke(cluster_factory):
    import subprocess
    from harness import JINN
    c, leader = start(cluster_factory, n=1)
    n = c.nodes[0]
    env = {**os.environ, "JINN_ADDR": n.url, "JINN_TOKEN": BOOT}

    def cli(*args, token_env=True):
        e = env if token_env else {k: v for k, v in env.items() if k != "JINN_TOKEN"}
        return subprocess.run([JINN, *args], capture_output=True, text=True, env=e, timeout=30)

    r = cli("token", "create", "shop", "--allow", "kv:shop/*:write,read", "--allow",
            "queue:emails:publish", "--ttl", "7d")
    assert r.returncode == 0, r.stderr
    tok = r.stdout.strip()
    assert tok.startswith("jinn.shop.") and "\n" not in tok
    r = cli("token", "ls")
    assert r.returncode == 0 and "shop\tkv:shop/*:read,write queue:emails:publish" in r.stdout
    # every CLI command sends $JINN_TOKEN
    r = subprocess.run([JINN, "kv", "put", "shop", "k", "v"], capture_output=True, text=True,
                       env={**env, "JINN_TOKEN": tok}, timeout=30)
    assert r.returncode == 0, r.stderr
    r = subprocess.run([JINN, "kv", "put", "other", "k", "v"], capture_output=True, text=True,
                       env={**env, "JINN_TOKEN": tok}, timeout=30)
    assert r.returncode == 1 and "403" in r.stderr, r.stderr
    assert cli("token", "ls", token_env=False).returncode == 1
    assert cli("token", "create", "x", "--allow", "kv:a").returncode == 1  # 400 from the node
    assert cli("token", "create", "x").returncode == 2
    assert cli("token", "revoke", "shop").returncode == 0
    assert cli("token", "revoke", "shop").returncode == 1
    assert code_of(n, "/v1/kv/shop/k", token=tok) == 401


def test_functions_act_with_their_deployers_scope(cluster_factory):
    import urllib.parse
    from test_wasm_host import module, wait_ready, FAIL
    c, leader = start(cluster_factory, n=1)
    n = c.nodes[0]
    dep = create(n, "dep", ["fn:sc*:deploy,invoke", "kv:app/*:read,write"])
    caller = create(n, "caller", ["fn:sc:invoke"])
    wasm = module("hostfns")

    def deploy(name, ns):
        code, _, out = n.request(f"/v1/functions/{name}?ns={ns}&timeout=10s", "PUT", wasm,
                                 {"Content-Type": "application/wasm", **bearer(dep)},
                                 timeout=60)
        assert code in (200, 201), out
        wait_ready(n, name)

    def run(name, *lines, token=caller):
        body = "\n".join(lines).encode()
        code, _, out = n.request(f"/fn/{name}", "POST", body, bearer(token), timeout=30)
        assert code == 200, (code, out)
        return [int(line.split(" ")[1]) for line in out.decode().splitlines()]

    deploy("sc", "app")
    deploy("sc2", "secret")
    # The deployer may write app/*, so the function may; secret/* it may not.
    assert run("sc", "set k v1") == [0]
    assert code_of(n, "/v1/kv/app/k", token=dep) == 200
    assert run("sc2", "set k v1", token=dep) == [FAIL]
    assert code_of(n, "/v1/kv/secret/k", token=BOOT) == 404
    # The caller's own token could not write app/k, the function can: it
    # acts with its deployer's scope, not the caller's, and never more.
    assert code_of(n, "/v1/kv/app/k", "PUT", b"x", token=caller) == 403
    # The caller may not invoke sc2.
    assert n.request("/fn/sc2", "POST", b"", bearer(caller))[0] == 403
    # A forged function credential is refused.
    forged = "jinn-fn.sc." + "0" * 64
    assert code_of(n, "/v1/kv/app/k", token=forged) == 401
    # Revoking the deployer takes the function's scope with it.
    assert n.request("/v1/tokens/dep", "DELETE", None, ADMIN)[0] == 200
    assert run("sc", "set k v2") == [FAIL]
    code, _, body = n.request("/v1/kv/app/k", headers=ADMIN)
    assert code == 200 and body == b"v1", body


def test_replica_check_with_tokens_on(cluster_factory):
    """The leader asks followers for digests with the node key (no client
    token involved): with tokens on the check still agrees, relayed through
    a follower, and a client token without cluster:admin cannot start one."""
    import subprocess
    from harness import JINN
    c, leader = start(cluster_factory)
    f = follower_of(c, leader)
    kv = create(f, "kvonly", ["kv:app/*:read,write"])
    assert code_of(f, "/v1/kv/app/a", "PUT", b"v", token=kv) == 200
    target = leader.status()["commit_index"]
    for n in c.nodes:
        wait_for(lambda: n.status()["applied_index"] >= target, what=f"{n.name} caught up")
    env = {**os.environ, "JINN_TOKEN": BOOT}
    r = subprocess.run([JINN, "check", "--addr", f.url, "--json"], capture_output=True,
                       text=True, env=env, timeout=90)
    assert r.returncode == 0, (r.stdout, r.stderr)
    out = json.loads(r.stdout)
    assert out["state"] == "agreed" and {n["state"] for n in out["nodes"]} == {"ok"}
    assert "auth" in [s["name"] for s in out["nodes"][0]["sections"]]
    r = subprocess.run([JINN, "check", "--addr", f.url, "--json"], capture_output=True,
                       text=True, env={**os.environ, "JINN_TOKEN": kv}, timeout=90)
    assert r.returncode != 0 and "403" in (r.stderr + r.stdout)


def test_a_new_token_works_at_once_on_a_lagging_follower(cluster_factory):
    """The create answers after the leader applied it; a follower that has
    not applied it yet forwards the request and the leader's table decides."""
    c, leader = start(cluster_factory)
    followers = [n for n in c.nodes if n is not leader]
    for i in range(10):
        t = create(followers[i % 2], f"fresh{i}", ["kv:app/*:read"])
        for n in followers:
            assert code_of(n, "/v1/kv/app/none", token=t) == 404, (i, n.name)
    # A well-shaped token nobody knows: 401 from the leader, through a follower.
    code, headers, body = followers[0].request("/v1/kv/app/none",
                                               headers=bearer("jinn.nosuch." + "a" * 64))
    assert code == 401 and json.loads(body)["error"] == "unauthorized"
    assert headers.get("WWW-Authenticate", "").startswith("Bearer")


def test_cluster_metrics_rule_reads_metrics_and_nothing_else(cluster_factory):
    """A Prometheus scraper's token: cluster:metrics reads /metrics on
    every node and nothing else (before, /metrics needed cluster:admin)."""
    c, leader = start(cluster_factory)
    scraper = create(leader, "scraper", ["cluster:metrics"])
    assert json.loads(leader.request("/v1/tokens", headers=ADMIN)[2])["tokens"][-1][
        "allow"] == ["cluster:metrics"]
    for n in c.nodes:
        code, _, out = n.request("/metrics", headers=bearer(scraper))
        assert code == 200 and b"jinn_" in out, (n.name, code, out[:200])
        for method, path, body in (("GET", "/v1/status", None), ("GET", "/v1/tokens", None),
                                   ("GET", "/v1/snapshot", None),
                                   ("GET", "/v1/cluster/members", None),
                                   ("GET", "/v1/kv/app/x", None), ("GET", "/v1/kv/app", None),
                                   ("GET", "/v1/queues", None), ("GET", "/v1/functions", None),
                                   ("POST", "/v1/internal/nodes", b"{}"),
                                   ("POST", "/v1/tokens",
                                    b'{"name":"x","allow":["cluster:admin"]}')):
            # /v1/internal/ is refused before the token is even looked up
            # when this node has not applied it yet (it is never forwarded)
            want = (401, 403) if path.startswith("/v1/internal/") else (403,)
            assert code_of(n, path, method, body, token=scraper) in want, (n.name, path)
    assert code_of(leader, "/metrics") == 401
    # The admin still reads it; a mistyped cluster rule is refused.
    assert code_of(leader, "/metrics", token=BOOT) == 200
    body = json.dumps({"name": "bad", "allow": ["cluster:metric"]}).encode()
    assert leader.request("/v1/tokens", "POST", body, ADMIN)[0] == 400
