# throwawaysh build targets. Run `make help` for a summary.

GO ?= go
GOFMT ?= gofmt
# Guest root filesystem that `make rootfs`, `make install-agent` and
# `make run` use. The default ./rootfs also holds the rootfs package's
# sources. rootfs/clean.sh removes only what rootfs/build.sh generated there.
ROOTFS ?= ./rootfs
# Architecture of the guest agent. A Linux KVM guest runs on the host's CPU,
# so it must match the host; override it only to prepare a rootfs for another
# machine.
GUEST_ARCH ?= $(shell $(GO) env GOARCH)
# Extra arguments for bin/throwawaysh in `make run`.
ARGS ?=
# Version printed by --version: the git description of the checkout.
VERSION ?= $(shell git describe --always --dirty 2>/dev/null || echo dev)

SHELL_SCRIPTS := install_guest_agent.sh rootfs/build.sh rootfs/clean.sh .ci/run
UNAME_S := $(shell uname -s)

.DEFAULT_GOAL := build

.PHONY: help build build-service build-agent install-agent rootfs run test bench lint clean

## help: list the targets
help:
	@sed -n 's/^## //p' $(MAKEFILE_LIST)

## build: build the service and the agent, and install the agent into $(ROOTFS)
build: build-service rootfs

## build-service: build bin/throwawaysh (signed for Hypervisor.framework on macOS)
build-service:
	$(GO) build -ldflags "-X main.version=$(VERSION)" -o bin/throwawaysh ./cmd/throwawaysh
ifeq ($(UNAME_S),Darwin)
	codesign --entitlements cmd/throwawaysh/entitlements.plist --force -s - bin/throwawaysh
endif

## build-agent: build the static guest agent bin/throwawaysh-guest-agent for linux/$(GUEST_ARCH)
build-agent:
	CGO_ENABLED=0 GOOS=linux GOARCH=$(GUEST_ARCH) $(GO) build -trimpath -ldflags '-s -w' -o bin/throwawaysh-guest-agent ./cmd/throwawaysh-guest-agent

## install-agent: copy bin/throwawaysh-guest-agent into $(ROOTFS)
install-agent: build-agent
	./install_guest_agent.sh "$(ROOTFS)" bin/throwawaysh-guest-agent

## rootfs: build a busybox root in $(ROOTFS) unless it has one, then install the agent
rootfs: build-agent
	@if [ -e "$(ROOTFS)/bin/busybox" ]; then \
		echo "$(ROOTFS)/bin/busybox exists, not rebuilding the rootfs (make clean to start over)"; \
	else \
		bash rootfs/build.sh "$(ROOTFS)"; \
	fi
	./install_guest_agent.sh "$(ROOTFS)" bin/throwawaysh-guest-agent

## run: build, then start bin/throwawaysh --rootfs $(ROOTFS) $(ARGS)
run: build
	bin/throwawaysh --rootfs "$(ROOTFS)" $(ARGS)

## test: go vet, then all tests with the race detector
test:
	$(GO) vet ./...
	$(GO) test -race -count=1 -timeout 15m ./...

## bench: compare throwawaysh with OpenSSH's sshd and write the figures into docs/benchmarks.md
# The sshd side needs Debian's openssh-server (apt-get install
# openssh-server); without it the benchmark skips that side and says so.
# Set THROWAWAYSH_TEST_ROOTFS to a root built by `make rootfs` to add
# libkrun where it can boot guests.
bench:
	@if [ ! -x /usr/sbin/sshd ]; then \
		echo "/usr/sbin/sshd not found: the sshd side will be skipped (apt-get install openssh-server)"; \
	fi
	THROWAWAYSH_BENCH_DOC="$(CURDIR)/docs/benchmarks.md" THROWAWAYSH_BENCH_COMMAND="make bench" \
		$(GO) test -run '^$$' -bench '^BenchmarkCompareWithSSHD$$' -benchtime 1x ./cmd/throwawaysh

## lint: go vet, gofmt and (when installed) shellcheck
lint:
	$(GO) vet ./...
	@files=$$($(GO) list -e -f '{{$$d := .Dir}}{{range .GoFiles}}{{$$d}}/{{.}} {{end}}{{range .CgoFiles}}{{$$d}}/{{.}} {{end}}{{range .TestGoFiles}}{{$$d}}/{{.}} {{end}}{{range .XTestGoFiles}}{{$$d}}/{{.}} {{end}}{{range .IgnoredGoFiles}}{{$$d}}/{{.}} {{end}}' ./...); \
	unformatted=$$($(GOFMT) -l $$files); \
	if [ -n "$$unformatted" ]; then \
		echo "gofmt -l lists files that need formatting (run gofmt -w on them):"; \
		echo "$$unformatted"; \
		exit 1; \
	fi
	@if command -v shellcheck >/dev/null 2>&1; then \
		echo "shellcheck $(SHELL_SCRIPTS)"; \
		shellcheck $(SHELL_SCRIPTS); \
	else \
		echo "shellcheck not installed, shell scripts not checked (apt-get install shellcheck)"; \
	fi

## clean: remove bin/ and what rootfs/build.sh generated in $(ROOTFS)
clean:
	rm -rf bin
	bash rootfs/clean.sh "$(ROOTFS)"
