#!/usr/bin/python3
"""Writes the seed inputs of the fuzz corpora (tests/fuzz/corpus/NAME/seed-*).

Run from the repository root after a format change; libFuzzer adds what it
finds next to these (make fuzz). Commands follow src/fsm/cmd.c: 12-byte
header, little-endian integers, byte strings as u32 length + bytes, zero
padding to a multiple of 8.

The snapshot_decode seeds (seed-XXXXXXXX) are real snapshots written by the
differential fuzzer: build it (make fuzz-build) and run
    mkdir -p /tmp/snaps && JINN_FUZZ_DUMP_SNAPSHOTS=/tmp/snaps \
        build/fuzz/fsm_diff tests/fuzz/corpus/fsm_diff/*
then copy a few of /tmp/snaps/* into tests/fuzz/corpus/snapshot_decode/."""
import os
import struct

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus")


def u8(v):
    return struct.pack("<B", v)


def u32(v):
    return struct.pack("<I", v)


def u64(v):
    return struct.pack("<Q", v)


def bs(b):
    if isinstance(b, str):
        b = b.encode()
    return u32(len(b)) + b


def cmd(t, body, time_ms=1000, version=1):
    b = b"J" + u8(version) + u8(t) + u8(0) + u64(time_ms) + body
    return b + b"\0" * (-len(b) % 8)


# (module (import "gojinn" "host_log" (func (param i32 i32 i32)))
#         (memory (export "memory") 1) (func (export "_start")))
HELLO_WASM = bytes.fromhex(
    "0061736d01000000010a0260037f7f7f0060000002130106676f6a696e6e08686f73745f6c6f6700"
    "00030201010503010001071302066d656d6f72790200065f737461727400010a040102000b")
FN_SETTINGS = ('{"route":"/hi","timeout_ms":5000,"memory_limit":67108864,"pool_size":2,'
               '"env":[],"args":[],"kv_read":[],"kv_write":[],"db":"","ns":"default"}')
FN_SETTINGS_JOBS = FN_SETTINGS[:-1] + ',"workers":4,"cron":"*/5 * * * *"}'


def q(t, queue="jobs", worker="", payload=b"", idem="", reason="", seq=0, delivery=0,
      count=0, nbytes=0, ms=0, max_deliver=0):
    return cmd(t, bs(queue) + bs(worker) + bs(payload) + bs(idem) + bs(reason) + u64(seq) +
               u64(delivery) + u64(count) + u64(nbytes) + u64(ms) + u64(max_deliver))


COMMANDS = {
    "noop": cmd(1, b""),
    "node_set": cmd(2, u64(1) + bs("n1") + bs("http://127.0.0.1:8080")),
    "kv_put": cmd(3, bs("ns") + bs("k") + u64(0) + u32(0) + u64(0) + bs("v")),
    "kv_put_ttl_fenced": cmd(3, bs("ns") + bs("k") + u64(0) + u32(3) + u64(1000) + bs("v") +
                             bs("L") + u64(5)),
    "kv_del": cmd(4, bs("ns") + bs("k") + u64(2) + u32(0)),
    "lock_acquire": cmd(5, bs("A") + bs("me") + u64(1000) + u64(10000)),
    "lock_refresh": cmd(6, bs("A") + u64(1) + u64(1000)),
    "lock_release": cmd(7, bs("A") + u64(1)),
    "q_publish": q(8, payload=b"hello", idem="i1", count=100, nbytes=1 << 20, ms=120000,
                   max_deliver=5),
    "q_fetch": q(9, worker="w", count=10, ms=30000),
    "q_ack": q(10, worker="w", seq=1, delivery=1),
    "q_nak": q(11, worker="w", seq=1, delivery=1, reason="later", ms=1000),
    "q_progress": q(12, worker="w", seq=1, ms=30000),
    "q_term": q(13, worker="w", seq=1, reason="bad"),
    "q_requeue": q(14, seq=1),
    "q_drop": q(15, seq=1),
    "sql_exec": cmd(16, bs("db") + bs('{"statements":[{"sql":"CREATE TABLE t(x)"}]}') +
                    u64(100000) + bs("") + u64(0)),
    "fn_deploy": cmd(23, bs("hello") + bs(FN_SETTINGS) + bs(HELLO_WASM), version=2),
    "fn_delete": cmd(24, bs("hello") + u64(1), version=2),
    "fn_rollback": cmd(25, bs("hello") + u64(0), version=2),
    "job_ack": cmd(26, bs("WORKERS_hello") + u32(1) + bs("n1/hello") + u64(1) + u64(1) +
                   u32(200) + bs('{"ok":true}') + u64(3600000) + u64(64 << 20), version=2),
    "job_ack_batch": cmd(26, bs("WORKERS_hello") + u32(3) +
                         bs("n1/hello") + u64(1) + u64(1) + u32(200) + bs('{"ok":true}') +
                         bs("n2/hello") + u64(2) + u64(0) + u32(201) + bs("") +
                         bs("n1/hello") + u64(1) + u64(1) + u32(200) + bs("{}") +
                         u64(3600000) + u64(64 << 20), version=2),
    "job_cron": cmd(27, bs("hello") + u64(60000) + u64(1000) + u64(1 << 20) + u64(5) +
                    u64(60500), version=2),
    "fn_deploy2": cmd(28, bs("hello") + bs(FN_SETTINGS_JOBS) + bs(HELLO_WASM) +
                      bs(b"\x01" * 64) + bs("release-1"), version=2),
    "fn_deploy2_unsigned": cmd(28, bs("hello") + bs(FN_SETTINGS_JOBS) + bs(HELLO_WASM) +
                               bs(b"") + bs(""), version=2),
    "fn_policy": cmd(31, u8(1) + u32(2) + bs("ci") + b"\x01" * 32 + bs("release") +
                     b"\x02" * 32, version=2),
    # S2: scoped tokens (fsm/auth.c)
    "token_put": cmd(29, bs("shop") + bs(b"\1" * 16) + bs(b"\2" * 32) +
                     bs("kv:shop/*:read,write lock:orders*") + bs(b"\3" * 32) + u64(0) + u64(0),
                     version=2),
    "token_bootstrap": cmd(29, bs("bootstrap") + bs(b"\1" * 16) + bs(b"\2" * 32) +
                           bs("cluster:admin") + bs(b"\3" * 32) + u64(0) + u64(1), version=2),
    "token_fnscope": cmd(29, bs("billing") + bs(b"\0" * 16) + bs(b"\0" * 32) +
                         bs("fn:billing:invoke kv:billing/*:read,write") + bs("") + u64(0) +
                         u64(2) + bs("shop"), version=2),
    "token_revoke": cmd(30, bs("shop"), version=2),
    # F1: rules the release before refuses go in TOKEN_PUT2 (32), same body
    "token_put2": cmd(32, bs("edge") + bs(b"\1" * 16) + bs(b"\2" * 32) +
                      bs("kv:a/*:read cluster:replica") + bs(b"\3" * 32) + u64(0) + u64(0),
                      version=2),
    "token_put2_fnscope": cmd(32, bs("billing") + bs(b"\0" * 16) + bs(b"\0" * 32) +
                              bs("cluster:replica") + bs("") + u64(0) + u64(2) + bs("edge"),
                              version=2),
    # decodes; apply refuses it (only 32 may carry cluster:replica)
    "token_put_replica": cmd(29, bs("edge") + bs(b"\1" * 16) + bs(b"\2" * 32) +
                             bs("cluster:replica") + bs(b"\3" * 32) + u64(0) + u64(0),
                             version=2),
}

# fsm_diff programs (tests/fuzz/fsm_diff.c): per step a time step byte, an
# op byte, its operand bytes, then the snapshot byte (0 = snapshot and
# restore the second state machine). Op 19 with k >= 240 is a token command:
# k - 240 = 4 * (1 = TOKEN_PUT2) + (0 put, 1 bootstrap, 2 revoke, 3 scope).
def tok(k, *operands, snap=1):
    return bytes([5, 19, 240 + k, *operands, snap])


FSM_PROGRAMS = {
    "tokens": (
        tok(4, 0, 1, 1, 3, snap=0) +   # 32 t0 "kv:a/*:read cluster:replica", snapshot
        tok(0, 1, 1, 1, 2) +           # 29 t1 "cluster:replica": refused
        tok(5, 2, 1, 1, 1) +           # 32 bootstrap cluster:admin: conflict
        tok(0, 1, 0, 0, 50, 0) +       # 29 t1 kv:a/*:read, expires: stored
        tok(2, 0, 1, 1, 0, snap=0)),   # revoke t0, snapshot
    "token_scopes": (
        bytes([5, 39, 0, 0, 0, 1]) +   # FN_DEPLOY f0
        tok(7, 0, 0, 2, snap=0) +      # 32 scope f0 "cluster:replica" (admin), snapshot
        bytes([5, 39, 0, 0, 0, 1]) +   # FN_DEPLOY f0 again: drops the scope
        tok(3, 0, 0, 2) +              # 29 scope f0 "cluster:replica": refused
        tok(3, 0, 0, 0, snap=0)),      # 29 scope f0 kv:a/*:read: taken, snapshot
}

CRONS = {
    "every_5": "*/5 * * * *",
    "lists_ranges": "0,30 8-18/2 1-10,15 1-12/3 1-5",
    "dom_dow_or": "0 0 29 2 1",
    "sunday7": "59 23 * * 7",
    "every_30s": "@every 30s",
    "every_24h": "@every 24h",
    "hourly": "@hourly",
    "daily": "@daily",
    "bad_feb30": "0 0 30 2 *",
    # A NUL and a u64 time first: the tick after 2096-03-01 (2104-02-29).
    "leap_2100": b"\0" + u64(3981398400000) + b"0 0 29 2 *",
    "month_end": b"\0" + u64(1776211200000) + b"0 0 31 * *",
}

RULES = {
    "all": "kv:sessions/*:read,write lock:orders* queue:emails:publish,consume,admin "
           "sql:shop:read fn:*:invoke fn:billing:deploy cluster:admin",
    "kv": "kv:a/b:read",
    "bad": "kv:a*b:read",
}

CONFIGS = {
    "default": "",
    "cluster": """{
    server_name n1
    data_dir /tmp/jinn-n1
    http_listen 127.0.0.1:8080
    http_advertise http://127.0.0.1:8080
    cluster_name prod
    cluster_listen 127.0.0.1:7000
    cluster_peers n1=127.0.0.1:7000 n2=127.0.0.1:7001 n3=127.0.0.1:7002
    cluster_replicas 3
    election_timeout 500ms
    heartbeat_timeout 50ms
    snapshot_threshold 8192
    snapshot_trailing 2048
    request_timeout 5s
    standby_promote_after 10s
    max_body 1MiB
    read_timeout 10s
    idle_timeout 60s
    max_connections 1024
    lock_max_ttl 1h
    debug false
}
""",
    "consensus_queues": """{
    # comment
    server_name "n1"
    consensus {
        payments { mode cp  stale_reads false }
        sessions { mode ap  stale_reads true  max_staleness 10s }
    }
    queues {
        emails { ack_wait 30s  max_deliver 5  backoff 1s 5s 30s  max_length 100000
                 max_bytes 1GiB  idempotency_window 2m }
    }
}
""",
    "env": '{\n    server_name {env.HOME}\n    data_dir "a \\"b\\" \\\\c"\n}\n',
}


def write(name, seeds):
    d = os.path.join(ROOT, name)
    os.makedirs(d, exist_ok=True)
    for k, v in seeds.items():
        with open(os.path.join(d, "seed-" + k), "wb") as f:
            f.write(v if isinstance(v, bytes) else v.encode())


def main():
    write("cmd_decode", COMMANDS)
    write("fsm_diff", FSM_PROGRAMS)
    write("config", CONFIGS)
    write("cron", CRONS)
    write("auth_rules", RULES)


if __name__ == "__main__":
    main()
