"""A tiny WebSocket client (RFC 6455, stdlib only) for jinn's GET /v1/stream
and the frames of stream protocol v1 (docs/api.md, "Stream"). Used by the
stream tests; small enough to read in one go.

    ws, status, headers, body = connect(port, "/v1/stream?from=0&name=r1")
    kind, data = ws.recv()          # ("text", bytes) | ("binary", bytes) | ("close", (code, why))
    parse_records(data)             # 'E' -> [(index, prev, entry_bytes), ...]
    parse_snapshot(data)            # 'S' -> (index, snapshot_bytes)
"""
import base64
import hashlib
import json
import os
import socket
import struct
import time

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


class WS:
    def __init__(self, sock, pending=b""):
        self.sock = sock
        self.buf = pending
        self.closed = None  # (code, why) once a close frame arrived

    def _fill(self, n, deadline):
        while len(self.buf) < n:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("no WebSocket data in time")
            self.sock.settimeout(left)
            chunk = self.sock.recv(1 << 20)
            if not chunk:
                raise ConnectionError("connection closed")
            self.buf += chunk

    def _take(self, n, deadline):
        self._fill(n, deadline)
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def recv_frame(self, timeout=5.0):
        """One frame: (fin, opcode, payload)."""
        deadline = time.monotonic() + timeout
        b0, b1 = self._take(2, deadline)
        fin, op, masked, n = b0 >> 7, b0 & 0x0F, b1 >> 7, b1 & 0x7F
        if n == 126:
            n = struct.unpack(">H", self._take(2, deadline))[0]
        elif n == 127:
            n = struct.unpack(">Q", self._take(8, deadline))[0]
        assert not masked, "a server never masks (RFC 6455 5.1)"
        return fin, op, self._take(n, deadline)

    def recv(self, timeout=5.0):
        """The next message: ("text"|"binary", bytes) or ("close", (code, why)).
        Pings are answered; pongs skipped; fragments joined."""
        deadline = time.monotonic() + timeout
        parts, kind = [], None
        while True:
            fin, op, payload = self.recv_frame(max(0.01, deadline - time.monotonic()))
            if op == 0x9:
                self.send_frame(0xA, payload)
                continue
            if op == 0xA:
                continue
            if op == 0x8:
                code = struct.unpack(">H", payload[:2])[0] if len(payload) >= 2 else 1005
                self.closed = (code, payload[2:].decode(errors="replace"))
                return "close", self.closed
            if op in (0x1, 0x2):
                assert kind is None, "a new message inside a fragmented one"
                kind = "text" if op == 0x1 else "binary"
            else:
                assert op == 0x0 and kind is not None, f"unexpected opcode {op}"
            parts.append(payload)
            if fin:
                return kind, b"".join(parts)

    def recv_json(self, timeout=5.0):
        kind, data = self.recv(timeout)
        assert kind == "text", (kind, data[:80])
        return json.loads(data)

    def send_frame(self, opcode, payload=b"", mask=True, fin=True):
        head = bytes([(0x80 if fin else 0) | opcode])
        n = len(payload)
        m = 0x80 if mask else 0
        if n < 126:
            head += bytes([m | n])
        elif n < 65536:
            head += bytes([m | 126]) + struct.pack(">H", n)
        else:
            head += bytes([m | 127]) + struct.pack(">Q", n)
        if mask:
            key = os.urandom(4)
            payload = bytes(b ^ key[i % 4] for i, b in enumerate(payload))
            head += key
        self.sock.sendall(head + payload)

    def close(self, code=1000):
        try:
            self.send_frame(0x8, struct.pack(">H", code))
        except OSError:
            pass
        self.sock.close()


def connect(port, target, headers=None, host="127.0.0.1", timeout=5.0, rcvbuf=None,
            context=None):
    """Sends the upgrade request. Returns (ws or None, status, headers, body):
    ws when the server answered 101, else the plain HTTP reply. context: an
    ssl.SSLContext for wss:// (a node with http_tls)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if rcvbuf is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.settimeout(timeout)
    sock.connect((host, port))
    if context is not None:
        sock = context.wrap_socket(sock, server_hostname=host)
    key = base64.b64encode(os.urandom(16)).decode()
    lines = [f"GET {target} HTTP/1.1", f"Host: {host}:{port}", "Upgrade: websocket",
             "Connection: Upgrade", "Sec-WebSocket-Version: 13", f"Sec-WebSocket-Key: {key}"]
    for k, v in (headers or {}).items():
        lines.append(f"{k}: {v}")
    sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("closed before the reply head")
        data += chunk
    head, rest = data.split(b"\r\n\r\n", 1)
    status_line, *hlines = head.decode().split("\r\n")
    status = int(status_line.split()[1])
    hdrs = {}
    for h in hlines:
        k, _, v = h.partition(":")
        hdrs[k.strip().lower()] = v.strip()
    if status != 101:
        n = int(hdrs.get("content-length", "0"))
        while len(rest) < n:
            chunk = sock.recv(65536)
            if not chunk:
                break
            rest += chunk
        sock.close()
        return None, status, hdrs, rest[:n]
    want = base64.b64encode(hashlib.sha1(key.encode() + GUID).digest()).decode()
    assert hdrs.get("sec-websocket-accept") == want, hdrs
    return WS(sock, rest), status, hdrs, b""


def parse_records(data):
    """An 'E' message: [(index, prev, entry bytes), ...]."""
    assert data[:1] == b"E", data[:1]
    (count,) = struct.unpack_from("<I", data, 1)
    off, out = 5, []
    for _ in range(count):
        index, prev, n = struct.unpack_from("<QQI", data, off)
        off += 20
        out.append((index, prev, data[off:off + n]))
        off += n
    assert off == len(data), "trailing bytes after the records"
    return out


def parse_snapshot(data):
    """An 'S' message: (index, jinn snapshot bytes)."""
    assert data[:1] == b"S", data[:1]
    (index,) = struct.unpack_from("<Q", data, 1)
    return index, data[9:]
