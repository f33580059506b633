#!/bin/sh
# compile_time.sh - builds a ~100 KB and a ~1 MB C guest (clang-14,
# wasm32-wasi) and reports how long jinn takes to compile each (wasm2c +
# glue + cc -O2, the node's own code path) and to verify its cache entry.
# Run from the repository root after `make build/bench/compile_time`.
set -eu
out=build/compile_time
mkdir -p "$out"
for n in 400 5300; do
    python3 tests/wasmtool/gen_guest.py "$n" "$out/gen$n.c"
    clang-14 --target=wasm32-wasi --sysroot=/usr -O2 -Wl,--strip-all -o "$out/gen$n.wasm" "$out/gen$n.c"
done
dir=$(mktemp -d /tmp/jinn-compile-time-XXXXXX)
trap 'rm -rf "$dir"' EXIT
build/bench/compile_time "$dir" "$out/gen400.wasm" "$out/gen5300.wasm"
