# Spillway: `make run` (install what is missing, build, run the agent with ./agent.toml) and
# `make test` (install what is missing, build, run every test). Debian 12.
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c

SWIFT ?= swift
CONFIG ?= agent.toml
LOG_LEVEL ?= info
APT_PACKAGES := libhiredis-dev libsqlite3-dev redis-server redis-tools python3 python3-venv
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: all deps build release run once check test bench clean samples

all: build

# Installs the Debian packages the build and the tests need, only those missing.
deps:
	@missing=""; for p in $(APT_PACKAGES); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "install ok installed" || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq $$missing >/dev/null; \
	fi
	@command -v $(SWIFT) >/dev/null || { echo "swift not found: install Swift 6 (https://swift.org/install) and put it on PATH"; exit 1; }

build: deps
	$(SWIFT) build

release: deps
	$(SWIFT) build -c release

# Runs the agent in the foreground with ./agent.toml and ./plugins.d; Ctrl-C stops it cleanly. With
# no Redis answering on the configured loopback address, a throwaway redis-server runs for the demo.
run: build
	scripts/run $$($(SWIFT) build --show-bin-path)/spillway $(CONFIG) --log-level $(LOG_LEVEL)

# What would the agent send? One collection of every input, as line protocol.
once: build
	$$($(SWIFT) build --show-bin-path)/spillway once --config $(CONFIG)

check: build
	$$($(SWIFT) build --show-bin-path)/spillway check --config $(CONFIG)

# Every test (Swift Testing). The last line is a plain "N passed, N failed" summary.
test: deps
	scripts/redis-stack-server --prepare
	$(SWIFT) build --build-tests
	@log=$$(mktemp); status=0; \
	$(SWIFT) test 2>&1 | tee "$$log" || status=$$?; \
	summary=$$(grep -E "Test run with [0-9]+ tests? " "$$log" | tail -1); \
	total=$$(sed -E 's/.*Test run with ([0-9]+) tests?.*/\1/' <<<"$$summary"); \
	failing_tests=$$(grep -E "^✘ Test .* failed after" "$$log" | grep -vc "^✘ Test run with" || true); \
	rm -f "$$log"; \
	if [ -z "$$total" ]; then echo "no Swift Testing summary found"; exit 1; fi; \
	echo "$$((total - failing_tests)) passed, $$failing_tests failed"; \
	exit $$status

# After editing agent.toml or plugins.d/*.toml: embed them again for `spillway config` and
# `spillway plugins NAME` (a test fails while they differ).
samples:
	scripts/embed-samples

bench: release
	$$($(SWIFT) build -c release --show-bin-path)/spillway-bench

clean:
	rm -rf .build
