"""An edge replica over wss:// (the nodes' http_tls): it verifies the node
against replica_ca (and the node's IP in its certificate), streams, and
serves https itself; a replica trusting another CA never streams."""
import json

from harness import wait_for
from test_http_tls import http_tls_lines, secure_cluster
from test_mtls import certs

POLICIES = ["consensus {", "    app { mode ap  stale_reads true  max_staleness 1h }", "}"]


def test_wss_verified_by_replica_ca(cluster_factory, tmp_path):
    c = secure_cluster(cluster_factory, tmp_path, extra_config=POLICIES)
    c.start()
    leader = c.wait_leader()
    c.wait_ready()
    certs(c.pki, "r1", ca=False)  # the replica's own https certificate
    r = c.add_replica(name="r1", extra_config=POLICIES + [f"replica_ca {c.pki}/ca.crt"]
                      + http_tls_lines(c.pki, "r1"))
    assert all(u.startswith("wss://") for u in r.stream_urls())
    r.start()
    r.wait_state("streaming")
    code, hdr, body = leader.request("/v1/kv/app/k", "PUT", b"over-tls")
    assert code == 200, body
    r.wait_position(int(hdr["X-Jinn-Index"]))
    code, _, body = r.request("/v1/kv/app/k?consistency=stale")
    assert code == 200 and body == b"over-tls"
    # writes through the replica are relayed over https too
    code, _, body = r.request("/v1/kv/app/k2", "PUT", b"relayed")
    assert code == 200, body

    # another CA: the handshake fails, nothing is ever applied
    other = str(tmp_path / "other-pki")
    certs(other)
    r2 = c.add_replica(name="r2", extra_config=POLICIES + [f"replica_ca {other}/ca.crt"]
                       + http_tls_lines(c.pki, "r1"))
    r2.start()
    wait_for(lambda: "TLS handshake failed" in r2.log(), timeout=15, what="TLS refused")
    st = r2.replica()
    assert st["state"] != "streaming" and st["position"] == 0, json.dumps(st)


def test_sighup_reloads_replica_ca(cluster_factory, tmp_path):
    """SIGHUP reads replica_ca (and replica_cert/key) again, as it does
    http_tls: a replica whose CA file was wrong streams once the file is
    fixed and the replica signalled, without a restart (before, only a
    restart read it)."""
    import os
    import shutil
    import signal
    c = secure_cluster(cluster_factory, tmp_path, n=1, extra_config=POLICIES)
    c.start()
    c.wait_leader()
    c.wait_ready()
    other = str(tmp_path / "other-pki")
    certs(other)
    ca = str(tmp_path / "replica-ca.crt")
    shutil.copy(f"{other}/ca.crt", ca)  # the wrong CA
    certs(c.pki, "r1", ca=False)  # the replica's own https certificate
    r = c.add_replica(name="r1", extra_config=POLICIES + [f"replica_ca {ca}"]
                      + http_tls_lines(c.pki, "r1"))
    r.start()
    wait_for(lambda: "TLS handshake failed" in r.log(), timeout=15, what="TLS refused")
    shutil.copy(f"{c.pki}/ca.crt", ca + ".tmp")
    os.rename(ca + ".tmp", ca)
    os.kill(r.proc.pid, signal.SIGHUP)
    wait_for(lambda: "SIGHUP: certificates reloaded" in r.log(), timeout=10,
             what="the reload")  # http_tls and replica_ca together
    r.wait_state("streaming", timeout=20)
    # a CA file that does not load keeps the one in use
    with open(ca, "w") as f:
        f.write("not a certificate\n")
    os.kill(r.proc.pid, signal.SIGHUP)
    wait_for(lambda: "replica_ca / replica_cert not reloaded" in r.log(), timeout=10,
             what="the refused reload")
    assert r.alive()
