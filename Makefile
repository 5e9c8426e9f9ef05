# ironlab: `make run` plays the built-in deploy scenario on the fake backend
# (no root, no system packages); `make test` installs what the integration
# tiers need (as root: ipmitool, pyghmi, libvirt + QEMU) and runs every test.
GO ?= go
export CGO_ENABLED ?= 0

.PHONY: run test interop build lint deps bench bench-all fuzz clean

run:
	$(GO) run ./cmd/ironlab run deploy

build:
	$(GO) build -o bin/ironlab ./cmd/ironlab

lint:
	@out=$$(gofmt -l cmd driver fakeagent images internal scenarios simulator); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...

deps:
	@if [ "$$(id -u)" = 0 ]; then bash scripts/test-deps.sh; \
	else echo "make deps: not root, so not installing ipmitool, python3-pyghmi, chromium, libvirt, QEMU; their test tiers skip (CI=true makes them fail)"; fi

test: deps lint
	$(GO) test -count=1 -timeout 20m $$($(GO) list ./... | grep -v /scenarios/interop)

# The interop tier: Debian's real Ironic 21.4 (scripts/ironic.sh) runs the
# built-in scenarios against the lab, with [agent]require_tls off and on.
interop:
	@if [ "$$(id -u)" = 0 ]; then bash scripts/ironic.sh install; \
	else echo "make interop: not root, so not installing Ironic; the tier skips (CI=true makes it fail)"; fi
	$(GO) test -count=1 -timeout 20m ./scenarios/interop/

# make bench runs the hot-path benchmarks (heartbeat API to store, on SQLite
# and on PostgreSQL; state transition, IPMI framing and sessions, image
# write) BENCHCOUNT times each
# (6: the least benchstat gives a confidence interval for)
# into BENCHOUT, which benchstat compares between commits:
#   make bench BENCHOUT=old.txt; (change); make bench BENCHOUT=new.txt
#   go run golang.org/x/perf/cmd/benchstat@v0.0.0-20260908200009-22c9c6c9d4da old.txt new.txt
BENCHTIME ?= 1s
BENCHCOUNT ?= 6
BENCHOUT ?= bench.txt
bench:
	@: > $(BENCHOUT)
	$(GO) test -run '^$$' -bench '^Benchmark(Heartbeat|HeartbeatLoad|ColumnsJSON)$$' -benchtime $(BENCHTIME) -count $(BENCHCOUNT) ./driver/api | tee -a $(BENCHOUT)
	$(GO) test -run '^$$' -bench . -benchtime $(BENCHTIME) -count $(BENCHCOUNT) ./driver/store/sqlite | tee -a $(BENCHOUT)
	$(GO) test -run '^$$' -bench 'DecodePacket|Serve' -benchtime $(BENCHTIME) -count $(BENCHCOUNT) ./simulator/bmc | tee -a $(BENCHOUT)
	$(GO) test -run '^$$' -bench ImageWrite -benchtime $(BENCHTIME) -count $(BENCHCOUNT) ./fakeagent | tee -a $(BENCHOUT)

# make bench-all runs every Go benchmark a few iterations (peers included:
# pyghmi, VMs where installed).
bench-all:
	$(GO) test -run '^$$' -bench . -benchtime 3x ./...

# make fuzz runs each fuzz target for FUZZTIME, one at a time (the plain
# suite only replays the corpora under each package's testdata/fuzz).
FUZZTIME ?= 20s
FUZZPARALLEL ?= 1
FUZZ_TARGETS = \
	./scenarios:FuzzParseAll \
	./cmd/ironlab:FuzzBMCFile \
	./driver/api:FuzzAPIBody \
	./driver/api:FuzzHeartbeatBody \
	./fakeagent:FuzzConfigFromCmdline \
	./fakeagent:FuzzCommand \
	./fakeagent/pxedeploy:FuzzConfigFromCmdline \
	./fakeagent/pxedeploy:FuzzDiskAPI \
	./fakeagent/ramdisk:FuzzCmdline \
	./simulator/sshpower:FuzzRun \
	./simulator/bootfiles:FuzzWriteRead \
	./simulator/bootfiles:FuzzRead \
	./simulator/bmc:FuzzDecodePacket \
	./simulator/bmc:FuzzBMC \
	./simulator/redfish:FuzzRedfish \
	./simulator/fake:FuzzISOCmdline

fuzz:
	@set -e; for t in $(FUZZ_TARGETS); do pkg=$${t%%:*}; fn=$${t##*:}; \
		echo "== $$fn in $$pkg for $(FUZZTIME)"; \
		$(GO) test -run '^$$' -fuzz "^$$fn\$$" -fuzztime $(FUZZTIME) -fuzzminimizetime 5x -parallel $(FUZZPARALLEL) $$pkg; \
	done

clean:
	rm -rf bin
