# vigd — see README.md. Every target works on a clean clone with Go and apt.
GO      ?= go
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -s -w -X main.version=$(VERSION)
BIN     := bin

.PHONY: all build test test-short demo bench soak fuzz dist deb lint clean vet

all: build

build:
	$(GO) build -ldflags '$(LDFLAGS)' -o $(BIN)/vigd ./cmd/vigd
	$(GO) build -ldflags '$(LDFLAGS)' -o $(BIN)/eventstore-sim ./cmd/eventstore-sim

vet:
	$(GO) vet ./...

# The whole suite, under the race detector. Tests that need a real peer
# (mosquitto, socat, dovecot) skip outside CI when it is missing and say so.
test: vet
	$(GO) test -race -count=1 -timeout 20m ./...

test-short:
	$(GO) test -short -count=1 ./...

demo: build
	$(GO) run ./scripts/demo

# End-to-end figures on this machine (see internal/bench/run): vigd with a
# durable queue and signing against a lean counting sink, CSV over TCP.
# Prints every figure and writes them to bin/bench-results.txt.
bench:
	$(GO) build -ldflags '$(LDFLAGS)' -o $(BIN)/vigd ./cmd/vigd
	$(GO) build -o $(BIN)/bench-sink ./internal/bench/sink
	$(GO) build -o $(BIN)/bench-load ./internal/bench/load
	$(GO) run ./internal/bench/run -bin $(BIN) -out $(BIN)/bench-results.txt $(BENCHFLAGS)

# The long end-to-end runs (internal/e2e, the real binaries): 200 SIGKILLs
# of vigd while devices stream and the backlog drains, and 1,000,000
# records queued while the simulator is down, then drained. Prints every
# figure. VIGD_E2E_KILLS=N sets the number of kills.
soak:
	VIGD_SOAK=1 $(GO) test -count=1 -v -timeout 90m -run 'TestKillNineLosesNothing|TestOutageDrain1M' ./internal/e2e/

# Static binaries for the gateways: $(DIST)/vigd-linux-{amd64,arm64,armv7}.
DIST         ?= dist
DIST_TARGETS := amd64:amd64: arm64:arm64: armv7:arm:7
dist:
	@mkdir -p $(DIST)
	@set -e; for t in $(DIST_TARGETS); do \
		name=$${t%%:*}; rest=$${t#*:}; arch=$${rest%%:*}; arm=$${rest#*:}; \
		echo "build $(DIST)/vigd-linux-$$name"; \
		CGO_ENABLED=0 GOOS=linux GOARCH=$$arch GOARM=$$arm $(GO) build -trimpath \
			-ldflags '$(LDFLAGS)' -o $(DIST)/vigd-linux-$$name ./cmd/vigd; \
	done

# .deb packages (amd64, arm64, armhf) built with nfpm from the tools module;
# the layout is in packaging/nfpm.yaml (@BIN@ is the binary). A tag v1.2.3
# gives 1.2.3, commits after it 1.2.3+4+gHASH, an untagged tree
# 0.0.0+gitHASH.
NFPM        := $(GO) tool -modfile=tools/go.mod nfpm
DEB_VERSION ?= $(subst -,+,$(if $(filter v%,$(VERSION)),$(patsubst v%,%,$(VERSION)),0.0.0+git$(VERSION)))
DEB_TARGETS := amd64:amd64 arm64:arm64 armv7:arm7
deb: dist
	@set -e; for t in $(DEB_TARGETS); do \
		rm -rf $(DIST)/pkg; mkdir -p $(DIST)/pkg; \
		sed 's#@BIN@#$(DIST)/vigd-linux-'$${t%%:*}'#' packaging/nfpm.yaml > $(DIST)/pkg/nfpm.yaml; \
		NFPM_ARCH=$${t#*:} NFPM_VERSION='$(DEB_VERSION)' \
			$(NFPM) package --config $(DIST)/pkg/nfpm.yaml --packager deb --target $(DIST)/; \
	done; rm -rf $(DIST)/pkg

# go vet and staticcheck (from the tools module, so the main go.mod stays
# as it is).
lint: vet
	$(GO) tool -modfile=tools/go.mod staticcheck ./...

# Every native fuzz target for FUZZTIME each (go test -fuzz takes one
# target of one package at a time). `make test` already runs their seed
# corpora as ordinary tests. New interesting inputs stay in Go's cache;
# a crasher is written to the package's testdata/fuzz (keep it: it is then
# a regression seed). Large seeds make minimisation stall, hence 1s.
FUZZTIME ?= 30s
fuzz:
	@set -e; for dir in $$(grep -rl --include='*_test.go' '^func Fuzz' . | xargs -n1 dirname | sort -u); do \
	  for fn in $$(grep -h '^func Fuzz' $$dir/*_test.go | sed 's/^func \(Fuzz[A-Za-z0-9_]*\).*/\1/' | sort); do \
	    echo "== $$dir $$fn ($(FUZZTIME))"; \
	    $(GO) test -run='^$$' -fuzz="^$$fn\$$" -fuzztime=$(FUZZTIME) -fuzzminimizetime=1s $$dir; \
	  done; \
	done

clean:
	rm -rf $(BIN) dist
