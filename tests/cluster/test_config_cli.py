"""The binary's own error handling: bad configs, bad arguments, unreachable
nodes."""
import subprocess

from harness import JINN, free_port

BAD = [
    ("{\n  servr_name n1\n}\n", ":2:3: unknown directive 'servr_name'"),
    ("{\n  cluster_replicas x\n}\n", ":2:20: cluster_replicas: bad number"),
    ("{\n  election_timeout 5\n}\n", ":2:20: election_timeout: bad duration"),
    ("{\n  server_name n9\n  cluster_peers n1=127.0.0.1:7001\n}\n",
     ":3:3: cluster_peers does not contain this node"),
    ("{\n  consensus {\n    p { mode xp }\n  }\n}\n", ":3:14: mode: expected cp or ap"),
    ("{\n  server_name\n}\n", ":2:3: server_name: missing argument"),
]


def test_bad_config_exits_2_with_file_line_column(tmp_path):
    for i, (text, expected) in enumerate(BAD):
        path = tmp_path / f"bad{i}.conf"
        path.write_text(text)
        out = subprocess.run([JINN, "run", "-c", str(path)], capture_output=True, text=True,
                             timeout=10)
        assert out.returncode == 2, (text, out.stderr)
        assert f"{path}{expected}" in out.stderr, out.stderr


def test_missing_config_file(tmp_path):
    out = subprocess.run([JINN, "run", "-c", str(tmp_path / "nope.conf")],
                         capture_output=True, text=True, timeout=10)
    assert out.returncode == 2
    assert "cannot open" in out.stderr


def test_cli_unreachable_node_fails_clearly():
    port = free_port()  # nothing listens here
    out = subprocess.run([JINN, "status", "--addr", f"http://127.0.0.1:{port}"],
                         capture_output=True, text=True, timeout=10)
    assert out.returncode == 1
    assert "cannot reach" in out.stderr


def test_cli_bad_usage():
    assert subprocess.run([JINN, "frobnicate"], capture_output=True).returncode == 2
    assert subprocess.run([JINN, "status", "--bogus"], capture_output=True).returncode == 2
    out = subprocess.run([JINN, "status", "--addr", "localhost"], capture_output=True,
                         text=True)
    assert out.returncode == 1 and "bad address" in out.stderr
    v = subprocess.run([JINN, "version"], capture_output=True, text=True)
    assert v.returncode == 0 and v.stdout.startswith("jinn ")
