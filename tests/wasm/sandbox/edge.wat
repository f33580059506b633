;; edge.wat - one module for tests/cluster/test_wasm_sandbox.py. It reads
;; stdin; the first byte picks what _start does (anything else: hello).
;; Memory: iovec scratch at 0, nread at 8, "hello:" at 16, stdin at 1024
;; (up to 4096 bytes), results at 8192, out buffer at 12288.
(module
  (import "wasi_snapshot_preview1" "fd_read" (func $fd_read (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "proc_exit" (func $proc_exit (param i32)))
  (import "wasi_snapshot_preview1" "args_sizes_get" (func $args_sizes_get (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "args_get" (func $args_get (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "environ_sizes_get" (func $environ_sizes_get (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "environ_get" (func $environ_get (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "clock_time_get" (func $clock_time_get (param i32 i64 i32) (result i32)))
  (import "wasi_snapshot_preview1" "clock_res_get" (func $clock_res_get (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "random_get" (func $random_get (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_fdstat_get" (func $fd_fdstat_get (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_prestat_get" (func $fd_prestat_get (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "poll_oneoff" (func $poll_oneoff (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "path_open" (func $path_open (param i32 i32 i32 i32 i32 i64 i64 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "sched_yield" (func $sched_yield (result i32)))
  (import "gojinn" "host_log" (func $host_log (param i32 i32 i32)))
  (import "gojinn" "host_kv_set" (func $kv_set (param i32 i32 i32 i32) (result i32)))
  (import "gojinn" "host_kv_get" (func $kv_get (param i32 i32 i32 i32) (result i32)))
  (import "gojinn" "host_mutex_lock" (func $lock (param i32 i32 i32) (result i32)))
  (import "gojinn" "host_mutex_unlock" (func $unlock (param i32 i32) (result i32)))
  (import "gojinn" "host_db_query" (func $db (param i32 i32 i32 i32) (result i32)))
  (import "gojinn" "host_enqueue" (func $enqueue (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1 1000)
  (table 2 funcref)
  (elem (i32.const 0) $rec)
  (type $void (func))
  (type $i2i (func (param i32) (result i32)))
  (data (i32.const 16) "hello:")
  (data (i32.const 32) "Key_A")
  (data (i32.const 40) "v1")
  (data (i32.const 48) "select 1")
  (data (i32.const 64) "worker")
  (global $n (mut i32) (i32.const 0))
  (global $depth (mut i32) (i32.const 0))

  ;; writes [ptr, ptr+len) to fd
  (func $write (param $fd i32) (param $ptr i32) (param $len i32)
    (i32.store (i32.const 0) (local.get $ptr))
    (i32.store (i32.const 4) (local.get $len))
    (drop (call $fd_write (local.get $fd) (i32.const 0) (i32.const 1) (i32.const 8))))

  ;; results: the i-th i32 at 8192
  (func $res (param $i i32) (param $v i32)
    (i32.store (i32.add (i32.const 8192) (i32.shl (local.get $i) (i32.const 2))) (local.get $v)))

  (func $rec (result i32)
    (global.set $depth (i32.add (global.get $depth) (i32.const 1)))
    (i32.add (call $rec) (i32.const 1)))

  (func $mode (param $m i32) (result i32)
    (i32.eq (i32.load8_u (i32.const 1024)) (local.get $m)))

  (func (export "_start") (local $i i32) (local $n i32)
    (i32.store (i32.const 0) (i32.const 1024))
    (i32.store (i32.const 4) (i32.const 4096))
    (drop (call $fd_read (i32.const 0) (i32.const 0) (i32.const 1) (i32.const 8)))
    (global.set $n (i32.load (i32.const 8)))
    (if (call $mode (i32.const 117)) (then unreachable))                          ;; u
    (if (call $mode (i32.const 111)) (then (drop (i32.load (i32.const 65534)))))  ;; o
    (if (call $mode (i32.const 100))                                              ;; d
      (then (drop (i32.div_u (i32.const 1) (i32.load (i32.const 60000))))))
    (if (call $mode (i32.const 118))                                              ;; v
      (then (drop (i32.div_s (i32.const 0x80000000) (i32.const -1)))))
    (if (call $mode (i32.const 99))                                               ;; c
      (then (drop (i32.trunc_f32_s (f32.div (f32.const 0) (f32.const 0))))))
    (if (call $mode (i32.const 105))                                              ;; i
      (then (call_indirect (type $void) (i32.const 1))))
    (if (call $mode (i32.const 73))                                               ;; I
      (then (drop (call_indirect (type $i2i) (i32.const 7) (i32.const 0)))))
    (if (call $mode (i32.const 115)) (then (drop (call $rec))))                   ;; s
    (if (call $mode (i32.const 120)) (then (call $proc_exit (i32.const 3))))      ;; x
    (if (call $mode (i32.const 103))                                              ;; g
      (then
        (call $res (i32.const 0) (memory.grow (i32.const 10)))
        (call $res (i32.const 1) (memory.grow (i32.const 100000)))
        (call $res (i32.const 2) (memory.grow (i32.const 500)))
        (call $res (i32.const 3) (memory.size))
        ;; the last byte of the grown memory is usable and zero
        (call $res (i32.const 4)
          (i32.load8_u (i32.sub (i32.mul (memory.size) (i32.const 65536)) (i32.const 1))))
        (i32.store8 (i32.sub (i32.mul (memory.size) (i32.const 65536)) (i32.const 1)) (i32.const 7))
        (call $write (i32.const 1) (i32.const 8192) (i32.const 20))
        (return)))
    (if (call $mode (i32.const 71))                                               ;; G: grow to the limit
      (then
        (call $res (i32.const 0) (memory.grow (i32.sub (i32.const 64) (memory.size))))
        (call $res (i32.const 1) (memory.grow (i32.const 1)))
        (call $write (i32.const 1) (i32.const 8192) (i32.const 8))
        (return)))
    (if (call $mode (i32.const 102))                                              ;; f: 20 MB
      (then
        (loop $l
          (call $write (i32.const 1) (i32.const 0) (i32.const 65536))
          (local.set $i (i32.add (local.get $i) (i32.const 1)))
          (br_if $l (i32.lt_u (local.get $i) (i32.const 320))))
        (return)))
    (if (call $mode (i32.const 101))                                              ;; e: 100 KiB to stderr
      (then
        (loop $l
          (call $write (i32.const 2) (i32.const 1024) (i32.const 1024))
          (local.set $i (i32.add (local.get $i) (i32.const 1)))
          (br_if $l (i32.lt_u (local.get $i) (i32.const 100))))
        (call $write (i32.const 1) (i32.const 16) (i32.const 6))
        (return)))
    (if (call $mode (i32.const 97))                                               ;; a: args
      (then
        (drop (call $args_sizes_get (i32.const 8192) (i32.const 8196)))
        (drop (call $args_get (i32.const 8200) (i32.const 12288)))
        (call $write (i32.const 1) (i32.const 12288) (i32.load (i32.const 8196)))
        (return)))
    (if (call $mode (i32.const 110))                                              ;; n: environ
      (then
        (drop (call $environ_sizes_get (i32.const 8192) (i32.const 8196)))
        (drop (call $environ_get (i32.const 8200) (i32.const 12288)))
        (call $write (i32.const 1) (i32.const 12288) (i32.load (i32.const 8196)))
        (return)))
    (if (call $mode (i32.const 109))                                              ;; m: memory left dirty?
      (then
        ;; reports the byte at 60000 (always 0 in a fresh instance), then dirties it
        (call $res (i32.const 0) (i32.load8_u (i32.const 60000)))
        (call $res (i32.const 1) (global.get $depth))
        (i32.store8 (i32.const 60000) (i32.const 1))
        (global.set $depth (i32.const 5))
        (call $write (i32.const 1) (i32.const 8192) (i32.const 8))
        (return)))
    (if (call $mode (i32.const 107))                                              ;; k: kv round trip
      (then
        (call $host_log (i32.const 3) (i32.const 16) (i32.const 6))
        (call $res (i32.const 0) (call $kv_set (i32.const 32) (i32.const 5) (i32.const 40) (i32.const 2)))
        (call $res (i32.const 1) (call $kv_get (i32.const 32) (i32.const 5) (i32.const 12288) (i32.const 100)))
        (call $res (i32.const 2) (call $kv_get (i32.const 32) (i32.const 5) (i32.const 12288) (i32.const 1)))
        (call $res (i32.const 3) (call $lock (i32.const 32) (i32.const 5) (i32.const 7)))
        (call $res (i32.const 4) (call $unlock (i32.const 32) (i32.const 5)))
        (call $res (i32.const 5) (call $db (i32.const 48) (i32.const 8) (i32.const 12400) (i32.const 100)))
        (call $res (i32.const 6) (call $enqueue (i32.const 64) (i32.const 6) (i32.const 40) (i32.const 2)))
        (call $write (i32.const 1) (i32.const 8192) (i32.const 28))
        (call $write (i32.const 1) (i32.const 12288) (i32.load (i32.const 8196)))
        (return)))
    (if (call $mode (i32.const 112))                                              ;; p: hostile pointers
      (then
        (call $res (i32.const 0) (call $fd_read (i32.const 0) (i32.const 0xFFFFFFF8) (i32.const 1) (i32.const 8)))
        (call $res (i32.const 1) (call $fd_read (i32.const 0) (i32.const 0) (i32.const 0x20000000) (i32.const 8)))
        (i32.store (i32.const 0) (i32.const 65530))
        (i32.store (i32.const 4) (i32.const 100))
        (call $res (i32.const 2) (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)))
        (call $res (i32.const 3) (call $fd_write (i32.const 1) (i32.const 16) (i32.const 1) (i32.const 65535)))
        (call $res (i32.const 4) (call $args_sizes_get (i32.const 65533) (i32.const 8)))
        (call $res (i32.const 5) (call $args_get (i32.const 0xFFFFFFFF) (i32.const 0)))
        (call $res (i32.const 6) (call $environ_get (i32.const 0) (i32.const 65535)))
        (call $res (i32.const 7) (call $clock_time_get (i32.const 1) (i64.const 0) (i32.const 65529)))
        (call $res (i32.const 8) (call $random_get (i32.const 65000) (i32.const 1000)))
        (call $res (i32.const 9) (call $fd_fdstat_get (i32.const 1) (i32.const 65520)))
        (call $res (i32.const 10) (call $poll_oneoff (i32.const 65500) (i32.const 0) (i32.const 1) (i32.const 8)))
        (call $res (i32.const 11) (call $poll_oneoff (i32.const 0) (i32.const 0) (i32.const 0x10000000) (i32.const 8)))
        (call $res (i32.const 12) (call $fd_prestat_get (i32.const 3) (i32.const 0xFFFFFFFF)))
        (call $res (i32.const 13) (call $clock_res_get (i32.const 0) (i32.const 0xFFFFFFFC)))
        (call $host_log (i32.const 1) (i32.const 0xFFFFFFF0) (i32.const 100))
        (call $res (i32.const 14) (call $kv_set (i32.const 65535) (i32.const 2) (i32.const 0) (i32.const 0)))
        (call $res (i32.const 15) (call $kv_set (i32.const 0) (i32.const 1) (i32.const 1) (i32.const 0xFFFFFFFF)))
        (call $res (i32.const 16) (call $kv_get (i32.const 32) (i32.const 5) (i32.const 65500) (i32.const 100)))
        (call $res (i32.const 17) (call $lock (i32.const 0xFFFFFFFF) (i32.const 1) (i32.const 0)))
        (call $res (i32.const 18) (call $unlock (i32.const 1) (i32.const 65536)))
        (call $res (i32.const 19) (call $db (i32.const 48) (i32.const 8) (i32.const 0xFFFFFF00) (i32.const 0x1000)))
        (call $res (i32.const 20) (call $enqueue (i32.const 64) (i32.const 6) (i32.const 0x80000000) (i32.const 0x80000000)))
        (call $res (i32.const 21) (call $path_open (i32.const 3) (i32.const 0) (i32.const 0) (i32.const 1)
                                   (i32.const 0) (i64.const 0) (i64.const 0) (i32.const 0) (i32.const 8)))
        (call $res (i32.const 22) (call $sched_yield))
        (call $res (i32.const 23) (call $fd_write (i32.const 5) (i32.const 0) (i32.const 0) (i32.const 8)))
        (call $write (i32.const 1) (i32.const 8192) (i32.const 96))
        (return)))
    (if (call $mode (i32.const 116))                                              ;; t: sleep 50 ms via poll_oneoff
      (then
        ;; subscription at 2048: userdata 42, clock, monotonic, 50 ms relative
        (i64.store (i32.const 2048) (i64.const 42))
        (i32.store8 (i32.const 2056) (i32.const 0))
        (i32.store (i32.const 2064) (i32.const 1))
        (i64.store (i32.const 2072) (i64.const 50000000))
        (call $res (i32.const 0) (call $poll_oneoff (i32.const 2048) (i32.const 2200) (i32.const 1) (i32.const 2300)))
        (call $res (i32.const 1) (i32.load (i32.const 2300)))
        (call $res (i32.const 2) (i32.load (i32.const 2200)))
        (call $res (i32.const 3) (i32.load16_u (i32.const 2208)))
        (call $res (i32.const 4) (i32.load8_u (i32.const 2210)))
        (call $write (i32.const 1) (i32.const 8192) (i32.const 20))
        (return)))
    ;; hello: "hello:" + stdin
    (i32.store (i32.const 0) (i32.const 16))
    (i32.store (i32.const 4) (i32.const 6))
    (i32.store (i32.const 8) (i32.const 1024))
    (i32.store (i32.const 12) (global.get $n))
    (drop (call $fd_write (i32.const 1) (i32.const 0) (i32.const 2) (i32.const 16))))
)
