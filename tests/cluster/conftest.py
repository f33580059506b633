import os
import shutil
import sys

import pytest

sys.path.insert(0, os.path.dirname(__file__))
from harness import Cluster  # noqa: E402


SANITIZER_MARKS = ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "runtime error:")


@pytest.fixture
def cluster_factory(tmp_path, request):
    made = []
    request.node.jinn_clusters = made  # for the report of a failure

    def make(n=3, **kw):
        c = Cluster(tmp_path / f"c{len(made)}", n=n, **kw)
        made.append(c)
        return c

    yield make
    failed = any(getattr(request.node, "rep_" + when).failed
                 for when in ("setup", "call") if hasattr(request.node, "rep_" + when))
    crashed = []
    for c in made:
        c.close()
        for node in c.nodes + getattr(c, "edge", []):  # edge: `jinn replica` processes
            log = node.log()
            # A node that crashed or tripped a sanitizer fails the test even
            # when the test's own checks passed.
            if any(s in log for s in SANITIZER_MARKS):
                crashed.append(node.name)
            if crashed and not failed:  # a failed test's report has the logs already
                sys.stderr.write(f"\n----- {node.name} log -----\n{log[-6000:]}")
    assert not crashed, f"sanitizer report in the log of {crashed}"
    if not failed:
        # A passing test's data dirs go now: libraft preallocates 24 MiB of
        # log segments per node, and pytest keeps three runs' directories
        # (a whole run left 18 GB; a later run then found the disk full).
        for c in made:
            shutil.rmtree(c.dir, ignore_errors=True)


@pytest.hookimpl(tryfirst=True, hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    setattr(item, "rep_" + rep.when, rep)
    if rep.failed and rep.when in ("setup", "call"):
        # The nodes' logs go with the failure's report (pytest shows its
        # sections; a failure in a fixture's setup included, whose teardown
        # output pytest does not show), with each node's exit code: a node
        # that died shows why.
        for c in getattr(item, "jinn_clusters", []):
            for node in c.nodes + getattr(c, "edge", []):
                proc = getattr(node, "proc", None)
                rc = proc.poll() if proc is not None else None
                rep.sections.append((f"{node.name} log (exit code {rc})", node.log()[-6000:]))
