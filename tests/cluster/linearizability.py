"""A Wing–Gong linearizability checker for single-register histories.

An operation is a dict with: kind ('read', 'write' or 'cas'), invoke and
complete times (complete None when the outcome is unknown: the operation may
take effect at any time after its invocation, or never), and
  read:  result = the value seen (None: absent)
  write: value = the value written
  cas:   expect = the value it required, value = the new value,
         ok = True (applied) or False (the register did not hold expect)
Every written value must be unique. The search tries, at each step, every
operation that may come next (one no completed operation precedes in real
time), memoising (register value, set of done operations); it returns True
when some total order explains every completed operation.
"""
import sys

INF = float("inf")


def _step(state, op):
    """Applies op to the register; returns (new state, consistent?)."""
    kind = op["kind"]
    if kind == "read":
        return state, op["result"] == state
    if kind == "write":
        return op["value"], True
    if kind == "cas":
        if op["ok"]:
            return (op["value"], True) if state == op["expect"] else (state, False)
        return state, state != op["expect"]
    raise ValueError(kind)


def check(history, initial=None):
    ops = []
    for op in history:
        if op["complete"] is None:
            if op["kind"] == "read" or (op["kind"] == "cas" and op.get("ok") is not True):
                continue  # an unknown read or failed check constrains nothing
            op = dict(op, complete=INF, optional=True)
        ops.append(op)
    ops.sort(key=lambda o: o["invoke"])
    n = len(ops)
    required = frozenset(i for i, o in enumerate(ops) if not o.get("optional"))
    sys.setrecursionlimit(max(10000, 4 * n + 100))
    seen = set()

    def search(state, done):
        if required <= done:
            return True
        key = (state, done)
        if key in seen:
            return False
        seen.add(key)
        # The earliest completion among pending ops bounds who may go next.
        horizon = min(ops[i]["complete"] for i in range(n) if i not in done)
        for i in range(n):
            if i in done or ops[i]["invoke"] > horizon:
                continue
            new_state, ok = _step(state, ops[i])
            if ok and search(new_state, done | {i}):
                return True
        return False

    return search(initial, frozenset())
