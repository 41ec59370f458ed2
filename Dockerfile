# The jupyterhub-canary image: `jupyterhub-canary run` as a non-root user on a read-only root filesystem.
#   make image          (docker build with VERSION, REVISION, SOURCE; writes the SBOM to build/)
#
# The runtime base is distroless Python: Debian 13's python3.13, its standard library, the shared
# libraries they link and the CA bundle; no shell, no package manager. It serves users best: the
# smallest image (bench/RESULTS.md: 96 MB, against 205 MB for the same on python:3.13-slim, with
# the same start times), nothing in it but what runs the canary (nothing for an attacker, or for a stray
# `kubectl exec`, to use), and Debian's security fixes of the interpreter arrive with the base's
# rebuilds. The cost is no shell to debug with: use `kubectl debug` with an ephemeral container.
# Debian 13's, because distroless retired its Debian 12 python3 image (May 2026).
#
# The builder must have the same Python at the same path as the runtime base, because the virtual
# environment links to that interpreter: Debian 13 with Debian's python3 for distroless. Sites with
# their own bases override both, e.g. BASE_IMAGE=python:3.13-slim BUILDER_IMAGE=python:3.13-slim;
# the last step below checks that they agree. The runtime base needs only python3 (3.11 or newer).
ARG BUILDER_IMAGE=debian:13-slim
ARG BASE_IMAGE=gcr.io/distroless/python3-debian13
# The image runs Python at this optimization level, and its bytecode is compiled for it: 2 (-OO)
# leaves out docstrings and asserts, which halves the bytecode of the kubernetes client (mostly
# docstrings): ~10 MB of the image. Nothing the canary does reads a docstring; its asserts are
# type hints for the linter.
ARG OPTIMIZE=2

FROM ${BUILDER_IMAGE} AS builder
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1
# Debian's own python3 when the builder has none (debian:13-slim): whatever the release ships
# today, which is what the distroless base of the same release carries, hence no version pin.
# hadolint ignore=DL3008
RUN if ! python3 -c 'import ensurepip, venv' 2>/dev/null; then \
        apt-get update \
        && apt-get install --yes --no-install-recommends python3-venv \
        && rm -rf /var/lib/apt/lists/*; \
    fi \
    && python3 -m venv /opt/canary
WORKDIR /src
# The locked dependencies first (requirements/runtime.lock, `make lock`): every file checked against
# its hash; this layer is rebuilt only when the lock changes, not with the code.
COPY requirements/runtime.lock requirements/sbom.lock requirements/
RUN /opt/canary/bin/pip install --no-deps --no-compile --require-hashes --requirement requirements/runtime.lock
COPY pyproject.toml README.md ./
COPY app ./app
# The package itself (its build backend is pinned in pyproject.toml), then the bytecode of the whole
# environment at the image's optimization level.
ARG OPTIMIZE
RUN /opt/canary/bin/pip install --no-deps --no-compile . \
    && /opt/canary/bin/pip uninstall --yes --quiet pip \
    && /opt/canary/bin/jupyterhub-canary --help > /dev/null \
    && /opt/canary/bin/python -c 'import kubernetes.client' \
    && PYTHONOPTIMIZE=${OPTIMIZE} /opt/canary/bin/python -m compileall -q -j 0 /opt/canary/lib
# The SBOM of the image's Python packages (CycloneDX JSON), made by cyclonedx-py from a throw-away
# environment (requirements/sbom.lock) that stays in this stage.
RUN python3 -m venv /tmp/sbom \
    && /tmp/sbom/bin/pip install --quiet --no-deps --require-hashes --requirement requirements/sbom.lock \
    && /tmp/sbom/bin/cyclonedx-py environment --pyproject pyproject.toml --output-reproducible \
        --output-file /opt/canary/sbom.cdx.json /opt/canary/bin/python
COPY scripts/finish_image.py /opt/canary/

# The final stage gets the virtual environment only: pip, the sources and any cache stay behind.
FROM ${BASE_IMAGE}
ARG BASE_IMAGE
# app.__version__ (tests/test_image.py checks that they agree); the commit and repository the
# image is built from (make image passes them).
ARG VERSION=0.1.0
ARG REVISION=unknown
ARG SOURCE=unknown
ARG OPTIMIZE
LABEL org.opencontainers.image.title="jupyterhub-canary" \
      org.opencontainers.image.description="A synthetic spawn -> verify -> stop check for JupyterHub, run as a Kubernetes CronJob" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.source="${SOURCE}" \
      org.opencontainers.image.licenses="BSD-3-Clause" \
      org.opencontainers.image.base.name="${BASE_IMAGE}"
# Nothing is written outside /tmp: no bytecode, HOME in /tmp, logs unbuffered to stdout.
ENV PATH=/opt/canary/bin:${PATH} \
    PYTHONOPTIMIZE=${OPTIMIZE} \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp
COPY --from=builder /opt/canary /opt/canary
# With the base's own interpreter, in exec form (a distroless base has no shell): check that the venv
# runs on it, write the bytecode of the standard-library modules the canary uses (the root
# filesystem is read-only at run time), remove any installer the base carries
# (scripts/finish_image.py). As root, whatever user the base sets.
USER 0:0
RUN ["python3", "-I", "/opt/canary/finish_image.py", "/opt/canary"]
# A numeric user, so that Kubernetes can check runAsNonRoot; the chart runs it as the same one.
USER 65532:65532
ENTRYPOINT ["jupyterhub-canary"]
CMD ["run"]
