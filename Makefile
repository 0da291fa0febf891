# Front door: `make run` builds and serves the bundled model over HTTP on
# 127.0.0.1:8080 (Ctrl-C drains and stops it); `make test` builds and runs
# the whole suite. Both install dependencies. `make story` tells a story.
BUILD     ?= build
JOBS      ?= $(shell nproc)
CMAKE_ARGS ?=
CTEST_ARGS ?=
# What `make tsan` runs under ThreadSanitizer: the threaded layers (pool,
# registry, scheduler, front end), every server test and the client library.
TSAN_TESTS ?= ^(test_pool|test_registry|test_model_file|test_scheduler|test_sched_determinism|test_frontend|test_kvrun|test_serve_|test_http_load|test_client|test_channel|test_pipeline)
MODEL     ?= models/stories260K.gguf
PROMPT    ?= Once upon a time
HOST      ?= 127.0.0.1
PORT      ?= 8080

.PHONY: all deps build run story test test-asan tsan bench clean

all: build

deps:
	@bash scripts/install-deps.sh

$(BUILD)/Makefile: CMakeLists.txt
	cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=RelWithDebInfo $(CMAKE_ARGS)

build: deps $(BUILD)/Makefile
	cmake --build $(BUILD) -j$(JOBS)

run: build
	$(BUILD)/inferd serve -m $(MODEL) --host $(HOST) --port $(PORT)

story: build
	$(BUILD)/inferd generate -m $(MODEL) -p "$(PROMPT)" -n 200 --temp 0.8 --seed 42

test: build
	cd $(BUILD) && ctest --output-on-failure -j$(JOBS) $(CTEST_ARGS)

test-asan:
	$(MAKE) test BUILD=build-asan \
	  CMAKE_ARGS="-DINFERD_SANITIZE=address,undefined -DINFERD_WERROR=ON $(CMAKE_ARGS)"

tsan:
	$(MAKE) test BUILD=build-tsan \
	  CMAKE_ARGS="-DINFERD_SANITIZE=thread $(CMAKE_ARGS)" \
	  CTEST_ARGS="-R '$(TSAN_TESTS)'"

bench: build
	bash bench/run.sh

clean:
	rm -rf build build-asan build-tsan
