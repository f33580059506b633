"""Cluster identity and membership: wiped voters never come back as the
voter they were, a node of another cluster cannot join or vote, members
are added, promoted and removed at runtime (`jinn members`)."""
import json
import os
import socket
import struct
import subprocess
import time

from harness import JINN, wait_for


def put(node, key, value, timeout=10, headers=None):
    return node.request(f"/v1/kv/app/{key}", "PUT", value.encode(), headers=headers,
                        timeout=timeout)


def get(node, key):
    code, _, body = node.request(f"/v1/kv/app/{key}")
    return code, body


NOT_APPLIED = ("has not announced its API", "no leader with a quorum", "not the leader")


def members(node, *args, check=True, timeout=150):
    """`jinn members ...`; retried (with a deadline) only on answers that say
    nothing was done (no leader known yet)."""
    deadline = time.monotonic() + 15
    while True:
        out = subprocess.run([JINN, "members", *args, "--addr", node.url], capture_output=True,
                             text=True, timeout=timeout)
        if not (out.returncode == 1 and any(m in out.stderr for m in NOT_APPLIED)
                and time.monotonic() < deadline):
            break
        time.sleep(0.1)
    if check:
        assert out.returncode == 0, out.stderr
    return out


def member_list(node):
    code, _, body = node.request("/v1/cluster/members")
    assert code == 200, body
    return json.loads(body)


def write_keys(cluster, prefix, n):
    acked = {}
    for i in range(n):
        leader = cluster.wait_leader()
        code, _, body = put(leader, f"{prefix}{i}", f"v{i}")
        assert code == 200, body
        acked[f"{prefix}{i}"] = f"v{i}"
    return acked


def check_keys(node, acked):
    for k, v in acked.items():
        code, body = get(node, k)
        assert (code, body) == (200, v.encode()), (k, code, body)


def joining(node):
    st = node.status()
    return st if st["role"] == "joining" else None


def test_wiped_voter_restarts_as_new_member_and_is_added_back(cluster_factory):
    c = cluster_factory(3).start()
    leader = c.wait_leader()
    c.wait_ready()
    acked = write_keys(c, "a", 20)
    victim = next(n for n in c.nodes if n is not leader)
    old_id = victim.status()["id"]
    victim.kill()
    victim.wipe()
    victim.start()  # no --bootstrap on a restart
    st = wait_for(lambda: joining(victim), what="wiped node waits as a non-member")
    assert st["id"] != old_id
    assert "jinn members add" in st["note"]
    assert "not a member yet" in victim.log()
    # The old voter is still in the configuration, dead; the cluster serves.
    acked.update(write_keys(c, "b", 10))
    leader = c.wait_leader()
    ids = {m["id"] for m in member_list(leader)["members"]}
    assert old_id in ids and st["id"] not in ids
    # Replace it: remove the old member, add the new node under its name.
    members(leader, "remove", victim.name)
    wait_for(lambda: old_id not in {m["id"] for m in member_list(c.wait_leader())["members"]},
             what="old member removed")
    out = members(c.wait_leader(), "add", f"{victim.name}={victim.advertised}")
    assert "voter" in out.stdout
    ms = {m["id"]: m for m in member_list(c.wait_leader())["members"]}
    assert ms[st["id"]]["role"] == "voter" and ms[st["id"]]["name"] == victim.name
    wait_for(lambda: victim.status()["role"] == "follower", what="new member follows")
    # The rejoined node is a working voter with all the data: with the other
    # original follower down, the leader needs its acks to commit.
    other = next(n for n in c.nodes if n is not victim and n.status()["role"] != "leader")
    other.kill()
    acked.update(write_keys(c, "c", 5))
    leader = c.wait_leader()
    check_keys(leader, acked)
    wait_for(lambda: victim.status()["applied_index"] >= leader.status()["commit_index"],
             what="rejoined node applied everything")
    out = members(leader, "list")
    assert victim.name in out.stdout and "voter" in out.stdout


def test_two_wiped_voters_never_elect_a_leader_and_lose_nothing(cluster_factory):
    c = cluster_factory(3).start()
    leader = c.wait_leader()
    c.wait_ready()
    write_keys(c, "k", 20)
    keeper = c.nodes[0]
    wait_for(lambda: keeper.status()["commit_index"] == c.wait_leader().status()["commit_index"],
             what="keeper caught up")
    before = keeper.status()
    wiped = c.nodes[1:]
    old_ids = {n.name: n.status()["id"] for n in wiped}
    for n in wiped:
        n.kill()
        n.wipe()
    for n in wiped:
        n.start()  # as an operator would, without --bootstrap
    for n in wiped:
        st = wait_for(lambda: joining(n), what=f"{n.name} non-member")
        assert st["id"] != old_ids[n.name]
    # The keeper (maybe the old leader) steps down: no quorum answers it.
    wait_for(lambda: keeper.status()["role"] != "leader", what="keeper steps down")
    # Over many election timeouts nobody leads and nothing new commits: the
    # wiped nodes neither vote nor campaign.
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        for n in c.nodes:
            st = n.status()
            assert st["role"] != "leader", f"{n.name} became leader with {st}"
            if n is not keeper:
                assert st["last_index"] == 0 and st["role"] == "joining"
        time.sleep(0.1)
        assert keeper.status()["commit_index"] == before["commit_index"]
    after = keeper.status()
    assert after["last_index"] >= before["last_index"]
    assert "is now node" in keeper.log()  # it refused to talk to them as the old voters
    # --bootstrap is refused: the intact peer knows them as former members.
    for n in wiped:
        n.kill()
        n.wipe()
        out = subprocess.run([JINN, "run", "-c", n.config_path, "--bootstrap"],
                             capture_output=True, text=True, timeout=30)
        assert out.returncode == 2, out.stderr
        assert "refusing to bootstrap" in out.stderr
        assert keeper.name in out.stderr
    # The keeper still holds every committed entry, on disk too.
    keeper.kill()
    keeper.start()
    wait_for(lambda: keeper.status()["last_index"] >= before["last_index"],
             what="keeper recovered its log")


def test_node_of_another_cluster_cannot_connect_or_join(cluster_factory):
    c = cluster_factory(3).start()
    leader = c.wait_leader()
    c.wait_ready()
    target = c.nodes[1]
    # A stray process speaking libraft's handshake with another cluster id.
    with socket.create_connection(("127.0.0.1", target.raft_port), timeout=5) as s:
        addr = b"127.0.0.1:1\0".ljust(16, b"\0")
        s.sendall(struct.pack("<QQQ", 1, 4242, len(addr)) + addr)
        s.sendall(b"JNPG" + bytes([1, 0, 0, 0]) + struct.pack("<QQQ", 0xdeadbeef, 4242, 0))
        answer = b""
        while len(answer) < 24:
            chunk = s.recv(24 - len(answer))
            if not chunk:
                break
            answer += chunk
        assert answer[:4] == b"JNPA" and answer[5] == 1  # wrong cluster
        assert s.recv(1) == b""  # and closed
    # A raw libraft peer with no jinn preamble is refused too.
    with socket.create_connection(("127.0.0.1", target.raft_port), timeout=5) as s:
        s.sendall(struct.pack("<QQQ", 1, 4243, len(addr)) + addr + b"\0" * 32)
        s.settimeout(5)
        data = s.recv(64)
        assert data[:4] == b"JNPA" and data[5] == 3  # not a jinn peer
    wait_for(lambda: "raft connection refused" in target.log(), what="refusal logged")
    metrics = target.request("/metrics")[2].decode()
    refused = [l for l in metrics.splitlines()
               if l.startswith("jinn_raft_connections_refused_total ")]
    assert refused and int(refused[0].split()[1]) >= 2
    # A node of another cluster cannot be added either.
    other = cluster_factory(1)
    other.start()
    other.wait_leader()
    out = members(leader, "add", f"stranger={other.nodes[0].advertised}", check=False)
    assert out.returncode == 1 and "another cluster" in out.stderr
    # Forwarded requests name their cluster: another cluster's are refused.
    leader = c.wait_leader()
    cid = leader.status()["cluster_id"]
    code, _, body = put(leader, "fwd", "x", headers={"X-Jinn-Forwarded-By": "stranger",
                                                     "X-Jinn-Cluster": "00000000deadbeef"})
    assert code == 409 and b"another cluster" in body
    code, _, body = put(leader, "fwd", "x", headers={"X-Jinn-Forwarded-By": "n2"})
    assert code == 409
    code, _, body = put(leader, "fwd", "x", headers={"X-Jinn-Forwarded-By": "n2",
                                                     "X-Jinn-Cluster": cid})
    assert code == 200, body
    # Nothing changed.
    assert len(member_list(c.wait_leader())["members"]) == 3
    write_keys(c, "ok", 3)


def test_add_standby_then_promote(cluster_factory):
    c = cluster_factory(3).start()
    c.wait_leader()
    c.wait_ready()
    acked = write_keys(c, "s", 10)
    n4 = c.add_node()
    n4.start(bootstrap=False)
    st = wait_for(lambda: joining(n4), what="n4 waits to be added")
    leader = c.wait_leader()
    out = members(leader, "add", f"n4={n4.advertised}", "--standby")
    assert "standby" in out.stdout
    wait_for(lambda: n4.status()["role"] == "standby", what="n4 replicates as a standby")
    wait_for(lambda: n4.status()["applied_index"] >= leader.status()["commit_index"],
             what="n4 caught up")
    m = {x["name"]: x for x in member_list(c.wait_leader())["members"]}
    assert m["n4"]["role"] == "standby" and m["n4"]["id"] == st["id"]
    # A follower forwards the change to the leader.
    follower = next(n for n in c.nodes[:3] if n.status()["role"] == "follower")
    wait_for(lambda: follower.status()["leader"]["api"], what="follower knows the leader's API")
    members(follower, "promote", "n4")
    m = {x["name"]: x for x in member_list(c.wait_leader())["members"]}
    assert m["n4"]["role"] == "voter"
    assert len([x for x in m.values() if x["role"] == "voter"]) == 4
    wait_for(lambda: n4.status()["role"] == "follower", what="n4 votes")
    # Its name and API URL reach the directory once it announces.
    wait_for(lambda: {x["name"]: x for x in member_list(c.wait_leader())["members"]}["n4"]["api"],
             what="n4 announced its API")
    check_keys(c.wait_leader(), acked)
    members(c.wait_leader(), "demote", "n4")
    m = {x["name"]: x for x in member_list(c.wait_leader())["members"]}
    assert m["n4"]["role"] == "standby"


def test_identity_file_corrupt_refused_and_legacy_data_dir_adopted(cluster_factory):
    c = cluster_factory(3).start()
    c.wait_leader()
    c.wait_ready()
    acked = write_keys(c, "id", 5)
    n = c.nodes[2]
    old = n.status()
    id_path = os.path.join(n.data_dir, "jinn.id")
    text = open(id_path).read()
    assert f"node_id {old['id']}" in text and f"cluster_id {old['cluster_id']}" in text
    n.kill()
    # A flipped digit: the node refuses to guess who it is.
    with open(id_path, "w") as f:
        f.write(text.replace(f"node_id {old['id']}", f"node_id {old['id'] + 1}"))
    out = subprocess.run([JINN, "run", "-c", n.config_path], capture_output=True, text=True,
                         timeout=30)
    assert out.returncode != 0
    assert "jinn.id is corrupt" in out.stderr and id_path in out.stderr
    # A data_dir from before jinn.id existed: bootstrapped from cluster_peers,
    # so it keeps the id derived from its name and the derived cluster id.
    os.remove(id_path)
    n.start()
    wait_for(lambda: n.status()["role"] == "follower", what="legacy node rejoins")
    st = n.status()
    assert (st["id"], st["cluster_id"]) == (old["id"], old["cluster_id"])
    assert open(id_path).read() == text
    check_keys(c.wait_leader(), acked)


def test_bootstrap_waits_for_every_peer_and_refuses_a_wiped_member(cluster_factory):
    c = cluster_factory(3)
    n1, n2, n3 = c.nodes
    n1.start()  # --bootstrap: it waits until every peer answers its probe
    wait_for(lambda: "waiting for every peer" in n1.log(), what="n1 waits for its peers")
    assert "bootstrapped" not in n1.log()
    n2.start()
    n3.start()
    c.wait_leader()
    c.wait_ready()
    acked = write_keys(c, "w", 10)
    # Everything stops; n2's disk is wiped; everything starts again, n2 with
    # --bootstrap while its peers are still down (a script restarting all).
    for n in c.nodes:
        n.kill()
    n2.wipe()
    n2.start(bootstrap=True)
    wait_for(lambda: "waiting for every peer" in n2.log().split("bootstrapped")[-1],
             what="n2 waits for its peers")
    n1.start()
    n3.start()
    assert n2.proc.wait(timeout=30) == 2
    assert "refusing to bootstrap" in n2.log()
    leader = c.wait_leader(among=[n1, n3])
    check_keys(leader, acked)


def test_leader_transfer(cluster_factory):
    c = cluster_factory(3).start()
    leader = c.wait_leader()
    c.wait_ready()
    target = next(n for n in c.nodes if n is not leader)
    # From a follower: forwarded to the leader, which hands over.
    via = next(n for n in c.nodes if n is not leader and n is not target)
    wait_for(lambda: via.status()["leader"]["api"], what="via knows the leader's API")
    out = subprocess.run([JINN, "leader", "transfer", target.name, "--addr", via.url],
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    assert target.name in out.stdout
    assert c.wait_leader() is target
    out = subprocess.run([JINN, "leader", "transfer", "nosuch", "--addr", target.url],
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 1 and "404" in out.stderr


def test_automatic_promotion_does_not_undo_a_demote_at_once(cluster_factory):
    c = cluster_factory(4, replicas=3, extra_config=["standby_promote_after 3s"]).start()
    leader = c.wait_leader()
    c.wait_ready()
    victim = next(n for n in c.nodes[:3] if n is not leader)
    members(leader, "demote", victim.name)
    # Two voters of replicas 3 and a healthy standby (n4): the automatic
    # promotion stays out of the way for standby_promote_after.
    deadline = time.monotonic() + 2
    while time.monotonic() < deadline:
        roles = {m["name"]: m["role"] for m in member_list(c.wait_leader())["members"]}
        assert roles[victim.name] == "standby" and roles["n4"] == "standby", roles
        time.sleep(0.1)
    # Then it keeps cluster_replicas voters again.
    wait_for(lambda: sum(m["role"] == "voter"
                         for m in member_list(c.wait_leader())["members"]) == 3,
             timeout=15, what="back to three voters")
