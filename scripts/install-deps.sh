#!/bin/sh
# Installs the Debian packages jinn builds, tests and benchmarks with.
# clang-14 and libfuzzer-14-dev build the fuzzers (make fuzz, make test).
# libssl-dev: libcrypto (SHA-256). wabt: wasm2c, run by every node to compile
# functions; the rest builds the test guests (C, Rust) and the bench peer (node).
# Called by make when pkg-config cannot find a library; safe to run again.
set -eu

PACKAGES="build-essential pkg-config libraft-dev libuv1-dev libjansson-dev \
libsqlite3-dev libssl-dev libwslay-dev python3 python3-pytest clang-14 libfuzzer-14-dev
wabt wasi-libc lld-14 libclang-rt-14-dev-wasm32 libstd-rust-dev-wasm32 rustc nodejs"
# --bench: what bench/compare runs jinn against.
if [ "${1:-}" = "--bench" ]; then
    PACKAGES="$PACKAGES etcd-server etcd-client nats-server libnats-dev e2fsprogs"
fi

missing=""
for p in $PACKAGES; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed"; then
        missing="$missing $p"
    fi
done
[ -z "$missing" ] && exit 0

if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1; then
        SUDO=sudo
    else
        echo "jinn: missing packages:$missing" >&2
        echo "jinn: run as root (or install them with apt-get) and try again" >&2
        exit 1
    fi
else
    SUDO=
fi

echo "jinn: installing$missing" >&2
if ! $SUDO apt-get update -qq || ! DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq $missing; then
    echo "jinn: apt-get could not install:$missing" >&2
    exit 1
fi
