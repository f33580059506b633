"""Hostile-client regressions (attacker A3) against read-your-writes,
freshness, lock withdrawal, cluster time and full disks."""
import json
import time

from harness import wait_for


def test_min_index_that_cannot_be_read_is_refused_not_ignored(cluster_factory):
    """A min_index too long for its buffer or badly escaped was taken as
    absent: the read was served at once, before the index it asked for."""
    c = cluster_factory(1, extra_config=["request_timeout 2s"]).start()
    n = c.wait_leader(timeout=30)
    code, hdr, body = n.request("/v1/kv/app/k", "PUT", b"v")
    assert code == 200, body
    assert int(hdr["X-Jinn-Index"]) >= 1
    for q in ("0" * 40 + "5", "9" * 38, "%ZZ", "1%00", "1%0099999"):
        code, _, body = n.request("/v1/kv/app/k?min_index=" + q)
        assert code == 400, (q, code, body)  # the old code: 200 "v"
    # The same value through the header was already refused.
    code, _, body = n.request("/v1/kv/app/k", headers={"X-Jinn-Min-Index": "9" * 38})
    assert code == 400, body
    # A well-formed value still works.
    code, _, body = n.request("/v1/kv/app/k?min_index=" + "0" * 20 + "1")
    assert code == 200 and body == b"v", body
