# Entry points the README promises: `make serve`, `make test`, `make cluster`, `make demo`, `make down`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
CLUSTER_DIR ?= .cluster

.PHONY: install serve test lint typecheck tools node-tools image-tools images cluster-build cluster demo down

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

# The runtime alone (no torch, no operator): what `make serve` needs, installed in about a minute.
$(BIN)/.runtime-installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e '.[runtime]'
	touch $@

# The operator alone (kopf, kubernetes client): what `make demo` runs locally.
$(BIN)/.operator-installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e '.[operator]'
	touch $@

# Everything (runtime, operator, modeling toolkit, test tools) for `make test` and `make demo`.
$(BIN)/.installed: pyproject.toml | $(BIN)/python
	# torch is pinned: where no local wheel is configured, pip takes the multi-GB CUDA build once.
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[dev]'
	touch $(BIN)/.runtime-installed $(BIN)/.operator-installed $@

install: $(BIN)/.installed

serve: $(BIN)/.runtime-installed
	$(BIN)/kubescribe serve

# vulture: dead code in the runtime (its tests count as users; tools/vulture_whitelist.py lists
# what it cannot see)
lint: $(BIN)/.installed
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/vulture runtime/kubescribe_runtime tests/runtime tools/vulture_whitelist.py \
		--min-confidence 60 --ignore-decorators '@*.get,@*.post,@*.route,@field_validator,@model_validator'

typecheck: $(BIN)/.installed
	$(BIN)/mypy

# promtool (Debian's prometheus package) checks the example alert rules in tests/packaging, and
# its prometheus server scrapes a runtime for the canary analysis (tests/operator/test_canary_metrics.py);
# espeak-ng synthesises the speech of the modeling data tests (tests/modeling/test_data.py);
# the Asterisk prompts (real recorded speech, CC-BY-SA-3.0) are the real-speech test sets
# (tests/modeling/test_asterisk.py); sox codes the telephone channels of the real-voices recipe,
# whose English training voices include flite's.
SPEECH_PACKAGES := asterisk-core-sounds-en-wav asterisk-core-sounds-en asterisk-core-sounds-es-wav asterisk-core-sounds-es sox flite
tools:
	command -v promtool >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null; }
	command -v espeak-ng >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends espeak-ng >/dev/null; }
	@missing=$$(for p in $(SPEECH_PACKAGES); do dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q 'ok installed' || echo $$p; done); \
	[ -z "$$missing" ] || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq -o DPkg::Lock::Timeout=600 --no-install-recommends $$missing >/dev/null; }

# The real node's runtime from Debian (cluster/node.py): containerd, runc, the CNI plugins
# (bridge, host-local, loopback, portmap), iptables for kube-proxy and conntrack.
NODE_PACKAGES := containerd runc containernetworking-plugins iptables conntrack
node-tools:
	@missing=$$(for p in $(NODE_PACKAGES); do dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q 'ok installed' || echo $$p; done); \
	[ -z "$$missing" ] || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq -o DPkg::Lock::Timeout=600 --no-install-recommends $$missing >/dev/null; } \
		|| echo "node-tools: could not install $$(echo $$missing) (not root?): make cluster runs the KWOK nodes alone" >&2

# The images the real node runs, built with no registry and no daemon (cluster/images.py):
# buildah (the repository's Dockerfiles), mmdebstrap (the Debian Python base), catatonit (pause);
# runc runs the built runtime image in tests/packaging/test_image_serves.py.
IMAGE_PACKAGES := buildah mmdebstrap catatonit runc
image-tools:
	@missing=$$(for p in $(IMAGE_PACKAGES); do dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q 'ok installed' || echo $$p; done); \
	[ -z "$$missing" ] || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq -o DPkg::Lock::Timeout=600 --no-install-recommends $$missing >/dev/null; }

# runtime-cpu, operator and pause image archives, cached by a hash of their inputs under
# ~/.cache/kubescribe/images (cold: 5-7 minutes on 2 cores; warm: about a second of hashing).
images: image-tools
	$(PYTHON) cluster/images.py build >/dev/null

# Kubernetes, etcd, KWOK and Helm from their Go modules, cached by version outside the repo
# (a cold build takes about 20 minutes on 2 cores; later runs reuse the cache).
cluster-build:
	bash cluster/build.sh >/dev/null

# With the real node (cluster/node.py) beside the KWOK ones; --no-real-node: KWOK alone.
cluster: cluster-build node-tools images
	$(PYTHON) cluster/local_cluster.py up --state-dir $(CLUSTER_DIR)

demo: cluster-build node-tools images $(BIN)/.operator-installed
	VENV=$(VENV) KUBESCRIBE_CLUSTER_DIR=$(CLUSTER_DIR) bash cluster/demo.sh

down:
	$(PYTHON) cluster/local_cluster.py down --state-dir $(CLUSTER_DIR)

test: lint typecheck tools cluster-build node-tools images
	KUBESCRIBE_CLUSTER_BIN=$$(bash cluster/build.sh --print) $(BIN)/python -m pytest -n 2 --dist loadgroup --durations=30
