"""The checker itself must accept linearizable histories and reject others."""
from linearizability import check


def op(kind, invoke, complete, **kw):
    return dict(kind=kind, invoke=invoke, complete=complete, **kw)


def test_sequential_history_is_linearizable():
    h = [op("write", 0, 1, value="a"), op("read", 2, 3, result="a"),
         op("cas", 4, 5, expect="a", value="b", ok=True), op("read", 6, 7, result="b")]
    assert check(h)


def test_stale_read_after_write_is_not():
    h = [op("write", 0, 1, value="a"), op("write", 2, 3, value="b"),
         op("read", 4, 5, result="a")]
    assert not check(h)


def test_concurrent_ops_may_order_either_way():
    h = [op("write", 0, 10, value="a"), op("read", 1, 2, result=None),
         op("read", 3, 4, result="a")]
    assert check(h)


def test_unknown_write_may_or_may_not_happen():
    h = [op("write", 0, None, value="a"), op("read", 5, 6, result=None),
         op("read", 7, 8, result="a")]
    assert check(h)
    h2 = [op("write", 0, None, value="a"), op("read", 5, 6, result="a"),
          op("read", 7, 8, result=None)]
    assert not check(h2)


def test_two_cas_cannot_both_win():
    h = [op("write", 0, 1, value="a"),
         op("cas", 2, 5, expect="a", value="b", ok=True),
         op("cas", 3, 6, expect="a", value="c", ok=True)]
    assert not check(h)


def test_failed_cas_needs_a_different_value():
    h = [op("write", 0, 1, value="a"), op("cas", 2, 3, expect="a", value="b", ok=False)]
    assert not check(h)
