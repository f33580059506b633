"""A leader whose log writes fail at once (a failing disk; the test hook
JINN_TEST_APPEND_FAULT_FILE makes every append fail while the file exists):
raft_apply fails and takes the entries out again, so the proposer frees the
buffers, exactly once (node.c, jinn_raft_apply). A single KV write
(jinn_node_propose) and a job batch (jinn_node_propose_many) get an error
that says nothing was written; the node keeps running (no sanitizer report,
checked by the fixture), logs the fault at most once a second, and writes
again once the disk does."""
import json
import os

from harness import wait_for
from test_wasm_run import deploy, module

ND = {"Content-Type": "application/x-ndjson"}


def put(node, key, value):
    return node.request(f"/v1/kv/default/{key}", "PUT", value.encode())


def batch(node, fn, n):
    body = "".join(json.dumps({"i": i}) + "\n" for i in range(n)).encode()
    return node.request(f"/v1/functions/{fn}/jobs", "POST", body, ND)


def published(node, fn):
    code, _, out = node.request(f"/v1/queues/WORKERS_{fn}")
    return json.loads(out)["published"] if code == 200 else 0


def test_a_failing_log_write_frees_once_and_the_leader_goes_on(cluster_factory, tmp_path):
    fault = str(tmp_path / "disk-fails")
    c = cluster_factory(1)
    n = c.nodes[0]
    n.env["JINN_TEST_APPEND_FAULT_FILE"] = fault
    c.start()
    c.wait_leader()
    c.wait_ready()
    deploy(c, "fecho", module("jobs/job_echo"), workers=0)  # jobs stay queued
    code, _, out = put(n, "k", "v1")
    assert code == 200, out
    code, _, out = batch(n, "fecho", 3)
    assert code == 202, out

    open(fault, "w").close()
    for i in range(20):  # each one a failed raft_apply; a double free aborts the node
        code, _, out = put(n, "k", f"lost{i}")
        assert code == 500 and json.loads(out)["error"] == "raft_error", (code, out)
        code, _, out = batch(n, "fecho", 1 + i % 5)
        assert code == 500 and json.loads(out)["error"] == "raft_error", (code, out)
    assert n.proc.poll() is None
    assert 1 <= n.log().count("raft could not append a proposal") <= 3  # once a second at most
    assert "TEST ONLY: log writes fail at once while" in n.log()

    os.unlink(fault)
    code, _, out = put(n, "k", "v2")
    assert code == 200, out
    code, _, out = n.request("/v1/kv/default/k")
    assert code == 200 and out == b"v2", (code, out)
    code, _, out = batch(n, "fecho", 4)
    assert code == 202 and len(json.loads(out)["jobs"]) == 4, out
    wait_for(lambda: published(n, "fecho") == 7, what="3 + 4 jobs published, none of the lost")
