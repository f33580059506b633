import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(__file__))
from harness import Cluster  # noqa: E402


@pytest.fixture
def cluster_factory(tmp_path, request):
    made = []

    def make(n=3, **kw):
        c = Cluster(tmp_path / f"c{len(made)}", n=n, **kw)
        made.append(c)
        return c

    yield make
    failed = request.node.rep_call.failed if hasattr(request.node, "rep_call") else False
    for c in made:
        if failed:
            for node in c.nodes:
                sys.stderr.write(f"\n----- {node.name} log -----\n{node.log()[-6000:]}")
        c.close()


@pytest.hookimpl(tryfirst=True, hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    setattr(item, "rep_" + rep.when, rep)
