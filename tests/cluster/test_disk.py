"""Full and failing disks: the start check, the min_free_space reserve
(507 no_space, status / readyz / metrics, resume once space is freed) and
corrupt log files. Each data_dir under test lives on its own small tmpfs
mounted here; the tests skip (saying why) only when mounting is impossible."""
import json
import os
import subprocess

import pytest

from harness import JINN, wait_for

MIB = 1 << 20


def mount_tmpfs(path, size_mib):
    os.makedirs(path, exist_ok=True)
    try:
        out = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_mib}m", "tmpfs", path],
                             capture_output=True, text=True, timeout=10)
    except OSError as e:
        pytest.skip(f"cannot mount a tmpfs here: {e}")
    if out.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {out.stderr.strip()}")


def umount(path):
    subprocess.run(["umount", "-l", path], capture_output=True, timeout=10)


@pytest.fixture
def tmpfs(tmp_path):
    """mount(name, size_mib) -> path of a fresh tmpfs; unmounted at the end."""
    mounted = []

    def mount(name, size_mib):
        path = str(tmp_path / name)
        mount_tmpfs(path, size_mib)
        mounted.append(path)
        return path

    yield mount
    for path in mounted:
        umount(path)


def put_on_disk(node, disk):
    node.data_dir = os.path.join(disk, "data")


def segments_ready(disk):
    """libraft preallocates its open segments (one in use, two ready) in the
    background: wait for them before measuring free space."""
    data = os.path.join(disk, "data")
    wait_for(lambda: len([f for f in os.listdir(data) if f.startswith("open-")
                          and os.stat(os.path.join(data, f)).st_blocks * 512 >= 8 * MIB]) >= 3,
             what="libraft's three open segments")


def fill(disk, leave_mib):
    """Fills the file system holding disk until leave_mib MiB are free."""
    segments_ready(disk)
    vfs = os.statvfs(disk)
    free = vfs.f_bavail * vfs.f_frsize
    size = free - leave_mib * MIB
    assert size > 0, f"only {free} bytes free"
    path = os.path.join(disk, "filler")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        os.posix_fallocate(fd, 0, size)
    finally:
        os.close(fd)
    return path


def metric(node, name):
    code, _, body = node.request("/metrics")
    assert code == 200
    for line in body.decode().splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"{name} not in /metrics")


def test_start_refused_when_disk_cannot_hold_raft_segments(cluster_factory, tmpfs):
    """A 3 MiB disk crashed libraft (SIGSEGV preallocating a segment) on the
    first write; now the node refuses to start, exit 2, and says why."""
    c = cluster_factory(1)
    n = c.nodes[0]
    disk = tmpfs("small", 3)
    put_on_disk(n, disk)
    n.start()
    assert n.proc.wait(timeout=20) == 2
    log = n.log()
    assert "needs at least 25 MiB" in log and n.data_dir in log, log
    assert "AddressSanitizer" not in log


def test_single_node_full_disk_refuses_writes_serves_reads_and_resumes(cluster_factory,
                                                                       tmpfs):
    c = cluster_factory(1, extra_config=["min_free_space 16MiB"])
    n = c.nodes[0]
    disk = tmpfs("d1", 64)
    put_on_disk(n, disk)
    c.start()
    c.wait_leader()
    c.wait_ready()
    assert n.request("/v1/kv/ns/k", "PUT", b"before")[0] == 200
    assert n.request("/v1/queues/jobs", "POST", b"job")[0] == 201
    st = n.status()
    assert st["disk"] == "ok" and st["disk_free_bytes"] > 16 * MIB
    assert metric(n, "jinn_disk_full") == 0

    filler = fill(disk, 8)
    wait_for(lambda: n.status()["disk"] == "full", what="status says disk full")
    code, _, body = n.request("/v1/kv/ns/k", "PUT", b"during")
    assert code == 507, body
    assert json.loads(body)["error"] == "no_space"
    for path, body in (("/v1/queues/jobs", b"{}"), ("/v1/locks/l", b'{"owner": "me"}')):
        code, _, body = n.request(path, "POST", body)
        assert code == 507 and json.loads(body)["error"] == "no_space", (path, body)
    # Reads still work and see the last committed value.
    # A fetch leases by a command: refused too, and says why.
    code, _, body = n.request("/v1/queues/jobs/fetch?worker=w", "POST")
    assert code == 507 and json.loads(body)["error"] == "no_space", body
    code, _, body = n.request("/v1/kv/ns/k")
    assert code == 200 and b"before" in body, body
    code, _, body = n.request("/readyz")
    assert code == 503 and json.loads(body)["error"] == "no_space", body
    assert metric(n, "jinn_disk_full") == 1
    assert metric(n, "jinn_disk_free_bytes") < 16 * MIB
    out = subprocess.run([JINN, "status", "--addr", n.url], capture_output=True, text=True,
                         timeout=10)
    assert "DISK FULL" in out.stdout, out.stdout
    before = n.status()["commit_index"]
    assert n.request("/v1/kv/ns/k2", "PUT", b"x")[0] == 507
    assert n.status()["commit_index"] == before  # nothing entered the log
    assert n.log().count("disk full: data_dir") == 1, n.log()

    # A clean stop while full, and a start: libraft gives the open segments'
    # space back, so the node starts (below the reserve) and serves reads.
    assert n.stop() == 0
    mark = len(n.log())
    n.start()
    c.wait_leader()
    wait_for(lambda: n.status()["disk"] == "full", what="full after restart")
    code, _, body = n.request("/v1/kv/ns/k")
    assert code == 200 and b"before" in body, body
    assert n.request("/v1/kv/ns/k", "PUT", b"x")[0] == 507

    os.unlink(filler)
    wait_for(lambda: n.request("/v1/kv/ns/k", "PUT", b"after")[0] == 200, timeout=10,
             what="writes resume once space is freed")
    assert n.status()["disk"] == "ok"
    assert n.request("/readyz")[0] == 200
    assert metric(n, "jinn_disk_full") == 0
    code, _, body = n.request("/v1/kv/ns/k")
    assert code == 200 and b"after" in body
    log = n.log()[mark:]
    assert log.count("disk full: data_dir") == 1, log
    assert log.count("disk space recovered") == 1, log


def test_full_disk_on_one_of_three_nodes(cluster_factory, tmpfs):
    """The full node refuses to lead (hands leadership over), says not ready,
    and writes through any node keep working via the healthy majority."""
    c = cluster_factory(3, extra_config=["min_free_space 16MiB"])
    n3 = c["n3"]
    disk = tmpfs("d3", 64)
    put_on_disk(n3, disk)
    c.start()
    leader = c.wait_leader()
    # Make the node whose disk will fill the leader.
    if leader is not n3:
        code, _, body = leader.request("/v1/cluster/leader/transfer?to=n3", "POST", b"")
        assert code == 200, body
    assert c.wait_leader() is n3
    c.wait_ready()

    filler = fill(disk, 8)
    wait_for(lambda: n3.status()["disk"] == "full", what="n3 says disk full")
    assert n3.request("/readyz")[0] == 503
    assert metric(n3, "jinn_disk_full") == 1
    # n3 never stays leader with a full disk.
    wait_for(lambda: (c.leader() is not None and c.leader() is not n3), timeout=20,
             what="a leader other than the full node")
    for i, n in enumerate(c.nodes):
        wait_for(lambda: n.request(f"/v1/kv/ns/w{i}", "PUT", b"v")[0] == 200, timeout=10,
                 what=f"a write through {n.name}")
    for n in c.nodes[:2]:
        assert n.status()["disk"] == "ok"
        # A follower learns the new term's commit index with the next
        # heartbeat: poll.
        wait_for(lambda: n.request("/readyz")[0] == 200, what=f"{n.name} ready")

    os.unlink(filler)
    wait_for(lambda: n3.status()["disk"] == "ok", what="n3 disk ok again")
    wait_for(lambda: n3.request("/readyz")[0] == 200, what="n3 ready again")
    log = n3.log()
    assert log.count("disk full: data_dir") == 1, log
    assert "disk full: handing leadership to another voter" in log, log


def flip_byte(path, offset):
    with open(path, "r+b") as f:
        f.seek(offset)
        b = f.read(1)
        f.seek(offset)
        f.write(bytes([b[0] ^ 0x10]))


def closed_segments(data_dir):
    return sorted(f for f in os.listdir(data_dir) if f[:1].isdigit() and "-" in f)


def newest_snapshot(data_dir):
    snaps = [f for f in os.listdir(data_dir)
             if f.startswith("snapshot-") and not f.endswith(".meta")]
    return max(snaps, key=lambda f: tuple(int(x) for x in f.split("-")[1:]))


@pytest.mark.parametrize("damage", ["segment_flip", "segment_truncate", "snapshot_flip",
                                    "snapshot_truncate"])
def test_corrupt_log_or_snapshot_refuses_to_start_naming_the_file(cluster_factory, damage):
    """A damaged closed segment or snapshot stops the node at start (exit 2)
    with a message naming the file. libraft's auto-recovery would have
    deleted a damaged last segment, committed entries and all; a truncated
    compressed snapshot would have hung libraft's decompressor."""
    c = cluster_factory(1, extra_config=["snapshot_threshold 16", "snapshot_trailing 4"])
    n = c.nodes[0]
    c.start()
    c.wait_leader()
    c.wait_ready()
    for i in range(40):
        assert n.request(f"/v1/kv/ns/k{i}", "PUT", b"v" * 40)[0] == 200
    assert n.stop() == 0  # a clean stop closes the open segment
    segs = closed_segments(n.data_dir)
    snap = newest_snapshot(n.data_dir)
    assert segs and snap
    if damage.startswith("segment"):
        name = segs[-1]
    else:
        name = snap
    path = os.path.join(n.data_dir, name)
    size = os.path.getsize(path)
    if damage.endswith("flip"):
        flip_byte(path, size // 2)
    else:
        os.truncate(path, size // 2)
    before = len(n.log())
    n.start()
    assert n.proc.wait(timeout=30) == 2
    log = n.log()[before:]
    assert name in log, log
    assert "damaged" in log or "truncated" in log, log


def test_forty_mib_disk_with_default_reserve(cluster_factory, tmpfs):
    """The issue's case: on a 40 MiB disk writes got outcome_unknown while
    status said leader with quorum and /readyz 200. With the default 64 MiB
    reserve such a disk is full from the start: said so, writes 507."""
    c = cluster_factory(1)
    n = c.nodes[0]
    disk = tmpfs("d40", 40)
    put_on_disk(n, disk)
    c.start()
    c.wait_leader()
    wait_for(lambda: n.status()["disk"] == "full", what="disk full")
    # The leader's term-start barrier still commits (the reserve is for
    # raft's own writes): caught up, but not ready for writes.
    wait_for(lambda: n.status()["ready"], what="leader caught up")
    code, _, body = n.request("/v1/kv/ns/k", "PUT", b"v")
    assert code == 507 and json.loads(body)["error"] == "no_space", body
    code, _, body = n.request("/readyz")
    assert code == 503 and json.loads(body)["error"] == "no_space", body
    assert n.status()["role"] == "leader" and n.alive()
    assert "min_free_space 67108864" in n.log()
