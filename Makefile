# kubelab — the two commands a newcomer needs:
#   make demo   installs what is missing, builds, starts a local lab, runs a pod
#   make test   the whole test suite
# and `make down` stops what `make demo` started.

SHELL := /bin/bash
LAB ?= $(CURDIR)/.lab
REGISTRY ?= 127.0.0.1:5000
SERVER ?= 127.0.0.1:6443
# make demo's build (the `demo` profile: Cargo.toml); make bench builds `release`.
BIN := target/demo
KUBELAB := $(BIN)/kubelab
KUBELABD := $(BIN)/kubelabd
DEB_PACKAGES := curl iproute2 docker-registry busybox-static containernetworking-plugins iptables libseccomp-dev pkg-config runc

# Root's tools (ip, iptables) live in sbin, which a plain PATH may lack.
export PATH := $(PATH):/usr/local/sbin:/usr/sbin:/sbin

.PHONY: demo test deps build registry up down bench lint fuzz clean

## Install the Debian packages kubelab and its tests need (only the missing ones).
deps:
	@if [ "$$(id -u)" != 0 ]; then echo "error: kubelab runs containers and needs root: run make as root (sudo make ...)" >&2; exit 1; fi
	@missing=""; for p in $(DEB_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	fi
	@command -v cargo >/dev/null || { echo "error: cargo not found: install Rust (https://rustup.rs) and run make again" >&2; exit 1; }
	@# kubectl is kubelab's reference client. Where none is installed, Debian's (1.20,
	@# which speaks every verb but exec, attach and port-forward to kubelab).
	@command -v kubectl >/dev/null || { echo "installing: kubernetes-client (kubectl)"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq kubernetes-client >/dev/null; }

build: deps
	cargo build --profile demo -p kubelab-daemon -p kubelab-cli

## Debian's docker-registry on $(REGISTRY), storage under $(LAB)/registry.
registry: deps
	@mkdir -p $(LAB)/registry; \
	if [ -f $(LAB)/registry.pid ] && kill -0 $$(cat $(LAB)/registry.pid) 2>/dev/null; then exit 0; fi; \
	if curl -fsS -o /dev/null http://$(REGISTRY)/v2/ 2>/dev/null; then \
	  echo "error: something else already answers on $(REGISTRY): stop it, or choose another address: make demo REGISTRY=127.0.0.1:5001" >&2; exit 1; fi; \
	printf 'version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: %s\n  delete:\n    enabled: true\nhttp:\n  addr: %s\n  secret: kubelab-demo\n' \
	  "$(LAB)/registry" "$(REGISTRY)" > $(LAB)/registry.yml; \
	docker-registry serve $(LAB)/registry.yml > $(LAB)/registry.log 2>&1 & echo $$! > $(LAB)/registry.pid; \
	for i in $$(seq 50); do \
	  if curl -fsS -o /dev/null http://$(REGISTRY)/v2/ 2>/dev/null; then echo "registry: http://$(REGISTRY) (log: $(LAB)/registry.log)"; exit 0; fi; \
	  sleep 0.1; done; \
	echo "error: the registry did not start on $(REGISTRY) (see $(LAB)/registry.log)" >&2; exit 1

## The lab: apiserver + scheduler + two agents, in the background (log: $(LAB)/up.log).
up: build registry
	@if [ -f $(LAB)/up.pid ] && kill -0 $$(cat $(LAB)/up.pid) 2>/dev/null; then echo "the lab is already up"; exit 0; fi; \
	if $(KUBELAB) --server $(SERVER) get nodes >/dev/null 2>&1; then \
	  echo "error: an apiserver this Makefile did not start already answers on $(SERVER): stop it, or choose another address: make demo SERVER=127.0.0.1:6444" >&2; exit 1; fi; \
	$(KUBELABD) up --agents 2 --listen $(SERVER) --data-dir $(LAB)/data > $(LAB)/up.log 2>&1 & echo $$! > $(LAB)/up.pid; \
	for i in $$(seq 100); do \
	  [ "$$($(KUBELAB) get nodes 2>/dev/null | grep -c ' Ready ')" = 2 ] && exit 0; \
	  kill -0 $$(cat $(LAB)/up.pid) 2>/dev/null || { echo "error: the lab did not start:" >&2; tail -5 $(LAB)/up.log >&2; rm -f $(LAB)/up.pid; exit 1; }; \
	  sleep 0.1; done; \
	echo "error: the nodes did not become Ready (see $(LAB)/up.log)" >&2; exit 1

demo: up
	@echo; echo "== step 1-2: build images and push them to the registry"
	@echo "-- the base image: Debian's static busybox as a root filesystem, one layer"
	@rm -rf $(LAB)/rootfs && examples/busybox-rootfs.sh $(LAB)/rootfs
	$(KUBELAB) image push $(LAB)/rootfs $(REGISTRY)/busybox:demo --cmd sh
	@echo "-- the example app on top of it, built from examples/site/Containerfile"
	$(KUBELAB) image build examples/site -t $(REGISTRY)/site:demo --build-arg REGISTRY=$(REGISTRY) --root $(LAB)/build --push
	@echo; echo "== the nodes, each with its range of pod addresses"
	$(KUBELAB) get nodes -o wide
	@echo; echo "== step 3-7: ask for two pods; the scheduler binds them, the agents pull and start them"
	@$(KUBELAB) delete pod hello >/dev/null 2>&1 || true
	@$(KUBELAB) delete pod site >/dev/null 2>&1 || true
	sed "s#127.0.0.1:5000#$(REGISTRY)#" examples/hello.yaml | $(KUBELAB) apply -f -
	sed "s#127.0.0.1:5000#$(REGISTRY)#" examples/site.yaml | $(KUBELAB) apply -f -
	$(KUBELAB) wait pod hello --for Succeeded --timeout 60
	$(KUBELAB) wait pod site --for Ready --timeout 60
	$(KUBELAB) get pods -o wide
	@echo; echo "== hello's output"
	$(KUBELAB) logs hello
	@echo; echo "== the site, asked from this machine (its pod address is on the node's CNI bridge)"
	@ip=$$($(KUBELAB) get pod site -o wide | awk 'NR==2 {print $$6}'); \
	echo "curl http://$$ip:8080/cgi-bin/hello"; curl -fsS http://$$ip:8080/cgi-bin/hello; \
	echo "curl http://$$ip:8080/build-info.txt"; curl -fsS http://$$ip:8080/build-info.txt
	@echo; echo "== the site's timeline"
	$(KUBELAB) describe pod site
	@echo; echo "== its way through the seven steps"
	$(KUBELAB) trace pod site
	@echo; echo "The lab is still up. kubectl drives it (its kubeconfig is ~/.kubelab/config):"; \
	echo; echo "  export PATH=$(CURDIR)/$(BIN):\$$PATH KUBECONFIG=\$$HOME/.kubelab/config"; \
	echo "  kubectl apply -f examples/sleep.yaml && kubectl get pods -o wide"; \
	echo; echo "Stop it all with: make down"

## Stops what `make demo` started (the agents stop their pods first), and removes what a
## lab that was killed left on the machine (`kubelabd reset`).
down:
	@if [ -f $(LAB)/up.pid ]; then \
	  pid=$$(cat $(LAB)/up.pid); kill $$pid 2>/dev/null; \
	  for i in $$(seq 300); do kill -0 $$pid 2>/dev/null || break; sleep 0.1; done; \
	  if kill -0 $$pid 2>/dev/null; then echo "error: kubelabd up (pid $$pid) did not stop within 30 s; see $(LAB)/up.log" >&2; exit 1; fi; \
	  rm -f $(LAB)/up.pid; fi
	@if [ -f $(LAB)/registry.pid ]; then kill $$(cat $(LAB)/registry.pid) 2>/dev/null; rm -f $(LAB)/registry.pid; fi
	@# What a lab killed hard left (containers, mounts, cgroups, links, iptables rules);
	@# after a clean stop there is nothing.
	@if [ -x $(KUBELABD) ] && [ -d $(LAB) ]; then \
	  out=$$($(KUBELABD) reset $(LAB) 2>&1) || { echo "$$out" >&2; exit 1; }; \
	  echo "$$out" | grep -v '^nothing to remove' || true; fi
	@echo "the lab is down"

## Everything: unit tests and the end-to-end tests (real registry, real containers; root).
## skopeo and umoci check that built images are standard OCI images.
TEST_PACKAGES := skopeo umoci
test: deps
	@missing=""; for p in $(TEST_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then echo "installing:$$missing"; apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; fi
	@# Debian's kubectl 1.20 beside the installed one, unpacked (not installed): the tests
	@# check that an old kubectl works too (all but exec, which it speaks over SPDY).
	@if [ ! -x target/kubectl-1.20/usr/bin/kubectl ]; then \
	  d=$$(mktemp -d) && (cd $$d && { apt-get download -qq kubernetes-client 2>/dev/null || \
	    { apt-get update -qq && apt-get download -qq kubernetes-client 2>/dev/null; }; }) && \
	  mkdir -p target/kubectl-1.20 && dpkg -x $$d/kubernetes-client_*.deb target/kubectl-1.20; rm -rf $$d; fi
	cargo build --bins
	cargo test --workspace -- --test-threads=2

## Speed figures, each beside a comparison from the same run; prints one table (kept in
## docs/benchmarks.md). Not a test. skopeo and umoci are the image-pull comparison,
## buildah the image-build one.
BENCH_PACKAGES := skopeo umoci buildah
bench: deps
	@missing=""; for p in $(BENCH_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then echo "installing:$$missing"; apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; fi
	cargo build --release -p kubelab-daemon -p kubelab-cli
	cargo run --release -p kubelab-tests --bin bench

## Fuzz the parsers of hostile input (manifests, image layers, Containerfiles, image references,
## selectors, durations, quantities) for FUZZ_SECONDS each.
## New inputs that reach new code land in fuzz/corpus/, which `make test` replays.
## cargo-fuzz wants a nightly compiler; RUSTC_BOOTSTRAP lets the stable one build it
## without sanitizers (a panic is still a crash).
FUZZ_SECONDS ?= 60
fuzz:
	@command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz
	cd fuzz && for target in manifest unpack_layer containerfile image_ref selector duration quantity rest_request; do \
	  RUSTC_BOOTSTRAP=1 cargo fuzz run $$target --fuzz-dir . --sanitizer none -- -max_total_time=$(FUZZ_SECONDS) || exit 1; \
	done

lint:
	cargo fmt --all -- --check
	cargo clippy --all-targets -- -D warnings

## make down (with its reset), then the lab's files: stored objects, images, the registry.
clean: down
	rm -rf $(LAB)
