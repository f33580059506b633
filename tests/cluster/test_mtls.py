"""Mutual TLS between nodes (issue 15 item 1): with cluster_tls every raft
connection is TLS 1.3, both certificates are checked against the CA and
must name the node behind the server id. Certificates are made in the test
with `jinn certs` (and, for an expired one, Python's cryptography)."""
import datetime
import os
import random
import socket
import ssl
import struct
import subprocess

import pytest

from harness import JINN, wait_for
from test_raft_port import admitted, handshake, metric, preamble, send


def certs(dirpath, *nodes, ca=True):
    if ca:
        subprocess.run([JINN, "certs", "init", dirpath], check=True, capture_output=True)
    for n in nodes:
        subprocess.run([JINN, "certs", "add", dirpath, n, "--ip", "127.0.0.1"], check=True,
                       capture_output=True)


def tls_lines(cert, key, ca):
    return ["cluster_tls {", f"    cert {cert}", f"    key  {key}", f"    ca   {ca}", "}"]


def tls_cluster(cluster_factory, tmp_path, n=3, swap=None, extra_config=()):
    """n nodes with their own certificates from one CA; swap maps a node
    name to (cert, key) it presents instead."""
    d = str(tmp_path / "pki")
    certs(d, *[f"n{i + 1}" for i in range(n + 1)])
    c = cluster_factory(n, extra_config=list(extra_config))
    c.opaque_raft = True
    c.pki = d
    c.swap = dict(swap or {})

    def lines(node):
        cert, key = c.swap.get(node.name, (f"{d}/{node.name}.crt", f"{d}/{node.name}.key"))
        return tls_lines(cert, key, f"{d}/ca.crt")

    c.node_config = lines
    return c


def tls_client(c, name="n1"):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.load_verify_locations(f"{c.pki}/ca.crt")
    ctx.load_cert_chain(f"{c.pki}/{name}.crt", f"{c.pki}/{name}.key")
    ctx.check_hostname = False
    return ctx


def test_three_tls_nodes_replicate_and_survive_a_leader_kill(cluster_factory, tmp_path):
    c = tls_cluster(cluster_factory, tmp_path).start()
    leader = c.wait_leader(timeout=30)
    c.wait_ready(timeout=30)
    for i in range(20):
        code, _, out = leader.request(f"/v1/kv/ns/k{i}", "PUT", b"v%d" % i)
        assert code == 200, out
    assert "mutual TLS" in leader.log()
    leader.kill()
    new = wait_for(lambda: next((n for n in c.nodes if n is not leader and n.proc.poll() is None
                                 and n.status()["role"] == "leader"), None), 30,
                   what="a new leader over TLS")
    code, _, out = new.request("/v1/kv/ns/after", "PUT", b"x")
    assert code == 200, out
    leader.start()
    wait_for(lambda: leader.status()["applied_index"] >= new.status()["commit_index"], 30,
             what="the old leader catches up over TLS")


def test_plaintext_and_garbage_to_a_tls_node_are_refused(cluster_factory, tmp_path):
    c = tls_cluster(cluster_factory, tmp_path).start()
    c.wait_leader(timeout=30)
    c.wait_ready(timeout=30)
    target = c.nodes[1]
    term = target.status()["term"]
    before = metric(target, "jinn_raft_connections_refused_total")
    # A plaintext jinn hello: never answered, closed.
    got = send(target, handshake(77) + preamble(1, 77), linger=2)
    assert b"JNPA" not in got
    wait_for(lambda: "TLS handshake failed" in target.log(), 10, what="refusal logged")
    # Random bytes and truncated TLS handshakes.
    rng = random.Random(15)
    for _ in range(30):
        send(target, bytes(rng.getrandbits(8) for _ in range(rng.randint(1, 400))), linger=0.05)
        send(target, b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\0" * rng.randint(0, 50),
             linger=0.05)
    # A client with a valid certificate, then garbage inside TLS.
    ctx = tls_client(c)
    for junk in (b"\xff" * 64, handshake(77, declared=1 << 30), admitted_tls_hello(target)):
        with socket.create_connection(("127.0.0.1", target.raft_port), timeout=5) as raw:
            with ctx.wrap_socket(raw) as s:
                s.sendall(junk)
                s.settimeout(2)
                try:
                    while s.recv(4096):
                        pass
                except (socket.timeout, ssl.SSLError, ConnectionResetError):
                    pass
    assert target.proc.poll() is None
    wait_for(lambda: metric(target, "jinn_raft_connections_refused_total") >= before + 3, 10,
             what="refusals counted")
    leader = c.wait_leader()
    code, _, out = leader.request("/v1/kv/ns/k", "PUT", b"v")
    assert code == 200, out
    assert target.status()["term"] == term


def admitted_tls_hello(target):
    """A hello claiming a node id no certificate names, followed by a known
    libraft crash (header length 7); refused by the message check."""
    return handshake(77) + preamble(1, 77) + struct.pack("<QQ", 3, 7) + b"\0" * 7


def expired_cert(pki, name, out_dir):
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    with open(f"{pki}/ca.key", "rb") as f:
        ca_key = serialization.load_pem_private_key(f.read(), None)
    with open(f"{pki}/ca.crt", "rb") as f:
        ca = x509.load_pem_x509_certificate(f.read())
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
            .issuer_name(ca.subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=30))
            .not_valid_after(now - datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
            .sign(ca_key, hashes.SHA256()))
    os.makedirs(out_dir, exist_ok=True)
    crt, k = f"{out_dir}/{name}.crt", f"{out_dir}/{name}.key"
    with open(crt, "wb") as f:
        f.write(cert.public_bytes(serialization.Encoding.PEM))
    with open(k, "wb") as f:
        f.write(key.private_bytes(serialization.Encoding.PEM,
                                  serialization.PrivateFormat.PKCS8,
                                  serialization.NoEncryption()))
    return crt, k


@pytest.mark.parametrize("bad", ["other_ca", "expired", "other_name"])
def test_a_node_without_a_valid_certificate_cannot_vote_or_receive_the_log(
        cluster_factory, tmp_path, bad):
    """n3 restarts presenting a bad certificate: the cluster keeps its
    leader and its term, n3 receives nothing, and the log says why."""
    c = tls_cluster(cluster_factory, tmp_path).start()
    c.wait_leader(timeout=30)
    c.wait_ready(timeout=30)
    n3 = c["n3"]
    n3.kill()
    if bad == "other_ca":
        other = str(tmp_path / "other")
        certs(other, "n3")
        c.swap["n3"] = (f"{other}/n3.crt", f"{other}/n3.key")
        why = ("unknown ca", "unable to get local issuer certificate")
    elif bad == "expired":
        c.swap["n3"] = expired_cert(c.pki, "n3", str(tmp_path / "expired"))
        why = ("certificate has expired", "certificate expired")
    else:
        c.swap["n3"] = (f"{c.pki}/n4.crt", f"{c.pki}/n4.key")  # signed by our CA, names n4
        why = ("must present a certificate naming 'n3'",)
    leader = c.wait_leader()
    term = leader.status()["term"]
    n3.start()
    wait_for(lambda: n3.status()["role"] is not None, 20, what="n3 serves HTTP")
    for i in range(10):
        code, _, out = leader.request(f"/v1/kv/ns/after{i}", "PUT", b"x")
        assert code == 200, out
    commit = leader.status()["commit_index"]
    others = [n for n in c.nodes if n is not n3]
    wait_for(lambda: any(w in n.log() for n in others for w in why), 20,
             what=f"the cluster logs why ({why[0]})")
    # n3 hears no leader and campaigns: its votes never reach the others.
    wait_for(lambda: metric(leader, "jinn_raft_connections_refused_total") >= 2, 20,
             what="n3's connections refused")
    assert c.wait_leader() is leader
    assert leader.status()["term"] == term
    assert n3.status()["applied_index"] < commit


def test_members_add_over_tls(cluster_factory, tmp_path):
    """A new node with a certificate from the CA is probed and added over
    TLS, and learns the cluster id from its authenticated first dialler."""
    c = tls_cluster(cluster_factory, tmp_path).start()
    leader = c.wait_leader(timeout=30)
    c.wait_ready(timeout=30)
    n4 = c.add_node()
    n4.start(bootstrap=False)
    wait_for(lambda: n4.status()["role"] == "joining", 20, what="n4 waits to be added")
    out = subprocess.run([JINN, "members", "add", f"n4={n4.advertised}", "--addr", leader.url],
                         capture_output=True, text=True, timeout=150)
    assert out.returncode == 0, out.stderr
    code, _, body = leader.request("/v1/kv/ns/new", "PUT", b"x")
    assert code == 200, body
    wait_for(lambda: n4.status()["applied_index"] >= leader.status()["commit_index"], 30,
             what="n4 catches up over TLS")
    assert n4.status()["cluster_id"] == leader.status()["cluster_id"]
    assert "authenticated" in n4.log()


def test_a_node_with_a_foreign_certificate_cannot_be_added(cluster_factory, tmp_path):
    c = tls_cluster(cluster_factory, tmp_path).start()
    leader = c.wait_leader(timeout=30)
    c.wait_ready(timeout=30)
    other = str(tmp_path / "other")
    certs(other, "n4")
    c.swap["n4"] = (f"{other}/n4.crt", f"{other}/n4.key")
    n4 = c.add_node()
    n4.start(bootstrap=False)
    wait_for(lambda: n4.status()["role"] == "joining", 20, what="n4 waits to be added")
    out = subprocess.run([JINN, "members", "add", f"n4={n4.advertised}", "--addr", leader.url],
                         capture_output=True, text=True, timeout=150)
    assert out.returncode != 0
    assert "no jinn answers" in out.stderr
    wait_for(lambda: "unable to get local issuer certificate" in leader.log(), 10,
             what="the leader logs why")
    assert all(s["name"] != "n4" for s in json_members(leader))
    code, _, body = leader.request("/v1/kv/ns/still", "PUT", b"x")
    assert code == 200, body


def json_members(node):
    import json
    code, _, body = node.request("/v1/cluster/members")
    assert code == 200, body
    doc = json.loads(body)
    return doc["members"] if isinstance(doc, dict) else doc


def test_a_restarted_follower_catches_up_by_snapshot_over_tls(cluster_factory, tmp_path):
    """InstallSnapshot and large AppendEntries stream through the bridge and
    TLS: a follower down for more than a snapshot's worth of writes."""
    c = tls_cluster(cluster_factory, tmp_path,
                    extra_config=["snapshot_threshold 16", "snapshot_trailing 4"]).start()
    leader = c.wait_leader(timeout=30)
    c.wait_ready(timeout=30)
    follower = next(n for n in c.nodes if n is not leader)
    follower.kill()
    for i in range(60):
        code, _, out = leader.request(f"/v1/kv/ns/big{i}", "PUT", b"x" * 20000)
        assert code == 200, out
    target = leader.status()["commit_index"]
    follower.start()
    wait_for(lambda: follower.status()["applied_index"] >= target, 30,
             what="the follower catches up over TLS")
    code, _, body = follower.request("/v1/kv/ns/big59")  # relayed to the leader (cp)
    assert code == 200 and len(body) >= 20000, (code, body[:200])


def test_certs_cli_never_overwrites_and_checks_names(tmp_path):
    d = str(tmp_path / "pki")
    certs(d, "n1")
    again = subprocess.run([JINN, "certs", "init", d], capture_output=True, text=True)
    assert again.returncode == 1 and "not replaced" in again.stderr
    twice = subprocess.run([JINN, "certs", "add", d, "n1"], capture_output=True, text=True)
    assert twice.returncode == 1 and "File exists" in twice.stderr
    # (atk3 m4) NODE.crt there, NODE.key not: the key used to be written
    # before the certificate write failed, and was left behind
    open(f"{d}/n3.crt", "w").close()
    half = subprocess.run([JINN, "certs", "add", d, "n3"], capture_output=True, text=True)
    assert half.returncode == 1 and "n3.crt: File exists" in half.stderr, half.stderr
    assert not os.path.exists(f"{d}/n3.key")
    bad = subprocess.run([JINN, "certs", "add", d, "../n2"], capture_output=True, text=True)
    assert bad.returncode == 2 and "not a node name" in bad.stderr
    badip = subprocess.run([JINN, "certs", "add", d, "n2", "--ip", "nope"],
                           capture_output=True, text=True)
    assert badip.returncode == 2
    assert oct(os.stat(f"{d}/n1.key").st_mode & 0o777) == "0o600"
    assert oct(os.stat(f"{d}/ca.key").st_mode & 0o777) == "0o600"
    # the node certificate verifies against the CA, names the node, both usages
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(f"{d}/ca.crt")
    ctx.load_cert_chain(f"{d}/n1.crt", f"{d}/n1.key")
    from cryptography import x509
    with open(f"{d}/n1.crt", "rb") as f:
        cert = x509.load_pem_x509_certificate(f.read())
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["n1"]
    assert [str(a) for a in san.get_values_for_type(x509.IPAddress)] == ["127.0.0.1"]
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    from cryptography.x509.oid import ExtendedKeyUsageOID
    assert set(eku) == {ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH}


def fingerprint(path):
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    with open(path, "rb") as f:
        return x509.load_pem_x509_certificate(f.read()).fingerprint(hashes.SHA256()).hex()


def test_a_pinned_fingerprint_stands_in_for_the_name(cluster_factory, tmp_path):
    """n3 presents a certificate (from the CA) that names n4, pinned for n3
    on every node: it takes part. Pinning another certificate for n2 (on n1
    and n3) keeps n2 out although its certificate names it."""
    c = tls_cluster(cluster_factory, tmp_path)
    d = c.pki
    c.swap["n3"] = (f"{d}/n4.crt", f"{d}/n4.key")
    pins = [f"    pin n3 {fingerprint(d + '/n4.crt')}"]
    wrong = [f"    pin n2 {fingerprint(d + '/n1.crt')}"]
    base = c.node_config
    c.node_config = lambda n: base(n)[:-1] + pins + (wrong if n.name != "n2" else []) + ["}"]
    c.start()
    leader = c.wait_leader(timeout=30)
    c.wait_ready([leader], timeout=30)  # n1 and n2 cannot talk
    code, _, out = leader.request("/v1/kv/ns/pinned", "PUT", b"x")
    assert code == 200, out
    target = leader.status()["commit_index"]
    wait_for(lambda: c["n3"].status()["applied_index"] >= target, 20,
             what="n3, pinned, replicates")
    wait_for(lambda: "must present the certificate pinned for it" in leader.log(), 20,
             what="the leader refuses n2's certificate: another one is pinned for n2")
    assert leader is not c["n2"]
    assert c["n2"].status()["applied_index"] < target


def test_a_ca_signed_stranger_does_not_bind_a_joining_node_to_its_cluster(
        cluster_factory, tmp_path):
    """(atk3 M3) A node waiting to be added adopted the cluster id of any
    dialler with a CA-signed certificate (a CA may sign for more than one
    cluster). Now it adopts one at first contact only from a certificate
    naming a cluster_peers node at its address, else once a configuration
    including it arrives from the leader it follows."""
    c = tls_cluster(cluster_factory, tmp_path).start()
    leader = c.wait_leader(timeout=30)
    c.wait_ready(timeout=30)
    certs(c.pki, "stranger", ca=False)
    n4 = c.add_node()
    n4.start(bootstrap=False)
    wait_for(lambda: n4.status()["role"] == "joining", 20, what="n4 waits to be added")
    raw = socket.create_connection(("127.0.0.1", n4.raft_port), timeout=5)
    with tls_client(c, "stranger").wrap_socket(raw) as s:
        s.sendall(handshake(77) + preamble(0xDEAD, 77))
        got = b""
        while len(got) < 24:
            chunk = s.recv(24 - len(got))
            if not chunk:
                break
            got += chunk
    assert n4.status()["cluster_id"] is None
    out = subprocess.run([JINN, "members", "add", f"n4={n4.advertised}", "--addr", leader.url],
                         capture_output=True, text=True, timeout=150)
    assert out.returncode == 0, out.stderr
    code, _, body = leader.request("/v1/kv/ns/new", "PUT", b"x")
    assert code == 200, body
    wait_for(lambda: n4.status()["applied_index"] >= leader.status()["commit_index"], 30,
             what="n4 catches up over TLS")
    assert n4.status()["cluster_id"] == leader.status()["cluster_id"]
    assert "000000000000dead" not in n4.log()
