"""The README's examples run as written, pasted in order into one shell.

Every ```sh block right after a `<!-- readme-test -->` line is run, in
order, in one bash (`set -euo pipefail`, so a failing command fails the
test), in a scratch directory holding `build/jinn` (the binary under test)
and `scripts/` (the repository's). Two things differ from a reader's paste,
and only these: `make && ` is dropped (the binary is built already), and the
demo cluster's ports 8081..8083 become free ones (scripts/demo-cluster.sh
takes HTTP_BASE and RAFT_BASE, the blocks' URLs are rewritten to match), so
the test never collides with a real demo cluster or another test.
"""
import os
import re
import socket
import subprocess

from harness import JINN

ROOT = os.path.join(os.path.dirname(__file__), "..", "..")
MARK = "<!-- readme-test -->"


def readme_blocks():
    with open(os.path.join(ROOT, "README.md")) as f:
        text = f.read()
    return re.findall(re.escape(MARK) + r"\n```sh\n(.*?)\n```", text, re.S)


def port_bases():
    """HTTP and raft bases with base+1..base+3 all free (below 32768)."""
    def free(port):
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
                return True
            except OSError:
                return False

    start = 21000 + (os.getpid() * 7919) % 9000
    bases = []
    for i in range(0, 9000, 10):
        base = 21000 + (start - 21000 + i) % 9000
        if all(free(base + k) for k in (1, 2, 3)):
            bases.append(base)
            if len(bases) == 2:
                return bases
    raise RuntimeError("no free ports")


def test_readme_blocks_are_marked():
    blocks = readme_blocks()
    # start, members, kv, read-your-writes, locks, queues, sql, jobs, cron, stop
    assert len(blocks) >= 10, blocks
    assert "demo-cluster.sh start" in blocks[0]
    assert "demo-cluster.sh stop" in blocks[-1]
    joined = "\n".join(blocks)
    # The two examples the issue found broken stay fixed.
    assert "orders 12" not in joined and "orders:12" not in joined
    assert "send-email.sh" in joined and "cat > send-email.sh" in joined


def test_readme_examples_run(tmp_path):
    http_base, raft_base = port_bases()
    os.makedirs(tmp_path / "build")
    os.symlink(os.path.abspath(JINN), tmp_path / "build" / "jinn")
    os.symlink(os.path.abspath(os.path.join(ROOT, "scripts")), tmp_path / "scripts")
    parts = ["set -euo pipefail"]
    for i, block in enumerate(readme_blocks()):
        block = block.replace("make && ", "")
        block = re.sub(r"127\.0\.0\.1:808([1-3])",
                       lambda m: f"127.0.0.1:{http_base + int(m.group(1))}", block)
        assert ":808" not in block, block
        parts.append(f"echo '=== block {i}'\n{block}")
    env = {k: v for k, v in os.environ.items() if k not in ("JINN", "DIR", "JINN_ADDR")}
    env.update(HTTP_BASE=str(http_base), RAFT_BASE=str(raft_base))
    try:
        run = subprocess.run(["bash", "-c", "\n".join(parts)], cwd=tmp_path, env=env,
                             capture_output=True, text=True, timeout=240)
    finally:
        # Whatever happened, stop the demo's nodes (by its pid files only).
        subprocess.run(["sh", "scripts/demo-cluster.sh", "stop"], cwd=tmp_path, env=env,
                       capture_output=True, timeout=60)
    out = run.stdout
    assert run.returncode == 0, f"stdout:\n{out}\nstderr:\n{run.stderr}"
    assert "leader elected" in out
    assert "hello again" in out                       # kv ls --values after the cas
    assert out.count("exit 1") == 2                   # kv create 412, lock held: 409
    assert "409 held by another owner" in run.stderr
    assert "would send {\"to\":\"ada@example.com\"}" in out   # the worker ran the script
    assert (tmp_path / "sent.log").read_text().count("ada@example.com") == 1  # idempotent pub
    assert "widget" in out and "CREATE TABLE items(" in out  # .schema
    assert "jinn worker: " in run.stderr              # the worker said what it does
    assert '"body": "thumbnail ready"' in out         # jinn fn job --wait: the response
    assert out.count("\tsucceeded\t") >= 2           # jinn fn jobs: resize's job, a tick
    for n in ("n1", "n2", "n3"):
        assert not (tmp_path / "demo" / f"{n}.pid").exists()
