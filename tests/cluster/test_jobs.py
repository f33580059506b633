"""Functions as background jobs (issue 14): POST /v1/functions/NAME/jobs,
job status and lists, the ack endpoint workers use, and `jinn fn
enqueue|job|jobs`, on a 3-node cluster.

Guests (tests/wasm/jobs/, built by `make wasm`): job_echo answers its
payload, job_flaky fails until its third delivery, job_trap writes a line to
stderr and traps, job_slow sleeps PAYLOAD ms then creates jobs/<id> once,
job_cron records its tick, job_fanout enqueues a job_echo job with
host_enqueue, job_raw writes its payload as its whole response."""
import json
import os
import subprocess
import sys
import time
import urllib.parse

import pytest

from conftest import SANITIZER_MARKS
from harness import JINN, Cluster, wait_for
from test_wasm_run import deploy, module, wait_ready_here

GUESTS = ["job_echo", "job_flaky", "job_trap", "job_slow", "job_fanout", "job_raw"]

# Short backoffs and leases so retries, dead letters and failover are quick.
QUEUES = [
    "queues {",
    "    WORKERS_job_flaky { backoff 500ms 500ms  max_deliver 5 }",
    "    WORKERS_job_trap { backoff 100ms  max_deliver 2 }",
    "    WORKERS_job_slow { ack_wait 2s  backoff 100ms }",
    "    WORKERS_job_raw { ack_wait 2s  backoff 100ms  max_deliver 2 }",
    "    WORKERS_slowk { ack_wait 2s  backoff 100ms }",
    "}",
]


@pytest.fixture(scope="module")
def c3(tmp_path_factory):
    c = Cluster(tmp_path_factory.mktemp("jobs"), n=3, extra_config=QUEUES).start()
    try:
        c.wait_leader()
        c.wait_ready()
        for n in c.nodes:
            wait_for(lambda: n.status()["leader"]["api"], what=f"{n.name} knows the leader")
        for g in GUESTS:
            deploy(c, g, module("jobs/" + g))
        for n in c.nodes:
            for g in GUESTS:
                wait_ready_here(n, g)
        yield c
    finally:
        c.close()
        for n in c.nodes:
            log = n.log()
            if any(s in log for s in SANITIZER_MARKS):
                sys.stderr.write(log[-6000:])
                raise AssertionError(f"sanitizer report in the log of {n.name}")


@pytest.fixture(scope="module")
def idle(c3):
    """idle: job_echo's module with workers 0, so no node runs its jobs
    (they stay queued until a test leases them by hand)."""
    deploy(c3, "idle", module("jobs/job_echo"), workers=0)
    return c3


def submit(node, fn, payload=b"", headers=None):
    code, _, out = node.request(f"/v1/functions/{fn}/jobs", "POST", payload, headers or {})
    assert code == 202, (code, out)
    body = json.loads(out)
    assert body["job"] > 0 and body["index"] >= body["job"], body
    return body


def job(node, fn, jid):
    code, _, out = node.request(f"/v1/functions/{fn}/jobs/{jid}")
    assert code == 200, (code, out)
    return json.loads(out)


def wait_state(node, fn, jid, states, timeout=60, seen=None):
    """Polls until the job is in one of states; seen collects every
    (state, delivery) observed on the way."""
    def check():
        j = job(node, fn, jid)
        if seen is not None:
            seen.append(j)
        return j if j["state"] in states else None
    return wait_for(check, timeout, interval=0.05, what=f"{fn} job {jid} {states}")


def error(code_out):
    code, _, out = code_out
    return code, json.loads(out)


# ---- submission and status ------------------------------------------------------

def test_enqueue_over_http_runs_and_keeps_the_response(c3):
    for n in c3.nodes:  # followers relay the submission to the leader
        sub = submit(n, "job_echo", f"hello from {n.name}".encode())
        done = wait_state(n, "job_echo", sub["job"], {"succeeded"})
        assert done["status"] == 200 and done["delivery"] == 1, done
        assert done["response"]["body"] == f"hello from {n.name}", done
        assert done["function"] == "job_echo" and done["finished_ms"] > 0
        # Every node answers the same (reads are linearizable).
        for other in c3.nodes:
            assert job(other, "job_echo", sub["job"]) == done


def test_enqueue_from_a_function(c3):
    n = c3.nodes[1]
    payload = f"fan-{time.time_ns()}"
    sub = submit(n, "job_fanout", payload.encode())
    done = wait_state(n, "job_fanout", sub["job"], {"succeeded"})
    assert done["response"]["body"] == "enqueued", done

    def echoed():
        code, _, out = n.request("/v1/functions/job_echo/jobs?limit=100")
        assert code == 200, out
        for j in json.loads(out)["jobs"]:
            if j["state"] == "succeeded" and j["response"]["body"] == payload:
                return j
        return None
    j = wait_for(echoed, 60, interval=0.1, what="the job job_fanout enqueued ran")
    assert j["job"] > sub["job"]


def test_idempotency_key_dedups(c3):
    n = c3.leader()
    key = {"Idempotency-Key": f"order-{time.time_ns()}"}
    first = submit(n, "job_echo", b"once", key)
    again = submit(c3.nodes[2], "job_echo", b"once", key)  # via any node
    assert again["job"] == first["job"] and again.get("duplicate") is True, (first, again)
    assert "duplicate" not in first
    wait_state(n, "job_echo", first["job"], {"succeeded"})
    other = submit(n, "job_echo", b"once", {"Idempotency-Key": key["Idempotency-Key"] + "x"})
    assert other["job"] != first["job"]
    wait_state(n, "job_echo", other["job"], {"succeeded"})  # none left in flight


def settled(node, fn):
    """Polls until no job of fn is queued, running or waiting to retry."""
    def check():
        code, _, out = node.request(f"/v1/functions/{fn}/jobs?limit=100")
        assert code == 200, out
        return all(j["state"] in ("succeeded", "dead") for j in json.loads(out)["jobs"])
    wait_for(check, 60, interval=0.05, what=f"every {fn} job settled")


def test_list_is_newest_first_and_bounded(c3):
    """The list holds the newest messages and the most recently FINISHED
    results, by id (docs/api.md): the 3 newest ids are its head only if
    they also finished last. So no older job may still be in flight (an
    earlier test's), and each job finishes before the next is submitted
    (the pools run jobs in parallel, in any order)."""
    n = c3.nodes[0]
    settled(n, "job_echo")
    ids = []
    for i in range(5):
        ids.append(submit(n, "job_echo", f"list-{i}".encode())["job"])
        wait_state(n, "job_echo", ids[-1], {"succeeded"})
    code, _, out = n.request("/v1/functions/job_echo/jobs?limit=3")
    assert code == 200, out
    jobs = json.loads(out)["jobs"]
    assert [j["job"] for j in jobs] == sorted(ids, reverse=True)[:3], jobs
    code, _, out = n.request("/v1/functions/job_echo/jobs")
    listed = [j["job"] for j in json.loads(out)["jobs"]]
    assert listed == sorted(listed, reverse=True) and len(listed) <= 20
    # A function that never had a job lists nothing (not 404).
    code, _, out = n.request("/v1/functions/job_trap/jobs?limit=1")
    assert code == 200


def test_large_responses_are_sent_as_stored(c3):
    """R1-F10: a status read splices the stored response bytes into the
    reply (no parse on the loop): single and list replies are valid JSON
    with each job's own response, also next to a job whose last_error or
    body looks like the splice marker."""
    n = c3.nodes[0]
    tricky = '"response":"\\u0001R0" \u0001R1 }{'
    bodies = ["x" * 200000, tricky, "y" * 150000 + "\t\n\"q\\\\"]
    ids = [submit(n, "job_echo", b.encode())["job"] for b in bodies]
    for jid, body in zip(ids, bodies):
        done = wait_state(n, "job_echo", jid, {"succeeded"})
        assert done["response"]["body"] == body, (jid, done["response"]["body"][:80])
    code, _, out = n.request("/v1/functions/job_echo/jobs?limit=100")
    assert code == 200
    listed = {j["job"]: j for j in json.loads(out)["jobs"]}
    for jid, body in zip(ids, bodies):
        assert listed[jid]["response"]["body"] == body, jid
        assert listed[jid]["state"] == "succeeded"


def test_deeply_nested_response_is_acked_with_a_note(c3):
    """R4: a response nested 2048 deep (jansson's limit) was parsed by the
    runner but its ack, one level deeper, was refused at every delivery:
    the job ran again until dead. It is acked with the truncated note."""
    n = c3.nodes[0]
    out = '{"status":200,"x":' + "[" * 2047 + "]" * 2047 + "}"
    jid = submit(n, "job_raw", out.encode())["job"]
    j = wait_state(n, "job_raw", jid, ("succeeded", "dead"))
    assert j["state"] == "succeeded", j
    assert j["delivery"] == 1, j
    assert j["response"]["truncated"] is True and j["response"]["status"] == 200, j


def test_list_of_queued_jobs_is_newest_first(idle):
    """The list's queue side (jobs nobody runs: idle has workers 0)."""
    n = idle.nodes[0]
    ids = [submit(n, "idle", f"q-{i}".encode())["job"] for i in range(7)]
    for limit in (1, 3, 7):
        code, _, out = n.request(f"/v1/functions/idle/jobs?limit={limit}")
        assert code == 200, out
        jobs = json.loads(out)["jobs"]
        assert [j["job"] for j in jobs] == sorted(ids, reverse=True)[:limit], (limit, jobs)
        assert all(j["state"] == "queued" and j["delivery"] == 0 for j in jobs), jobs
    code, _, out = n.request("/v1/functions/idle/jobs?limit=100")
    listed = [j["job"] for j in json.loads(out)["jobs"]]
    assert set(ids) <= set(listed) and listed == sorted(listed, reverse=True), listed


# ---- retries, dead letters -----------------------------------------------------

def test_flaky_job_retries_with_backoff_then_succeeds(c3):
    n = c3.nodes[2]
    sub = submit(n, "job_flaky", b"x")
    seen = []
    done = wait_state(n, "job_flaky", sub["job"], {"succeeded"}, seen=seen)
    assert done["delivery"] == 3, done
    assert done["response"]["body"] == "ok at delivery 3", done
    # Between the deliveries the job waited out its backoff as "failed",
    # with the last error; deliveries only went up.
    failed = [j for j in seen if j["state"] == "failed"]
    assert failed, seen
    assert all("500" in j["last_error"] for j in failed), failed
    assert {j["delivery"] for j in failed} <= {1, 2}, failed
    deliveries = [j["delivery"] for j in seen]
    assert deliveries == sorted(deliveries), deliveries


def test_trap_ends_dead_with_reason_and_requeue_works(c3):
    n = c3.nodes[0]
    sub = submit(n, "job_trap", b"boom")
    jid = sub["job"]
    dead = wait_state(n, "job_trap", jid, {"dead"})
    assert dead["delivery"] == 2, dead  # max_deliver 2 for this queue
    assert "trap" in dead["last_error"], dead
    assert f"job_trap: giving up on job {jid}" in dead["last_error"], dead
    code, _, out = n.request("/v1/queues/WORKERS_job_trap/dead")
    assert code == 200
    letters = {d["seq"]: d for d in json.loads(out)["dead"]}
    assert jid in letters and "trap" in letters[jid]["reason"], letters
    # Requeue: it runs again (and, trapping again, dies again).
    before = json.loads(n.request("/v1/queues/WORKERS_job_trap")[2])["delivered"]
    code, _, out = n.request(f"/v1/queues/WORKERS_job_trap/dead/{jid}/requeue", "POST")
    assert code == 200, out
    wait_for(lambda: json.loads(n.request("/v1/queues/WORKERS_job_trap")[2])["delivered"]
             > before, 30, what="the requeued job delivered again")
    wait_state(n, "job_trap", jid, {"dead"})


def test_cron_function_gets_its_ticks(c3):
    """job_cron with `@every 2s` records cron/<tick_ms>/<job id>: the
    original's payload (job_cron answers 400 to anything else), one job per
    tick (a doubled tick would show two keys under one tick), on the 2 s
    grid of cluster time."""
    leader = c3.wait_leader()
    deploy(c3, "job_cron", module("jobs/job_cron"), cron="@every 2s")
    try:
        def keys():
            code, _, out = leader.request("/v1/kv/default?prefix=cron/&limit=1000")
            assert code == 200, out
            return [k["key"] for k in json.loads(out)["keys"]]
        got = wait_for(lambda: len(keys()) >= 3 and keys(), 60, interval=0.2,
                       what="three cron ticks")
        # The jobs that wrote those keys, settled while the function still
        # exists: a tick fired just before the DELETE below leaves a job
        # queued or running that no worker will finish, so the jobs are
        # judged here, not after the delete.
        for k in got:
            done = wait_state(leader, "job_cron", int(k.split("/")[2]), {"succeeded"})
            assert done["response"]["body"] == k, done
        code, _, out = leader.request("/v1/functions/job_cron/jobs?limit=100")
        assert code == 200, out
        jobs = json.loads(out)["jobs"]
        # None failed (job_cron answers 400 to anything but a tick's payload);
        # later ticks may still be queued or running.
        assert all(j["state"] in ("succeeded", "queued", "running") for j in jobs), jobs
    finally:
        code, _, out = c3.wait_leader().request("/v1/functions/job_cron", "DELETE")
        assert code == 200, out
    ticks = [int(k.split("/")[1]) for k in got]
    assert len(set(ticks)) == len(ticks), got  # no tick ran twice
    ticks.sort()
    # On the 2 s grid (a tick proposed over 2 s late collapses with the
    # next one: ticks never run twice, and a late one is not made up).
    assert all(b > a and (b - a) % 2000 == 0 for a, b in zip(ticks, ticks[1:])), ticks


# ---- the ack endpoint (workers) ---------------------------------------------------

def lease_by_hand(node, fn, worker):
    code, _, out = node.request(f"/v1/queues/WORKERS_{fn}/fetch", "POST",
                                json.dumps({"worker": worker, "wait": "5s"}).encode())
    assert code == 200, out
    got = json.loads(out)
    assert len(got) == 1, got
    return got[0]


def test_ack_settles_only_the_lease_holder(idle):
    n = idle.nodes[1]
    sub = submit(n, "idle", b"by hand")
    assert job(n, "idle", sub["job"])["state"] == "queued"
    # Oldest first: lease until it is ours (earlier tests left idle jobs).
    while True:
        m = lease_by_hand(n, "idle", "elsewhere/idle/7")
        assert m["seq"] <= sub["job"] and m["delivery"] == 1, (m, sub)
        if m["seq"] == sub["job"]:
            break
    running = job(n, "idle", sub["job"])
    assert running["state"] == "running" and running["node"] == "elsewhere", running
    assert running["since_ms"] > 0
    ack = f"/v1/functions/idle/jobs/{sub['job']}/ack"
    resp = {"status": 201, "headers": {}, "body": "made"}

    def post(body):
        return n.request(ack, "POST", json.dumps(body).encode())
    # Not your lease: another worker, or another delivery.
    code, err = error(post({"worker": "other/idle/0", "delivery": 1, "status": 201,
                            "response": resp}))
    assert code == 409 and err["error"] == "conflict", err
    code, err = error(post({"worker": "elsewhere/idle/7", "delivery": 2, "status": 201,
                            "response": resp}))
    assert code == 409, err
    # Malformed: 400, nothing settled.
    for bad in ({"delivery": 1, "status": 201},                           # no worker
                {"worker": "", "delivery": 1},                            # empty worker
                {"worker": "elsewhere/idle/7", "status": 99},             # status range
                {"worker": "elsewhere/idle/7", "status": 600},
                {"worker": "elsewhere/idle/7", "delivery": -1},
                {"worker": "elsewhere/idle/7", "response": "text"},       # not an object
                {"worker": "elsewhere/idle/7", "response": [1]},
                {"worker": "elsewhere/idle/7", "response": {"x": "y" * (1 << 20)}}):
        code, _, out = post(bad)
        assert code in (400, 413), (bad, code, out)
    code, _, out = n.request(ack, "POST", b"not json")
    assert code == 400, out
    assert job(n, "idle", sub["job"])["state"] == "running"
    # The holder's ack keeps the result.
    code, _, out = post({"worker": "elsewhere/idle/7", "delivery": 1, "status": 201,
                         "response": resp})
    assert code == 200, out
    done = job(n, "idle", sub["job"])
    assert done["state"] == "succeeded" and done["status"] == 201, done
    assert done["response"] == resp, done
    # A second ack: the message is gone.
    code, _, out = post({"worker": "elsewhere/idle/7", "delivery": 1, "status": 201})
    assert code in (404, 409), out


def test_ack_batch_settles_each_on_its_own(idle):
    n = idle.nodes[2]
    subs = [submit(n, "idle", f"batch {i}".encode())["job"] for i in range(3)]
    leased = {}
    deadline = time.monotonic() + 30
    while not all(s in leased for s in subs):  # oldest first: earlier tests left idle jobs
        assert time.monotonic() < deadline, leased
        code, _, out = n.request("/v1/queues/WORKERS_idle/fetch", "POST",
                                 json.dumps({"worker": "batcher", "max": 64,
                                             "wait": "5s"}).encode())
        assert code == 200, out
        leased.update({m["seq"]: m["delivery"] for m in json.loads(out)})
    a, b, c = subs
    url = "/v1/functions/idle/jobs/ack"

    def post(acks):
        return n.request(url, "POST", json.dumps({"acks": acks}).encode())

    def item(seq, **kw):
        return dict({"job": seq, "worker": "batcher", "delivery": leased.get(seq, 0),
                     "response": {"body": f"r{seq}"}}, **kw)
    # Malformed batches: 400, nothing applied.
    for bad in ([], [item(a)] * 65, [item(a), {"worker": "batcher"}],
                [item(a), dict(item(b), job=0)], [item(a), dict(item(b), status=99)]):
        code, _, out = post(bad)
        assert code == 400, (bad[:2], code, out)
    code, _, out = n.request(url, "POST", b'{"acks": 7}')
    assert code == 400, out
    assert job(n, "idle", a)["state"] == "running"
    # One command, each ack on its own: a's and c's hold, b's is not the
    # caller's lease, an unknown job, and a repeat of a.
    code, _, out = post([item(a), item(b, worker="someone"), item(99999999), item(c, status=202),
                         item(a)])
    assert code == 200, out
    got = json.loads(out)
    assert got["acked"] == 2 and got["index"] > 0, got
    assert [(r["job"], r["status"]) for r in got["results"]] == [
        (a, 200), (b, 409), (99999999, 404), (c, 200), (a, 404)], got
    assert job(n, "idle", a)["state"] == "succeeded"
    assert job(n, "idle", a)["response"] == {"body": f"r{a}"}
    assert job(n, "idle", c)["status"] == 202
    assert job(n, "idle", b)["state"] == "running"
    code, _, out = post([item(b)])
    assert code == 200 and json.loads(out)["acked"] == 1, out
    assert job(n, "idle", b)["state"] == "succeeded"


# ---- hostile input --------------------------------------------------------------------

def test_hostile_input(c3):
    n = c3.nodes[2]
    sub = submit(n, "job_echo", b"ok")
    for bad in ("0", "-1", "+1", "%201", "1%20", "1x", "0x10", "1.0", "1e3",
                "99999999999999999999", "18446744073709551616", "%00", "1%001"):
        code, _, out = n.request(f"/v1/functions/job_echo/jobs/{bad}")
        assert code == 400, (bad, code, out)
    code, _, out = n.request(f"/v1/functions/job_echo/jobs/{sub['job'] + 1000000}")
    assert code == 404 and json.loads(out)["error"] == "not_found", out
    # Names: not a function name, or too long for WORKERS_<name>.
    for name in ("A", "a%20b", "%C3%A9", "a%00b", "a.b", "-a", "_a", "a" * 57, "a" * 65,
                 "a%2Fb", "%FF"):
        for method, path in (("POST", f"/v1/functions/{name}/jobs"),
                             ("GET", f"/v1/functions/{name}/jobs"),
                             ("GET", f"/v1/functions/{name}/jobs/1")):
            code, _, out = n.request(path, method, b"x" if method == "POST" else None)
            assert code in (400, 404), (name, method, code, out)
            if code == 404:  # only a route that did not match at all
                assert b"not_found" in out, out
    # Unknown function; a deleted one takes no new jobs.
    code, err = error(n.request("/v1/functions/nosuch/jobs", "POST", b"x"))
    assert code == 404 and err["error"] == "not_found", err
    deploy(c3, "gone", module("jobs/job_echo"))
    submit(n, "gone", b"before")
    code, _, out = c3.wait_leader().request("/v1/functions/gone", "DELETE")
    assert code == 200, out
    code, err = error(n.request("/v1/functions/gone/jobs", "POST", b"x"))
    assert code == 404, err
    # A body over max_body (the queue's own limit applies as for a publish).
    code, _, out = n.request("/v1/functions/job_echo/jobs", "POST", b"x" * (17 << 20),
                             timeout=30)
    assert code == 413, (code, out[:200])
    # Idempotency-Key over 256 bytes.
    code, _, out = n.request("/v1/functions/job_echo/jobs", "POST", b"x",
                             {"Idempotency-Key": "k" * 257})
    assert code == 400, out
    # list limits
    for bad in ("0", "101", "-1", "x", ""):
        code, _, out = n.request(f"/v1/functions/job_echo/jobs?limit={bad}")
        assert code == 400, (bad, code, out)
    # The node still serves.
    wait_state(n, "job_echo", submit(n, "job_echo", b"after")["job"], {"succeeded"})


# ---- the idempotent effect (docs/api.md "Jobs") ------------------------------------

def test_exactly_once_effect_across_a_kill(c3):
    """job_slow (3 s) is killed with its node mid-run: its lease expires, it
    runs again elsewhere, and the KV key it creates exists once, written by
    the delivery that completed."""
    leader = c3.wait_leader()
    deploy(c3, "slowk", module("jobs/job_slow"))
    for n in c3.nodes:
        wait_ready_here(n, "slowk")
    sub = submit(leader, "slowk", b"3000")
    running = wait_state(leader, "slowk", sub["job"], {"running"})
    victim = next(n for n in c3.nodes if n.name == running["node"])
    reader = next(n for n in c3.nodes if n is not victim)
    victim.kill()  # kill -9, mid-run (the job sleeps 3 s)
    try:
        t0 = time.monotonic()
        done = wait_state(reader, "slowk", sub["job"], {"succeeded"}, timeout=60)
        assert done["delivery"] == 2, done
        assert done["response"]["body"] == "created", done
        code, _, out = reader.request(f"/v1/kv/default/jobs/{sub['job']}")
        assert code == 200 and out == b"delivery 2", (code, out)
        stats = json.loads(reader.request("/v1/queues/WORKERS_slowk")[2])
        assert stats["acked"] == 1 and stats["delivered"] == 2, stats
        sys.stderr.write(f"failover: completed {time.monotonic() - t0:.1f}s after the kill\n")
    finally:
        victim.start()
        c3.wait_ready([victim])


# ---- CLI ------------------------------------------------------------------------------

def cli(node, *args, stdin=None, timeout=90):
    return subprocess.run([JINN, "fn", *args, "--addr", node.url], input=stdin,
                          capture_output=True, text=True, timeout=timeout)


def test_cli_enqueue_job_jobs(c3, idle):
    n = c3.nodes[1]
    r = cli(n, "enqueue", "job_echo", "from the cli")
    assert r.returncode == 0, r.stderr
    jid = int(r.stdout.strip())
    r = cli(n, "job", "job_echo", str(jid), "--wait", "60")
    assert r.returncode == 0, (r.stdout, r.stderr)
    shown = json.loads(r.stdout)
    assert shown["state"] == "succeeded" and shown["response"]["body"] == "from the cli"
    # stdin, and an Idempotency-Key
    r = cli(n, "enqueue", "job_echo", "--key", f"k{jid}", "-", stdin="piped")
    assert r.returncode == 0, r.stderr
    jid2 = int(r.stdout.strip())
    r = cli(n, "enqueue", "job_echo", "--key", f"k{jid}", "other")
    assert r.returncode == 0 and r.stdout.strip() == f"{jid2} (duplicate)", r.stdout
    assert cli(n, "job", "job_echo", str(jid2), "--wait", "60").returncode == 0
    r = cli(n, "jobs", "job_echo", "--limit", "100")
    assert r.returncode == 0, r.stderr
    lines = {int(line.split("\t")[0]): line for line in r.stdout.splitlines()}
    assert "succeeded" in lines[jid] and "status 200" in lines[jid], lines[jid]
    assert jid2 in lines
    r = cli(n, "jobs", "job_echo", "--json")
    assert r.returncode == 0 and "jobs" in json.loads(r.stdout)
    # A dead job: --wait exits 1 and says so.
    r = cli(n, "enqueue", "job_trap")
    dead_id = r.stdout.strip()
    r = cli(n, "job", "job_trap", dead_id, "--wait", "60")
    assert r.returncode == 1 and "dead" in r.stderr, (r.stdout, r.stderr)
    # --wait that runs out: exit 1.
    r = cli(n, "enqueue", "idle", "never runs")
    r = cli(n, "job", "idle", r.stdout.strip(), "--wait", "1")
    assert r.returncode == 1 and "not finished" in r.stderr, r.stderr
    # Errors: unknown function (1), bad usage (2).
    r = cli(n, "enqueue", "nosuch", "x")
    assert r.returncode == 1 and "404" in r.stderr, r.stderr
    for args in (("enqueue",), ("job", "job_echo"), ("jobs",), ("job", "a", "1", "--wait", "x"),
                 ("enqueue", "job_echo", "--wait", "1")):
        r = cli(n, *args)
        assert r.returncode == 2, (args, r.returncode, r.stderr)
