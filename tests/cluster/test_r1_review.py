"""Reviewer R1's regression tests for today's change."""
import base64
import json
import os

import pytest

from test_kv import kv, put


@pytest.fixture
def one(cluster_factory):
    c = cluster_factory(1).start()
    c.wait_leader()
    c.wait_ready()
    return c


def test_list_with_values_is_paged_by_bytes_not_refused(one):
    """A listing with values=1 over more bytes than one reply may hold must
    answer a page (more: true) that fits, built within the reply limit; it
    used to build the whole listing on the loop (here ~19 MiB of base64,
    with limit=1000 and 1 MiB values up to ~1.3 GiB) and then refuse it
    with 500 at the output limit, so the client could never list them."""
    n = one.nodes[0]
    value = os.urandom(1 << 20)
    for i in range(14):
        code, _, out = put(n, "big", f"k{i:02d}", value)
        assert code == 200, out
    seen = []
    after = None
    for _ in range(20):
        q = "values=1&limit=1000" + (f"&start_after={after}" if after else "")
        code, _, out = kv(n, "GET", "big", query=q, timeout=60)
        assert code == 200, out[:300]
        page = json.loads(out)
        assert len(out) <= 16 << 20
        assert page["keys"], page
        seen += [k["key"] for k in page["keys"]]
        if not page["more"]:
            break
        after = page["keys"][-1]["key"]
    assert seen == [f"k{i:02d}" for i in range(14)]


def test_listed_control_character_value_fits_one_reply(cluster_factory):
    """A text value of control characters escapes to 6 bytes a byte in JSON:
    with max_body 8 MiB one such value listed was 48 MiB, over the reply
    limit (2 x max_body + 64 KiB), so it could never be listed. It is sent
    as value_base64 instead (4/3)."""
    c = cluster_factory(1, extra_config=["max_body 8MiB"]).start()
    c.wait_leader()
    c.wait_ready()
    n = c.nodes[0]
    value = b"\x01" * (8 << 20)
    code, _, out = put(n, "ctl", "k", value)
    assert code == 200, out
    code, _, out = kv(n, "GET", "ctl", query="values=1", timeout=60)
    assert code == 200, out[:300]
    (item,) = json.loads(out)["keys"]
    assert base64.b64decode(item["value_base64"]) == value
