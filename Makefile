# libdss: build, install, test, demo. The cargo workspace holds the library
# and dssd, its HTTP server (a crate of its own: libdss.so links none of its
# dependencies).
#
#   make test                 every test (cargo tests with the fault runs, the
#                             C suite via ctest, then under sanitizers); installs missing Debian
#                             packages when run as root
#   make test-sanitize        the C suite under ASan+UBSan, and its API, einval,
#                             kv and lease tests under valgrind memcheck
#   make test-faults          processes contending through the installed
#                             library while the server crashes, is killed,
#                             frozen, cut off or failed over (tests/faults.rs)
#   make demo                 two processes contending for a lock; brings up a
#                             private PostgreSQL unless a connection string is
#                             configured (PHOBOS_DSS_connect_string or
#                             [dss] connect_string in $PHOBOS_CFG_FILE)
#   make install PREFIX=/usr/local [DESTDIR=...] [LIBDIR=...]
#                             the library, header, pkg-config file, SQL,
#                             dssctl and dssd (in $(PREFIX)/bin), examples
#   make migrate CONNINFO='host=... dbname=...'   apply sql/ with psql
#   make header               regenerate include/dss.h

PREFIX  ?= /usr/local
LIBDIR  ?= $(PREFIX)/lib
INCLUDEDIR ?= $(PREFIX)/include
DATADIR ?= $(PREFIX)/share/dss
SQLDIR  ?= $(DATADIR)/sql
EXAMPLEDIR ?= $(PREFIX)/libexec/dss
CARGO   ?= cargo
CC      ?= cc
CFLAGS  ?= -O2 -g -Wall -Wextra -std=c11

VERSION := $(shell sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n 1)
MAJOR   := $(firstword $(subst ., ,$(VERSION)))
STAGE   := $(CURDIR)/build/stage
EXAMPLES := $(patsubst examples/%.c,%,$(wildcard examples/*.c))

.PHONY: all build install header test test-rust test-c test-sanitize test-faults demo deps migrate clean

all: build

build:
	@# The library alone first: cargo resolves features per build, and dssd's
	@# HTTP stack turns on features of crates the library shares; built
	@# apart, libdss.so is byte for byte what it is without dssd.
	$(CARGO) build --release -p dss
	$(CARGO) build --release -p dssd

header: build
	@git diff --stat -- include/dss.h || true

install: build
	install -d $(DESTDIR)$(LIBDIR)/pkgconfig $(DESTDIR)$(INCLUDEDIR) $(DESTDIR)$(SQLDIR) $(DESTDIR)$(EXAMPLEDIR) $(DESTDIR)$(PREFIX)/bin
	install -m 0755 target/release/libdss.so $(DESTDIR)$(LIBDIR)/libdss.so.$(VERSION)
	install -m 0755 target/release/dssctl $(DESTDIR)$(PREFIX)/bin/dssctl
	install -m 0755 target/release/dssd $(DESTDIR)$(PREFIX)/bin/dssd
	ln -sf libdss.so.$(VERSION) $(DESTDIR)$(LIBDIR)/libdss.so.$(MAJOR)
	ln -sf libdss.so.$(MAJOR) $(DESTDIR)$(LIBDIR)/libdss.so
	install -m 0644 include/dss.h $(DESTDIR)$(INCLUDEDIR)/dss.h
	install -m 0644 sql/[0-9]*.sql $(DESTDIR)$(SQLDIR)/
	sed -e 's|@PREFIX@|$(PREFIX)|' -e 's|@LIBDIR@|$(LIBDIR)|' \
	    -e 's|@INCLUDEDIR@|$(INCLUDEDIR)|' -e 's|@SQLDIR@|$(SQLDIR)|' \
	    -e 's|@VERSION@|$(VERSION)|' dss.pc.in > $(DESTDIR)$(LIBDIR)/pkgconfig/dss.pc
	@# The examples are built against the installed copy, through pkg-config;
	@# dss_bench also needs libpq (its baseline) and threads.
	for ex in $(EXAMPLES); do \
	    case $$ex in dss_bench) extra="$$(pkg-config --cflags --libs libpq) -pthread" ;; *) extra="" ;; esac; \
	    $(CC) $(CFLAGS) -o $(DESTDIR)$(EXAMPLEDIR)/$$ex examples/$$ex.c \
	        $$(PKG_CONFIG_PATH=$(DESTDIR)$(LIBDIR)/pkgconfig PKG_CONFIG_SYSROOT_DIR=$(DESTDIR) \
	           pkg-config --cflags --libs dss) $$extra -Wl,-rpath,$(LIBDIR) || exit 1; \
	done

deps:
	@sh scripts/deps.sh

test: deps
	$(MAKE) test-rust
	$(MAKE) test-c
	$(MAKE) test-sanitize

# The fault runs among them build their worker against the installed copy.
test-rust:
	$(MAKE) install PREFIX=$(STAGE)
	DSS_TEST_PREFIX=$(STAGE) $(CARGO) test --release --workspace

test-c:
	rm -rf $(STAGE) build/c-tests
	$(MAKE) install PREFIX=$(STAGE)
	PKG_CONFIG_PATH=$(STAGE)/lib/pkgconfig cmake -S c-tests -B build/c-tests -DDSS_SOURCE_DIR=$(CURDIR)
	cmake --build build/c-tests -j 2
	cd build/c-tests && ctest --output-on-failure --timeout 600

# The C suite again, built with -fsanitize=address,undefined (the test
# programs; the library as installed), then the API, einval, kv and lease
# tests under valgrind memcheck: any error, or a definite leak in the test's
# own process, fails (c-tests/CMakeLists.txt says what is left out and why).
test-sanitize:
	$(MAKE) install PREFIX=$(STAGE)
	rm -rf build/c-asan build/c-vg
	PKG_CONFIG_PATH=$(STAGE)/lib/pkgconfig cmake -S c-tests -B build/c-asan -DDSS_SOURCE_DIR=$(CURDIR) \
	    -DDSS_SANITIZE=address,undefined
	cmake --build build/c-asan -j 2
	cd build/c-asan && ctest --output-on-failure --timeout 900
	PKG_CONFIG_PATH=$(STAGE)/lib/pkgconfig cmake -S c-tests -B build/c-vg -DDSS_SOURCE_DIR=$(CURDIR) \
	    -DDSS_VALGRIND=ON
	cmake --build build/c-vg -j 2
	cd build/c-vg && ctest --output-on-failure -L 'valgrind|fixture'

# The fault runs alone (also part of test-rust), their worker
# (tests/fault_worker.c) built against the installed library.
test-faults:
	$(MAKE) install PREFIX=$(STAGE)
	DSS_TEST_PREFIX=$(STAGE) $(CARGO) test --release --test faults -- --nocapture

demo: deps
	$(MAKE) install PREFIX=$(STAGE)
	sh scripts/demo.sh $(STAGE)

migrate:
	@test -n "$(CONNINFO)" || { echo "usage: make migrate CONNINFO='host=... dbname=...'"; exit 2; }
	for f in sql/[0-9]*.sql; do psql -X -q -v ON_ERROR_STOP=1 "$(CONNINFO)" -f $$f || exit 1; done

clean:
	rm -rf build
	$(CARGO) clean
