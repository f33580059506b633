"""Regression tests for reviewer R2's token findings (issue 15): M1, M3, M4, M5, M6, m1.
Each failed on main at ed2c5d1."""
import base64
import json
import os
import subprocess
import time

import pytest

from harness import JINN, wait_for
from test_wasm_run import module

BOOT = "boot-secret-0123456789abcdef"
ADMIN = {"Authorization": "Bearer " + BOOT}

HELLO = """
(module
  (memory (export "memory") 1)
  (func (export "_start")))
"""
OTHER = """
(module
  (memory (export "memory") 2)
  (func (export "_start")))
"""


def bearer(t):
    return {"Authorization": "Bearer " + t}


def start(cluster_factory, n=1, extra=()):
    c = cluster_factory(n=n, extra_config=[f"bootstrap_token {BOOT}", *extra])
    c.auth_headers = ADMIN
    c.start()
    c.wait_ready()
    leader = c.wait_leader()
    for node in c.nodes:
        wait_for(lambda: node.request("/v1/tokens", headers=ADMIN)[0] == 200
                 and b"bootstrap" in node.request("/v1/tokens", headers=ADMIN)[2],
                 what="bootstrap applied")
    return c, leader


def create(node, name, allow, h=ADMIN):
    code, _, out = node.request("/v1/tokens", "POST",
                                json.dumps({"name": name, "allow": allow}).encode(), h)
    assert code == 201, out
    return json.loads(out)["token"]


def wat(tmp_path, text, name):
    src = tmp_path / f"{name}.wat"
    out = tmp_path / f"{name}.wasm"
    src.write_text(text)
    subprocess.run(["wat2wasm", str(src), "-o", str(out)], check=True)
    return out


def put_fn(node, name, wasm, h, extra=None):
    hh = {"Content-Type": "application/wasm", **h, **(extra or {})}
    return node.request(f"/v1/functions/{name}", "PUT", wasm, hh, timeout=60)


def test_guest_reads_the_invokers_bearer_token(cluster_factory):
    """A tenant allowed only fn:r2echo:deploy,invoke deploys a function; an
    admin calls it; the function's code receives the admin's secret."""
    c, leader = start(cluster_factory)
    t = create(leader, "tenant", ["fn:r2echo:deploy,invoke"])
    code, _, out = put_fn(leader, "r2echo", module("r2/r2_echo"), bearer(t))
    assert code in (200, 201), out
    def served():
        code, _, out = leader.request("/fn/r2echo/", headers=ADMIN, timeout=30)
        return out if code == 200 else None
    out = wait_for(served, 120, what="r2echo served")
    print(out[:400])
    assert BOOT.encode() not in out, "the guest saw the admin's bearer secret"


def test_revoked_bootstrap_token_works_on_a_node_that_has_not_replayed(cluster_factory):
    """Docs: revoke `bootstrap` once you made your own. The config keeps
    bootstrap_token (protected mode needs it). A node restarted without a
    quorum (its table only what its snapshot had) accepts the revoked
    bootstrap secret as cluster:admin again."""
    c, leader = start(cluster_factory, n=3)
    admin2 = create(leader, "admin2", ["cluster:admin"])
    code, _, out = leader.request("/v1/kv/secret/x", "PUT", b"top-secret", bearer(admin2))
    assert code == 200, out
    code, _, out = leader.request("/v1/tokens/bootstrap", "DELETE", None, bearer(admin2))
    assert code == 200, out
    c.auth_headers = bearer(admin2)
    for n in c.nodes:
        wait_for(lambda: n.request("/v1/kv/secret/x?consistency=stale", headers=ADMIN)[0] == 401,
                 what="bootstrap revoked everywhere")
    for n in c.nodes:
        n.stop()
    n = c.nodes[1]
    n.start()
    def up():
        try:
            return n.request("/healthz", timeout=2)[0] == 200
        except Exception:
            return False
    wait_for(up, 60, what="http up")
    results = []
    for path in ("/v1/kv/secret/x?consistency=stale", "/v1/tokens", "/v1/status"):
        code, _, out = n.request(path, headers=ADMIN, timeout=10)
        results.append((path, code, out[:200]))
    print(results)
    # Refused (401) or sent to a leader there is none of (503): never served
    # on the strength of a revoked secret and an empty applied table.
    assert all(r[1] in (401, 503) for r in results), results
    assert all(b"top-secret" not in r[2] and b"applied_index" not in r[2] for r in results), results


def test_peer_only_internal_endpoint_reached_through_a_follower_that_lags(cluster_factory,
                                                                          tmp_path):
    """docs/operations.md: with cluster_tls and http_tls, /v1/internal/...
    answers only a client with a cluster certificate ("a client can no
    longer rewrite the node directory"). A client without one sends a token
    the follower has not applied yet: the follower forwards the request
    (api/auth.c jinn_api_auth_begin, before peer_allowed) over its own mTLS
    connection, and the leader takes it as a peer's."""
    from test_http_tls import secure_cluster
    c = secure_cluster(cluster_factory, tmp_path, extra_config=[f"bootstrap_token {BOOT}"])
    c.auth_headers = ADMIN
    c.start()
    leader = c.wait_leader(timeout=30)
    c.wait_ready(timeout=30)
    wait_for(lambda: all(m["api"] for m in leader.status()["members"]), 30,
             what="every node announced its API")
    f = next(n for n in c.nodes if n is not leader)
    victim = next(m for m in leader.status()["members"] if m["name"] != leader.name)
    body = json.dumps({"id": victim["id"], "name": victim["name"],
                       "api": "http://127.0.0.1:9"}).encode()
    # Direct: refused (no cluster certificate).
    code, _, out = f.request("/v1/internal/nodes", "POST", body, ADMIN)
    print("direct with the bootstrap token:", code, out[:120])
    assert code == 403
    results = []
    for i in range(10):
        tok = create(leader, f"ops{i}", ["cluster:admin"])
        code, _, out = f.request("/v1/internal/nodes", "POST", body, bearer(tok))
        results.append((code, out[:100]))
        if code != 403:
            break
    print(results)
    after = {m["name"]: m["api"] for m in leader.status()["members"]}
    print("directory now:", after)
    assert all(r[0] == 403 for r in results), "internal endpoint reached without a cluster cert"


def test_unauthenticated_requests_are_forwarded_to_the_leader_unlimited(cluster_factory):
    """A client with no valid credential sends token-shaped garbage to a
    follower with limit_rate 1: every request is relayed to the leader
    (api/auth.c jinn_api_auth_begin forwards before the limits run), and the
    leader counts it as a peer's (not limited)."""
    c, leader = start(cluster_factory, n=3, extra=["limit_rate 1", "limit_burst 1"])
    f = next(n for n in c.nodes if n is not leader)
    def forwards():
        code, _, out = f.request("/metrics", headers=ADMIN)
        for line in out.decode().splitlines():
            if line.startswith("jinn_forwards_total") or line.startswith("jinn_api_forwards_total"):
                return float(line.split()[-1])
        return None
    before = forwards()
    bogus = "jinn.x." + "ab" * 32
    codes = {}
    body = b"A" * (1 << 20)
    for i in range(200):
        code = f.request(f"/v1/kv/a/k{i}", "PUT", body, bearer(bogus))[0]
        codes[code] = codes.get(code, 0) + 1
    after = forwards()
    print("replies:", codes, "follower forwards_total:", before, "->", after)
    assert codes == {401: 200}, codes
    # Bodies over the unknown-token forward cap (64 KiB) stay on the follower.
    assert after - before < 10, (before, after)


def test_refused_deploy_rewrites_the_functions_scope(cluster_factory, tmp_path):
    """An admin deploys fn x (scope cluster:admin). A token with only
    fn:x:deploy sends a deploy that is refused (unsigned under the policy):
    x's scope is rewritten to that token's rules anyway."""
    c, leader = start(cluster_factory)
    h1 = wat(tmp_path, HELLO, "hello").read_bytes()
    code, _, out = put_fn(leader, "x", h1, ADMIN)
    assert code in (200, 201), out
    r = subprocess.run([JINN, "fn", "keygen", "ci"], cwd=tmp_path, capture_output=True, text=True)
    pub = (tmp_path / "ci.pub").read_text().strip()
    code, _, out = leader.request("/v1/functions-policy", "PUT",
                                  json.dumps({"require_signature": True,
                                              "keys": {"ci": pub}}).encode(),
                                  {"Content-Type": "application/json", **ADMIN})
    assert code == 200, out
    t = create(leader, "mallory", ["fn:x:deploy"])
    other = wat(tmp_path, OTHER, "other").read_bytes()
    code, _, out = put_fn(leader, "x", other, bearer(t))
    print("refused deploy:", code, out[:200])
    assert code == 403
    # A write that commits after the refused deploy's entries: the leader
    # has applied them all when it answers.
    code, _, out = leader.request("/v1/kv/a/barrier", "PUT", b"1", ADMIN)
    assert code == 200, out
    code, _, snap = leader.request("/v1/snapshot", headers=ADMIN, timeout=60)
    assert code == 200
    # auth section, function scopes: str fn, str deployer, str rules (u32 LE lengths)
    entry = b"\x01\x00\x00\x00x\x07\x00\x00\x00mallory\x0b\x00\x00\x00fn:x:deploy"
    before = b"\x01\x00\x00\x00x\x09\x00\x00\x00bootstrap\x0d\x00\x00\x00cluster:admin"
    print("scope x = mallory's:", entry in snap, " scope x = admin's:", before in snap)
    assert entry not in snap, "a refused deploy recorded the refused deployer's scope for x"
    assert before in snap, "the admin's scope for x is gone"


def test_purge_drops_the_functions_scope(cluster_factory, tmp_path):
    """A purged function's scope is freed on every replica (R2 M6): the
    snapshot's auth section no longer holds it."""
    c, leader = start(cluster_factory)
    h1 = wat(tmp_path, HELLO, "hello").read_bytes()
    t = create(leader, "dev", ["fn:gone:deploy"])
    code, _, out = put_fn(leader, "gone", h1, bearer(t))
    assert code in (200, 201), out
    entry = b"\x04\x00\x00\x00gone\x03\x00\x00\x00dev"
    code, _, snap = leader.request("/v1/snapshot", headers=ADMIN, timeout=60)
    assert code == 200 and entry in snap, "the deploy recorded no scope"
    code, _, out = leader.request("/v1/functions/gone?purge=1", "DELETE", None, ADMIN)
    assert code == 200, out
    code, _, snap = leader.request("/v1/snapshot", headers=ADMIN, timeout=60)
    assert code == 200
    assert entry not in snap, "a purged function's scope stayed"


def test_recreated_token_name_does_not_bring_back_its_scope(cluster_factory, tmp_path):
    """Revoking a deployer drops the scopes it gave; a new token with the
    same name does not bring them back (R2 m3)."""
    c, leader = start(cluster_factory)
    h1 = wat(tmp_path, HELLO, "hello").read_bytes()
    t = create(leader, "dev", ["fn:f:deploy"])
    code, _, out = put_fn(leader, "f", h1, bearer(t))
    assert code in (200, 201), out
    entry = b"\x01\x00\x00\x00f\x03\x00\x00\x00dev"
    code, _, snap = leader.request("/v1/snapshot", headers=ADMIN, timeout=60)
    assert code == 200 and entry in snap, "the deploy recorded no scope"
    code, _, out = leader.request("/v1/tokens/dev", "DELETE", None, ADMIN)
    assert code == 200, out
    create(leader, "dev", ["fn:f:deploy", "kv:*:read,write"])
    code, _, snap = leader.request("/v1/snapshot", headers=ADMIN, timeout=60)
    assert code == 200
    assert entry not in snap, "the revoked deployer's scope came back with its name"


def test_custom_route_answers_404_to_a_token_that_may_not_invoke(cluster_factory, tmp_path):
    """A route served by a function the token may not invoke answers as a
    path nothing serves (R2 m8): no existence leak."""
    c, leader = start(cluster_factory)
    h1 = wat(tmp_path, HELLO, "hello").read_bytes()
    code, _, out = leader.request("/v1/functions/routed?route=/r2route", "PUT", h1,
                                  {"Content-Type": "application/wasm", **ADMIN}, timeout=60)
    assert code in (200, 201), out
    t = create(leader, "other", ["fn:other:invoke"])
    served = leader.request("/r2route", headers=bearer(t))
    nothing = leader.request("/r2nothing", headers=bearer(t))
    print(served[0], served[2], nothing[0], nothing[2])
    assert served[0] == 404 and nothing[0] == 404
    assert served[2] == nothing[2]


def test_any_token_may_read_the_signing_policy(cluster_factory):
    """GET /v1/functions-policy is not secret: any valid token reads it (R2
    m9); without a token it is still 401."""
    c, leader = start(cluster_factory)
    t = create(leader, "reader", ["kv:a/*:read"])
    code, _, out = leader.request("/v1/functions-policy", headers=bearer(t))
    assert code == 200, out
    code, _, out = leader.request("/v1/functions-policy", headers={})
    assert code == 401, out
