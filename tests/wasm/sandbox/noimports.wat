;; noimports.wat - imports nothing: _start runs and returns.
(module
  (memory (export "memory") 1)
  (func (export "_start") (i32.store (i32.const 0) (i32.const 1))))
