"""Hostile-client findings (attacker A1) that are NOT fixed yet: each test
fails on the current code and says what it needs. They belong with the
peer-authentication work (security issue); kept apart from test_attack.py
so the lead can run or exclude them on purpose."""
import socket
import struct
import subprocess

from harness import JINN, wait_for


def raft_handshake(server_id, address):
    a = address.encode() + b"\0"
    a += b"\0" * ((8 - len(a) % 8) % 8)
    return struct.pack("<QQQ", 1, server_id, len(a)) + a


def test_one_packet_does_not_bind_a_joining_node_to_a_foreign_cluster(cluster_factory):
    """A node started without --bootstrap learns its cluster id from the
    first peer that connects and persists it in jinn.id. Any client that can
    reach its raft port sends one 64-byte handshake claiming cluster 0xdead:
    the node is bound to it for good and `jinn members add` answers 409
    "belongs to another cluster" until the data_dir is wiped."""
    c = cluster_factory(3).start()
    c.wait_leader(timeout=30)
    c.wait_ready(timeout=30)
    n4 = c.add_node()
    n4.start(bootstrap=False)
    wait_for(lambda: n4.status()["role"] == "joining", 20, what="n4 waits to be added")
    preamble = b"JNPG" + bytes([1, 0, 0, 0]) + struct.pack("<QQQ", 0xDEAD, 77, 0)
    with socket.create_connection(("127.0.0.1", n4.raft_port), timeout=5) as s:
        s.sendall(raft_handshake(77, "127.0.0.1:9") + preamble)
        s.recv(64)
    leader = c.wait_leader()
    out = subprocess.run([JINN, "members", "add", f"n4={n4.advertised}", "--addr", leader.url],
                         capture_output=True, text=True, timeout=150)
    assert out.returncode == 0, out.stderr

