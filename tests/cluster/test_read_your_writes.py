"""Read-your-writes (issue 12 item 4): every write reply carries its raft
index (X-Jinn-Index); a read with min_index (or X-Jinn-Min-Index) waits until
the node it asks applied that index, on any node."""
import json
import time

from harness import wait_for

CONFIG = ["request_timeout 2s", "consensus {",
          "    sessions { mode ap  max_staleness 1h }", "}"]


def test_a_write_is_seen_by_a_read_with_its_index_on_a_lagging_node(cluster_factory):
    c = cluster_factory(3, extra_config=CONFIG)
    lagging = c.nodes[2]
    lagging.env["JINN_TEST_APPEND_DELAY_MS"] = "800"  # a slow disk: it lags
    c.nodes[0].start()
    c.nodes[1].start()
    leader = c.wait_leader(among=c.nodes[:2])
    lagging.start()
    c.wait_ready([leader])
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
    # Bad and unreachable indexes.
    assert lagging.request("/v1/kv/sessions/user0?consistency=stale&min_index=x")[0] == 400
    assert lagging.request("/v1/kv/sessions/user0?consistency=stale&min_index=-1")[0] == 400
    t = time.time()
    code, _, body = lagging.request(
        "/v1/kv/sessions/user0?consistency=stale&min_index=999999999")
    assert code == 503 and b"too_stale" in body
    assert 1.5 < time.time() - t < 6  # bounded by request_timeout (2s)
