;; kv64.wat - host_kv_get declared with an i64 result (the original Rust
;; SDK's signature): stdout is the 8-byte result, then the value.
(module
  (import "gojinn" "host_kv_get" (func $kv_get (param i32 i32 i32 i32) (result i64)))
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 32) "key")
  (func (export "_start")
    (i64.store (i32.const 100) (call $kv_get (i32.const 32) (i32.const 3) (i32.const 108) (i32.const 16)))
    (i32.store (i32.const 0) (i32.const 100))
    (i32.store (i32.const 4) (i32.const 24))
    (drop (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)))))
