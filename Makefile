# Thin front end over CMake presets. `make demo` and `make test` are the two
# commands a new user runs; both install missing Debian packages first.
DEPS      := cmake gcc pkg-config liburing-dev libck-dev check libseccomp-dev python3 groff-base binutils dpkg-dev file linux-perf
JOBS      ?= $(shell nproc 2>/dev/null || echo 2)
CTEST_ARGS ?=

.PHONY: all deps build release demo test test-debug test-asan test-tsan test-busy format clean fuzz bench bench-http valgrind soak reliability torture install package

all: build

deps:
	@sh scripts/deps.sh $(DEPS)

build: deps
	@cmake --preset debug >/dev/null
	@cmake --build --preset debug -j $(JOBS)

release: deps
	@cmake --preset release >/dev/null
	@cmake --build --preset release -j $(JOBS)

# The completion echo server also counts its syscalls per thread (perf, from
# linux-perf; strace where perf cannot): its workers should make none.
demo: release
	@sh scripts/demo.sh build/release
	@sh scripts/frame_demo.sh build/release
	@SYSCALLS=1 sh scripts/demo.sh build/release 5 64 0 completion_echo_server

# Echo servers side by side (bench/run.sh): amio, raw liburing, epoll and the
# peer libraries, quick matrix; the table goes to bench/results/echo-<date>.md.
BENCH_DEPS := libuv1-dev libevent-dev libev-dev

bench: deps
	@sh scripts/deps.sh $(BENCH_DEPS)
	@cmake --preset release >/dev/null
	@cmake --build --preset release -j $(JOBS)
	@QUICK=1 sh bench/run.sh build/release
	@QUICK=1 sh bench/micro.sh build/release
	@build/release/bench/frame_bench 64

# HTTP: examples/http_server against nginx under wrk (bench/http.sh): rows -c1,
# -c50, -c400, ROUNDS interleaved rounds of DURATION s; requests/s, p99, server
# CPU and syscalls per request; the table goes to bench/results/http-<date>.md.
bench-http: deps
	@sh scripts/deps.sh nginx wrk
	@cmake --preset release >/dev/null
	@cmake --build --preset release -j $(JOBS) --target http_server
	@sh bench/http.sh build/release

test: test-debug test-asan test-tsan

test-debug: build
	@cd build/debug && ctest --output-on-failure -j $(JOBS) -LE soak $(CTEST_ARGS)

test-asan: deps
	@cmake --preset asan >/dev/null
	@cmake --build --preset asan -j $(JOBS)
	@cd build/asan && ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 \
	  UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
	  ctest --output-on-failure -j $(JOBS) -LE 'soak|package' $(CTEST_ARGS)

test-tsan: deps
	@cmake --preset tsan >/dev/null
	@cmake --build --preset tsan -j $(JOBS)
	@cd build/tsan && AMIO_TEST_SCALE=0.02 TSAN_OPTIONS=halt_on_error=1:second_deadlock_stack=1:history_size=7:suppressions=$(CURDIR)/tests/tsan.supp \
	  ctest --output-on-failure -j $(JOBS) -L threads $(CTEST_ARGS)

# make test while two busy loops compete for the CPUs (scripts/busy.sh;
# BUSY_LOOPS=n for more): the suites assert contracts, not speed or
# scheduling outcomes, so they must pass on a loaded machine.
test-busy:
	@sh scripts/busy.sh $(MAKE) test

# Install the libraries, headers, CMake and pkg-config files and man pages
# under PREFIX (staged under DESTDIR if set), from an optimised build of the
# libraries alone in build/install. The pkg-config files name PREFIX.
PREFIX ?= /usr/local
install: deps
	@cmake -S . -B build/install -DCMAKE_BUILD_TYPE=RelWithDebInfo \
	  -DCMAKE_INSTALL_PREFIX=$(abspath $(PREFIX)) -DAMIO_BUILD_TESTS=OFF -DAMIO_BUILD_EXAMPLES=OFF \
	  -DAMIO_BUILD_BENCH=OFF >/dev/null
	@cmake --build build/install -j $(JOBS)
	@DESTDIR="$(DESTDIR)" cmake --install build/install

# Debian packages libamio0 and libamio-dev (CPack, cmake/amio_package.cmake)
# for /usr, in build/package.
package: deps
	@cmake -S . -B build/package -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_INSTALL_PREFIX=/usr \
	  -DAMIO_BUILD_TESTS=OFF -DAMIO_BUILD_EXAMPLES=OFF -DAMIO_BUILD_BENCH=OFF >/dev/null
	@cmake --build build/package -j $(JOBS)
	@cd build/package && cpack -G DEB >/dev/null && ls -1 $(CURDIR)/build/package/*.deb

# Model-based torture (tests/check_model.c): fresh seeds for SECONDS, debug and
# ASan builds alternating; prints the seeds and operations run. A failure
# prints its seed: AMIO_MODEL_SEED=<n> build/debug/tests/check_model reruns it.
SECONDS ?= 300

torture: deps
	@cmake --preset debug >/dev/null
	@cmake --build --preset debug -j $(JOBS) --target check_model
	@cmake --preset asan >/dev/null
	@cmake --build --preset asan -j $(JOBS) --target check_model
	@sh scripts/torture.sh $(SECONDS) build/debug/tests/check_model build/asan/tests/check_model

# Soak (tests/soak_connections.c, CTest label soak, on io_uring and on epoll): 10,000 connections, then
# 200,000 connect/close cycles, in a release build (about 15 s on 2 vCPUs).
soak: release
	@cd build/release && ctest -L soak --output-on-failure $(CTEST_ARGS)

# Fuzzes the frame reader with libFuzzer (clang only, no CMake) for FUZZ_SECONDS,
# on build/fuzz/corpus: the seeds of tests/corpus/frame plus what earlier runs found.
# Debian's clang package does not pull in libFuzzer (libclang-rt-dev does).
FUZZ_SECONDS ?= 60
FUZZ_DEPS    := clang libclang-rt-dev
FUZZ_FLAGS   := -std=c11 -D_GNU_SOURCE -g -O1 -fsanitize=fuzzer,address,undefined \
		-fno-sanitize-recover=undefined -Wall -Wextra -Iinclude -Iframe

fuzz:
	@sh scripts/deps.sh $(FUZZ_DEPS)
	@mkdir -p build/fuzz/corpus
	@clang $(FUZZ_FLAGS) tests/fuzz_frame_reader.c frame/frame_reader.c frame/bytebuf.c \
	  -o build/fuzz/fuzz_frame_reader
	@cp tests/corpus/frame/* build/fuzz/corpus/
	@echo "fuzz: running for $(FUZZ_SECONDS) s (log: build/fuzz/fuzz.log)"
	@build/fuzz/fuzz_frame_reader -max_total_time=$(FUZZ_SECONDS) -print_final_stats=1 \
	  -artifact_prefix=build/fuzz/ build/fuzz/corpus >build/fuzz/fuzz.log 2>&1 || \
	  { tail -n 40 build/fuzz/fuzz.log; echo "fuzz: FAILED, input saved in build/fuzz/"; exit 1; }
	@sed -n 's/^stat::number_of_executed_units: */fuzz: executions: /p' build/fuzz/fuzz.log

# valgrind memcheck on the single-threaded suites (scripts/valgrind.sh): a few
# minutes, so not part of `make test`; the sanitizer builds run there.
valgrind: build
	@sh scripts/deps.sh valgrind
	@sh scripts/valgrind.sh build/debug

# docs/RELIABILITY.md from the rows the reliability tests print (several minutes).
reliability: build release
	@sh scripts/deps.sh valgrind
	@sh scripts/reliability.sh

format:
	@clang-format -i $$(git ls-files '*.c' '*.h')

clean:
	@rm -rf build
