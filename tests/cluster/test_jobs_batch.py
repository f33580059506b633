"""Batch job submission (issue 14, J4): POST /v1/functions/NAME/jobs with
Content-Type: application/x-ndjson, one JSON payload a line -> 202
{"jobs":[ID...]}. Each job is its own Q_PUBLISH entry; the batch's entries
are appended together (jinn_node_propose_many). On a 3-node cluster with
the job_echo guest (answers its payload)."""
import json
import subprocess
import sys

import pytest

from conftest import SANITIZER_MARKS
from harness import JINN, Cluster, wait_for
from test_wasm_run import deploy, module, wait_ready_here

ND = {"Content-Type": "application/x-ndjson"}
QUEUES = [
    "queues {",
    "    WORKERS_bfull { max_length 3 }",
    "}",
]


@pytest.fixture(scope="module")
def c3(tmp_path_factory):
    c = Cluster(tmp_path_factory.mktemp("jobs_batch"), n=3, extra_config=QUEUES).start()
    try:
        c.wait_leader()
        c.wait_ready()
        for n in c.nodes:
            wait_for(lambda: n.status()["leader"]["api"], what=f"{n.name} knows the leader")
        echo = module("jobs/job_echo")
        deploy(c, "becho", echo)
        deploy(c, "bidle", echo, workers=0)  # nobody runs these: they stay queued
        deploy(c, "bfull", echo, workers=0)
        for n in c.nodes:
            wait_ready_here(n, "becho")
        yield c
    finally:
        c.close()
        for n in c.nodes:
            log = n.log()
            if any(s in log for s in SANITIZER_MARKS):
                sys.stderr.write(log[-6000:])
                raise AssertionError(f"sanitizer report in the log of {n.name}")


def post(node, fn, body, headers=None):
    code, _, out = node.request(f"/v1/functions/{fn}/jobs", "POST", body,
                                ND if headers is None else headers)
    return code, json.loads(out)


def job(node, fn, jid):
    code, _, out = node.request(f"/v1/functions/{fn}/jobs/{jid}")
    assert code == 200, (code, out)
    return json.loads(out)


def published(node, fn):
    code, _, out = node.request(f"/v1/queues/WORKERS_{fn}")
    return json.loads(out)["published"] if code == 200 else 0


def test_batch_runs_every_job_in_order(c3):
    for n in c3.nodes:  # followers relay the batch to the leader
        lines = [json.dumps({"i": i, "from": n.name}) for i in range(5)]
        code, out = post(n, "becho", ("\n".join(lines) + "\n").encode())
        assert code == 202, out
        ids = out["jobs"]
        assert len(ids) == 5 and ids == sorted(ids) and len(set(ids)) == 5, out
        assert out["index"] >= ids[-1] and "duplicates" not in out, out
        for jid, line in zip(ids, lines):
            done = wait_for(lambda: (lambda j: j if j["state"] == "succeeded" else None)(
                job(n, "becho", jid)), 60, interval=0.05, what=f"job {jid} succeeded")
            assert done["response"]["body"] == line and done["delivery"] == 1, done


def test_batch_lines_crlf_and_no_final_newline(c3):
    n = c3.nodes[0]
    code, out = post(n, "bidle", b'"a"\r\n{"b":[1,2]}\r\n7')
    assert code == 202 and len(out["jobs"]) == 3, out
    code, _, body = n.request(f"/v1/functions/bidle/jobs?limit=3")
    listed = {j["job"]: j for j in json.loads(body)["jobs"]}
    assert set(out["jobs"]) <= set(listed), (out, listed)


def test_batch_idempotency_key_is_key_hash_position(c3):
    n = c3.leader()
    body = b'"x1"\n"x2"\n"x3"\n'
    key = {**ND, "Idempotency-Key": "batch-k1"}
    before = published(n, "bidle")
    code, first = post(n, "bidle", body, key)
    assert code == 202, first
    code, again = post(c3.nodes[2], "bidle", body, key)  # a retry, via any node
    assert code == 202 and again["jobs"] == first["jobs"], (first, again)
    assert again["duplicates"] == 3, again
    assert published(n, "bidle") == before + 3
    # The batch's job 2 is the single submission with key "batch-k1#2".
    code, _, out = n.request("/v1/functions/bidle/jobs", "POST", b'"x2"',
                             {"Idempotency-Key": "batch-k1#2"})
    assert code == 202 and json.loads(out)["job"] == first["jobs"][1], out
    # Room for "#POSITION": at most 250 bytes.
    code, out = post(n, "bidle", body, {**ND, "Idempotency-Key": "k" * 251})
    assert code == 400 and "Idempotency-Key" in out["message"], out
    code, out = post(n, "bidle", body, {**ND, "Idempotency-Key": "k" * 250})
    assert code == 202, out


@pytest.mark.parametrize("body,why", [
    (b"", "empty"),
    (b"\n", "line 1 is empty"),
    (b'"a"\n\n"b"\n', "line 2 is empty"),
    (b'"a"\n"b"\n{"c":\n', "line 3 is not JSON"),  # one bad element: nothing goes in
    (b'"a"\nnot json\n', "line 2 is not JSON"),
    (b'"a"\n"\xff"\n', "line 2 is not JSON"),  # not UTF-8
    (b'1\n' * 257, "at most 256 jobs"),
])
def test_batch_hostile_input_submits_nothing(c3, body, why):
    n = c3.nodes[1]
    before = published(n, "bidle")
    code, out = post(n, "bidle", body)
    assert code == 400 and why in out["message"], (code, out)
    assert published(n, "bidle") == before


def test_batch_at_the_limit_and_over_the_body_limit(c3):
    n = c3.nodes[0]
    code, out = post(n, "bidle", b'1\n' * 256)
    assert code == 202 and len(out["jobs"]) == 256, out
    before = published(n, "bidle")
    big = (b'"' + b"v" * 1000 + b'"\n') * 1100  # over the 1 MiB body limit
    code, _, _ = n.request("/v1/functions/bidle/jobs", "POST", big, ND)
    assert code == 413, code
    assert published(n, "bidle") == before


def test_other_content_types_are_one_job(c3):
    """Only application/x-ndjson is a batch: a JSON array (or a look-alike
    type) is one job whose payload is the body, as before."""
    n = c3.nodes[0]
    for ct in ("application/json", "application/x-ndjsonx", "text/plain"):
        code, _, out = n.request("/v1/functions/bidle/jobs", "POST", b'[1,2]\n[3]',
                                 {"Content-Type": ct})
        body = json.loads(out)
        assert code == 202 and isinstance(body["job"], int) and "jobs" not in body, (ct, out)
    # Parameters and case are fine.
    code, out = post(n, "bidle", b'1\n2', {"Content-Type": "Application/X-NDJSON; charset=utf-8"})
    assert code == 202 and len(out["jobs"]) == 2, out


def test_batch_into_a_full_queue_says_which_went_in(c3):
    n = c3.leader()
    code, out = post(n, "bfull", b'1\n2\n3\n4\n5\n')
    assert code == 507 and out["error"], out
    assert len(out["jobs"]) == 5 and out["jobs"][3:] == [None, None], out
    assert all(isinstance(j, int) for j in out["jobs"][:3]), out
    assert published(n, "bfull") == 3


def test_batch_for_an_unknown_function(c3):
    code, out = post(c3.nodes[2], "nosuchfn", b'1\n')
    assert code == 404, out


def test_cli_enqueue_batch(c3, tmp_path):
    n = c3.nodes[1]
    f = tmp_path / "jobs.ndjson"
    f.write_text('{"a":1}\n"b"\n')
    out = subprocess.run([JINN, "fn", "enqueue", "bidle", "--batch", str(f), "--addr", n.url],
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    ids = [int(x) for x in out.stdout.split()]
    assert len(ids) == 2 and ids[0] < ids[1], out.stdout
    for jid in ids:
        assert job(n, "bidle", jid)["state"] == "queued"
    # From stdin, with a key: the same batch again adds nothing.
    args = [JINN, "fn", "enqueue", "bidle", "--batch", "-", "--key", "cli-b", "--addr", n.url]
    first = subprocess.run(args, input='1\n2\n', capture_output=True, text=True, timeout=30)
    again = subprocess.run(args, input='1\n2\n', capture_output=True, text=True, timeout=30)
    assert first.returncode == 0 and first.stdout == again.stdout, (first, again)
    bad = subprocess.run(args[:-4] + ["--addr", n.url], input='1\nnope\n', capture_output=True,
                         text=True, timeout=30)
    assert bad.returncode != 0 and "line 2" in bad.stderr + bad.stdout, bad
