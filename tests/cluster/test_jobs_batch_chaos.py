"""Batch job submissions (jinn_node_propose_many) across leader kills (SIGKILL,
SIGTERM, SIGKILL). Clients keep submitting ndjson batches to random nodes and
retry each batch with its Idempotency-Key until a 202, as a client should.
Checked: every batch ends in a 202 within its deadline, the ids handed out are
distinct, and every replica's job queue holds exactly those ids.

The reviewer's first version of this test (R4) retried the failed batches
one by one after the chaos, 0.3 s apart, and its clients moved on to a new
key at once after a failure, so a down node (connection refused in
microseconds) minted hundreds of keys a second: ~1 100 failed keys, 6 min
to retry, past the 2 min idempotency window (so batches committed before
their error came back were added again). Here each client retries its own
batch at once, bounded, and moves on only after a 202."""
import json
import random
import sys
import threading
import time

from conftest import SANITIZER_MARKS
from harness import Cluster, wait_for
from test_wasm_run import deploy, module

ND = {"Content-Type": "application/x-ndjson"}
CLIENTS = 4
BATCH_DEADLINE_S = 30  # one batch's retries, well inside the 2 min idempotency window
RETRY_PAUSE_S = 0.05  # a client's back-off after a failed try (not a wait for state)
PROGRESS = 20  # batches answered 202 between two kills


def post(node, body, key):
    try:
        code, _, out = node.request("/v1/functions/cchaos/jobs", "POST", body,
                                    {**ND, "Idempotency-Key": key}, timeout=10)
    except Exception as e:  # a node down: refused, reset or no answer
        return -1, {"exc": repr(e)}
    try:
        return code, json.loads(out)
    except ValueError:
        return code, {"raw": out[:200]}


def test_batches_across_leader_kills(tmp_path):
    c = Cluster(tmp_path / "chaos", n=3).start()
    try:
        c.wait_leader()
        c.wait_ready()
        deploy(c, "cchaos", module("jobs/job_echo"), workers=0)  # jobs stay queued
        stop = threading.Event()
        lock = threading.Lock()
        done = []  # (key, n, ids) per batch answered 202
        failures = []  # (key, answers) of batches that never got a 202
        first = {}  # status of each batch's first try -> count
        errors = {}  # (status, error name) of the failed tries -> count

        def client(t):
            rng = random.Random(t)
            i = 0
            while not stop.is_set():
                key = f"t{t}-b{i}"
                n = rng.randint(1, 200)
                body = b"".join(json.dumps({"k": key, "i": j}).encode() + b"\n"
                                for j in range(n))
                deadline = time.monotonic() + BATCH_DEADLINE_S
                answers = []
                while True:
                    code, out = post(rng.choice(c.nodes), body, key)
                    answers.append((code, out.get("error", out.get("exc", ""))[:80]))
                    if code == 202 or time.monotonic() >= deadline:
                        break
                    time.sleep(RETRY_PAUSE_S)
                with lock:
                    first[answers[0][0]] = first.get(answers[0][0], 0) + 1
                    for a in answers[:-1] if code == 202 else answers:
                        errors[a] = errors.get(a, 0) + 1
                    if code == 202:
                        done.append((key, n, out["jobs"]))
                    else:
                        failures.append((key, answers[-5:]))
                i += 1

        def answered():
            with lock:
                return len(done)

        threads = [threading.Thread(target=client, args=(t,), daemon=True)
                   for t in range(CLIENTS)]
        for th in threads:
            th.start()
        try:
            for round_ in range(3):
                base = answered()
                wait_for(lambda: answered() >= base + PROGRESS, 30,
                         what=f"{PROGRESS} batches answered before kill {round_ + 1}")
                ld = c.wait_leader()
                if round_ == 1:
                    ld.stop()  # SIGTERM: hands leadership over, then exits
                else:
                    ld.kill()
                rest = [n for n in c.nodes if n is not ld]
                c.wait_leader(among=rest, timeout=20)
                ld.start()
            base = answered()
            wait_for(lambda: answered() >= base + PROGRESS, 30,
                     what=f"{PROGRESS} batches answered after the last restart")
        finally:
            stop.set()
            for th in threads:
                th.join(BATCH_DEADLINE_S + 15)
        assert not any(th.is_alive() for th in threads), "a client still waiting"
        print("\nbatches", len(done), "first tries by status", first,
              "failed tries", errors)
        assert not failures, failures[:5]
        ids = []
        for key, n, jobs in done:
            assert len(jobs) == n and all(isinstance(x, int) for x in jobs), (key, jobs)
            ids += jobs
        assert len(ids) == len(set(ids)), "an id handed out twice"
        # Every replica's queue holds exactly the ids handed out: nothing a
        # failed try committed is left over, nothing answered is missing.
        q = json.loads(c.wait_leader().request("/v1/queues/WORKERS_cchaos")[2])
        assert q["published"] == len(ids), (q, len(ids))
        for n in c.nodes:
            wait_for(lambda: json.loads(n.request("/v1/queues/WORKERS_cchaos")[2])
                     ["published"] == len(ids), 30,
                     what=f"{n.name} holds the {len(ids)} jobs handed out")
    finally:
        c.close()
        bad = [n.name for n in c.nodes if any(s in n.log() for s in SANITIZER_MARKS)]
        for n in bad:
            sys.stderr.write(f"--- {n}\n" + c[n].log()[-5000:])
        assert not bad, bad
