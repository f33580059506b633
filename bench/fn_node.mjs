// fn_node.mjs - the peer for bench/fn: the same WebAssembly module served
// over HTTP by Node.js 20's node:wasi, with a fresh instance per request
// (the module is compiled once, like jinn's; instantiation, _start and the
// request/response JSON are paid on every call). Same contract as jinn's:
// the request JSON on stdin, the response JSON on stdout.
//
//   node bench/fn_node.mjs PORT MODULE.wasm
import http from 'node:http';
import fs from 'node:fs';
import { WASI } from 'node:wasi';

process.removeAllListeners('warning'); // "WASI is experimental" on every start

const [port, path] = process.argv.slice(2);
const module = await WebAssembly.compile(fs.readFileSync(path));
const EBADF = 8;

function run(stdinBytes) {
  const wasi = new WASI({ version: 'preview1', args: ['fn'], env: {}, returnOnExit: true });
  const imp = wasi.wasiImport;
  let memory = null;
  let inPos = 0;
  const out = [];
  // stdin, stdout and stderr are buffers here, not files.
  const iovecs = (ptr, n) => {
    const v = new DataView(memory.buffer);
    const list = [];
    for (let i = 0; i < n; i++) {
      list.push([v.getUint32(ptr + i * 8, true), v.getUint32(ptr + i * 8 + 4, true)]);
    }
    return list;
  };
  const io = {
    ...imp,
    fd_read(fd, iov, n, nread) {
      if (fd !== 0) return imp.fd_read(fd, iov, n, nread);
      let total = 0;
      for (const [p, len] of iovecs(iov, n)) {
        const chunk = stdinBytes.subarray(inPos, inPos + len);
        new Uint8Array(memory.buffer, p, chunk.length).set(chunk);
        inPos += chunk.length;
        total += chunk.length;
        if (chunk.length < len) break;
      }
      new DataView(memory.buffer).setUint32(nread, total, true);
      return 0;
    },
    fd_write(fd, iov, n, nwritten) {
      if (fd !== 1 && fd !== 2) return EBADF;
      let total = 0;
      for (const [p, len] of iovecs(iov, n)) {
        if (fd === 1) out.push(Buffer.from(new Uint8Array(memory.buffer, p, len)));
        total += len;
      }
      new DataView(memory.buffer).setUint32(nwritten, total, true);
      return 0;
    },
  };
  const instance = new WebAssembly.Instance(module, { wasi_snapshot_preview1: io });
  memory = instance.exports.memory;
  wasi.start(instance);
  return Buffer.concat(out);
}

let counter = 0;
http.createServer({ keepAlive: true }, (req, res) => {
  const chunks = [];
  req.on('data', (c) => chunks.push(c));
  req.on('end', () => {
    const headers = {};
    for (const [k, v] of Object.entries(req.headersDistinct)) headers[k] = v;
    const request = JSON.stringify({
      method: req.method, uri: req.url, headers,
      body: Buffer.concat(chunks).toString(), trace_id: (++counter).toString(16),
    });
    let answer;
    try {
      answer = JSON.parse(run(Buffer.from(request)).toString());
    } catch (e) {
      res.writeHead(500);
      res.end(String(e));
      return;
    }
    const h = {};
    for (const [k, v] of Object.entries(answer.headers || {})) h[k] = v;
    res.writeHead(answer.status || 200, h);
    res.end(answer.body || '');
  });
}).listen(Number(port), '127.0.0.1');
