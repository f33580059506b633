"""TLS for clients and node-to-node HTTP, SIGHUP rotation, protected mode
(issue 15 items 2 and 4). Certificates are made in the test with
`jinn certs`; clients are curl, Python's ssl and the jinn CLI."""
import hashlib
import http.client
import json
import os
import shutil
import socket
import ssl
import subprocess
import time

import pytest

from harness import JINN, free_port, wait_for
from test_mtls import certs, tls_cluster


def https_context(pki, cert=None):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(f"{pki}/ca.crt")
    ctx.check_hostname = False
    if cert is not None:
        ctx.load_cert_chain(f"{cert}.crt", f"{cert}.key")
    return ctx


def http_tls_lines(pki, name, client_ca=False):
    lines = ["http_tls {", f"    cert {pki}/{name}.crt", f"    key  {pki}/{name}.key"]
    if client_ca:
        lines.append(f"    client_ca {pki}/ca.crt")
    return lines + ["}"]


def secure_cluster(cluster_factory, tmp_path, n=3, client_ca=False, extra_config=()):
    """cluster_tls and http_tls with the same node certificates (what
    docs/operations.md's "secure cluster in five commands" sets up)."""
    c = tls_cluster(cluster_factory, tmp_path, n=n, extra_config=extra_config)
    raft_lines = c.node_config
    c.node_config = lambda node: raft_lines(node) + http_tls_lines(c.pki, node.name, client_ca)
    c.https_context = https_context(c.pki)
    return c


def one_tls_node(cluster_factory, tmp_path, client_ca=False, extra_config=()):
    pki = str(tmp_path / "pki")
    certs(pki, "n1", "client1")
    c = cluster_factory(1, extra_config=list(extra_config))
    c.pki = pki
    c.node_config = lambda node: http_tls_lines(pki, node.name, client_ca)
    c.https_context = https_context(pki, f"{pki}/client1" if client_ca else None)
    return c


def curl(*args):
    return subprocess.run(["curl", "-sS", "-m", "10", *args], capture_output=True, text=True)


def served_fingerprint(port, pki):
    ctx = https_context(pki)
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        with ctx.wrap_socket(s) as t:
            return hashlib.sha256(t.getpeercert(binary_form=True)).hexdigest()


def file_fingerprint(path):
    der = ssl.PEM_cert_to_DER_cert(open(path).read())
    return hashlib.sha256(der).hexdigest()


def closed_by_peer(sock, timeout):
    """Waits until the server closes sock (reads EOF or a reset)."""
    sock.settimeout(0.2)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if sock.recv(4096) == b"":
                return True
        except socket.timeout:
            continue
        except OSError:
            return True
    return False


def test_https_with_curl_plaintext_garbage_and_a_stalled_handshake(cluster_factory, tmp_path):
    c = one_tls_node(cluster_factory, tmp_path, extra_config=["read_timeout 1s"]).start()
    n1 = c.wait_leader(timeout=30)
    c.wait_ready(timeout=30)
    url = f"https://127.0.0.1:{n1.http_port}"
    r = curl("--cacert", f"{c.pki}/ca.crt", "-X", "PUT", "--data-binary", "hello",
             f"{url}/v1/kv/app/greeting")
    assert r.returncode == 0 and '"index"' in r.stdout, r.stderr
    r = curl("--cacert", f"{c.pki}/ca.crt", f"{url}/v1/kv/app/greeting")
    assert r.returncode == 0 and r.stdout == "hello", (r.stdout, r.stderr)
    # Without the CA curl refuses the server (nothing is trusted by accident).
    assert curl(f"{url}/v1/status").returncode != 0

    # Plain HTTP on the TLS port: told to use https, then closed.
    with socket.create_connection(("127.0.0.1", n1.http_port), timeout=5) as s:
        s.sendall(b"GET /v1/status HTTP/1.1\r\nHost: x\r\n\r\n")
        got = b""
        while True:
            chunk = s.recv(4096)
            if not chunk:
                break
            got += chunk
    assert got.startswith(b"HTTP/1.1 400") and b"https_required" in got, got

    # Random bytes and a truncated ClientHello.
    for payload in (os.urandom(4096), b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03"):
        with socket.create_connection(("127.0.0.1", n1.http_port), timeout=5) as s:
            s.sendall(payload)
            # The stalled handshake is cut off at the deadline (read_timeout).
            assert closed_by_peer(s, 10), "the server kept a broken TLS client"
    # A client that sends nothing at all is cut off at the deadline too.
    with socket.create_connection(("127.0.0.1", n1.http_port), timeout=5) as s:
        assert closed_by_peer(s, 10)
    assert n1.alive()
    code, _, out = n1.request("/v1/kv/app/greeting")
    assert code == 200 and out == b"hello"
    metrics = n1.request("/metrics")[2].decode()
    assert "jinn_http_tls_handshake_failures_total" in metrics

    # The CLI over https, with the CA from the environment.
    env = dict(os.environ, JINN_CACERT=f"{c.pki}/ca.crt")
    r = subprocess.run([JINN, "kv", "get", "app", "greeting", "--addr", url], env=env,
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 0 and "hello" in r.stdout, r.stderr
    r = subprocess.run([JINN, "kv", "get", "app", "greeting", "--addr", url],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode != 0 and "not trusted" in r.stderr, r.stderr


def test_client_certificates_are_required_with_client_ca(cluster_factory, tmp_path):
    c = one_tls_node(cluster_factory, tmp_path, client_ca=True).start()
    n1 = c.wait_leader(timeout=30)
    c.wait_ready(timeout=30)
    url = f"https://127.0.0.1:{n1.http_port}"
    assert curl("--cacert", f"{c.pki}/ca.crt", f"{url}/v1/status").returncode != 0
    r = curl("--cacert", f"{c.pki}/ca.crt", "--cert", f"{c.pki}/client1.crt", "--key",
             f"{c.pki}/client1.key", f"{url}/v1/status")
    assert r.returncode == 0 and json.loads(r.stdout)["role"] == "leader", r.stderr
    # A certificate from another CA is refused.
    other = str(tmp_path / "other")
    certs(other, "client1")
    r = curl("--cacert", f"{c.pki}/ca.crt", "--cert", f"{other}/client1.crt", "--key",
             f"{other}/client1.key", f"{url}/v1/status")
    assert r.returncode != 0
    # The CLI with --cert/--key.
    r = subprocess.run([JINN, "status", "--addr", url, "--cacert", f"{c.pki}/ca.crt",
                        "--cert", f"{c.pki}/client1.crt", "--key", f"{c.pki}/client1.key"],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 0 and "leader" in r.stdout, r.stderr
    assert n1.alive()


def test_three_nodes_with_mtls_and_https_forward_to_the_leader(cluster_factory, tmp_path):
    c = secure_cluster(cluster_factory, tmp_path).start()
    leader = c.wait_leader(timeout=30)
    c.wait_ready(timeout=30)
    # Every node announced its API over https (the directory is written
    # through the leader's internal endpoint by the followers).
    wait_for(lambda: all(m["api"] for m in leader.status()["members"]), 30,
             what="every node announced its API")
    for f in [n for n in c.nodes if n is not leader]:
        for i in range(5):
            code, _, out = f.request(f"/v1/kv/app/{f.name}-{i}", "PUT", b"v")
            assert code == 200, out
    code, _, out = leader.request("/v1/kv/app?limit=100")
    assert code == 200 and len(json.loads(out)["keys"]) == 10, out
    # A backup over https through a follower (the CLI finds the leader).
    f = next(n for n in c.nodes if n is not leader)
    backup = str(tmp_path / "backup.jinn")
    r = subprocess.run([JINN, "snapshot", "save", backup, "--addr", f.url, "--cacert",
                        f"{c.pki}/ca.crt"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert os.path.getsize(backup) > 0


def test_internal_endpoints_refuse_clients_without_a_cluster_certificate(
        cluster_factory, tmp_path):
    """The directory hijack of open_attack_findings.py (POST
    /v1/internal/nodes pointing followers at a fake digest server) is refused
    on a secure cluster: only a client with a certificate from the cluster CA
    may call internal endpoints or send node-to-node headers."""
    c = secure_cluster(cluster_factory, tmp_path).start()
    leader = c.wait_leader(timeout=30)
    c.wait_ready(timeout=30)
    wait_for(lambda: all(m["api"] for m in leader.status()["members"]), 30,
             what="every node announced its API")
    before = {m["name"]: m["api"] for m in leader.status()["members"]}
    victim = next(m for m in leader.status()["members"] if m["name"] != leader.name)
    body = json.dumps({"id": victim["id"], "name": victim["name"],
                       "api": "http://127.0.0.1:9"}).encode()
    code, _, out = leader.request("/v1/internal/nodes", "POST", body)
    assert code == 403 and json.loads(out)["error"] == "forbidden", out
    code, _, out = leader.request("/v1/internal/digest?index=1")
    assert code == 403, out
    code, _, out = leader.request("/v1/kv/app/x", "PUT", b"v",
                                  headers={"X-Jinn-Forwarded-By": "n2"})
    assert code == 403, out
    # A member's certificate is let through (here the victim's own).
    member = https_context(c.pki, f"{c.pki}/{victim['name']}")
    conn = http.client.HTTPSConnection("127.0.0.1", leader.http_port, context=member,
                                       timeout=10)
    conn.request("GET", "/v1/internal/digest?index=1")
    assert conn.getresponse().status != 403
    conn.close()
    assert {m["name"]: m["api"] for m in leader.status()["members"]} == before


def test_sighup_rotates_the_certificate_and_keeps_the_leader(cluster_factory, tmp_path):
    c = secure_cluster(cluster_factory, tmp_path).start()
    leader = c.wait_leader(timeout=30)
    c.wait_ready(timeout=30)
    term = leader.status()["term"]
    pki = c.pki
    old = file_fingerprint(f"{pki}/{leader.name}.crt")
    assert served_fingerprint(leader.http_port, pki) == old
    # A keep-alive connection opened before the rotation.
    kept = http.client.HTTPSConnection("127.0.0.1", leader.http_port,
                                       context=https_context(pki), timeout=10)
    kept.request("GET", "/v1/status")
    assert kept.getresponse().read()

    # A new certificate for the same node from the same CA.
    new_dir = str(tmp_path / "pki-new")
    os.makedirs(new_dir)
    for f in ("ca.crt", "ca.key"):
        shutil.copy(f"{pki}/{f}", new_dir)
    subprocess.run([JINN, "certs", "add", new_dir, leader.name, "--ip", "127.0.0.1"],
                   check=True, capture_output=True)
    new = file_fingerprint(f"{new_dir}/{leader.name}.crt")
    assert new != old
    shutil.copy(f"{new_dir}/{leader.name}.crt", f"{pki}/{leader.name}.crt")
    shutil.copy(f"{new_dir}/{leader.name}.key", f"{pki}/{leader.name}.key")
    leader.proc.send_signal(1)  # SIGHUP
    wait_for(lambda: served_fingerprint(leader.http_port, pki) == new, 10,
             what="the new certificate served")
    kept.request("GET", "/v1/status")
    assert kept.getresponse().status == 200
    kept.close()

    # A broken key file: the last good certificate stays in use.
    with open(f"{pki}/{leader.name}.key", "w") as f:
        f.write("not a key\n")
    leader.proc.send_signal(1)
    wait_for(lambda: "not reloaded" in leader.log(), 10, what="the reload error logged")
    assert served_fingerprint(leader.http_port, pki) == new
    code, _, out = leader.request("/v1/kv/app/after", "PUT", b"x")
    assert code == 200, out
    st = leader.status()
    assert st["role"] == "leader" and st["term"] == term
    # Followers still reach the leader (raft and forwarding).
    f = next(n for n in c.nodes if n is not leader)
    code, _, out = f.request("/v1/kv/app/from-follower", "PUT", b"y")
    assert code == 200, out
    assert leader.status()["term"] == term


def run_node(tmp_path, lines, name="p1"):
    """Starts a one-node jinn with its own config (not the harness's, which
    always listens on 127.0.0.1). Returns (process, http port, log path)."""
    port, raft = free_port(), free_port()
    conf = tmp_path / f"{name}.conf"
    log = tmp_path / f"{name}.log"
    listen = lines.pop(0) if lines and lines[0].startswith("http_listen") else \
        f"http_listen 127.0.0.1:{port}"
    listen = listen.replace("PORT", str(port))
    body = [f"server_name {name}", f"data_dir {tmp_path / name}", listen,
            f"cluster_listen 127.0.0.1:{raft}", f"cluster_peers {name}=127.0.0.1:{raft}"]
    conf.write_text("{\n" + "".join(f"    {x}\n" for x in body + lines) + "}\n")
    proc = subprocess.Popen([JINN, "run", "-c", str(conf), "--bootstrap"],
                            stdout=open(log, "w"), stderr=subprocess.STDOUT)
    return proc, port, log


def test_protected_mode_refuses_a_public_address_without_auth(tmp_path):
    proc, _, log = run_node(tmp_path, ["http_listen 0.0.0.0:PORT"], "p1")
    assert proc.wait(timeout=30) == 2
    text = open(log).read()
    assert "protected mode" in text and "http_tls" in text and "insecure" in text, text
    assert not os.path.exists(tmp_path / "p1" / "raft"), "nothing may be written"

    proc, _, log = run_node(tmp_path, ["http_advertise http://10.1.2.3:8080"], "p2")
    assert proc.wait(timeout=30) == 2
    assert "http_advertise" in open(log).read()

    # `insecure true` says it on purpose: the node serves.
    proc, port, log = run_node(tmp_path, ["http_listen 0.0.0.0:PORT", "insecure true"], "p3")
    try:
        wait_for(lambda: json.loads(subprocess.run(
            ["curl", "-sS", "-m", "2", f"http://127.0.0.1:{port}/v1/status"],
            capture_output=True, text=True).stdout or "{}").get("role") == "leader", 30,
            what="the insecure node serves")
    finally:
        proc.terminate()
        proc.wait(timeout=30)

    # https alone lets anyone in; bearer tokens alone cross the network in
    # the clear: neither is enough.
    pki = str(tmp_path / "pki")
    certs(pki, "p4")
    proc, _, log = run_node(tmp_path, ["http_listen 0.0.0.0:PORT"] +
                            http_tls_lines(pki, "p4"), "p4a")
    assert proc.wait(timeout=30) == 2
    assert "protected mode" in open(log).read()
    proc, _, log = run_node(tmp_path, ["http_listen 0.0.0.0:PORT",
                                       "bootstrap_token " + "b" * 32], "p4b")
    assert proc.wait(timeout=30) == 2
    assert "protected mode" in open(log).read()

    # With http_tls and a bootstrap token the public address is allowed.
    proc, port, log = run_node(tmp_path, ["http_listen 0.0.0.0:PORT",
                                          "bootstrap_token " + "b" * 32] +
                               http_tls_lines(pki, "p4"), "p4")
    try:
        wait_for(lambda: curl("--cacert", f"{pki}/ca.crt",
                              f"https://127.0.0.1:{port}/healthz").returncode == 0, 30,
                 what="the TLS node serves on 0.0.0.0")
    finally:
        proc.terminate()
        proc.wait(timeout=30)


@pytest.mark.parametrize("raft_tls", [True, False])
def test_a_functions_host_calls_reach_its_own_tls_node(cluster_factory, tmp_path, raft_tls):
    """Host calls go through fetch.c to the node's own API: over https,
    presenting the node's certificate (client_ca too, so an unauthenticated
    loopback call would be refused). With cluster_tls the node's client
    side trusts the cluster CA; without, its own http_tls certificate as
    it is (no CA configured for that)."""
    from test_wasm_host import cmd, deploy, module, run, wait_ready
    if raft_tls:
        c = secure_cluster(cluster_factory, tmp_path, n=1, client_ca=True)
    else:
        c = one_tls_node(cluster_factory, tmp_path, client_ca=True)
    c.https_context = https_context(c.pki, f"{c.pki}/n1")
    c.start()
    n1 = c.wait_leader(timeout=30)
    c.wait_ready(timeout=30)
    deploy(n1, "hf", module("hostfns"), ns="app", timeout="10s", pool=1)
    wait_ready(n1, "hf")
    r = run(n1, "hf", cmd("set", "k", "over tls"), cmd("get", "k"))
    assert r[0] == ("set", 0, None), r
    assert r[1] == ("get", 8, b"over tls"), r
    code, _, out = n1.request("/v1/kv/app/k")
    assert code == 200 and out == b"over tls"


def test_cli_tls_options_leave_other_commands_own_flags_alone(cluster_factory):
    """--key is the TLS client key only right after --cert FILE: `queue pub
    --key` (an idempotency key) keeps working, twice the same key
    publishing once."""
    c = cluster_factory(1).start()
    n1 = c.wait_leader(timeout=30)
    c.wait_ready(timeout=30)
    for _ in range(2):
        r = subprocess.run([JINN, "queue", "pub", "jobs", "hello", "--key", "idem-1",
                            "--addr", n1.url], capture_output=True, text=True, timeout=30)
        assert r.returncode == 0, r.stderr
    code, _, out = n1.request("/v1/queues/jobs")
    assert code == 200 and json.loads(out)["published"] == 1, out
    r = subprocess.run([JINN, "status", "--addr", n1.url, "--cert", "/nonexistent.crt"],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 2 and "--cert FILE --key FILE" in r.stderr, r.stderr
