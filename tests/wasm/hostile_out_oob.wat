;; host_kv_get into an out buffer that runs past the end of memory (65532 + 64).
;; Answers {"status":200,"body":"<result as unsigned decimal>"} when the
;; call returns at all (the sandbox may instead end the invocation with a
;; trap: a host call's pointer is checked like a load or store).
(module
  (import "gojinn" "host_kv_get" (func $kv_get (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 0) "wat-k")
  (data (i32.const 1024) "{\"status\":200,\"body\":\"")
  (data (i32.const 1100) "\"}")
  (func $answer (param $n i32)
    (local $p i32)
    (local.set $p (i32.const 2020))
    (loop $digits
      (local.set $p (i32.sub (local.get $p) (i32.const 1)))
      (i32.store8 (local.get $p)
        (i32.add (i32.const 48) (i32.rem_u (local.get $n) (i32.const 10))))
      (local.set $n (i32.div_u (local.get $n) (i32.const 10)))
      (br_if $digits (local.get $n)))
    ;; three iovecs at 3000: prefix, digits, suffix
    (i32.store (i32.const 3000) (i32.const 1024))
    (i32.store (i32.const 3004) (i32.const 22))
    (i32.store (i32.const 3008) (local.get $p))
    (i32.store (i32.const 3012) (i32.sub (i32.const 2020) (local.get $p)))
    (i32.store (i32.const 3016) (i32.const 1100))
    (i32.store (i32.const 3020) (i32.const 2))
    (drop (call $fd_write (i32.const 1) (i32.const 3000) (i32.const 3) (i32.const 3100))))
  (func (export "_start")
    (call $answer (call $kv_get (i32.const 0) (i32.const 5) (i32.const 65532) (i32.const 64)))))
