"""The foundation: election, failover, catch-up, partitions, standbys,
forwarding and clean shutdown, on real processes."""
import json
import os
import signal
import socket
import subprocess
import threading
import time

from harness import JINN, free_port, http, wait_for


def test_three_nodes_elect_one_leader_and_cli_names_it(cluster_factory):
    c = cluster_factory(3).start()
    leader = c.wait_leader()
    c.wait_ready()
    for n in c.nodes:
        out = subprocess.run([JINN, "status", "--addr", n.url], capture_output=True,
                             text=True, timeout=10)
        assert out.returncode == 0, out.stderr
        assert f"leader   {leader.name} " in out.stdout
        js = subprocess.run([JINN, "status", "--json"], capture_output=True, text=True,
                            timeout=10, env={**os.environ, "JINN_ADDR": n.url})
        st = json.loads(js.stdout)
        assert st["leader"]["name"] == leader.name
        assert st["quorum"] is True
        assert sorted(st["voters"]) == ["n1", "n2", "n3"]
        assert st["standbys"] == []
    # Every node learnt every API URL through the replicated state.
    expected = {n.name: n.url for n in c.nodes}
    for n in c.nodes:
        wait_for(lambda: {m["name"]: m["api"] for m in n.status()["members"]} == expected,
                 what=f"{n.name} to learn every API URL")


def test_killing_the_leader_elects_another_and_api_keeps_answering(cluster_factory):
    c = cluster_factory(3).start()
    old = c.wait_leader()
    c.wait_ready()
    t0 = time.monotonic()
    old.kill()
    survivors = [n for n in c.nodes if n is not old]
    new = c.wait_leader(among=survivors)
    failover = time.monotonic() - t0
    assert new is not old
    print(f"failover after kill -9 of the leader: {failover * 1000:.0f} ms")
    for n in survivors:
        wait_for(lambda: n.status()["leader"] and n.status()["leader"]["name"] == new.name,
                 what=f"{n.name} names the new leader")
        assert n.request("/healthz")[0] == 200
    # The killed node comes back as a follower and catches up.
    old.start()
    wait_for(lambda: old.status()["role"] == "follower", what="old leader rejoins")
    target = new.status()["commit_index"]
    wait_for(lambda: old.status()["applied_index"] >= target, what="old leader catches up")


def test_restarted_follower_catches_up_from_disk_and_leader(cluster_factory):
    c = cluster_factory(3, extra_config=["snapshot_threshold 16", "snapshot_trailing 4"]).start()
    leader = c.wait_leader()
    c.wait_ready()
    follower = next(n for n in c.nodes if n is not leader)
    follower.kill()
    # Drive the log forward while the follower is down: each PUT is a
    # committed write (more than a snapshot's worth).
    for i in range(40):
        code, _, out = leader.request(f"/v1/kv/ns/ghost{i}", "PUT", b"x")
        assert code == 200, out
    target = leader.status()["commit_index"]
    follower.start()
    wait_for(lambda: follower.status()["applied_index"] >= target, timeout=20,
             what="restarted follower applies everything")
    assert follower.status()["leader"]["name"] == leader.name


def test_minority_side_has_no_leader_and_says_so(cluster_factory):
    c = cluster_factory(3).start()
    leader = c.wait_leader()
    c.wait_ready()
    lonely = leader  # the hardest case: cut off the leader itself
    c.isolate(lonely.name)
    majority = [n for n in c.nodes if n is not lonely]
    new = c.wait_leader(among=majority)
    assert new is not lonely

    def lonely_knows():
        st = lonely.status()
        return st["role"] != "leader" and st["quorum"] is False
    wait_for(lonely_knows, what="the isolated node to report no quorum")
    assert lonely.request("/readyz")[0] == 503
    # A write on the minority side is refused with 503 and Retry-After.
    code, headers, out = lonely.request("/v1/kv/ns/minority", "PUT", b"x")
    assert code == 503, out
    assert headers.get("Retry-After") == "1"
    assert json.loads(out)["error"] in ("no_leader", "not_leader")
    c.heal()
    wait_for(lambda: lonely.status()["leader"] and lonely.status()["leader"]["name"] == new.name,
             timeout=15, what="the healed node to follow the new leader")
    c.wait_ready()


def test_one_way_cut(cluster_factory):
    c = cluster_factory(3).start()
    leader = c.wait_leader()
    c.wait_ready()
    follower = next(n for n in c.nodes if n is not leader)
    # Only leader -> follower traffic is dropped; the follower still talks.
    c.cut(leader.name, follower.name, both_ways=False)
    wait_for(lambda: follower.status()["leader_contact_ms"] is None
             or follower.status()["leader_contact_ms"] > 1000
             or follower.status()["leader"] is None
             or follower.status()["leader"]["name"] != leader.name,
             what="the follower to stop hearing from the leader")
    # Pre-vote keeps the deaf follower from deposing a healthy leader for
    # long; the cluster always ends with one leader that has a quorum.
    live = c.wait_leader()
    assert live.status()["quorum"]
    c.heal()
    c.wait_ready()


def test_standby_is_promoted_when_a_voter_is_lost(cluster_factory):
    c = cluster_factory(4, replicas=3, extra_config=["standby_promote_after 2s"]).start()
    leader = c.wait_leader()
    c.wait_ready()
    st = leader.status()
    assert len(st["voters"]) == 3 and len(st["standbys"]) == 1
    standby = c[st["standbys"][0]]
    assert standby.status()["role"] == "standby"
    victim = next(n for n in c.nodes if n is not leader and n.name in st["voters"])
    victim.kill()

    def promoted():
        s = c.leader().status()
        return standby.name in s["voters"] and victim.name in s["standbys"] and \
            len(s["voters"]) == 3
    wait_for(promoted, timeout=20, what="the standby to replace the lost voter")
    assert standby.status()["role"] in ("follower", "leader")


def test_follower_forwards_writes_to_the_leader(cluster_factory):
    c = cluster_factory(3).start()
    leader = c.wait_leader()
    c.wait_ready()
    follower = next(n for n in c.nodes if n is not leader)
    wait_for(lambda: follower.status()["leader"]["api"] == leader.url,
             what="the follower to learn the leader's API URL")
    # A node announcing itself through a follower: relayed and committed.
    body = json.dumps({"id": follower.status()["id"], "name": follower.name,
                       "api": follower.url}).encode()
    code, _, out = follower.request("/v1/internal/nodes", "POST", body,
                                    {"Content-Type": "application/json"})
    assert code == 200, out
    index = json.loads(out)["index"]
    wait_for(lambda: follower.status()["applied_index"] >= index, what="write applied")
    # Malformed input is rejected by the leader, relayed unchanged.
    code, _, out = follower.request("/v1/internal/nodes", "POST", b"{not json")
    assert code == 400
    assert json.loads(out)["error"] == "bad_request"
    code, _, out = follower.request("/v1/internal/nodes", "POST", b'{"id": 1}')
    assert code == 400


def test_sigterm_hands_leadership_over_and_exits_cleanly(cluster_factory):
    c = cluster_factory(3).start()
    leader = c.wait_leader()
    c.wait_ready()
    assert leader.stop() == 0  # clean exit: no sanitizer or leak reports
    survivors = [n for n in c.nodes if n is not leader]
    c.wait_leader(among=survivors, timeout=5)
    assert "handing leadership over" in leader.log()
    for n in survivors:
        assert n.stop() == 0


def test_restart_whole_cluster_keeps_state(cluster_factory):
    c = cluster_factory(3).start()
    leader = c.wait_leader()
    c.wait_ready()
    code, _, out = leader.request("/v1/kv/ns/durable", "PUT", b"x")
    assert code == 200
    index = json.loads(out)["revision"]
    for n in c.nodes:
        n.kill()
    c.start()
    c.wait_leader()
    c.wait_ready()
    names = {m["name"] for m in c.nodes[0].status()["members"]}
    assert names == {"n1", "n2", "n3"}
    # Ready means caught up: every entry committed before the restart has
    # been applied again from the logs on disk.
    for n in c.nodes:
        assert n.status()["applied_index"] >= index


def test_ready_after_whole_cluster_restart_means_caught_up(cluster_factory):
    """After a whole-cluster restart every node's commit index is the
    bootstrap entry's and a new leader's first heartbeats carry that stale
    value: a follower must not say ready until the commit index it learnt
    belongs to the current term. Every status that says ready must already
    show the pre-restart write applied."""
    c = cluster_factory(3).start()
    c.wait_leader()
    c.wait_ready()
    for i in range(3):
        code, _, out = c.leader().request(f"/v1/kv/ns/k{i}", "PUT", b"x")
        assert code == 200
    index = json.loads(out)["revision"]
    for n in c.nodes:
        n.kill()
    c.start()
    seen = {}

    def watch(n):
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                st = n.status(timeout=1.0)
            except Exception:
                continue
            if st["ready"]:
                seen[n.name] = st
                return

    threads = [threading.Thread(target=watch, args=(n,)) for n in c.nodes]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(seen) == ["n1", "n2", "n3"]
    for name, st in seen.items():
        assert st["applied_index"] >= index, (name, st["applied_index"], st["commit_index"])


def test_single_node_with_no_config(tmp_path):
    """`jinn run` with no file: one-node leader on 127.0.0.1:8080."""
    proc = subprocess.Popen([JINN, "run"], cwd=tmp_path, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    try:
        st = wait_for(lambda: json.loads(http("http://127.0.0.1:8080/v1/status",
                                              timeout=1)[2]), what="default node")
        wait_for(lambda: json.loads(http("http://127.0.0.1:8080/v1/status",
                                         timeout=1)[2])["role"] == "leader",
                 what="default node leads")
        st = json.loads(http("http://127.0.0.1:8080/v1/status")[2])
        assert st["voters"] == ["jinn"] and st["quorum"] is True
        assert os.path.isdir(tmp_path / "jinn-data")
    finally:
        proc.terminate()
        assert proc.wait(timeout=20) == 0, proc.stderr.read().decode()


def test_second_process_on_same_data_dir_is_refused(cluster_factory):
    c = cluster_factory(1).start()
    c.wait_leader()
    n = c.nodes[0]
    # Other ports (the same ones are refused before data_dir is looked at:
    # test_health.py), the same data_dir: the lock refuses it.
    with open(n.config_path) as f:
        text = f.read()
    text = text.replace(f"127.0.0.1:{n.http_port}", f"127.0.0.1:{free_port()}")
    text = text.replace(f"cluster_listen   127.0.0.1:{n.raft_port}",
                        f"cluster_listen   127.0.0.1:{free_port()}")
    other = os.path.join(os.path.dirname(n.config_path), "other.conf")
    with open(other, "w") as f:
        f.write(text)
    out = subprocess.run([JINN, "run", "-c", other], capture_output=True, text=True,
                         timeout=20)
    assert out.returncode != 0
    assert "in use by another jinn" in out.stderr


class Impostor:
    """A TCP server that records whatever reaches it and answers 200."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", free_port()))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.received = []
        self.thread = threading.Thread(target=self._loop, daemon=True)
        self.thread.start()

    def _loop(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            conn.settimeout(1)
            try:
                self.received.append(conn.recv(65536))
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}")
            except OSError:
                pass
            conn.close()

    def close(self):
        self.sock.close()


def test_node_directory_cannot_be_hijacked(cluster_factory):
    c = cluster_factory(3).start()
    leader = c.wait_leader()
    c.wait_ready()
    follower = next(n for n in c.nodes if n is not leader)
    other = next(n for n in c.nodes if n is not leader and n is not follower)
    wait_for(lambda: follower.status()["leader"]["api"] == leader.url,
             what="the follower to learn the leader's API URL")
    leader_id = leader.status()["id"]
    other_id = other.status()["id"]
    impostor = Impostor()
    try:
        evil = f"http://127.0.0.1:{impostor.port}"
        attempts = [
            # The report's attack: the leader's id, CR/LF in the URL.
            {"id": leader_id, "name": leader.name, "api": evil + "/\r\nX-Injected: yes"},
            # A clean URL for the leader's id: only the leader proposes its own.
            {"id": leader_id, "name": leader.name, "api": evil},
            # Another member under a wrong name.
            {"id": other_id, "name": "mallory", "api": evil},
            # URL shapes outside the allow-list.
            {"id": other_id, "name": other.name, "api": f"http://u@127.0.0.1:{impostor.port}"},
            {"id": other_id, "name": other.name, "api": evil + "/x"},
            {"id": other_id, "name": other.name, "api": evil + "#f"},
            {"id": other_id, "name": other.name, "api": "http://127.0.0.1:99999999999999999999"},
            {"id": other_id, "name": other.name, "api": "http://127.0.0.1 :1"},
            {"id": other_id, "name": other.name, "api": "http://127.0.0.1:1\u0000"},
        ]
        for body in attempts:
            for via in (follower, leader):
                code, _, out = via.request("/v1/internal/nodes", "POST",
                                           json.dumps(body).encode(),
                                           {"Content-Type": "application/json"})
                assert code == 400, (body, out)
                assert json.loads(out)["error"] == "bad_request"
        # Forwarding is unaffected: a write via the follower reaches the
        # real leader and is applied; the impostor saw nothing.
        code, _, out = follower.request("/v1/kv/ns/after-hijack", "PUT", b"real",
                                        {"Authorization": "Bearer secret"})
        assert code == 200, out
        rev = json.loads(out)["revision"]
        code, _, out = leader.request("/v1/kv/ns/after-hijack")
        assert code == 200 and out == b"real"
        wait_for(lambda: follower.status()["applied_index"] >= rev, what="write applied")
        # Every node still learns every real API URL (nothing of the
        # impostor's is in the directory).
        for n in c.nodes:
            wait_for(lambda: {m["name"]: m["api"] for m in n.status()["members"]}
                     == {m.name: m.url for m in c.nodes}, what=f"{n.name}'s directory")
        assert impostor.received == []
    finally:
        impostor.close()


def test_node_directory_cannot_be_filled_with_junk(cluster_factory):
    c = cluster_factory(3).start()
    leader = c.wait_leader()
    c.wait_ready()
    follower = next(n for n in c.nodes if n is not leader)
    wait_for(lambda: follower.status()["leader"]["api"] == leader.url,
             what="the follower to learn the leader's API URL")
    before = leader.status()["commit_index"]
    # More junk ids than the 64-entry table holds: none is a member.
    for i in range(80):
        body = json.dumps({"id": 5000 + i, "name": f"junk{i}",
                           "api": f"http://127.0.0.1:{1000 + i}"}).encode()
        code, _, out = leader.request("/v1/internal/nodes", "POST", body)
        assert code == 400, out
        assert b"not a member" in out
    # Nothing was proposed for them...
    assert leader.status()["commit_index"] - before < 40
    # ...and a member's own announcement still goes in: a restarted node
    # re-announces (a new URL here is the same URL: it must get a 200).
    body = json.dumps({"id": follower.status()["id"], "name": follower.name,
                       "api": follower.url + "/"}).encode()
    code, _, out = follower.request("/v1/internal/nodes", "POST", body)
    assert code == 200, out
    # The node puts its own canonical URL back by itself.
    wait_for(lambda: {m["name"]: m["api"] for m in leader.status()["members"]}
             == {m.name: m.url for m in c.nodes}, what="the follower to re-announce itself")
