# vigd — see README.md. Every target works on a clean clone with Go and apt.
GO      ?= go
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -s -w -X main.version=$(VERSION)
BIN     := bin

.PHONY: all build test test-short demo bench soak fuzz dist clean vet

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

clean:
	rm -rf $(BIN) dist
