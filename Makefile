# autonode: the node agent, the provisioner, the sandbox and their tests.
#   make run      a local sandbox node on emulated AWS, with the agent on it
#   make test     everything CI runs: deps, testenv, gofmt, vet, docs, go test -race
SHELL := /bin/bash
export GOTOOLCHAIN := local

GO        ?= go
BIN       := $(CURDIR)/bin
VERSION   ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS   := -X main.version=$(VERSION)
COMMANDS  := agent/cmd/autonode-agent sandbox/cmd/autonode-sandbox provisioner/cmd/autonode-provisioner
# The control-plane binaries live outside the tree and survive `make clean`.
TESTENV_DIR ?= $(or $(XDG_CACHE_HOME),$(HOME)/.cache)/autonode/testenv/k8s-v1.37.2-etcd-v3.7.3
export KUBEBUILDER_ASSETS ?= $(TESTENV_DIR)
export TESTENV_DIR
# go-nvml's cgo preamble calls functions NVML has deprecated; keep the output readable.
export CGO_CFLAGS ?= -O2 -g -Wno-deprecated-declarations

.PHONY: all build test test-short run bench testenv deps lint fmt-check vet docs docs-check generate gpu-check clean
.PHONY: twoliter-project variant

all: build

build: ## Build every binary into bin/.
	@mkdir -p $(BIN)
	$(GO) build -ldflags "$(LDFLAGS)" -o $(BIN)/ $(addprefix ./,$(COMMANDS))

deps: ## Install the apt packages the tests need (root).
	@./hack/install-deps.sh

testenv: ## Build (or reuse) kube-apiserver, scheduler, controller-manager, kubelet and etcd.
	@./hack/testenv.sh >/dev/null
	@echo "testenv: $(TESTENV_DIR)"

fmt-check:
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi

vet:
	$(GO) vet ./...

lint: fmt-check vet ## gofmt, go vet, and staticcheck when it installs.
	@if $(GO) install honnef.co/go/tools/cmd/staticcheck@v0.8.2 2>/dev/null; then \
		"$$($(GO) env GOPATH)/bin/staticcheck" ./...; \
	else echo "lint: staticcheck did not install; skipped"; fi

docs: build ## Regenerate docs/flags.md from the binaries' --help.
	@./hack/gen-flags-doc.sh $(BIN) > docs/flags.md

docs-check: build
	@./hack/gen-flags-doc.sh $(BIN) | diff -u docs/flags.md - || { echo "docs/flags.md is stale: run make docs"; exit 1; }

generate: ## Run go generate (bpf2go outputs are committed).
	$(GO) generate ./...

test: export AUTONODE_AGENT_BIN := $(BIN)/autonode-agent
test: deps testenv fmt-check vet docs-check ## What CI runs.
	$(GO) test -race -count=1 ./...

test-short: ## The fast unit tier: no privileged or apiserver tests.
	$(GO) test -short ./...

run: build testenv ## A local sandbox node with the agent on it, until Ctrl-C.
	$(BIN)/autonode-sandbox --agent $(BIN)/autonode-agent --assets $(TESTENV_DIR) --state-dir $(CURDIR)/.run

bench: ## Benchmarks; each autonode/baseline pair is printed as a ratio from the same run.
	@mkdir -p $(BIN)
	set -o pipefail; $(GO) test -run '^$$' -bench . -benchmem -count=$(or $(BENCH_COUNT),5) ./... | $(GO) run ./hack/benchratio | tee $(BIN)/bench.txt

gpu-check: ## On a machine with an NVIDIA GPU: enumerate, generate CDI, register, allocate (read-only).
	$(GO) run ./deviceplugins/cmd/gpu-check -v

twoliter-project: ## Assemble build/twoliter/: the tree twoliter builds the Bottlerocket variant from.
	@./hack/twoliter-project.sh $(CURDIR)/build/twoliter

variant: twoliter-project ## Build the variant with twoliter (needs twoliter, Docker, BOTTLEROCKET_REF; docs/VARIANT.md).
	@./hack/variant.sh $(CURDIR)/build/twoliter

clean: ## Remove build outputs and the sandbox state (and a namespace a killed sandbox left).
	@if [ -f .run/netns ]; then ip netns del "$$(cat .run/netns)" 2>/dev/null || true; fi
	rm -rf $(BIN) .run
