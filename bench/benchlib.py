"""Shared by bench/run and bench/compare: a jinn cluster on loopback."""
import json
import os
import signal
import socket
import ssl
import subprocess
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
JINN = os.path.join(ROOT, "build", "jinn")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


HTTPS_CONTEXT = None  # set by Cluster(https_ca=...): the nodes serve https


def get_json(url, timeout=2):
    with urllib.request.urlopen(url, timeout=timeout, context=HTTPS_CONTEXT) as r:
        return json.loads(r.read())


def metrics(url):
    with urllib.request.urlopen(url + "/metrics", timeout=2) as r:
        out = {}
        for line in r.read().decode().splitlines():
            if line and not line.startswith("#") and "{" not in line:
                k, v = line.split(" ")
                out[k] = float(v)
        return out


class Cluster:
    def __init__(self, workdir, n=3, node_extra=None, https_ca=None):
        global HTTPS_CONTEXT
        self.dir = workdir
        HTTPS_CONTEXT = None
        if https_ca is not None:
            HTTPS_CONTEXT = ssl.create_default_context(cafile=https_ca)
            HTTPS_CONTEXT.check_hostname = False
        self.http = [free_port() for _ in range(n)]
        raft = [free_port() for _ in range(n)]
        peers = " ".join(f"n{i + 1}=127.0.0.1:{raft[i]}" for i in range(n))
        self.procs = []
        for i in range(n):
            conf = os.path.join(workdir, f"n{i + 1}.conf")
            with open(conf, "w") as f:
                f.write("{\n"
                        f"  server_name n{i + 1}\n"
                        f"  data_dir {workdir}/n{i + 1}\n"
                        f"  http_listen 127.0.0.1:{self.http[i]}\n"
                        f"  cluster_listen 127.0.0.1:{raft[i]}\n"
                        f"  cluster_peers {peers}\n"
                        "  consensus {\n    bench { mode cp }\n"
                        "    cache { mode ap  stale_reads true }\n"
                        "    bsql { mode ap }\n  }\n"
                        + (node_extra(f"n{i + 1}") if node_extra else "") + "}\n")
            log = open(os.path.join(workdir, f"n{i + 1}.log"), "w")
            # A fresh cluster: the first start founds it (--bootstrap).
            self.procs.append(subprocess.Popen([JINN, "run", "-c", conf, "--bootstrap"],
                                               stdout=log, stderr=subprocess.STDOUT))
        scheme = "https" if https_ca is not None else "http"
        self.urls = [f"{scheme}://127.0.0.1:{p}" for p in self.http]

    def leader(self, timeout=20):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for u in self.urls:
                try:
                    st = get_json(u + "/v1/status")
                    if st["role"] == "leader" and st["ready"]:
                        ok = all(get_json(x + "/readyz").get("status") == "ready"
                                 for x in self.urls)
                        if ok:
                            return u
                except Exception:
                    pass
            time.sleep(0.05)
        raise RuntimeError("no leader")

    def stop(self):
        for p in self.procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in self.procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()


