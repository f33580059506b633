# jinn - build, test, run. `make` builds build/jinn; `make test` builds the
# sanitizer variant and runs every test; `make run` starts a one-node jinn.

PKGS     := raft libuv jansson sqlite3
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

.PHONY: all deps run test unit cluster valgrind bench clean format

all: build/jinn

deps:
	@pkg-config --exists $(PKGS) || scripts/install-deps.sh
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

unit: build/test/unit
	ASAN_OPTIONS=detect_leaks=1 ./build/test/unit

cluster: build/test/jinn
	JINN_BIN=$(CURDIR)/build/test/jinn $(PYTHON) -m pytest -q -p no:cacheprovider tests/cluster

valgrind: build/vg/unit
	valgrind --error-exitcode=1 --leak-check=full --errors-for-leak-kinds=definite ./build/vg/unit

build/bench/load: bench/load.c build/rel/src/httpmsg.o build/rel/src/fetch.o \
                  build/rel/src/alloc.o build/rel/src/codec.o build/rel/src/error.o \
                  build/rel/src/fsm/nodes.o build/rel/src/tree.o
	@mkdir -p build/bench
	$(CC) $(REL_CFLAGS) -o $@ $^ $(LIBS)

build/bench/nats_load: bench/nats_load.c
	@mkdir -p build/bench
	$(CC) -std=c11 -D_GNU_SOURCE -O2 $(WARN) -o $@ $< $(shell pkg-config --cflags --libs libnats) -lpthread

# jinn alone (bench/run), then jinn against etcd and NATS JetStream (bench/compare).
bench: deps build/jinn build/bench/load
	@scripts/install-deps.sh --bench
	$(MAKE) build/bench/nats_load
	bench/run
	bench/compare

format:
	clang-format -i src/*.c src/*.h src/*/*.c src/*/*.h tests/unit/*.c tests/unit/*.h

clean:
	rm -rf build

-include $(REL_OBJ:.o=.d) $(TEST_OBJ:.o=.d) $(UNIT_OBJ:.o=.d) $(VG_OBJ:.o=.d)
