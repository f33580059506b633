"""Jobs (issue 14) with security (issue 15) on: a 3-node cluster with a
bootstrap token, cluster_tls and http_tls. Job workers call their own
node's API over https with the node's internal credential; submission and
status need fn:F:invoke; settling a job (the ack endpoint) needs the
internal key; host_enqueue needs fn:F:invoke in its deployer's scope; cron
runs; a job that fails on one node is redelivered to another node.

Guests (tests/wasm/jobs/): job_echo answers its payload, job_fanout
enqueues a job_echo job with host_enqueue, job_cron records its tick in KV,
job_slow sleeps PAYLOAD ms."""
import json
import time
import urllib.parse

from harness import wait_for
from test_http_tls import secure_cluster
from test_wasm_run import module

BOOT = "boot-secret-0123456789abcdef"
ADMIN = {"Authorization": "Bearer " + BOOT}

QUEUES = [
    "queues {",
    "    WORKERS_fan_no { backoff 100ms  max_deliver 1 }",
    "    WORKERS_slowfail { backoff 100ms  max_deliver 4 }",
    "}",
]


def bearer(t):
    return {"Authorization": "Bearer " + t}


def deploy(node, name, wasm, headers, **settings):
    q = urllib.parse.urlencode(settings)
    h = dict(headers)
    h["Content-Type"] = "application/wasm"
    code, _, out = node.request(f"/v1/functions/{name}" + ("?" + q if q else ""), "PUT", wasm,
                                h, timeout=60)
    assert code in (200, 201), (code, out)


def create_token(node, name, allow):
    body = json.dumps({"name": name, "allow": allow}).encode()
    code, _, out = node.request("/v1/tokens", "POST", body, ADMIN)
    assert code == 201, out
    return json.loads(out)["token"]


def ready_everywhere(c, name):
    def ready():
        for n in c.nodes:
            fns = n.status().get("functions", {})
            if fns.get(name, {}).get("state") != "ready":
                return False
        return True
    wait_for(ready, 180, interval=0.2, what=f"{name} ready on every node")


def submit(node, fn, payload, headers):
    code, _, out = node.request(f"/v1/functions/{fn}/jobs", "POST", payload, headers)
    assert code == 202, (code, out)
    return json.loads(out)["job"]


def job(node, fn, jid, headers=ADMIN):
    code, _, out = node.request(f"/v1/functions/{fn}/jobs/{jid}", headers=headers)
    assert code == 200, (code, out)
    return json.loads(out)


def wait_state(node, fn, jid, states, timeout=60):
    def check():
        j = job(node, fn, jid)
        return j if j["state"] in states else None
    return wait_for(check, timeout, interval=0.1, what=f"{fn} job {jid} {states}")


def start(cluster_factory, tmp_path):
    c = secure_cluster(cluster_factory, tmp_path, n=3,
                       extra_config=[f"bootstrap_token {BOOT}", *QUEUES])
    c.auth_headers = ADMIN
    c.start()
    leader = c.wait_leader(timeout=30)
    c.wait_ready(timeout=30)
    for n in c.nodes:
        wait_for(lambda: n.request("/v1/tokens", headers=ADMIN)[0] == 200,
                 what=f"{n.name} applied the bootstrap token")
        wait_for(lambda: n.status()["leader"]["api"], what=f"{n.name} knows the leader")
    return c, leader


def test_jobs_with_tokens_and_tls(cluster_factory, tmp_path):
    c, leader = start(cluster_factory, tmp_path)
    f = next(n for n in c.nodes if n is not leader)
    deploy(leader, "job_echo", module("jobs/job_echo"), ADMIN)
    ready_everywhere(c, "job_echo")

    # Submit with fn:job_echo:invoke (through a follower): the job runs on
    # some node's worker, which fetched, kept and acked it over https with
    # the internal key; its status is readable with the same token.
    user = create_token(leader, "user", ["fn:job_echo:invoke"])
    jid = submit(f, "job_echo", b"secure hello", bearer(user))
    done = wait_state(f, "job_echo", jid, {"succeeded"})
    assert done["status"] == 200 and done["response"]["body"] == "secure hello", done
    assert job(f, "job_echo", jid, bearer(user))["state"] == "succeeded"
    code, _, out = f.request("/v1/functions/job_echo/jobs", headers=bearer(user))
    assert code == 200 and jid in [j["job"] for j in json.loads(out)["jobs"]], out

    # Without fn:job_echo:invoke: 403 on submit, status and list.
    other = create_token(leader, "other", ["fn:other:invoke", "kv:*:read,write"])
    for n in (leader, f):
        assert n.request("/v1/functions/job_echo/jobs", "POST", b"x", bearer(other))[0] == 403
        assert n.request(f"/v1/functions/job_echo/jobs/{jid}", headers=bearer(other))[0] == 403
        assert n.request("/v1/functions/job_echo/jobs", headers=bearer(other))[0] == 403
        # 401 without a token at all
        assert n.request(f"/v1/functions/job_echo/jobs/{jid}")[0] == 401

    # A user token with fn:F:invoke cannot settle anyone's job: the ack
    # endpoint needs the internal key, nak/progress/term the queue's consume.
    held = submit(leader, "job_echo", b"x", ADMIN)
    wait_state(leader, "job_echo", held, {"succeeded"})
    ack = json.dumps({"worker": "n1/job_echo/0", "delivery": 1, "status": 200,
                      "response": {}}).encode()
    for n in (leader, f):
        assert n.request(f"/v1/functions/job_echo/jobs/{held}/ack", "POST", ack,
                         bearer(user))[0] == 403
        for verb in ("nak", "progress", "term", "ack"):
            assert n.request(f"/v1/queues/WORKERS_job_echo/{held}/{verb}", "POST",
                             b'{"worker":"n1/job_echo/0"}', bearer(user))[0] == 403, verb
        assert n.request("/v1/queues/WORKERS_job_echo/fetch", "POST",
                         b'{"worker":"u","max":1}', bearer(user))[0] == 403

    # host_enqueue: with fn:job_echo:invoke in its deployer's scope the
    # job is submitted; without it, refused (the function answers 503).
    dep_ok = create_token(leader, "dep-ok", ["fn:fan_ok:deploy", "fn:job_echo:invoke"])
    dep_no = create_token(leader, "dep-no",
                          ["fn:fan_no:deploy", "queue:WORKERS_job_echo:publish"])
    deploy(leader, "fan_ok", module("jobs/job_fanout"), bearer(dep_ok))
    deploy(leader, "fan_no", module("jobs/job_fanout"), bearer(dep_no))
    ready_everywhere(c, "fan_ok")
    ready_everywhere(c, "fan_no")
    payload = f"fan-{time.time_ns()}"
    jid = submit(f, "fan_ok", payload.encode(), ADMIN)
    done = wait_state(f, "fan_ok", jid, {"succeeded"})
    assert done["response"]["body"] == "enqueued", done

    def echoed():
        code, _, out = f.request("/v1/functions/job_echo/jobs?limit=100", headers=ADMIN)
        assert code == 200, out
        return any(j["state"] == "succeeded" and j["response"]["body"] == payload
                   for j in json.loads(out)["jobs"])
    wait_for(echoed, 60, interval=0.1, what="the job fan_ok enqueued ran")
    jid = submit(f, "fan_no", b"nope", ADMIN)
    dead = wait_state(f, "fan_no", jid, {"dead"})
    assert "503" in dead["last_error"], dead

    # Cron: the leader proposes the ticks directly; the jobs run and write
    # their KV records through their (admin) scope.
    deploy(leader, "job_cron", module("jobs/job_cron"), ADMIN, cron="@every 2s")

    def ticks():
        code, _, out = c.wait_leader().request("/v1/kv/default?prefix=cron/&limit=1000",
                                               headers=ADMIN)
        assert code == 200, out
        return len(json.loads(out)["keys"]) >= 2
    wait_for(ticks, 90, interval=0.2, what="two cron ticks")
    code, _, out = c.wait_leader().request("/v1/functions/job_cron", "DELETE", headers=ADMIN)
    assert code == 200, out


def test_a_failed_job_goes_to_another_node(cluster_factory, tmp_path):
    """slowfail runs 3 s jobs with a 1 s timeout (every delivery fails),
    2 slots per node: all six slots fetch a job, so every node is a recent
    fetcher; each of a job's four deliveries runs on another node than the
    one before (before, another slot of the same node could take it)."""
    c, leader = start(cluster_factory, tmp_path)
    deploy(leader, "slowfail", module("jobs/job_slow"), ADMIN, workers=2, timeout="1s")
    ready_everywhere(c, "slowfail")

    def slots_up():
        return all(n.status().get("jobs", {}).get("functions", {}).get("slowfail", {})
                   .get("slots", 0) == 2 for n in c.nodes)
    wait_for(slots_up, 60, interval=0.2, what="two slowfail slots on every node")
    jids = [submit(leader, "slowfail", b"3000", ADMIN) for _ in range(6)]
    nodes = {jid: {} for jid in jids}  # job -> delivery -> node

    def observe():
        finished = 0
        for jid in jids:
            j = job(leader, "slowfail", jid)
            if j["state"] == "running":
                nodes[jid].setdefault(j["delivery"], j["node"])
            elif j["state"] == "dead":
                finished += 1
        return finished == len(jids)
    wait_for(observe, 120, interval=0.05, what="every slowfail job dead")
    for jid in jids:
        seen = nodes[jid]
        assert set(seen) == {1, 2, 3, 4}, (jid, seen)
        for d in (1, 2, 3):
            assert seen[d] != seen[d + 1], (jid, seen)
