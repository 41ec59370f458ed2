# The jupyterhub-canary image: `jupyterhub-canary run` as a non-root user on a read-only root filesystem.
#   docker build --tag jupyterhub-canary:0.1.0 .          (make image)
# BASE_IMAGE must provide python3 (3.11 or newer) with the venv module; both stages use it, so
# that the virtual environment's interpreter link holds in the final image.
ARG BASE_IMAGE=python:3.12-slim

FROM ${BASE_IMAGE} AS builder
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1
RUN python3 -m venv /opt/canary
WORKDIR /src
# The dependencies first: this layer is rebuilt only when pyproject.toml changes, not with the code.
COPY pyproject.toml ./
RUN python3 -c 'import tomllib; print("\n".join(tomllib.load(open("pyproject.toml", "rb"))["project"]["dependencies"]))' \
        > /tmp/requirements.txt \
    && /opt/canary/bin/pip install --no-cache-dir --requirement /tmp/requirements.txt
COPY README.md* ./
COPY app ./app
# pip compiles the modules to bytecode here, where the filesystem is writable.
RUN /opt/canary/bin/pip install --no-cache-dir --no-deps . \
    && /opt/canary/bin/pip uninstall --yes --quiet pip setuptools \
    && /opt/canary/bin/jupyterhub-canary --help > /dev/null \
    && /opt/canary/bin/python -c 'import kubernetes.client'

# The final stage gets the virtual environment only: pip, the sources and any cache stay behind.
FROM ${BASE_IMAGE}
ARG BASE_IMAGE
# app.__version__ (tests/test_image.py checks that they agree).
ARG VERSION=0.1.0
LABEL org.opencontainers.image.title="jupyterhub-canary" \
      org.opencontainers.image.description="A synthetic spawn -> verify -> stop check for JupyterHub, run as a Kubernetes CronJob" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.licenses="BSD-3-Clause" \
      org.opencontainers.image.base.name="${BASE_IMAGE}"
# Nothing is written outside /tmp: no bytecode, HOME in /tmp, logs unbuffered to stdout.
ENV PATH=/opt/canary/bin:${PATH} \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp
COPY --from=builder /opt/canary /opt/canary
# A numeric user, so that Kubernetes can check runAsNonRoot; the chart runs it as the same one.
USER 65532:65532
ENTRYPOINT ["jupyterhub-canary"]
CMD ["run"]
