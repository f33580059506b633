"""Tools that fit people's hands (issue 16, item 6): --help everywhere, the
SQL shell's dot-commands and history, the CLI waiting out an election,
`jinn worker` saying what it does, and scripts/demo-cluster.sh being safe to
run twice."""
import json
import os
import shutil
import pty
import stat
import subprocess
import time

import pytest

from harness import JINN, wait_for
from test_readme import port_bases

ROOT = os.path.join(os.path.dirname(__file__), "..", "..")

HELP = [
    ["run"], ["status"], ["version"], ["members"], ["members", "add"], ["members", "remove"],
    ["leader"], ["leader", "transfer"], ["kv"], ["kv", "put"], ["kv", "get"], ["kv", "watch"],
    ["lock"], ["lock", "acquire"], ["lock", "release"], ["queue"], ["queue", "pub"],
    ["queue", "fetch"], ["queue", "dead"], ["worker"], ["sql"], ["sql", "exec"],
    ["sql", "query"], ["check"],
]


@pytest.mark.parametrize("flag", ["--help", "-h"])
def test_help_on_every_subcommand(flag):
    env = {**os.environ, "JINN_ADDR": "http://127.0.0.1:1"}  # nothing must be contacted
    for cmd in HELP:
        out = subprocess.run([JINN, *cmd, flag], capture_output=True, text=True, timeout=10,
                             env=env)
        assert out.returncode == 0, (cmd, out.stderr)
        assert out.stdout.startswith("usage: jinn "), (cmd, out.stdout)
        assert out.stderr == "", (cmd, out.stderr)
    # Help also comes after other arguments, and a "--" ends option parsing.
    out = subprocess.run([JINN, "kv", "put", "ns", "key", flag], capture_output=True,
                         text=True, timeout=10, env=env)
    assert out.returncode == 0 and "jinn kv put" in out.stdout
    out = subprocess.run([JINN, "status", "--addr", "http://127.0.0.1:1", "--", flag],
                         capture_output=True, text=True, timeout=10)
    assert out.returncode == 2


def jinn(node, *args, stdin=None, timeout=30, env=None):
    return subprocess.run([JINN, *args], input=stdin, capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, "JINN_ADDR": node.url, **(env or {})})


@pytest.fixture
def node(cluster_factory):
    c = cluster_factory(1).start()
    c.wait_leader()
    c.wait_ready()
    return c.nodes[0]


def test_sql_shell_dot_commands(node, tmp_path):
    script = tmp_path / "seed.sql"
    script.write_text("CREATE TABLE t(id INTEGER PRIMARY KEY, name TEXT, note TEXT);\n"
                      "-- a comment line\n"
                      "INSERT INTO t(name, note) VALUES('a,b', 'x'),\n  ('q\"q', NULL);\n"
                      "CREATE VIEW v AS SELECT name FROM t;\n")
    out = jinn(node, "sql", "db", stdin=(
        f".read {script}\n"
        ".tables\n"
        ".schema t\n"
        ".mode csv\nSELECT name, note FROM t ORDER BY id;\n"
        ".mode line\nSELECT id, name FROM t WHERE id = 1;\n"
        ".mode json\nSELECT count(*) AS n FROM t;\n"
        ".mode\n"
        ".help\n"))
    assert out.returncode == 0, out.stderr
    o = out.stdout
    assert "t\nv\n" in o                                            # .tables
    assert "CREATE TABLE t(id INTEGER PRIMARY KEY, name TEXT, note TEXT);\n" in o  # whole
    assert 'name,note\n"a,b",x\n"q""q",\n' in o   # RFC 4180 csv (CRLF, read as text)
    assert "  id = 1\nname = a,b\n" in o                            # line mode
    assert '{"columns":["n"]' in o and "[[2]]" in o                 # json mode
    assert "mode json\n" in o
    assert ".schema [TABLE]" in o and ".read FILE" in o             # .help
    # Mistakes are reported, counted in the exit status, and do not stop the shell.
    out = jinn(node, "sql", "db", stdin=".mode fancy\n.read /nonexistent\n.frob\nSELECT 7 AS x;\n")
    assert out.returncode == 1
    assert ".mode table|json|csv|line" in out.stderr and "/nonexistent" in out.stderr
    assert "unknown command .frob" in out.stderr and "7" in out.stdout
    # A file that ends inside a statement says so.
    bad = tmp_path / "bad.sql"
    bad.write_text("SELECT 1\n")
    out = jinn(node, "sql", "db", stdin=f".read {bad}\n")
    assert out.returncode == 1 and "ends inside a statement" in out.stderr


def test_sql_shell_long_lines_and_bytes(node, tmp_path):
    """Found by an attacker: a line over the old 64 KiB buffer ran its tail
    as a line of its own; the rest of a dropped statement was sent on its
    own; bytes that are not UTF-8 were reported as "out of memory"."""
    out = jinn(node, "sql", "db", stdin="CREATE TABLE hidden_t(x);\n.tables\n")
    assert out.returncode == 0 and "hidden_t" in out.stdout, out.stdout + out.stderr
    hidden = tmp_path / "hidden.sql"
    hidden.write_text("SELECT 1" + " " * 70000 + ";.tables\n")
    out = jinn(node, "sql", "db", stdin=f".read {hidden}\n")
    assert "hidden_t" not in out.stdout, out.stdout   # .tables did not run
    long = tmp_path / "long.sql"
    long.write_text("SELECT '" + "a" * (1 << 20) + "\n" + "b' AS x;\nSELECT 42 AS y;\n")
    out = jinn(node, "sql", "db", stdin=f".read {long}\n")
    assert out.returncode == 1 and "dropped" in out.stderr, out.stderr
    assert "near" not in out.stderr, out.stderr   # the tail "b' AS x;" was not sent
    assert "42" in out.stdout, out.stdout        # the next statement runs
    raw = tmp_path / "raw.sql"
    raw.write_bytes(b"SELECT '\xff\xfe' AS z;\nSELECT 43 AS w;\n")
    out = jinn(node, "sql", "db", stdin=f".read {raw}\n")
    assert out.returncode == 1 and "not UTF-8" in out.stderr, out.stderr
    assert "out of memory" not in out.stderr and "43" in out.stdout


def shell_on_a_terminal(node, lines, env):
    """Runs `jinn sql db` with a terminal on stdin, typing lines."""
    master, slave = pty.openpty()
    p = subprocess.Popen([JINN, "sql", "db"], stdin=slave, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, env={**env, "JINN_ADDR": node.url})
    os.close(slave)
    try:
        for line in lines:
            os.write(master, line.encode() + b"\n")
        out, err = p.communicate(timeout=30)
    finally:
        os.close(master)
    return p.returncode, out.decode(), err.decode()


def test_sql_shell_history_file(node, tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    assert jinn(node, "sql", "exec", "db", "CREATE TABLE x(a)").returncode == 0
    env = {k: v for k, v in os.environ.items() if k != "XDG_STATE_HOME"}
    env["HOME"] = str(home)
    rc, out, err = shell_on_a_terminal(node, ["SELECT 41 + 1 AS answer;", ".quit"], env)
    assert rc == 0, err
    assert "jinn> " in out and "42" in out
    hist = home / ".jinn_sql_history"
    assert hist.read_text() == "SELECT 41 + 1 AS answer;\n.quit\n"
    assert stat.S_IMODE(os.stat(hist).st_mode) == 0o600
    # .history shows it; a pipe (not a terminal) adds nothing.
    rc, out, _ = shell_on_a_terminal(node, [".history", ".quit"], env)
    assert "SELECT 41 + 1 AS answer;" in out
    assert jinn(node, "sql", "db", stdin="SELECT 1;\n", env=env).returncode == 0
    assert "SELECT 1;" not in hist.read_text()
    # Bounded: a long file is cut back to its last 1000 lines.
    hist.write_text("".join(f"SELECT {i} -- {'x' * 70}\n" for i in range(2500)))
    rc, _, _ = shell_on_a_terminal(node, ["SELECT 'newest';", ".quit"], env)
    lines = hist.read_text().splitlines()
    # (cut to 1000 as 'newest' was added; .quit came after)
    assert len(lines) == 1001 and lines[-2:] == ["SELECT 'newest';", ".quit"]
    assert lines[0].startswith("SELECT 1501 ")
    # $XDG_STATE_HOME wins over $HOME.
    env["XDG_STATE_HOME"] = str(tmp_path / "state")
    shell_on_a_terminal(node, ["SELECT 2;", ".quit"], env)
    assert (tmp_path / "state" / "jinn" / "sql_history").read_text().startswith("SELECT 2;\n")


def test_cli_waits_for_a_leader_on_idempotent_calls(cluster_factory, tmp_path):
    c = cluster_factory(3).start()
    leader = c.wait_leader()
    c.wait_ready()
    assert jinn(leader, "sql", "exec", "db", "CREATE TABLE t(a)").returncode == 0
    survivor = next(n for n in c.nodes if n is not leader)
    gone = [n for n in c.nodes if n is not survivor]
    for n in gone:
        n.kill()
    wait_for(lambda: not survivor.status()["quorum"], timeout=15, what="quorum lost")
    # Not idempotent (a publish is a POST): fails at once, no waiting.
    t0 = time.monotonic()
    out = jinn(survivor, "queue", "pub", "q", "x")
    assert out.returncode == 1 and "waiting" not in out.stderr
    assert time.monotonic() - t0 < 5
    # A PUT waits, saying so, and succeeds once a leader is back.
    err_path = tmp_path / "err"
    with open(err_path, "w") as err:
        p = subprocess.Popen([JINN, "kv", "put", "app", "k", "v"], stdout=subprocess.PIPE,
                             stderr=err, text=True, env={**os.environ, "JINN_ADDR": survivor.url})
    wait_for(lambda: "jinn: waiting for a leader..." in err_path.read_text(), timeout=8,
             what="the CLI to say it waits")
    gone[0].start()
    assert p.wait(timeout=30) == 0, err_path.read_text()
    assert p.stdout.read().startswith("revision ")
    assert err_path.read_text().count("waiting for a leader") == 1
    # Bounded: with no leader coming back, a GET gives up after about 10 s.
    gone[0].kill()
    wait_for(lambda: not survivor.status()["quorum"], timeout=15, what="quorum lost again")
    # (a SQL query is a POST, but only reads: it waits too)
    t0 = time.monotonic()
    env = {**os.environ, "JINN_ADDR": survivor.url}
    calls = [subprocess.Popen([JINN, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True, env=env)
             for args in (["kv", "get", "app", "k"], ["sql", "query", "db", "SELECT 1"])]
    for p in calls:
        _, err = p.communicate(timeout=40)
        took = time.monotonic() - t0
        assert p.returncode == 1 and "gave up waiting for a leader after 10 s" in err, err
        assert err.count("waiting for a leader...") == 1
    assert 8 <= took < 25, took


def test_worker_says_what_it_does(node, tmp_path):
    err_path = tmp_path / "err"
    with open(err_path, "w") as err:
        p = subprocess.Popen([JINN, "worker", "--queue", "jobs", "--exec", "cat >/dev/null",
                              "--worker", "w1"], stderr=err,
                             env={**os.environ, "JINN_ADDR": node.url})
    try:
        wait_for(lambda: "jinn worker: w1 takes jobs from queue 'jobs' at " + node.url
                 in err_path.read_text(), timeout=10, what="the worker's start line")
        assert "/bin/sh -c 'cat >/dev/null'" in err_path.read_text()
        assert "exit 0 acks" in err_path.read_text()
    finally:
        p.terminate()
        p.wait(timeout=30)


def demo(tmp_path, env, *args):
    return subprocess.run(["sh", os.path.join(ROOT, "scripts", "demo-cluster.sh"), *args],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=90)


def test_demo_cluster_script_is_safe_to_run_twice(tmp_path):
    http_base, raft_base = port_bases()
    d = tmp_path / "demo"
    env = {**os.environ, "JINN": os.path.abspath(JINN), "DIR": str(d),
           "HTTP_BASE": str(http_base), "RAFT_BASE": str(raft_base)}
    env.pop("JINN_ADDR", None)
    stray = None
    try:
        out = demo(tmp_path, env, "start")
        assert out.returncode == 0, out.stdout + out.stderr
        assert "leader elected" in out.stdout
        pids = {n: (d / f"{n}.pid").read_text() for n in ("n1", "n2", "n3")}
        sizes = {n: os.path.getsize(d / f"{n}.log") for n in pids}
        assert all(sizes.values())
        # A second start: nothing restarted, no pid file or log rewritten.
        out = demo(tmp_path, env, "start")
        assert out.returncode == 0, out.stderr
        assert out.stdout.count("is already running") == 3
        assert {n: (d / f"{n}.pid").read_text() for n in pids} == pids
        assert all(os.path.getsize(d / f"{n}.log") >= sizes[n] for n in pids)
        out = demo(tmp_path, env, "status")
        assert out.returncode == 0 and "quorum   yes" in out.stdout
        assert f"http://127.0.0.1:{http_base + 1}" in out.stdout
        # restart one node: only its pid changes.
        out = demo(tmp_path, env, "restart", "n2")
        assert out.returncode == 0, out.stderr
        assert (d / "n2.pid").read_text() != pids["n2"]
        assert (d / "n1.pid").read_text() == pids["n1"]
        # A stale pid file naming someone else's process: never killed.
        assert demo(tmp_path, env, "stop", "n3").returncode == 0
        stray = subprocess.Popen(["sleep", "120"])
        (d / "n3.pid").write_text(f"{stray.pid}\n")
        out = demo(tmp_path, env, "stop", "n3")
        assert "n3 is not running" in out.stdout and stray.poll() is None
        out = demo(tmp_path, env, "status")
        assert "n3 stopped" in out.stdout
        assert demo(tmp_path, env, "start", "n3").returncode == 0
        assert stray.poll() is None
        # n3's data_dir wiped: it comes back as a new node to add (never
        # --bootstrap, which jinn refuses for a founded cluster), and the
        # script says so instead of claiming a plain start.
        assert demo(tmp_path, env, "stop", "n3").returncode == 0
        shutil.rmtree(d / "data" / "n3")
        out = demo(tmp_path, env, "start", "n3")
        assert out.returncode == 0, out.stdout + out.stderr
        assert "members remove n3" in out.stdout and "members add n3=" in out.stdout, out.stdout
        pid = int((d / "n3.pid").read_text())
        os.kill(pid, 0)  # running, as a member-to-be
        assert demo(tmp_path, env, "bogus").returncode == 2
        assert demo(tmp_path, env, "stop", "n9").returncode == 2
    finally:
        out = demo(tmp_path, env, "stop")
        if stray is not None:
            stray.kill()
            stray.wait()
    for n in ("n1", "n2", "n3"):
        assert not (d / f"{n}.pid").exists()
    out = demo(tmp_path, env, "stop")                       # twice: still fine
    assert out.returncode == 0 and out.stdout.count("is not running") == 3
