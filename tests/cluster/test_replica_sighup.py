"""SIGHUP on a wss:// replica reads its TLS files on a worker, never on
the event loop (A4 m2): a CA file over the limit (1 MiB) or a FIFO at the
CA path is refused without stalling /healthz, then a good file reloads;
SIGHUPs that arrive while a reload runs are coalesced.

Before: the files were read on the loop. A 2 MiB CA (copies of one
certificate: OpenSSL's duplicate check is quadratic) held the replica's
loop for seconds, and a FIFO hung it for good."""
import os
import shutil
import signal
import threading
import time

from harness import wait_for
from test_http_tls import http_tls_lines, secure_cluster
from test_mtls import certs

POLICIES = ["consensus {", "    app { mode ap  stale_reads true  max_staleness 1h }", "}"]

# The worst /healthz while a reload runs. Generous for a loaded 2-core
# machine and an ASan build; the old code took seconds (or forever).
STALL_BOUND_MS = 700


def start_replica(cluster_factory, tmp_path):
    c = secure_cluster(cluster_factory, tmp_path, n=1, extra_config=POLICIES)
    c.start()
    c.wait_leader()
    c.wait_ready()
    ca = str(tmp_path / "replica-ca.crt")
    shutil.copy(f"{c.pki}/ca.crt", ca)
    certs(c.pki, "r1", ca=False)
    r = c.add_replica(name="r1", extra_config=POLICIES + [f"replica_ca {ca}"]
                      + http_tls_lines(c.pki, "r1"))
    r.start()
    r.wait_state("streaming")
    return c, r, ca


class Poller:
    """/healthz every 10 ms on a thread: the worst answer time (a request
    that fails or times out counts as its whole wait)."""

    def __init__(self, r):
        self.r = r
        self.worst = 0.0
        self.stop = threading.Event()
        self.t = threading.Thread(target=self.run)
        self.t.start()

    def run(self):
        while not self.stop.is_set():
            t = time.time()
            try:
                code, _, _ = self.r.request("/healthz", timeout=5)
            except Exception:
                code = -1
            ms = (time.time() - t) * 1000
            self.worst = max(self.worst, ms if code == 200 else 5000)
            time.sleep(0.01)

    def end(self):
        self.stop.set()
        self.t.join(30)
        return self.worst


def write_big_ca(path, pem, size):
    with open(path + ".tmp", "w") as f:
        n = 0
        while n < size:
            f.write(pem)
            n += len(pem)
    os.rename(path + ".tmp", path)


def unblock_fifo(path):
    """Lets a reader blocked on the FIFO go (EOF), so the old code can
    stop at the end of the test."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_NONBLOCK)
        os.close(fd)
    except OSError:
        pass


def reloads(r, what):
    return sum(1 for line in r.log().splitlines() if what in line)


def test_sighup_refuses_a_ca_over_the_limit_and_a_fifo_without_stalling(
        cluster_factory, tmp_path):
    c, r, ca = start_replica(cluster_factory, tmp_path)
    pem = open(f"{c.pki}/ca.crt").read()

    # 2 MiB: over the limit, refused before OpenSSL reads it
    write_big_ca(ca, pem, 2 * 1024 * 1024)
    p = Poller(r)
    time.sleep(0.2)
    os.kill(r.proc.pid, signal.SIGHUP)
    wait_for(lambda: reloads(r, "SIGHUP: ") >= 1, timeout=60, what="the reload's end")
    time.sleep(0.3)
    worst = p.end()
    line = [x for x in r.log().splitlines() if "SIGHUP: " in x][-1]
    print(f"\n2 MiB CA: worst /healthz {worst:.0f} ms; {line[:220]}")
    assert worst < STALL_BOUND_MS, worst
    assert "over the limit of 1048576" in line, line
    assert r.replica()["state"] == "streaming"

    # a FIFO at the CA path: refused, never opened
    os.unlink(ca)
    os.mkfifo(ca)
    p = Poller(r)
    try:
        time.sleep(0.2)
        os.kill(r.proc.pid, signal.SIGHUP)
        wait_for(lambda: reloads(r, "SIGHUP: ") >= 2 or p.worst >= 5000, timeout=30,
                 what="the reload's end (FIFO)")
        time.sleep(0.3)
    finally:
        worst = p.end()
        unblock_fifo(ca)
    line = [x for x in r.log().splitlines() if "SIGHUP: " in x][-1]
    print(f"FIFO CA: worst /healthz {worst:.0f} ms; {line[:220]}")
    assert worst < STALL_BOUND_MS, worst
    assert "not a regular file" in line, line

    # the right CA again: reloaded, still streaming, writes relayed
    os.unlink(ca)
    shutil.copy(f"{c.pki}/ca.crt", ca)
    os.kill(r.proc.pid, signal.SIGHUP)
    wait_for(lambda: reloads(r, "SIGHUP: certificates reloaded") >= 1, timeout=30,
             what="the reload")
    assert r.replica()["state"] == "streaming"
    code, _, out = r.request("/v1/kv/app/after", "PUT", b"x", timeout=10)
    assert code == 200, out
    assert r.stop() == 0
    assert "AddressSanitizer" not in r.log() and "LeakSanitizer" not in r.log()


def test_sighups_during_a_slow_reload_are_coalesced(cluster_factory, tmp_path):
    """A CA just under the limit takes a while to load (on the worker):
    SIGHUPs meanwhile make one more reload after it, not one each, and the
    loop keeps answering."""
    c, r, ca = start_replica(cluster_factory, tmp_path)
    pem = open(f"{c.pki}/ca.crt").read()
    write_big_ca(ca, pem, 1024 * 1024 - len(pem))
    p = Poller(r)
    time.sleep(0.2)
    for _ in range(20):
        os.kill(r.proc.pid, signal.SIGHUP)
        time.sleep(0.02)
    # The first SIGHUP starts a reload (seconds of reading); the 19 others
    # arrive while it runs and make one more, which reads the files after
    # the last of them.
    wait_for(lambda: reloads(r, "SIGHUP: certificates reloaded") >= 2, timeout=60,
             what="two reloads")
    last = [x for x in r.log().splitlines() if "SIGHUP: certificates reloaded" in x][-1]
    read_ms = int(last.split("read in ")[1].split(" ms")[0])
    time.sleep(read_ms / 1000 + 1)  # no third one starts (none is pending)
    n = reloads(r, "SIGHUP: certificates reloaded")
    worst = p.end()
    lines = [x for x in r.log().splitlines() if "SIGHUP" in x]
    print(f"\n20 SIGHUPs, ~1 MiB CA: {n} reloads, worst /healthz {worst:.0f} ms; {lines[-1][:200]}")
    assert n == 2, lines
    assert not any("not reloaded" in x for x in lines), lines
    assert worst < STALL_BOUND_MS, worst
    assert r.replica()["state"] == "streaming"
    assert r.stop() == 0
    assert "AddressSanitizer" not in r.log() and "LeakSanitizer" not in r.log()
