"""Function settings for jobs (issue 14, J1): `workers` and `cron` through
the deploy handler and `jinn fn deploy`, the pending cron tick every node
agrees on, and the refusals with their reasons."""
import json
import time

from harness import wait_for
from test_fn_registry import HELLO, cli, deploy, fn, one, three, wat  # noqa: F401


def test_workers_and_cron_deploy_show_and_refusals(one, tmp_path):
    node = one.nodes[0]
    wat(tmp_path, HELLO, "hello")
    r = cli(node, "deploy", "tick", str(tmp_path / "hello.wasm"), "--workers", "4",
            "--cron", "*/5 * * * *")
    assert r.returncode == 0 and r.stdout.startswith("tick v1 "), (r.stdout, r.stderr)
    out = json.loads(cli(node, "show", "tick", "--json").stdout)
    settings = out["versions_kept"][0]["settings"]
    assert settings["workers"] == 4 and settings["cron"] == "*/5 * * * *", settings
    now_ms = time.time() * 1000
    nxt = out["cron_next_ms"]
    assert nxt % 300000 == 0 and now_ms - 60000 < nxt <= now_ms + 300000 + 60000, (nxt, now_ms)
    # Without jobs keys: defaults shown, no schedule.
    code, _ = deploy(node, "plain", (tmp_path / "hello.wasm").read_bytes())
    assert code == 201
    code, out = fn(node, "GET", "/plain")
    assert out["versions_kept"][0]["settings"]["workers"] == 1
    assert out["versions_kept"][0]["settings"]["cron"] == "" and "cron_next_ms" not in out
    # The same schedule again: unchanged; another one: a new version, a new tick.
    code, out = deploy(node, "tick", (tmp_path / "hello.wasm").read_bytes(), workers="4",
                       cron="*/5 * * * *")
    assert code == 200 and out.get("unchanged") is True, out
    code, out = deploy(node, "tick", (tmp_path / "hello.wasm").read_bytes(), cron="@every 7s")
    assert code == 201 and out["version"] == 2, out
    code, out = fn(node, "GET", "/tick")
    assert out["cron_next_ms"] % 7000 == 0, out
    # Refusals, with the parser's reason.
    module = (tmp_path / "hello.wasm").read_bytes()
    for params, why in [({"cron": "0 0 30 2 *"}, "never runs"),
                        ({"cron": "* * * *"}, "five fields"),
                        ({"cron": "@every 25h"}, "between 1s and 24h"),
                        ({"cron": "0 0 * * MON"}, "day of week"),
                        ({"workers": "65"}, "workers"),
                        ({"workers": "-1"}, "workers")]:
        code, out = deploy(node, "bad", module, **params)
        assert code == 400 and why in out["message"], (params, out)
    code, out = deploy(node, "n" * 57, module, cron="@every 1m")
    assert code == 400 and "at most 56" in out["message"], out
    code, out = deploy(node, "n" * 57, module)
    assert code == 201, out
    # Delete drops the schedule; rollback brings it back.
    assert fn(node, "DELETE", "/tick")[0] == 200
    code, out = fn(node, "GET", "/tick")
    assert "cron_next_ms" not in out, out
    code, out = fn(node, "POST", "/tick/rollback?version=1")
    assert code == 200, out
    code, out = fn(node, "GET", "/tick")
    assert out["cron_next_ms"] % 300000 == 0, out


def test_every_node_holds_the_same_pending_tick(three, tmp_path):
    wat(tmp_path, HELLO, "hello")
    code, out = deploy(three.nodes[1], "tick", (tmp_path / "hello.wasm").read_bytes(),
                       cron="@every 1h", workers="0")
    assert code == 201, out
    want = None
    for n in three.nodes:
        def tick(n=n):
            code, out = fn(n, "GET", "/tick")
            return out.get("cron_next_ms") if code == 200 else None
        got = wait_for(tick, what=f"{n.name} has tick's schedule")
        want = want or got
        assert got == want and got % 3600000 == 0
