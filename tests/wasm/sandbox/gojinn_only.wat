;; gojinn_only.wat - no WASI imports; host_kv_set declared without a result
;; and host_log with one (both accepted by abi.h).
(module
  (import "gojinn" "host_log" (func $log (param i32 i32 i32) (result i32)))
  (import "gojinn" "host_kv_set" (func $kv_set (param i32 i32 i32 i32)))
  (memory (export "memory") 1)
  (data (i32.const 0) "k=v")
  (func (export "_start")
    (if (i32.ne (call $log (i32.const 1) (i32.const 0) (i32.const 3)) (i32.const 0)) (then unreachable))
    (call $kv_set (i32.const 0) (i32.const 1) (i32.const 2) (i32.const 1))))
