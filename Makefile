# Spillway: `make run` (install what is missing, build, run the agent with ./agent.toml) and
# `make test` (install what is missing, build, run every test). Debian 12.
# `make install` / `make uninstall` / `make deb`: the release binary (Swift runtime linked
# statically), the systemd unit, /etc/spillway, completions; see README "Install and run as a service".
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c

SWIFT ?= swift
CONFIG ?= agent.toml
LOG_LEVEL ?= info
# libcurl4: the tests' HTTP client (URLSession, FoundationNetworking) loads it; the agent does not.
# libssl-dev: TLS (rediss://); openssl: the TLS tests make their certificates with it.
APT_PACKAGES := libhiredis-dev libsqlite3-dev libssl-dev openssl libcurl4 redis-server redis-tools python3 python3-venv
PACKAGE_APT_PACKAGES := dpkg-dev systemd
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

# The version is written once, in Sources/spillway/Spillway.swift (`static let version`).
VERSION := $(shell sed -nE 's/^ *static let version = "([^"]+)".*/\1/p' Sources/spillway/Spillway.swift)
# make install: PREFIX and DESTDIR as usual; the config is always /etc/spillway, the data_dir
# /var/lib/spillway. PURGE=1 makes uninstall remove those too.
PREFIX ?= /usr/local
DESTDIR ?=
BINDIR ?= $(PREFIX)/bin
UNITDIR ?= $(PREFIX)/lib/systemd/system
BASHCOMPDIR ?= $(PREFIX)/share/bash-completion/completions
ZSHCOMPDIR ?= $(PREFIX)/share/zsh/site-functions
DOCDIR ?= $(PREFIX)/share/doc/spillway
PURGE ?= 0
INSTALL_ENV = DESTDIR="$(DESTDIR)" PREFIX="$(PREFIX)" BINDIR="$(BINDIR)" UNITDIR="$(UNITDIR)" \
  BASHCOMPDIR="$(BASHCOMPDIR)" ZSHCOMPDIR="$(ZSHCOMPDIR)" DOCDIR="$(DOCDIR)" PURGE="$(PURGE)"

# The release binary: Swift runtime and Foundation linked statically (ldd lists only Debian's
# libraries), built in a scratch path of its own, stamped with the commit and date
# (scripts/build-info; the header lives in STAMP_DIR, outside the source tree); no RUNPATH
# ($ORIGIN would let a library put beside the binary be loaded). Rebuilt when a source, this
# Makefile or the commit changes (a new stamp alone recompiles one C file and relinks, ~15 s).
STATIC_SCRATCH := .build-static
STATIC_BIN := $(STATIC_SCRATCH)/release/spillway
STAMP_DIR := $(CURDIR)/$(STATIC_SCRATCH)/stamp
SWIFT_SOURCES := Package.swift $(shell find Sources -type f)
DEB := dist/spillway_$(VERSION)_amd64.deb
# make run: the demo's state (buffer, lock, offsets) stays in the checkout, never /var/lib/spillway.
RUN_DATA_DIR ?= $(or $(SPILLWAY_DATA_DIR),$(CURDIR)/.run/data)

.PHONY: all deps deps-package build release run once check test test-install bench install uninstall deb clean samples FORCE

all: build

# Installs the Debian packages the build and the tests need, only those missing.
apt_install = missing=""; for p in $(1); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "install ok installed" || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq $$missing >/dev/null; \
	fi

deps:
	@$(call apt_install,$(APT_PACKAGES))
	@command -v $(SWIFT) >/dev/null || { echo "swift not found: install Swift 6 (https://swift.org/install) and put it on PATH"; exit 1; }

# What `make deb` and the install tests need besides: dpkg-shlibdeps, systemd-analyze.
deps-package:
	@$(call apt_install,$(PACKAGE_APT_PACKAGES))

build: deps
	$(SWIFT) build

release: deps $(STATIC_BIN)

# Rewritten only when the commit changes, so that a new commit re-stamps the binary.
$(STATIC_SCRATCH)/commit: FORCE
	@mkdir -p $(@D); c=$$(scripts/build-info commit); [ "$$(cat $@ 2>/dev/null)" = "$$c" ] || echo "$$c" > $@

$(STATIC_BIN): $(STATIC_SCRATCH)/commit $(SWIFT_SOURCES) Makefile
	scripts/build-info header $(STAMP_DIR)
	$(SWIFT) build -c release --static-swift-stdlib --disable-local-rpath --product spillway --scratch-path $(STATIC_SCRATCH) -Xcc -I$(STAMP_DIR)
	touch $@

# Installs the release binary, unit, completions and config (see scripts/install).
install: release
	$(INSTALL_ENV) BIN=$(STATIC_BIN) scripts/install install

uninstall:
	$(INSTALL_ENV) scripts/install uninstall

# dist/spillway_VERSION_amd64.deb (see scripts/make-deb).
deb: deps-package release $(DEB)

$(DEB): $(STATIC_BIN) scripts/make-deb scripts/install packaging/spillway.service.in $(wildcard packaging/deb/*) agent.toml $(wildcard plugins.d/*.toml) README.md $(wildcard docs/*.md)
	scripts/make-deb $(STATIC_BIN) $(VERSION) $(DEB)

# Runs the agent in the foreground with ./agent.toml and ./plugins.d; Ctrl-C stops it cleanly. With
# no Redis answering on the configured loopback address, a throwaway redis-server runs for the demo.
run: build
	mkdir -p $(RUN_DATA_DIR)
	SPILLWAY_DATA_DIR=$(RUN_DATA_DIR) scripts/run $$($(SWIFT) build --show-bin-path)/spillway $(CONFIG) --log-level $(LOG_LEVEL)

# What would the agent send? One collection of every input, as line protocol.
once: build
	$$($(SWIFT) build --show-bin-path)/spillway once --config $(CONFIG)

check: build
	SPILLWAY_DATA_DIR=$(RUN_DATA_DIR) $$($(SWIFT) build --show-bin-path)/spillway check --config $(CONFIG)

# Async suites whose awaits carry timing (exec's runs through swift-subprocess, the HTTP endpoint's
# requests): they need a free thread of Swift's cooperative pool (one a core), which the other tests
# hold while they wait on agents and servers. They run in a second pass, alone.
ISOLATED_SUITES := ExecRuns|ExecdProcessRuns|HealthMetrics

# Every test (Swift Testing: the suites above in a pass of their own), then the install checks
# (scripts/test-install: the static binary, make install/uninstall, the unit, the .deb; built once
# here and reused). The last line is a plain "N passed, N failed" summary of all.
test: deps deb
	scripts/redis-stack-server --prepare
	scripts/promtool --prepare
	$(SWIFT) build --build-tests
	@log=$$(mktemp); status=0; \
	$(SWIFT) test --skip-build --skip '$(ISOLATED_SUITES)' 2>&1 | tee "$$log" || status=$$?; \
	$(SWIFT) test --skip-build --filter '$(ISOLATED_SUITES)' 2>&1 | tee -a "$$log" || status=$$?; \
	scripts/test-install $(STATIC_BIN) $(DEB) $(VERSION) 2>&1 | tee -a "$$log" || status=1; \
	runs=$$(grep -cE "Test run with [0-9]+ tests? " "$$log" || true); \
	total=0; for n in $$(grep -E "Test run with [0-9]+ tests? " "$$log" | sed -E 's/.*Test run with ([0-9]+) tests?.*/\1/'); do total=$$((total + n)); done; \
	failing_tests=$$(grep -E "^✘ Test .* failed after" "$$log" | grep -vc "^✘ Test run with" || true); \
	install_line=$$(grep -E "^install checks: [0-9]+ passed, [0-9]+ failed$$" "$$log" | tail -1 || true); \
	isolated=$$(grep -E "Test run with [0-9]+ tests? " "$$log" | sed -n 2p | sed -E 's/.*Test run with ([0-9]+) tests?.*/\1/' || true); \
	rm -f "$$log"; \
	if [ "$$runs" != 2 ]; then echo "expected two Swift Testing summaries, found $$runs (a test process crashed?)"; failing_tests=$$((failing_tests + 1)); status=1; fi; \
	if [ "$${isolated:-0}" = 0 ]; then echo "the second pass ($(ISOLATED_SUITES)) ran no test: renamed suites?"; failing_tests=$$((failing_tests + 1)); status=1; fi; \
	if [ -z "$$install_line" ]; then echo "no install checks summary found"; install_line="install checks: 0 passed, 1 failed"; status=1; fi; \
	install_passed=$$(sed -E 's/^install checks: ([0-9]+) passed.*/\1/' <<<"$$install_line"); \
	install_failed=$$(sed -E 's/.* ([0-9]+) failed$$/\1/' <<<"$$install_line"); \
	echo "$$((total - failing_tests + install_passed)) passed, $$((failing_tests + install_failed)) failed"; \
	exit $$status

# After editing agent.toml or plugins.d/*.toml: embed them again for `spillway config` and
# `spillway plugins NAME` (a test fails while they differ).
samples:
	scripts/embed-samples

# The install checks alone (builds the static binary and the .deb first when needed).
test-install: deps deb
	scripts/test-install $(STATIC_BIN) $(DEB) $(VERSION)

bench: deps
	$(SWIFT) build -c release --product spillway-bench
	$$($(SWIFT) build -c release --show-bin-path)/spillway-bench

clean:
	rm -rf .build $(STATIC_SCRATCH) dist
