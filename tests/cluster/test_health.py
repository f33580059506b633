"""Health at a glance (issue 16, item 5): `jinn status` exit codes and
unreachable voters, leader changes and lost/recovered peers logged once and
by name, per-peer series in /metrics, http_advertise host names, and a port
in use refused before anything is created on disk."""
import json
import os
import re
import socket
import subprocess

import pytest

from harness import JINN, free_port, http, wait_for


def status_cli(node, *args):
    return subprocess.run([JINN, "status", "--addr", node.url, *args], capture_output=True,
                          text=True, timeout=20)


def test_status_marks_unreachable_voters_and_exits_3_without_quorum(cluster_factory):
    c = cluster_factory(3).start()
    leader = c.wait_leader()
    c.wait_ready()
    victim = next(n for n in c.nodes if n is not leader)
    other = next(n for n in c.nodes if n is not leader and n is not victim)
    out = status_cli(other)
    assert out.returncode == 0, out.stderr
    assert "UNREACHABLE" not in out.stdout and "DEGRADED" not in out.stdout

    victim.kill()
    # From a follower: the leader's view, fetched through it.
    wait_for(lambda: f"{victim.name} " in status_cli(other).stdout and
             re.search(rf"{victim.name} .*UNREACHABLE", status_cli(other).stdout),
             timeout=15, what="the follower's status to mark the dead voter")
    out = status_cli(other)
    assert out.returncode == 0, out.stdout          # a quorum is left: healthy enough
    assert "DEGRADED: 1 voter unreachable" in out.stdout
    for n in (leader, other):
        assert not re.search(rf"{n.name} .*UNREACHABLE", out.stdout), out.stdout
    js = json.loads(status_cli(leader, "--json").stdout)
    reach = {m["name"]: m.get("reachable") for m in js["members"]}
    assert reach[victim.name] is False and reach[leader.name] is True

    other.kill()
    wait_for(lambda: status_cli(leader).returncode == 3, timeout=15,
             what="status to exit 3 once the quorum is gone")
    out = status_cli(leader)
    assert "NO QUORUM" in out.stdout and "quorum   NO" in out.stdout
    assert status_cli(leader, "--json").returncode == 3


def test_leader_changes_and_peers_logged_once_by_name(cluster_factory):
    c = cluster_factory(3).start()
    leader = c.wait_leader()
    c.wait_ready()
    followers = [n for n in c.nodes if n is not leader]
    for f in followers:
        wait_for(lambda: f"leader is {leader.name} (id " in f.log(), what="leader logged")
    leader.kill()
    new = c.wait_leader(among=followers)
    survivor = next(n for n in followers if n is not new)
    wait_for(lambda: f"leader is {new.name} (id " in survivor.log(), timeout=15,
             what="the new leader logged by the survivor")
    # The new leader says once that the old one does not answer.
    line = f"peer {leader.name} ({leader.advertised}, voter) unreachable"
    wait_for(lambda: line in new.log(), timeout=15, what="lost peer logged")
    # Steady state for a while: many heartbeats, still one line each.
    wait_for(lambda: int(new.status()["commit_index"]) > 0, what="status")
    c.wait_ready(nodes=[new, survivor])
    assert new.log().count(line) == 1
    assert survivor.log().count(f"leader is {new.name} (id ") == 1
    # The old leader comes back: recovered, once.
    leader.start()
    back = f"peer {leader.name} ({leader.advertised}) answers again"
    wait_for(lambda: back in new.log(), timeout=20, what="recovered peer logged")
    wait_for(lambda: f"leader is {new.name} (id " in leader.log(), timeout=20,
             what="the restarted node logs who leads")
    assert new.log().count(back) == 1
    # Lines name nodes, not only ids or addresses.
    assert re.search(rf"leader is {new.name} \(id \d+\) in term \d+", survivor.log())


def metric(text, name, peer):
    m = re.search(rf'^{name}{{peer="{peer}",id="\d+"}} (-?\d+)$', text, re.M)
    return int(m.group(1)) if m else None


def test_metrics_have_per_peer_series_on_the_leader(cluster_factory):
    c = cluster_factory(3).start()
    leader = c.wait_leader()
    c.wait_ready()
    http(leader.url + "/v1/kv/app/k", "PUT", b"v")
    follower = next(n for n in c.nodes if n is not leader)

    def scrape(n):
        code, _, body = http(n.url + "/metrics")
        assert code == 200
        return body.decode()

    commit = leader.status()["commit_index"]
    wait_for(lambda: all((metric(scrape(leader), "jinn_raft_peer_match_index", n.name) or 0)
                         >= commit for n in c.nodes), what="match index in /metrics")
    text = scrape(leader)
    for n in c.nodes:
        contact = metric(text, "jinn_raft_peer_last_contact_ms", n.name)
        assert contact is not None and 0 <= contact < 5000, text
        assert metric(text, "jinn_raft_peer_reachable", n.name) == 1
    # A follower does not know: no per-peer series there.
    assert "jinn_raft_peer_match_index{" not in scrape(follower)
    follower.kill()
    wait_for(lambda: metric(scrape(leader), "jinn_raft_peer_reachable", follower.name) == 0,
             timeout=15, what="the dead peer unreachable in /metrics")
    assert metric(scrape(leader), "jinn_raft_peer_last_contact_ms", follower.name) >= 1000


def with_advertise(node, url_for):
    """Makes node's config carry http_advertise url_for(node)."""
    original = node.write_config

    def write_config():
        original()
        with open(node.config_path) as f:
            text = f.read()
        text = text.rstrip().rstrip("}") + f"    http_advertise   {url_for(node)}\n}}\n"
        with open(node.config_path, "w") as f:
            f.write(text)

    node.write_config = write_config


def test_http_advertise_host_name_is_resolved_and_forwarding_works(cluster_factory):
    c = cluster_factory(3)
    for n in c.nodes:
        with_advertise(n, lambda n: f"http://localhost:{n.http_port}")
    c.start()
    leader = c.wait_leader()
    c.wait_ready()
    for n in c.nodes:
        assert (f"http_advertise http://localhost:{n.http_port} resolved to "
                f"http://127.0.0.1:{n.http_port}") in n.log()
    follower = next(n for n in c.nodes if n is not leader)
    # Forwarded to the leader through the URL it announced (an address now).
    wait_for(lambda: {m["name"]: m.get("api") for m in follower.status()["members"]}
             [leader.name] == f"http://127.0.0.1:{leader.http_port}", what="leader's API URL")
    code, _, body = http(follower.url + "/v1/kv/app/fwd", "PUT", b"x")
    assert code == 200, body
    code, _, body = http(follower.url + "/v1/kv/app/fwd")
    assert code == 200 and body == b"x"


def run_node(tmp_path, lines, timeout=30):
    conf = tmp_path / "n.conf"
    conf.write_text("{\n" + "".join(f"    {l}\n" for l in lines) + "}\n")
    return subprocess.run([JINN, "run", "-c", str(conf)], capture_output=True, text=True,
                          timeout=timeout), conf


def test_http_advertise_that_does_not_resolve_is_refused_with_position(tmp_path):
    data = tmp_path / "data"
    out, conf = run_node(tmp_path, [
        "server_name a", f"data_dir {data}", f"http_listen 127.0.0.1:{free_port()}",
        f"cluster_listen 127.0.0.1:{free_port()}",
        "http_advertise http://jinn-test.invalid:8080"])
    assert out.returncode == 2
    assert f"{conf}:6:20: http_advertise: host 'jinn-test.invalid' does not resolve" in out.stderr
    assert not data.exists()


@pytest.mark.parametrize("taken", ["http_listen", "cluster_listen"])
def test_port_in_use_is_refused_before_data_dir_is_touched(tmp_path, taken):
    data = tmp_path / "data"
    ports = {"http_listen": free_port(), "cluster_listen": free_port()}
    lines = ["server_name a", f"data_dir {data}",
             f"http_listen 127.0.0.1:{ports['http_listen']}",
             f"cluster_listen 127.0.0.1:{ports['cluster_listen']}"]
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", ports[taken]))
        s.listen(1)
        out, _ = run_node(tmp_path, lines)
        assert out.returncode == 2, out.stderr
        assert (f"{taken} 127.0.0.1:{ports[taken]}: Address already in use" in out.stderr)
        assert "nothing written to data_dir" in out.stderr
        assert not data.exists()          # not created, not locked, nothing written
        data.mkdir()                      # an empty data_dir stays empty
        out, _ = run_node(tmp_path, lines)
        assert out.returncode == 2 and os.listdir(data) == []
    # The port free again: the same configuration starts.
    p = subprocess.Popen([JINN, "run", "-c", str(tmp_path / "n.conf")],
                         stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: http(f"http://127.0.0.1:{ports['http_listen']}/readyz",
                              timeout=1)[0] == 200, timeout=20, what="the node ready")
    finally:
        p.terminate()
        assert p.wait(timeout=20) == 0


def test_http_port_taken_while_bootstrapping_stops_cleanly(cluster_factory):
    """Seen in CI: a node founding a cluster waits for its peers before it
    listens on HTTP; when another process took its HTTP port meanwhile, it
    stopped as it should, but leaked the replica checker's state (a
    LeakSanitizer report; the harness fails a test on any sanitizer report
    in a node's log)."""
    c = cluster_factory(3)
    n1 = c.nodes[0]
    with socket.socket() as s:
        n1.start()
        wait_for(lambda: "waiting for every peer" in n1.log(), timeout=20,
                 what="n1 waiting for its peers")
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", n1.http_port))
        s.listen(1)
        for n in c.nodes[1:]:
            n.start()
        assert n1.proc.wait(timeout=30) != 0
    assert "address already in use" in n1.log()
    assert "Sanitizer" not in n1.log(), n1.log()
