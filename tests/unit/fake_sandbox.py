#!/usr/bin/python3
"""A stand-in for `jinn sandbox` in test_pool.c: speaks wasm/proto.h on
fd 3 and misbehaves as argv[2] (where the real one takes SO_PATH) says."""
import os
import signal
import struct
import sys
import time

FD = 3
READY, HOSTCALL, STDERR, DONE = 10, 11, 12, 13


def send(t, payload=b""):
    os.write(FD, struct.pack("<IB", len(payload) + 1, t) + payload)


def read_exact(n):
    buf = b""
    while len(buf) < n:
        try:
            chunk = os.read(FD, n - len(buf))
        except OSError:  # the node killed or dropped us
            sys.exit(0)
        if not chunk:
            sys.exit(0)
        buf += chunk
    return buf


def read_frame():
    (length,) = struct.unpack("<I", read_exact(4))
    body = read_exact(length)
    return body[0], body[1:]


def bytes_(b):
    return struct.pack("<I", len(b)) + b


mode = sys.argv[2]
if mode == "die_at_start":
    sys.exit(1)
if mode == "early_done":
    send(DONE, struct.pack("<BI", 0, 0) + bytes_(b""))
    time.sleep(30)
send(READY)
while True:
    t, p = read_frame()
    assert t == 1  # INVOKE
    if mode == "ok":
        send(HOSTCALL, struct.pack("<BII", 3, 0, 100) + bytes_(b"key") + bytes_(b""))
        t, reply = read_frame()
        assert t == 2
        (result,) = struct.unpack("<I", reply[:4])
        send(STDERR, bytes_(b"a line on stderr\n"))
        send(HOSTCALL, struct.pack("<BII", 1, 3, 0) + bytes_(b"logged") + bytes_(b""))
        stdin_len = struct.unpack("<I", p[-len(b"the request") - 4:-len(b"the request")])[0]
        out = b"result=%d stdin=%d" % (result, stdin_len)
        send(DONE, struct.pack("<BI", 0, 0) + bytes_(out))
    elif mode == "bigframe":
        os.write(FD, struct.pack("<IB", (32 << 20) + 4097, DONE))
        time.sleep(30)
    elif mode == "hostcall_twice":
        send(HOSTCALL, struct.pack("<BII", 3, 0, 100) + bytes_(b"key") + bytes_(b""))
        send(HOSTCALL, struct.pack("<BII", 3, 0, 100) + bytes_(b"key") + bytes_(b""))
        time.sleep(30)
    elif mode == "hang":
        time.sleep(30)
    elif mode == "crash":
        os.kill(os.getpid(), signal.SIGSEGV)
    elif mode == "trap":
        send(DONE, struct.pack("<BI", 1, 7) + bytes_(b""))
