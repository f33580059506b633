"""An edge replica with tokens on: its replica_token needs cluster:replica;
without a token (401) or with one lacking the rule (403) it is refused
before the upgrade and never applies anything."""
from harness import wait_for
from test_tokens import create, start

POLICIES = ["consensus {", "    app { mode ap  stale_reads true  max_staleness 1h }", "}"]


def test_replica_token_needs_the_replica_rule(cluster_factory, monkeypatch):
    monkeypatch.delenv("JINN_REPLICA_TOKEN", raising=False)
    c, leader = start(cluster_factory, extra=POLICIES)
    tok = create(leader, "edge", ["cluster:replica"])
    r = c.add_replica(name="r1", extra_config=POLICIES + [f"replica_token {tok}"]).start()
    r.wait_state("streaming")
    code, hdr, body = leader.request("/v1/kv/app/k", "PUT", b"v", c.auth_headers)
    assert code == 200, body
    r.wait_position(int(hdr["X-Jinn-Index"]))

    nothing = c.add_replica(name="r2", extra_config=POLICIES).start()
    wait_for(lambda: "the stream was refused: 401" in nothing.log(), timeout=15,
             what="401 without a token")
    kv_only = create(leader, "kvonly", ["kv:app/*:read"])
    wrong = c.add_replica(name="r3", extra_config=POLICIES + [f"replica_token {kv_only}"])
    wrong.start()
    wait_for(lambda: "the stream was refused: 403" in wrong.log(), timeout=15,
             what="403 without cluster:replica")
    for x in (nothing, wrong):
        st = x.replica()
        assert st["position"] == 0 and st["state"] != "streaming", st

    # the token from the environment works the same
    env = c.add_replica(name="r4", extra_config=POLICIES)
    env.env["JINN_REPLICA_TOKEN"] = tok
    env.start()
    env.wait_state("streaming")
