"""The command line against a live cluster: kv, lock, queue, worker, sql."""
import json
import os
import subprocess

import pytest

from harness import JINN, wait_for


def jinn(node, *args, stdin=None, timeout=20):
    return subprocess.run([JINN, *args], input=stdin, capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, "JINN_ADDR": node.url})


@pytest.fixture
def node(cluster_factory):
    c = cluster_factory(1, extra_config=["queues {", "    jobs { backoff 100ms }", "}"]).start()
    c.wait_leader()
    c.wait_ready()
    return c.nodes[0]


def test_kv_commands(node):
    out = jinn(node, "kv", "put", "app", "a/b", "hello")
    assert out.returncode == 0 and out.stdout.startswith("revision ")
    rev = out.stdout.split()[1]
    assert jinn(node, "kv", "get", "app", "a/b").stdout == "hello"
    assert jinn(node, "kv", "put", "app", "piped", stdin="from stdin").returncode == 0
    assert jinn(node, "kv", "get", "app", "piped").stdout == "from stdin"
    out = jinn(node, "kv", "create", "app", "a/b", "again")
    assert out.returncode == 1 and "412" in out.stderr and f"revision {rev}" in out.stderr
    assert jinn(node, "kv", "cas", "app", "a/b", rev, "newer").returncode == 0
    listing = jinn(node, "kv", "ls", "app", "--values").stdout
    assert "a/b\tnewer" in listing and "piped\tfrom stdin" in listing
    assert json.loads(jinn(node, "kv", "ls", "app", "--json").stdout)["keys"]
    assert jinn(node, "kv", "del", "app", "a/b").returncode == 0
    assert jinn(node, "kv", "get", "app", "a/b").returncode == 1
    assert jinn(node, "kv", "frob").returncode == 2
    assert jinn(node, "kv", "put", "app").returncode == 2


def test_lock_commands(node):
    out = jinn(node, "lock", "acquire", "jobs", "--owner", "me", "--ttl", "10s")
    assert out.returncode == 0 and out.stdout.startswith("leader token ")
    token = out.stdout.split()[2]
    out = jinn(node, "lock", "acquire", "jobs", "--owner", "you")
    assert out.returncode == 1 and "held by another owner" in out.stderr
    assert "owner me" in jinn(node, "lock", "ls").stdout
    assert jinn(node, "lock", "refresh", "jobs", token).returncode == 0
    assert jinn(node, "lock", "release", "jobs", token).returncode == 0
    assert jinn(node, "lock", "release", "jobs", token).returncode == 1
    out = jinn(node, "lock", "acquire", "busy", "--owner", "a")
    out = jinn(node, "lock", "acquire", "busy", "--owner", "b", "--wait", "200ms")
    assert out.returncode == 1
    assert "wait ended" in out.stderr or "gave up" in out.stderr
    assert jinn(node, "lock", "acquire", "jobs").returncode == 2  # no --owner


def test_queue_commands_and_worker(node, tmp_path):
    for i in range(3):
        assert jinn(node, "queue", "pub", "jobs", f"job-{i}").returncode == 0
    assert jinn(node, "queue", "pub", "jobs", "poison").returncode == 0
    out_file = tmp_path / "done.txt"
    script = (f"read -r line; [ \"$line\" = poison ] && exit 3; "
              f"echo \"$line $JINN_DELIVERY\" >> {out_file}")
    worker = subprocess.Popen([JINN, "worker", "--queue", "jobs", "--exec", script,
                               "--worker", "w1"], stderr=subprocess.PIPE, text=True,
                              env={**os.environ, "JINN_ADDR": node.url})
    try:
        def stats():
            return json.loads(jinn(node, "queue", "stats", "jobs").stdout)
        wait_for(lambda: stats()["acked"] == 3 and stats()["dead"] == 1, timeout=30,
                 what="three jobs done and the poison one dead")
    finally:
        worker.terminate()
        worker.wait(timeout=40)
    assert sorted(out_file.read_text().split("\n")[:-1]) == ["job-0 1", "job-1 1", "job-2 1"]
    dead = json.loads(jinn(node, "queue", "dead", "jobs").stdout)["dead"]
    assert dead[0]["payload"] == "poison" and "exit status 3" in dead[0]["reason"]
    assert jinn(node, "queue", "dead", "jobs", "--drop", str(dead[0]["seq"])).returncode == 0
    assert jinn(node, "queue", "fetch", "jobs").returncode == 2  # no --worker


def test_sql_commands_and_shell(node):
    assert jinn(node, "sql", "exec", "shop",
                "CREATE TABLE items(id INTEGER PRIMARY KEY, name TEXT, price REAL)").returncode == 0
    out = jinn(node, "sql", "exec", "shop", "INSERT INTO items(name, price) VALUES(?, ?)",
               "widget", "9.5")
    assert out.returncode == 0 and "last id 1" in out.stdout
    out = jinn(node, "sql", "query", "shop", "SELECT name, price FROM items WHERE price > ?", "1")
    assert "widget" in out.stdout and "(1 row)" in out.stdout
    shell = jinn(node, "sql", "shop",
                 stdin="INSERT INTO items(name, price)\n VALUES('gadget', 3);\n"
                       "SELECT name FROM items ORDER BY price;\nSELEC oops;\n")
    assert shell.returncode == 1  # one statement failed
    assert shell.stdout.index("gadget") < shell.stdout.index("widget")
    assert "syntax error" in shell.stderr
    assert jinn(node, "sql", "query", "shop", "DELETE FROM items").returncode == 1
    assert jinn(node, "sql", "bogus").returncode == 0  # the shell, no input: nothing to do
    assert jinn(node, "sql", "exec", "shop").returncode == 2
