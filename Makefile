# jinn - build, test, run. `make` builds build/jinn; `make test` builds the
# sanitizer variant and runs every test; `make run` starts a one-node jinn.

PKGS     := raft libuv jansson sqlite3 openssl
CC       := gcc
PYTHON   := /usr/bin/python3
REV      := $(shell git describe --always --dirty --abbrev=12 2>/dev/null || echo unknown)

WARN     := -Wall -Wextra -Wpedantic -Wshadow -Wconversion -Wstrict-prototypes \
            -Wmissing-prototypes -Wno-sign-conversion
ifeq ($(CI),true)
WARN     += -Werror
endif
BASE_CFLAGS = -std=c11 -D_GNU_SOURCE -g $(WARN) -Isrc \
              $(shell pkg-config --cflags $(PKGS))
LIBS        = $(shell pkg-config --libs $(PKGS)) -lpthread
# WASM sandboxes: the runtime headers of Debian's wabt, and dlopen of compiled
# modules whose wasm_rt_*/jinn_* symbols resolve against the jinn binary.
BASE_CFLAGS += -I/usr/src/wasm2c
LIBS        += -rdynamic -ldl
# WebSocket framing (src/net/ws.c): Debian's libwslay-dev ships no .pc file
# (pkg-config cannot find "libwslay"), so it is linked by name; deps checks
# for its header.
LIBS        += -lwslay

REL_CFLAGS  = $(BASE_CFLAGS) -O2
TEST_CFLAGS = $(BASE_CFLAGS) -O1 -Werror -fno-omit-frame-pointer \
              -fsanitize=address,undefined -fno-sanitize-recover=undefined
TEST_LDFLAGS = -fsanitize=address,undefined

SRC       := $(sort $(wildcard src/*.c src/*/*.c))
LIB_SRC   := $(filter-out src/main.c,$(SRC))
UNIT_SRC  := $(sort $(wildcard tests/unit/*.c))

REL_OBJ   := $(SRC:%.c=build/rel/%.o)
TEST_OBJ  := $(SRC:%.c=build/test/%.o)
TEST_LIB  := $(LIB_SRC:%.c=build/test/%.o)
UNIT_OBJ  := $(UNIT_SRC:%.c=build/test/%.o)
VG_OBJ    := $(LIB_SRC:%.c=build/vg/%.o) $(UNIT_SRC:%.c=build/vg/%.o)

.PHONY: all deps run test unit cluster valgrind bench clean format fuzz fuzz-check fuzz-build

all: build/jinn

deps:
	@pkg-config --exists $(PKGS) && test -f /usr/include/wslay/wslay.h || scripts/install-deps.sh
	@pkg-config --exists $(PKGS) || { echo "jinn: pkg-config still cannot find: $(PKGS)" >&2; exit 1; }

build/jinn: $(REL_OBJ)
	$(CC) -o $@ $^ $(LIBS)

build/test/jinn: $(TEST_OBJ)
	$(CC) $(TEST_LDFLAGS) -o $@ $^ $(LIBS)

build/test/unit: $(TEST_LIB) $(UNIT_OBJ)
	$(CC) $(TEST_LDFLAGS) -o $@ $^ $(LIBS)

build/vg/unit: $(VG_OBJ)
	$(CC) -o $@ $^ $(LIBS)

build/rel/%.o: %.c | deps
	@mkdir -p $(dir $@)
	$(CC) $(REL_CFLAGS) -MMD -MP -c -o $@ $<

build/test/%.o: %.c | deps
	@mkdir -p $(dir $@)
	$(CC) $(TEST_CFLAGS) -Itests/unit -MMD -MP -c -o $@ $<

build/vg/%.o: %.c | deps
	@mkdir -p $(dir $@)
	$(CC) $(BASE_CFLAGS) -O1 -Itests/unit -MMD -MP -c -o $@ $<

# The revision is baked into version.o only; rebuild it when HEAD moves.
VERSION_OBJ := build/rel/src/version.o build/test/src/version.o
$(VERSION_OBJ): BASE_CFLAGS += -DJINN_REVISION='"$(REV)"'
$(VERSION_OBJ): $(wildcard .git/HEAD .git/refs/heads/* .git/index)

run: deps build/jinn
	./build/jinn run $(if $(CONFIG),-c $(CONFIG))

test: deps
	@scripts/install-deps.sh
	$(MAKE) build/test/jinn build/test/unit
	$(MAKE) unit cluster
	$(MAKE) fuzz-check

unit: build/test/unit
	ASAN_OPTIONS=detect_leaks=1 ./build/test/unit

cluster: build/test/jinn wasm
	JINN_BIN=$(CURDIR)/build/test/jinn $(PYTHON) -m pytest -q -p no:cacheprovider tests/cluster

valgrind: build/vg/unit
	valgrind --error-exitcode=1 --leak-check=full --errors-for-leak-kinds=definite ./build/vg/unit

build/bench/load: bench/load.c build/rel/src/httpmsg.o build/rel/src/fetch.o \
                  build/rel/src/alloc.o build/rel/src/codec.o build/rel/src/error.o \
                  build/rel/src/fsm/nodes.o build/rel/src/tree.o build/rel/src/tls.o \
                  build/rel/src/log.o
	@mkdir -p build/bench
	$(CC) $(REL_CFLAGS) -o $@ $^ $(LIBS)

build/bench/sink: bench/sink.c
	@mkdir -p build/bench
	$(CC) -std=c11 -D_GNU_SOURCE -O2 $(WARN) -o $@ $<

build/bench/nats_load: bench/nats_load.c
	@mkdir -p build/bench
	$(CC) -std=c11 -D_GNU_SOURCE -O2 $(WARN) -o $@ $< $(shell pkg-config --cflags --libs libnats) -lpthread

# Compile time of a ~100 KB and a ~1 MB module (wasm2c + cc -O2, then a cache hit).
build/bench/compile_time: tests/wasmtool/compile_time.c $(filter-out build/rel/src/main.o,$(REL_OBJ))
	@mkdir -p build/bench
	$(CC) $(REL_CFLAGS) -o $@ $^ $(LIBS)

# jinn alone (bench/run), then jinn against etcd and NATS JetStream (bench/compare),
# then functions (bench/fn: hello warm and cold, node:wasi as the peer, compile time),
# then jobs (bench/jobs: end-to-end jobs/s, `jinn worker --exec` baseline, failover),
# then edge replicas (bench/replica: lag at 5 000 writes/s, throughput with 0/4/16, reads).
# A peer's tools that cannot be installed or built skip that peer (compare
# says so); they never stop the run.
bench: deps build/jinn build/bench/load build/bench/sink
	-@scripts/install-deps.sh --bench
	-$(MAKE) build/bench/nats_load
	bench/run
	bench/compare
	$(MAKE) build/wasm/hello.wasm build/bench/compile_time
	bench/fn
	$(MAKE) build/wasm/jobs/job_slow.wasm
	bench/jobs
	bench/replica

# WebAssembly guests for the function tests and the benchmark: every
# tests/wasm/[DIR/]NAME.c, NAME.rs and NAME.wat becomes build/wasm/[DIR/]NAME.wasm
# (C: Debian's wasi-libc + lld; Rust: Debian's rustc and libstd-rust-dev-wasm32).
WASM_CC    := clang-14 --target=wasm32-wasi --sysroot=/usr
WASM_RUSTC := /usr/bin/rustc --target wasm32-wasi -O -C strip=debuginfo
WASM_SRC   := $(wildcard tests/wasm/*.c tests/wasm/*/*.c tests/wasm/*.rs tests/wasm/*/*.rs \
                         tests/wasm/*.wat tests/wasm/*/*.wat)
WASM_OUT   := $(sort $(patsubst tests/wasm/%,build/wasm/%.wasm,$(basename $(WASM_SRC))))

.PHONY: wasm
wasm: $(WASM_OUT)

build/wasm/%.wasm: tests/wasm/%.c $(wildcard tests/wasm/*.h)
	@mkdir -p $(dir $@)
	$(WASM_CC) -O2 -Itests/wasm -o $@ $<

build/wasm/%.wasm: tests/wasm/%.rs
	@mkdir -p $(dir $@)
	$(WASM_RUSTC) -o $@ $<

build/wasm/%.wasm: tests/wasm/%.wat
	@mkdir -p $(dir $@)
	wat2wasm -o $@ $<

# Fuzzing (clang-14 + libFuzzer). Every tests/fuzz/NAME.c is one libFuzzer
# target, linked against the library objects built with clang into
# build/fuzz/obj/. Its committed corpus is tests/fuzz/corpus/NAME/.
#   make fuzz        each target for FUZZ_SECONDS, new finds merged into the
#                    corpus; a crash lands there too, as a regression input
#   make fuzz-check  (part of make test) every corpus input once, then
#                    FUZZ_CHECK_SECONDS of fuzzing; the corpus is not touched
FUZZ_CC      := clang-14
FUZZ_SECONDS ?= 150
FUZZ_CHECK_SECONDS ?= 10
FUZZ_SAN     := -fsanitize=address,undefined -fno-sanitize-recover=undefined
FUZZ_CFLAGS   = $(BASE_CFLAGS) -O1 -fno-omit-frame-pointer -Itests/fuzz -Itests/unit \
                -Wno-string-conversion $(FUZZ_SAN) -fsanitize=fuzzer-no-link -DJINN_FUZZ=1
FUZZ_SRC     := $(sort $(wildcard tests/fuzz/*.c))
FUZZ_NAMES   := $(FUZZ_SRC:tests/fuzz/%.c=%)
FUZZ_BIN     := $(FUZZ_NAMES:%=build/fuzz/%)
FUZZ_LIB_OBJ := $(LIB_SRC:%.c=build/fuzz/obj/%.o)
# libFuzzer options for both modes: a slow input or a big allocation is a bug.
FUZZ_OPTS    := -timeout=10 -rss_limit_mb=2048 -malloc_limit_mb=512 -print_final_stats=1

fuzz-build: $(FUZZ_BIN)

build/fuzz/obj/%.o: %.c | deps
	@mkdir -p $(dir $@)
	$(FUZZ_CC) $(FUZZ_CFLAGS) -MMD -MP -c -o $@ $<

# q, not r: objects share basenames (api/kv.o, cli/kv.o, fsm/kv.o) and r
# would keep only the last of each.
build/fuzz/libjinn.a: $(FUZZ_LIB_OBJ)
	@rm -f $@
	ar qcs $@ $^

$(FUZZ_BIN): build/fuzz/%: tests/fuzz/%.c build/fuzz/libjinn.a $(wildcard tests/fuzz/*.h)
	@mkdir -p $(dir $@)
	$(FUZZ_CC) $(FUZZ_CFLAGS) -fsanitize=fuzzer -MMD -MP -MF $@.d -o $@ $< build/fuzz/libjinn.a $(LIBS)

fuzz: $(FUZZ_BIN)
	@set -e; for n in $(FUZZ_NAMES); do \
	    mkdir -p tests/fuzz/corpus/$$n build/fuzz/new/$$n; \
	    echo "fuzz: $$n for $(FUZZ_SECONDS) s"; \
	    ./build/fuzz/$$n $(FUZZ_OPTS) -max_total_time=$(FUZZ_SECONDS) \
	        -artifact_prefix=tests/fuzz/corpus/$$n/crash- \
	        build/fuzz/new/$$n tests/fuzz/corpus/$$n 2>&1 | tee build/fuzz/$$n.log | \
	        grep -E '^(#[0-9]+[[:space:]]+(INITED|DONE)|stat::|==[0-9]+==ERROR|SUMMARY)' || true; \
	    grep -q -E '==[0-9]+==ERROR|^SUMMARY|deadly signal|Test unit written' build/fuzz/$$n.log && \
	        { echo "fuzz: $$n FAILED, see build/fuzz/$$n.log" >&2; exit 1; }; \
	    ./build/fuzz/$$n -merge=1 tests/fuzz/corpus/$$n build/fuzz/new/$$n >build/fuzz/$$n.merge.log 2>&1; \
	done

fuzz-check: $(FUZZ_BIN)
	@set -e; for n in $(FUZZ_NAMES); do \
	    rm -rf build/fuzz/scratch/$$n; mkdir -p build/fuzz/scratch/$$n tests/fuzz/corpus/$$n; \
	    echo "fuzz-check: $$n ($(FUZZ_CHECK_SECONDS) s)"; \
	    ./build/fuzz/$$n $(FUZZ_OPTS) -max_total_time=$(FUZZ_CHECK_SECONDS) \
	        -artifact_prefix=build/fuzz/scratch/$$n- \
	        build/fuzz/scratch/$$n tests/fuzz/corpus/$$n >build/fuzz/$$n.check.log 2>&1 || \
	        { tail -n 40 build/fuzz/$$n.check.log >&2; echo "fuzz-check: $$n FAILED" >&2; exit 1; }; \
	    grep -E '^#[0-9]+[[:space:]]+DONE' build/fuzz/$$n.check.log || true; \
	done

format:
	clang-format -i src/*.c src/*.h src/*/*.c src/*/*.h tests/unit/*.c tests/unit/*.h

clean:
	rm -rf build

-include $(REL_OBJ:.o=.d) $(TEST_OBJ:.o=.d) $(UNIT_OBJ:.o=.d) $(VG_OBJ:.o=.d)
-include $(FUZZ_LIB_OBJ:.o=.d) $(FUZZ_BIN:=.d)
