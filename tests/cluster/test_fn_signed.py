"""Signed modules (issue 15 item 5): the cluster's signing policy
(FN_POLICY, GET/PUT /v1/functions-policy), `jinn fn keygen|sign|policy`,
`jinn fn deploy` sending MODULE.sig, and apply refusing unsigned modules on
every replica. Modules are built at test time with wat2wasm."""
import base64
import json
import os
import subprocess

import pytest

from harness import JINN, wait_for

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


def wat(tmp_path, text, name):
    src = tmp_path / f"{name}.wat"
    out = tmp_path / f"{name}.wasm"
    src.write_text(text)
    subprocess.run(["wat2wasm", str(src), "-o", str(out)], check=True)
    return out


def cli(node, *args, cwd=None):
    env = dict(os.environ, JINN_ADDR=node.url)
    return subprocess.run([JINN, *args], capture_output=True, text=True, timeout=60, cwd=cwd,
                          env=env)


def policy(node):
    code, _, out = node.request("/v1/functions-policy")
    assert code == 200, out
    return json.loads(out)


def put_policy(node, body):
    code, _, out = node.request("/v1/functions-policy", "PUT", json.dumps(body).encode(),
                                {"Content-Type": "application/json"})
    return code, json.loads(out)


def deploy_raw(node, name, module, headers=None):
    code, _, out = node.request(f"/v1/functions/{name}", "PUT", module, headers or {},
                                timeout=30)
    return code, json.loads(out)


@pytest.fixture
def three(cluster_factory):
    c = cluster_factory(3, extra_config=["snapshot_threshold 16", "snapshot_trailing 1"])
    c.start()
    c.wait_leader()
    c.wait_ready()
    return c


def test_signed_deploys_under_the_policy(three, tmp_path):
    leader = three.wait_leader()
    follower = next(n for n in three.nodes if n is not leader)
    hello = wat(tmp_path, HELLO, "hello")
    other = wat(tmp_path, OTHER, "other")

    # Policy off (the default): an unsigned module deploys.
    assert policy(leader) == {"require_signature": False, "keys": []}
    r = cli(follower, "fn", "deploy", "free", str(other))
    assert r.returncode == 0, r.stderr

    # Keys and signatures from the CLI.
    r = cli(leader, "fn", "keygen", "ci", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    r = cli(leader, "fn", "keygen", "rogue", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert oct((tmp_path / "ci.key").stat().st_mode & 0o777) == "0o600"
    pub = (tmp_path / "ci.pub").read_text().strip()
    assert len(base64.b64decode(pub, validate=True)) == 32
    r = cli(follower, "fn", "policy", "--require-signature", "on", "--trust", f"ci=@{tmp_path}/ci.pub")
    assert r.returncode == 0, r.stderr
    assert "require_signature: on" in r.stdout and f"trusted ci {pub}" in r.stdout
    # Every replica applied the same policy.
    for n in three.nodes:
        wait_for(lambda n=n: policy(n) == {"require_signature": True,
                                           "keys": [{"name": "ci", "public_key": pub}]},
                 what=f"{n.name} has the policy")

    # Unsigned: refused by the handler with a clear 403, on any node.
    for n in (leader, follower):
        code, out = deploy_raw(n, "hello", hello.read_bytes())
        assert code == 403 and out["error"] == "signature_required", out
        assert "jinn fn sign" in out["message"]

    # Signed by the trusted key: deployed (the CLI finds hello.wasm.sig).
    r = cli(leader, "fn", "sign", str(hello), "--key", str(tmp_path / "ci.key"), "--name", "hello")
    assert r.returncode == 0, r.stderr
    sig = json.loads((tmp_path / "hello.wasm.sig").read_text())
    assert sig["key"] == "ci" and sig["function"] == "hello"
    r = cli(follower, "fn", "deploy", "hello", str(hello))
    assert r.returncode == 0, r.stderr + r.stdout
    for n in three.nodes:
        wait_for(lambda n=n: n.request("/v1/functions/hello")[0] == 200,
                 what=f"{n.name} has hello")

    headers = {"X-Jinn-Signature": sig["signature"], "X-Jinn-Key": "ci"}
    # The same signature for another function name: refused.
    code, out = deploy_raw(leader, "billing", hello.read_bytes(), headers)
    assert code == 403 and "does not verify" in out["message"], out
    # A tampered module (one more custom section byte): refused.
    tampered = hello.read_bytes() + b"\x00\x02\x01x"
    code, out = deploy_raw(leader, "hello", tampered, headers)
    assert code == 403 and "does not verify" in out["message"], out
    # Signed by a key the cluster does not trust: refused.
    r = cli(leader, "fn", "sign", str(other), "--key", str(tmp_path / "rogue.key"), "--name",
            "other")
    assert r.returncode == 0, r.stderr
    r = cli(leader, "fn", "deploy", "other", str(other))
    assert r.returncode == 1 and "not trusted" in r.stderr, r.stderr
    # ...and the rogue key's signature presented under the trusted key's name.
    rogue = json.loads((tmp_path / "other.wasm.sig").read_text())
    code, out = deploy_raw(follower, "other", other.read_bytes(),
                           {"X-Jinn-Signature": rogue["signature"], "X-Jinn-Key": "ci"})
    assert code == 403 and out["error"] == "signature_required", out
    for n in three.nodes:
        assert n.request("/v1/functions/billing")[0] == 404
        assert n.request("/v1/functions/other")[0] == 404

    # Policy off again: unsigned deploys pass.
    r = cli(leader, "fn", "policy", "--require-signature", "off")
    assert r.returncode == 0, r.stderr
    (tmp_path / "other.wasm.sig").unlink()
    r = cli(leader, "fn", "deploy", "other", str(other))
    assert r.returncode == 0, r.stderr


def test_hostile_signature_headers_and_policies(three, tmp_path):
    leader = three.wait_leader()
    hello = wat(tmp_path, HELLO, "hello").read_bytes()
    pub = base64.b64encode(b"\x01" * 32).decode()
    code, out = put_policy(leader, {"require_signature": True, "keys": {"ci": pub}})
    assert code == 200, out
    good_sig = base64.b64encode(b"\x00" * 64).decode()
    cases = [
        {"X-Jinn-Signature": good_sig},                       # no key
        {"X-Jinn-Key": "ci"},                                 # no signature
        {"X-Jinn-Signature": "!!!!", "X-Jinn-Key": "ci"},     # not base64
        {"X-Jinn-Signature": base64.b64encode(b"\0" * 63).decode(), "X-Jinn-Key": "ci"},
        {"X-Jinn-Signature": base64.b64encode(b"\0" * 65).decode(), "X-Jinn-Key": "ci"},
        {"X-Jinn-Signature": good_sig, "X-Jinn-Key": "Bad/Name"},
        {"X-Jinn-Signature": good_sig, "X-Jinn-Key": "k" * 65},
    ]
    for h in cases:
        code, out = deploy_raw(leader, "hello", hello, h)
        assert code == 400 and out["error"] == "bad_request", (h, out)
    # Well-formed but wrong: 403.
    code, out = deploy_raw(leader, "hello", hello,
                           {"X-Jinn-Signature": good_sig, "X-Jinn-Key": "ci"})
    assert code == 403, out
    # Hostile policies.
    bad = [
        {"require_signature": "yes"},
        {"require_signature": True},                               # no key: every deploy refused
        {"require_signature": True, "keys": {"ci": "short"}},
        {"require_signature": True, "keys": {"ci": base64.b64encode(b"\0" * 33).decode()}},
        {"require_signature": True, "keys": {"Bad": pub}},
        {"require_signature": True, "keys": {f"k{i}": pub for i in range(17)}},
        {"require_signature": False, "keys": [pub]},
        {"require_signature": False, "extra": 1},
    ]
    for b in bad:
        code, out = put_policy(leader, b)
        assert code == 400, (b, out)
    assert policy(leader)["keys"] == [{"name": "ci", "public_key": pub}]
    # Sixteen keys are fine, and come back in name order.
    keys = {f"k{i:02d}": pub for i in range(16)}
    code, out = put_policy(leader, {"require_signature": True, "keys": keys})
    assert code == 200, out
    assert [k["name"] for k in policy(leader)["keys"]] == sorted(keys)


def test_policy_survives_restart_and_snapshots(three, tmp_path):
    leader = three.wait_leader()
    hello = wat(tmp_path, HELLO, "hello")
    r = cli(leader, "fn", "keygen", "ci", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    r = cli(leader, "fn", "policy", "--require-signature", "on", "--trust",
            f"ci=@{tmp_path}/ci.pub")
    assert r.returncode == 0, r.stderr
    want = policy(leader)
    # Enough entries for every node to snapshot (threshold 16), so the
    # policy is read back from a snapshot at restart.
    for i in range(60):
        code, _, _ = leader.request(f"/v1/kv/default/k{i}", "PUT", b"x")
        assert code == 200
    for n in three.nodes:
        wait_for(lambda n=n: any(f.startswith("snapshot-") for f in os.listdir(n.data_dir)),
                 timeout=20, what=f"{n.name} took a snapshot")
    # A wiped follower learns the policy from the leader's snapshot.
    victim = next(n for n in three.nodes if n is not leader)
    victim.stop()
    victim.wipe()
    victim.start()  # no --bootstrap: waits as a non-member
    wait_for(lambda: victim.status().get("role") is not None, what="wiped node up")
    code, _, body = leader.request(f"/v1/cluster/members/{victim.name}", "DELETE")
    assert code == 200, body
    code, _, body = leader.request("/v1/cluster/members", "POST",
                                   json.dumps({"name": victim.name,
                                               "address": victim.advertised}).encode())
    assert code in (200, 201), body
    wait_for(lambda: policy(victim) == want, timeout=30,
             what="the wiped node learns the policy from a snapshot")
    assert "snapshot restored" in victim.log()
    # And every node reads it back from its own snapshot and log at restart.
    for n in three.nodes:
        n.stop()
    for n in three.nodes:
        n.start()
    three.wait_leader()
    three.wait_ready()
    for n in three.nodes:
        wait_for(lambda n=n: policy(n) == want, what=f"{n.name} has the policy again")
    leader = three.wait_leader()
    code, out = deploy_raw(leader, "hello", hello.read_bytes())
    assert code == 403 and out["error"] == "signature_required", out
    r = cli(leader, "fn", "sign", str(hello), "--key", str(tmp_path / "ci.key"))
    assert r.returncode == 0, r.stderr  # --name defaults to the file's name: hello
    r = cli(leader, "fn", "deploy", "hello", str(hello))
    assert r.returncode == 0, r.stderr


def test_rollback_under_require_signature(three, tmp_path):
    """Review R2 M2: a rollback to an unsigned version, or to one signed by
    a key no longer trusted, is refused (403 signature_required) and no
    replica changes its active version."""
    leader = three.wait_leader()
    follower = next(n for n in three.nodes if n is not leader)
    hello = wat(tmp_path, HELLO, "hello")
    other = wat(tmp_path, OTHER, "other")
    r = cli(leader, "fn", "deploy", "greet", str(hello))  # v1, unsigned, policy off
    assert r.returncode == 0, r.stderr
    assert cli(leader, "fn", "keygen", "ci", cwd=tmp_path).returncode == 0
    assert cli(leader, "fn", "keygen", "next", cwd=tmp_path).returncode == 0
    r = cli(leader, "fn", "policy", "--require-signature", "on", "--trust",
            f"ci=@{tmp_path}/ci.pub")
    assert r.returncode == 0, r.stderr
    for name, mod in (("greet", other), ("fine", hello), ("fine", other)):
        r = cli(leader, "fn", "sign", str(mod), "--key", str(tmp_path / "ci.key"), "--name", name)
        assert r.returncode == 0, r.stderr
        r = cli(follower, "fn", "deploy", name, str(mod))
        assert r.returncode == 0, r.stderr + r.stdout

    def active(n, name):
        code, _, out = n.request(f"/v1/functions/{name}")
        return json.loads(out)["version"] if code == 200 else None

    code, _, out = follower.request("/v1/functions/greet/rollback?version=1", "POST")
    assert code == 403 and json.loads(out)["error"] == "signature_required", out
    code, _, out = leader.request("/v1/functions/fine/rollback?version=1", "POST")
    assert code == 200, out
    # Untrust ci (trust another key): its versions cannot come back.
    r = cli(leader, "fn", "policy", "--untrust", "ci", "--trust", f"next=@{tmp_path}/next.pub")
    assert r.returncode == 0, r.stderr
    code, _, out = leader.request("/v1/functions/fine/rollback?version=2", "POST")
    assert code == 403 and json.loads(out)["error"] == "signature_required", out
    for n in three.nodes:
        wait_for(lambda n=n: (active(n, "greet"), active(n, "fine")) == (2, 1),
                 what=f"{n.name}: greet v2 and fine v1 stay active")
