"""Read-your-writes (issue 12 item 4): every write reply carries its raft
index (X-Jinn-Index); a read with min_index (or X-Jinn-Min-Index) waits until
the node it asks applied that index, on any node."""
import json
import subprocess
import time

import pytest

from harness import JINN, wait_for
from test_freshness import start_with_a_slow_follower

CONFIG = ["request_timeout 2s", "consensus {",
          "    sessions { mode ap  max_staleness 1h }",
          "    app { mode ap  max_staleness 1h }", "}"]


@pytest.fixture
def lagging_cluster(cluster_factory):
    """A 3-node cluster whose n3 has a slow disk: it lags the leader."""
    c = cluster_factory(3, extra_config=CONFIG)
    c.nodes[2].env["JINN_TEST_APPEND_DELAY_MS"] = "800"
    start_with_a_slow_follower(c, c.nodes[2])
    wait_for(lambda: c.nodes[2].status()["leader"]["api"], what="n3 knows the leader")
    return c


def cli(*args, stdin=None):
    return subprocess.run([JINN, *args], input=stdin, capture_output=True, text=True,
                          timeout=60)


def test_sql_exec_then_query_on_a_lagging_node_sees_the_write(lagging_cluster):
    n3 = lagging_cluster.nodes[2]
    body = json.dumps({"statements": [{"sql": "CREATE TABLE t (x)"},
                                      {"sql": "INSERT INTO t VALUES (42)"}]}).encode()
    code, hdr, out = n3.request("/v1/sql/app/exec", "POST", body,
                                {"Content-Type": "application/json"})
    assert code == 200, out
    index = int(hdr["X-Jinn-Index"])
    assert json.loads(out)["index"] == index
    q = json.dumps({"sql": "SELECT x FROM t"}).encode()
    code, _, out = n3.request("/v1/sql/app/query?consistency=stale", "POST", q,
                              {"Content-Type": "application/json",
                               "X-Jinn-Min-Index": str(index)})
    assert code == 200, out  # the old code: 404 "no such database"
    assert json.loads(out)["rows"] == [[42]]


def test_cli_min_index_and_the_sql_shell_see_their_own_writes(lagging_cluster):
    n3 = lagging_cluster.nodes[2]
    addr = n3.url
    script = ("CREATE TABLE items (name TEXT);\n"
              "INSERT INTO items VALUES ('apple');\n"
              "SELECT name FROM items;\n")
    # "app" is AP: the shell's SELECT is a local read on the lagging node.
    r = cli("sql", "--addr", addr, "app", stdin=script.replace("items", "fruit"))
    assert r.returncode == 0, r.stderr
    assert "apple" in r.stdout and "(1 row)" in r.stdout, r.stdout
    # kv through n3, read back on n3 with --min-index.
    code, hdr, _ = n3.request("/v1/kv/sessions/cli", "PUT", b"mine")
    assert code == 200
    index = hdr["X-Jinn-Index"]
    r = cli("kv", "get", "sessions", "cli", "--stale", "--min-index", index, "--addr", addr)
    assert r.returncode == 0 and r.stdout.strip() == "mine", (r.stdout, r.stderr)
    r = cli("kv", "get", "sessions", "cli", "--min-index", "x", "--addr", addr)
    assert r.returncode == 2


def test_a_write_is_seen_by_a_read_with_its_index_on_a_lagging_node(cluster_factory):
    c = cluster_factory(3, extra_config=CONFIG)
    lagging = c.nodes[2]
    lagging.env["JINN_TEST_APPEND_DELAY_MS"] = "800"  # a slow disk: it lags
    start_with_a_slow_follower(c, lagging)
    wait_for(lambda: lagging.status()["leader"]["api"], what="lagging knows the leader")
    for round_ in range(3):
        # Written through the lagging node (forwarded to the leader).
        code, hdr, body = lagging.request(f"/v1/kv/sessions/user{round_}", "PUT",
                                          f"v{round_}".encode())
        assert code == 200, body
        index = int(hdr["X-Jinn-Index"])
        assert json.loads(body)["index"] == index
        # Read right back on the same node: sees it (the old code: 404).
        code, hdr, body = lagging.request(
            f"/v1/kv/sessions/user{round_}?consistency=stale&min_index={index}")
        assert code == 200 and body == f"v{round_}".encode(), (code, body)
        assert int(hdr["X-Jinn-Applied-Index"]) >= index
        # The list, with the header form.
        code, _, body = lagging.request("/v1/kv/sessions?consistency=stale", "GET",
                                        headers={"X-Jinn-Min-Index": str(index)})
        assert code == 200, body
        assert f"user{round_}" in body.decode()
    # A watch from a revision, with min_index: it starts only once this node
    # applied the write, so it reports it rather than waiting past it.
    code, hdr, _ = lagging.request("/v1/kv/sessions/watched", "PUT", b"w")
    assert code == 200
    index = int(hdr["X-Jinn-Index"])
    code, _, body = lagging.request(
        f"/v1/kv/sessions?watch=1&after={index - 1}&timeout=3s&min_index={index}")
    assert code == 200, body
    events = json.loads(body)["events"]
    assert any(e["key"] == "watched" and e["revision"] == index for e in events), events
    # Queue stats with min_index (and the write's X-Jinn-Index).
    code, hdr, _ = lagging.request("/v1/queues/ryw", "POST", b"job")
    assert code in (200, 201), code
    index = int(hdr["X-Jinn-Index"])
    code, _, body = lagging.request(f"/v1/queues/ryw?min_index={index}")
    assert code == 200, body
    assert b"min_index" not in body
    # Bad and unreachable indexes.
    assert lagging.request("/v1/kv/sessions/user0?consistency=stale&min_index=x")[0] == 400
    assert lagging.request("/v1/kv/sessions/user0?consistency=stale&min_index=-1")[0] == 400
    t = time.time()
    code, _, body = lagging.request(
        "/v1/kv/sessions/user0?consistency=stale&min_index=999999999")
    assert code == 503 and b"too_stale" in body
    assert 1.5 < time.time() - t < 6  # bounded by request_timeout (2s)
