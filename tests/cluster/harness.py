"""Cluster test harness: N jinn nodes on loopback with fault injection.

Every node's raft traffic goes through a fault proxy: peers dial a node at
its *advertised* address (a proxy port) and the proxy relays to the node's
real cluster_listen port. The proxy reads libraft's connection handshake to
learn which node dialled, so it can cut the link between any two nodes in
one or both directions. Processes can be killed (-9), paused (SIGSTOP) and
resumed (SIGCONT). Tests never sleep to wait for state: they poll with a
deadline (wait_for).
"""
import json
import os
import shutil
import signal
import socket
import struct
import subprocess
import threading
import time
import urllib.error
import urllib.request

JINN = os.environ.get("JINN_BIN") or os.path.join(
    os.path.dirname(__file__), "..", "..", "build", "test", "jinn")


_used_ports = set()
_port_lock = threading.Lock()


# Ports the harness gives nodes: [lo, lo + span). JINN_TEST_PORTS=LO-HI gives
# a second run on the same machine its own range (two runs drawing from one
# range can each find a port free and both take it).
_PORTS = tuple(int(x) for x in os.environ.get("JINN_TEST_PORTS", "20000-32000").split("-"))
_PORT_LO, _PORT_SPAN = _PORTS[0], _PORTS[1] - _PORTS[0]


def free_port():
    """A free port below Linux's ephemeral range (32768+), so that outgoing
    connections can never take a port a node is about to listen on."""
    with _port_lock:
        base = _PORT_LO + (os.getpid() * 7919) % _PORT_SPAN
        for i in range(_PORT_SPAN):
            port = _PORT_LO + (base - _PORT_LO + i * 13) % _PORT_SPAN
            if port in _used_ports:
                continue
            with socket.socket() as s:
                try:
                    s.bind(("127.0.0.1", port))
                except OSError:
                    continue
            _used_ports.add(port)
            return port
    raise RuntimeError("no free port")


def wait_for(predicate, timeout=10.0, interval=0.02, what="condition"):
    """Polls predicate until it returns a truthy value or the deadline passes."""
    deadline = time.monotonic() + timeout
    last_error = None
    while time.monotonic() < deadline:
        try:
            value = predicate()
            if value:
                return value
        except Exception as e:  # a node may be down while we poll
            last_error = e
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}"
                         + (f" (last error: {last_error})" if last_error else ""))


def http(url, method="GET", body=None, headers=None, timeout=5.0, context=None):
    """Returns (status, headers, body bytes); never raises on HTTP errors.
    context: an ssl.SSLContext for https:// URLs."""
    req = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=timeout, context=context) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


class FaultProxy:
    """Relays raft connections to one node; drops chosen source nodes."""

    def __init__(self, cluster, name, listen_port, target_port):
        self.cluster = cluster
        self.name = name
        self.target = ("127.0.0.1", target_port)
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", listen_port))
        self.sock.listen(64)
        self.sock.settimeout(0.2)
        self.links = []  # (source name, client socket, upstream socket)
        self.lock = threading.Lock()
        self.stopped = False
        self.thread = threading.Thread(target=self._accept_loop, daemon=True)
        self.thread.start()

    def _accept_loop(self):
        while not self.stopped:
            try:
                client, _ = self.sock.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    @staticmethod
    def _read_exact(sock, n):
        data = b""
        while len(data) < n:
            chunk = sock.recv(n - len(data))
            if not chunk:
                raise ConnectionError("closed during handshake")
            data += chunk
        return data

    def _serve(self, client):
        try:
            client.settimeout(5)
            # libraft's handshake: u64 protocol, u64 server id, u64 address
            # length, then the dialling server's address, NUL-padded.
            if self.cluster.opaque_raft:  # TLS: relayed unread, never cut
                head, addr, source = b"", b"", None
            else:
                head = self._read_exact(client, 24)
                _, _, addr_len = struct.unpack("<QQQ", head)
                if addr_len > 4096:
                    raise ConnectionError("bad handshake")
                addr = self._read_exact(client, addr_len)
                source = self.cluster.name_for_raft_address(addr.split(b"\0")[0].decode())
            if self.cluster.is_cut(source, self.name):
                client.close()
                return
            upstream = socket.create_connection(self.target, timeout=5)
            upstream.sendall(head + addr)
            client.settimeout(None)
            upstream.settimeout(None)
        except (OSError, ConnectionError):
            client.close()
            return
        with self.lock:
            self.links.append((source, client, upstream))
        for a, b in ((client, upstream), (upstream, client)):
            threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(src, dst):
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                dst.sendall(data)
        except OSError:
            pass
        for s in (src, dst):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def drop_from(self, source):
        """Closes the live connections that `source` opened to this node."""
        with self.lock:
            keep = []
            for link in self.links:
                if link[0] == source:
                    for s in link[1:]:
                        try:
                            s.shutdown(socket.SHUT_RDWR)
                        except OSError:
                            pass
                        s.close()
                else:
                    keep.append(link)
            self.links = keep

    def stop(self):
        self.stopped = True
        self.sock.close()
        for link in self.links:
            for s in link[1:]:
                try:
                    s.close()
                except OSError:
                    pass


class Node:
    def __init__(self, cluster, name, index):
        self.cluster = cluster
        self.name = name
        self.index = index
        self.http_port = free_port()
        self.raft_port = free_port()
        self.proxy_port = free_port()
        self.data_dir = os.path.join(cluster.dir, name, "data")
        self.config_path = os.path.join(cluster.dir, name, "jinn.conf")
        self.log_path = os.path.join(cluster.dir, name, "jinn.log")
        self.proc = None
        self.paused = False
        self.env = {}  # extra environment (test-only hooks), applied at start
        self.rlimit_nofile = None  # (soft, hard) for the process, or None
        self.started_once = False

    @property
    def url(self):
        scheme = "https" if self.cluster.https_context is not None else "http"
        return f"{scheme}://127.0.0.1:{self.http_port}"

    @property
    def advertised(self):
        return f"127.0.0.1:{self.proxy_port}"

    def write_config(self):
        c = self.cluster
        peers = " ".join(f"{n.name}={n.advertised}" for n in c.nodes)
        extra = "".join(f"    {line}\n" for line in c.extra_config)
        if c.node_config is not None:  # per-node lines (certificates)
            extra += "".join(f"    {line}\n" for line in c.node_config(self))
        os.makedirs(os.path.dirname(self.config_path), exist_ok=True)
        with open(self.config_path, "w") as f:
            f.write("{\n"
                    f"    server_name      {self.name}\n"
                    f"    data_dir         {self.data_dir}\n"
                    f"    http_listen      127.0.0.1:{self.http_port}\n"
                    f"    cluster_name     test\n"
                    f"    cluster_listen   127.0.0.1:{self.raft_port}\n"
                    f"    cluster_peers    {peers}\n"
                    f"    cluster_replicas {c.replicas}\n"
                    f"{extra}"
                    "}\n")

    def start(self, bootstrap=None):
        """Starts jinn. bootstrap (default: only on the node's first start)
        passes --bootstrap, which founds a new cluster from cluster_peers."""
        assert self.proc is None or self.proc.poll() is not None
        if bootstrap is None:
            bootstrap = not self.started_once
        self.started_once = True
        self.write_config()
        log = open(self.log_path, "a")
        limit = self.rlimit_nofile

        def preexec():
            if limit is not None:
                import resource
                resource.setrlimit(resource.RLIMIT_NOFILE, limit)

        args = [JINN, "run", "-c", self.config_path] + (["--bootstrap"] if bootstrap else [])
        self.proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL,
                                     preexec_fn=preexec if limit is not None else None,
                                     env={**os.environ, **self.env})
        log.close()
        self.paused = False

    def wipe(self):
        """Deletes the data_dir (the node must be stopped)."""
        assert not self.alive()
        shutil.rmtree(self.data_dir, ignore_errors=True)

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def kill(self):
        """kill -9: no shutdown, no flush beyond what jinn already fsynced."""
        if self.alive():
            if self.paused:
                self.proc.send_signal(signal.SIGCONT)
            self.proc.kill()
            self.proc.wait(timeout=10)
        self.paused = False

    def stop(self, timeout=20):
        """SIGTERM and wait; returns the exit code."""
        if not self.alive():
            return self.proc.returncode if self.proc else None
        if self.paused:
            self.resume()
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=timeout)

    def pause(self):
        self.proc.send_signal(signal.SIGSTOP)
        self.paused = True

    def resume(self):
        self.proc.send_signal(signal.SIGCONT)
        self.paused = False

    def status(self, timeout=2.0):
        code, _, body = http(self.url + "/v1/status", timeout=timeout,
                             headers=self.cluster.auth_headers,
                             context=self.cluster.https_context)
        assert code == 200, body
        return json.loads(body)

    def request(self, path, method="GET", body=None, headers=None, timeout=10.0):
        return http(self.url + path, method, body, headers, timeout, self.cluster.https_context)

    def log(self):
        try:
            with open(self.log_path) as f:
                return f.read()
        except OSError:
            return ""


class Cluster:
    def __init__(self, tmpdir, n=3, replicas=None, extra_config=()):
        self.dir = str(tmpdir)
        self.replicas = replicas or n
        self.extra_config = list(extra_config)
        self.node_config = None  # node -> extra config lines for it
        self.auth_headers = {}  # sent by status() (tokens on: a Bearer token)
        self.opaque_raft = False  # raft is TLS: proxies relay without reading
        self.https_context = None  # an ssl.SSLContext: the nodes serve https (http_tls)
        self.nodes = [Node(self, f"n{i + 1}", i) for i in range(n)]
        self.cuts = set()  # (from, to): traffic from `from` to `to` is dropped
        self.cut_lock = threading.Lock()
        self.proxies = {n.name: FaultProxy(self, n.name, n.proxy_port, n.raft_port)
                        for n in self.nodes}

    def __getitem__(self, name):
        return next(n for n in self.nodes if n.name == name)

    def add_node(self, name=None):
        """A node that is not in the bootstrap configuration (start it with
        bootstrap=False and add it with `jinn members add`)."""
        n = Node(self, name or f"n{len(self.nodes) + 1}", len(self.nodes))
        self.nodes.append(n)
        self.proxies[n.name] = FaultProxy(self, n.name, n.proxy_port, n.raft_port)
        return n

    def add_replica(self, name=None, sources=None, extra_config=()):
        """An edge replica (`jinn replica`) streaming from `sources` (nodes,
        in order; default: every node). Not started."""
        self.edge = getattr(self, "edge", [])
        r = Replica(self, name or f"r{len(self.edge) + 1}", sources, extra_config)
        self.edge.append(r)
        return r

    def name_for_raft_address(self, address):
        for n in self.nodes:
            if n.advertised == address:
                return n.name
        return None

    def start(self):
        for n in self.nodes:
            n.start()
        return self

    def close(self):
        for r in getattr(self, "edge", []):
            r.kill()
        for n in self.nodes:
            n.kill()
        for p in self.proxies.values():
            p.stop()

    # ---- faults ------------------------------------------------------------

    def is_cut(self, source, dest):
        with self.cut_lock:
            return (source, dest) in self.cuts

    def cut(self, a, b, both_ways=True):
        """Drops raft traffic a -> b (and b -> a unless both_ways is False)."""
        pairs = [(a, b), (b, a)] if both_ways else [(a, b)]
        with self.cut_lock:
            self.cuts.update(pairs)
        for src, dst in pairs:
            self.proxies[dst].drop_from(src)

    def isolate(self, name):
        for other in self.nodes:
            if other.name != name:
                self.cut(name, other.name)

    def heal(self):
        with self.cut_lock:
            self.cuts.clear()

    # ---- observations ------------------------------------------------------

    def live(self):
        return [n for n in self.nodes if n.alive() and not n.paused]

    def leader(self, among=None):
        """The node that says it leads, if the others that answer agree."""
        nodes = among if among is not None else self.live()
        leaders = []
        for n in nodes:
            try:
                st = n.status(timeout=1.0)
            except Exception:
                continue
            if st["role"] == "leader":
                leaders.append(n)
        return leaders[0] if len(leaders) == 1 else None

    def wait_leader(self, among=None, timeout=15.0):
        return wait_for(lambda: self.leader(among), timeout, what="a leader")

    def wait_ready(self, nodes=None, timeout=20.0):
        for n in nodes or self.live():
            wait_for(lambda: n.request("/readyz", timeout=1.0)[0] == 200, timeout,
                     what=f"{n.name} ready")


# ---- the loop budget ------------------------------------------------------

def loop_lateness_buckets(node, name="jinn_loop_lateness_ms"):
    """A loop monitor histogram from /metrics: {bound_ms: cumulative count}
    (bound float('inf') for +Inf). jinn_loop_lateness_ms: stalls as clients
    see them; jinn_loop_busy_ms: the part spent computing on the loop."""
    code, _, body = http(node.url + "/metrics", timeout=10)
    assert code == 200
    out = {}
    for line in body.decode().splitlines():
        if line.startswith(name + "_bucket{le=\""):
            le = line.split('"')[1]
            out[float("inf") if le == "+Inf" else float(le)] = int(line.split(" ")[1])
    assert out, f"no {name} histogram in /metrics"
    return out


def loop_stall_max_ms(node):
    """Longest loop stall since the node started (from /v1/status)."""
    return node.status(timeout=10)["loop_stall_max_ms"]


class loop_budget:
    """with loop_budget(node, 100): ...  fails if, during the block, the
    node's event loop was kept busy longer than max_ms at a stretch (rounded
    up to the next histogram bound: 5, 10, 20, 50, 100, 250, 1000, 5000).
    It counts the loop thread's CPU time (jinn_loop_busy_ms), so a loaded
    test machine that does not schedule the node does not fail it;
    wall=True counts wall-clock stalls instead. The documented budget is
    20 ms; tests on the sanitizer build assert 100 ms."""

    def __init__(self, node, max_ms=100, wall=False):
        self.node = node
        self.max_ms = max_ms
        self.name = "jinn_loop_lateness_ms" if wall else "jinn_loop_busy_ms"

    def _over(self):
        b = loop_lateness_buckets(self.node, self.name)
        bound = min(k for k in b if k >= self.max_ms)
        return b[float("inf")] - b[bound]

    def __enter__(self):
        self.before = self._over()
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is None:
            after = self._over()
            assert after == self.before, (
                f"{after - self.before} loop stalls over {self.max_ms} ms "
                f"(max since start: {loop_stall_max_ms(self.node)} ms)")
        return False


# ---- edge replicas (`jinn replica`, docs/replica.md) ------------------------

class Replica:
    """A `jinn replica -c FILE` process: its own data_dir and HTTP port,
    streaming from cluster nodes over ws:// (wss:// when the cluster serves
    https). Same process controls as Node."""

    def __init__(self, cluster, name, sources=None, extra_config=()):
        self.cluster = cluster
        self.name = name
        self.sources = list(sources) if sources is not None else None
        self.extra_config = list(extra_config)
        self.http_port = free_port()
        self.data_dir = os.path.join(cluster.dir, name, "data")
        self.config_path = os.path.join(cluster.dir, name, "jinn.conf")
        self.log_path = os.path.join(cluster.dir, name, "jinn.log")
        self.proc = None
        self.paused = False
        self.env = {}

    @property
    def url(self):
        scheme = "https" if self.cluster.https_context is not None else "http"
        return f"{scheme}://127.0.0.1:{self.http_port}"

    def stream_urls(self):
        scheme = "wss" if self.cluster.https_context is not None else "ws"
        nodes = self.sources if self.sources is not None else self.cluster.nodes
        return [f"{scheme}://127.0.0.1:{n.http_port}" for n in nodes]

    def write_config(self):
        extra = "".join(f"    {line}\n" for line in self.extra_config)
        os.makedirs(os.path.dirname(self.config_path), exist_ok=True)
        with open(self.config_path, "w") as f:
            f.write("{\n"
                    f"    server_name  {self.name}\n"
                    f"    data_dir     {self.data_dir}\n"
                    f"    http_listen  127.0.0.1:{self.http_port}\n"
                    f"    replica_of   {' '.join(self.stream_urls())}\n"
                    f"{extra}"
                    "}\n")

    def start(self):
        assert self.proc is None or self.proc.poll() is not None
        self.write_config()
        log = open(self.log_path, "a")
        self.proc = subprocess.Popen([JINN, "replica", "-c", self.config_path], stdout=log,
                                     stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                     env={**os.environ, **self.env})
        log.close()
        self.paused = False
        return self

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def kill(self):
        if self.alive():
            if self.paused:
                self.proc.send_signal(signal.SIGCONT)
            self.proc.kill()
            self.proc.wait(timeout=10)
        self.paused = False

    def stop(self, timeout=20):
        if not self.alive():
            return self.proc.returncode if self.proc else None
        if self.paused:
            self.resume()
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=timeout)

    def pause(self):
        self.proc.send_signal(signal.SIGSTOP)
        self.paused = True

    def resume(self):
        self.proc.send_signal(signal.SIGCONT)
        self.paused = False

    def status(self, timeout=2.0):
        code, _, body = http(self.url + "/v1/status", timeout=timeout,
                             headers=self.cluster.auth_headers,
                             context=self.cluster.https_context)
        assert code == 200, body
        return json.loads(body)

    def replica(self, timeout=2.0):
        """The status's "replica" object: state, source, position, lag..."""
        return self.status(timeout)["replica"]

    def request(self, path, method="GET", body=None, headers=None, timeout=10.0):
        return http(self.url + path, method, body, headers, timeout, self.cluster.https_context)

    def wait_state(self, state, timeout=20.0):
        return wait_for(lambda: self.replica(timeout=1.0)["state"] == state, timeout,
                        what=f"{self.name} {state}")

    def wait_position(self, index, timeout=20.0):
        """Until the replica applied index (its position is at least it)."""
        return wait_for(lambda: self.replica(timeout=1.0)["position"] >= index, timeout,
                        what=f"{self.name} at position {index}")

    def log(self):
        try:
            with open(self.log_path) as f:
                return f.read()
        except OSError:
            return ""
