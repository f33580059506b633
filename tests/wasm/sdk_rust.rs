//! A guest written against the original system's Rust SDK signatures: the
//! `gojinn` imports in one extern block, `host_kv_get` answering i64 (the
//! SDK's declaration; jinn zero-extends its u32), `host_kv_set` and
//! `host_log` without results. It round-trips the request body through the
//! KV store under a lock, runs a query when a database is configured, and
//! enqueues a job, answering what every call returned.
use std::io::{Read, Write};

#[link(wasm_import_module = "gojinn")]
extern "C" {
    fn host_log(level: i32, ptr: *const u8, len: i32);
    fn host_kv_set(kptr: *const u8, klen: i32, vptr: *const u8, vlen: i32);
    fn host_kv_get(kptr: *const u8, klen: i32, outptr: *mut u8, outmax: i32) -> i64;
    fn host_mutex_lock(kptr: *const u8, klen: i32, ttl: i32) -> i32;
    fn host_mutex_unlock(kptr: *const u8, klen: i32) -> i32;
    fn host_db_query(qptr: *const u8, qlen: i32, outptr: *mut u8, outmax: i32) -> i32;
    fn host_enqueue(fptr: *const u8, flen: i32, pptr: *const u8, plen: i32) -> i32;
}

fn log(level: i32, msg: &str) {
    unsafe { host_log(level, msg.as_ptr(), msg.len() as i32) }
}

fn kv_get(key: &str) -> Option<Vec<u8>> {
    let mut buf = vec![0u8; 4096];
    let n = unsafe { host_kv_get(key.as_ptr(), key.len() as i32, buf.as_mut_ptr(), 4096) };
    // 0xFFFFFFFF (missing or denied) arrives as 4294967295: zero-extended.
    if n < 0 || n >= 0xFFFF_FFFF || n as usize > buf.len() {
        return None;
    }
    buf.truncate(n as usize);
    Some(buf)
}

fn escape(s: &str) -> String {
    let mut o = String::new();
    for c in s.chars() {
        match c {
            '"' => o.push_str("\\\""),
            '\\' => o.push_str("\\\\"),
            c if (c as u32) < 0x20 => o.push_str(&format!("\\u{:04x}", c as u32)),
            c => o.push(c),
        }
    }
    o
}

fn body_of(req: &str) -> String {
    // The node sends canonical JSON; the body is the string after "body":.
    match req.find("\"body\":\"") {
        Some(i) => {
            let rest = &req[i + 8..];
            let mut out = String::new();
            let mut chars = rest.chars();
            while let Some(c) = chars.next() {
                match c {
                    '"' => break,
                    '\\' => match chars.next() {
                        Some('n') => out.push('\n'),
                        Some(x) => out.push(x),
                        None => break,
                    },
                    c => out.push(c),
                }
            }
            out
        }
        None => String::new(),
    }
}

fn main() {
    let mut req = String::new();
    std::io::stdin().read_to_string(&mut req).unwrap();
    let body = body_of(&req);
    let key = format!("rust:{}", body);
    let lock = "rust-lock";

    log(1, &format!("rust guest for {}", key));
    let locked = unsafe { host_mutex_lock(lock.as_ptr(), lock.len() as i32, 0) };
    unsafe { host_kv_set(key.as_ptr(), key.len() as i32, body.as_ptr(), body.len() as i32) };
    let got = kv_get(&key).map(|v| String::from_utf8_lossy(&v).into_owned());
    let missing = kv_get("rust:never-written").is_none();
    let unlocked = unsafe { host_mutex_unlock(lock.as_ptr(), lock.len() as i32) };

    let sql = "SELECT 41 + 1 AS answer";
    let mut out = vec![0u8; 4096];
    let n = unsafe { host_db_query(sql.as_ptr(), sql.len() as i32, out.as_mut_ptr(), 4096) };
    let rows = if n >= 0 && (n as usize) <= out.len() {
        String::from_utf8_lossy(&out[..n as usize]).into_owned()
    } else {
        format!("fail {}", n)
    };
    let job = "rustjob";
    let queued = unsafe { host_enqueue(job.as_ptr(), job.len() as i32, key.as_ptr(), key.len() as i32) };
    log(3, "rust guest done");

    let answer = format!(
        "{{\"locked\":{},\"got\":{},\"missing\":{},\"unlocked\":{},\"rows\":\"{}\",\"queued\":{}}}",
        locked,
        match got {
            Some(g) => format!("\"{}\"", escape(&g)),
            None => "null".to_string(),
        },
        missing,
        unlocked,
        escape(&rows),
        queued
    );
    print!(
        "{{\"status\":200,\"headers\":{{\"Content-Type\":[\"application/json\"]}},\"body\":\"{}\"}}",
        escape(&answer)
    );
    std::io::stdout().flush().unwrap();
}
