# One entry point for building, testing and benchmarking; CI runs `make test`.
#
# Rust build output goes to a cache directory outside the clone so repeated
# runs stay incremental (override with CARGO_TARGET_DIR=...).

CACHE_HOME ?= $(or $(XDG_CACHE_HOME),$(HOME)/.cache)
export CARGO_TARGET_DIR ?= $(CACHE_HOME)/palisade/target
export PALISADE_POLICY_DIR ?= $(CARGO_TARGET_DIR)/policies
export PALISADE_BIN_DIR ?= $(CACHE_HOME)/palisade/bin
export FIXTURES ?= $(abspath fixtures/admission)

.PHONY: demo serve install test fuzz fuzz-smoke soak go-tools node-tools images cluster-up cluster-down crds lint policies bench bench-server bench-policies bench-audit clean-policies

## demo: build the sample policies and evaluate every fixture with them
demo: policies
	@echo "==> evaluating every fixture in $(FIXTURES) with every sample policy"
	cargo run --release -p palisade-host --example evaluate-fixtures -- "$(PALISADE_POLICY_DIR)" "$(FIXTURES)"

## serve: the policy-server on 127.0.0.1:3000 with the sample policies, or POLICIES=policies.yml (Ctrl-C stops it)
serve: policies
	scripts/serve.sh

## install: the palisade CLI and the policy-server into ~/.cargo/bin (cargo install)
install:
	cargo install --locked --path host --bins

## test: formatting, lints, sample policies built for wasm, then every test (one of them on a
## real node: see cluster-up), then every fuzz target for a few seconds
test: lint policies go-tools node-tools
	scripts/run-tests.sh
	$(MAKE) fuzz-smoke

## fuzz: every fuzz target for FUZZ_SECONDS each (default 60), with executions per target
fuzz: policies
	scripts/fuzz.sh

## fuzz-smoke: every fuzz target for 5 seconds: they build and find nothing at once
fuzz-smoke: policies
	scripts/fuzz.sh 5

## soak: the policy-server under wrk at SOAK_LOAD% (80) of its maximum for SOAK_SECONDS (600) over
## TLS, policies and certificate replaced every 30 s; figures every 10 s, CSV and PNG in SOAK_OUT
soak: policies
	scripts/soak.sh

## go-tools: the real components tests run (distribution registry, etcd, kube-apiserver,
## kube-controller-manager, kube-scheduler, kubelet, kubectl, helm), built from the Go module proxy
## into $(PALISADE_BIN_DIR), once
go-tools:
	scripts/ensure-go-tools.sh
	scripts/ensure-kube.sh
	scripts/ensure-helm.sh

## node-tools: the Debian packages of a real node (runc, containerd, CNI plugins, iptables, socat)
node-tools:
	scripts/ensure-node-packages.sh

## images: policy-server, controller and audit-scanner images (OCI image-layout tars) in
## $(CARGO_TARGET_DIR)/images, imported into the node when it is up
images:
	cargo build --release -p palisade-host -p palisade-controller -p palisade-audit --bins
	scripts/build-images.sh "$(CARGO_TARGET_DIR)/release" "$(CARGO_TARGET_DIR)/images"
	if scripts/node.sh status >/dev/null; then scripts/node.sh import "$(CARGO_TARGET_DIR)"/images/*.oci.tar; fi

## cluster-up: a real single-node cluster on this machine (root); KUBECONFIG=/var/lib/palisade-node/kubeconfig
cluster-up: go-tools node-tools
	scripts/node.sh up

## cluster-down: stop the node and remove everything it made
cluster-down:
	scripts/node.sh down

## crds: regenerate the committed CRD YAML (policies, reports) from the Rust types, and the chart's copies
crds:
	cargo run -q -p palisade-controller --bin crdgen > controller/crds/policies.kubewarden.io.yaml
	cargo run -q -p palisade-audit --bin audit-crdgen > audit/crds/reports.yaml
	cp controller/crds/policies.kubewarden.io.yaml charts/palisade/crds/
	cp audit/crds/reports.yaml charts/palisade/files/reports.yaml

lint:
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets -- -D warnings
	scripts/ensure-tools.sh
	cargo clippy -p palisade-sdk --target wasm32-wasip1 -- -D warnings
	cargo clippy -p palisade-sdk --features raw --target wasm32-wasip1 -- -D warnings

## policies: cargo component build + palisade annotate, into $(PALISADE_POLICY_DIR)
policies:
	scripts/build-policies.sh

## bench: per-evaluation latency of pod-privileged, wasm next to native
bench: policies
	cargo bench -p palisade-host --bench evaluation

## bench-server: wrk on loopback against the policy-server and a native baseline (BENCH_DURATION=5)
bench-server: policies
	scripts/bench-server.sh

## bench-policies: 100 policies on 20 modules on one server: start to ready (cold, warm), memory, latency
bench-policies: policies
	scripts/bench-policies.sh

## bench-audit: the audit scanner on OBJECTS pods in NAMESPACES namespaces x 5 policies (test API server)
bench-audit: policies go-tools
	cargo bench -p palisade-audit --bench scan

clean-policies:
	rm -rf "$(PALISADE_POLICY_DIR)"
