"""A membership change (`jinn members remove` / `add`) on a leader whose log
writes fail at once (JINN_TEST_APPEND_FAULT_FILE). libraft 0.15 takes the
change's entry out of its log again but keeps the new configuration in
memory (for add/remove one whose server array it has freed): the leader
stops (exit code 3, a line that says why) instead of running on a
configuration that is in no log. The client's connection closes without an
answer (the outcome is unknown to it). Restarted without the fault, the
leader reloads its configuration from its log: every node holds the one
in its log (the change is absent, since it never reached a disk), and the
same change then goes through."""
import os
import subprocess

from harness import JINN, wait_for
from test_membership import joining, members

STOP_LINE = "raft could not log a membership change"


def config(node):
    """This node's raft configuration (its own view), or None if it does not answer."""
    try:
        return sorted((m["id"], m["role"]) for m in node.status()["members"])
    except Exception:
        return None


def start_with_fault_files(cluster_factory, tmp_path, n=3):
    c = cluster_factory(n)
    for node in c.nodes:
        node.env["JINN_TEST_APPEND_FAULT_FILE"] = str(tmp_path / f"disk-fails-{node.name}")
    c.start()
    leader = c.wait_leader()
    c.wait_ready()
    return c, leader


def change_stops_the_leader(leader, tmp_path, *args):
    """Runs `jinn members ARGS` against the leader while its disk fails;
    returns once the leader has stopped, with the fault file gone."""
    fault = str(tmp_path / f"disk-fails-{leader.name}")
    open(fault, "w").close()
    out = subprocess.run([JINN, "members", *args, "--addr", leader.url], capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 1, out.stdout  # no answer: the outcome is unknown
    assert "closed without an answer; the request may or may not have taken effect" in \
        out.stderr, out.stderr
    assert leader.proc.wait(timeout=30) == 3
    log = leader.log()
    assert log.count(STOP_LINE) == 1, log[-3000:]
    line = next(x for x in log.splitlines() if STOP_LINE in x)
    assert "no longer matches its log; stopping this node" in line, line
    os.unlink(fault)
    return out


def test_remove_whose_append_fails_stops_the_leader_and_the_log_decides(cluster_factory,
                                                                        tmp_path):
    c, leader = start_with_fault_files(cluster_factory, tmp_path)
    before = config(leader)
    assert len(before) == 3
    victim = next(n for n in c.nodes if n is not leader)
    victim_id = victim.status()["id"]

    change_stops_the_leader(leader, tmp_path, "remove", victim.name)

    leader.start()  # no fault file now
    wait_for(lambda: all(config(n) == before for n in c.nodes), timeout=30,
             what="every node holds the 3-member configuration of its log")
    # The same change goes through now, on every node. The restart may have
    # made the victim leader, which cannot remove itself: hand over first.
    if c.wait_leader() is victim:
        other = next(n for n in c.nodes if n is not victim)
        out = subprocess.run([JINN, "leader", "transfer", other.name, "--addr", victim.url],
                             capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stdout + out.stderr
        wait_for(lambda: c.wait_leader() is not victim, timeout=30,
                 what="leadership moved off the node to remove")
    members(c.wait_leader(), "remove", victim.name)
    rest = [n for n in c.nodes if n is not victim]
    wait_for(lambda: all(config(n) is not None and len(config(n)) == 2 and
                         victim_id not in {i for i, _ in config(n)} for n in rest),
             timeout=30, what="the removal reached both remaining nodes")


def test_add_whose_append_fails_stops_the_leader_and_the_log_decides(cluster_factory,
                                                                     tmp_path):
    c, leader = start_with_fault_files(cluster_factory, tmp_path)
    before = config(leader)
    n4 = c.add_node()
    n4.start(bootstrap=False)
    n4_id = wait_for(lambda: joining(n4), what="n4 waits to be added")["id"]
    three = c.nodes[:3]

    change_stops_the_leader(leader, tmp_path, "add", f"n4={n4.advertised}")

    leader.start()
    wait_for(lambda: all(config(n) == before for n in three), timeout=30,
             what="the three nodes hold the configuration of their log, without n4")
    assert joining(n4)
    members(c.wait_leader(), "add", f"n4={n4.advertised}")
    wait_for(lambda: all(config(n) is not None and
                         (n4_id, "voter") in config(n) and len(config(n)) == 4
                         for n in c.nodes),
             timeout=60, what="n4 is a voter on every node")
