# syntax=docker/dockerfile:1
# One image for the four ordermesh services. The Helm chart runs it as
#   ordermesh serve <order|inventory|payment|notification>   (Deployments)
#   ordermesh migrate <service>                              (migration Jobs)
#   ordermesh health <host:port> --service <name>            (helm test)
#
#   docker build -t ordermesh:0.1.0 .
#
# The image the chart's risk retraining CronJob runs (`ordermesh risk train`) is the
# same with payment's training extra (scikit-learn, LightGBM, ...), docs/deploy.md:
#   docker build --build-arg PAYMENT_EXTRAS=training -t ordermesh:0.1.0-training .
#
# Both stages use the same Python image, so the virtualenv built in the first runs
# unchanged in the second. Pin it by digest (python:3.11-slim@sha256:...) for
# byte-for-byte reproducible builds.
ARG PYTHON_IMAGE=python:3.11-slim

FROM ${PYTHON_IMAGE} AS base
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1

# --- the workspace's dependency manifests alone, so the dependency layer below is
# rebuilt only when a pyproject.toml or uv.lock changes, not on every source edit.
FROM base AS manifests
WORKDIR /src
COPY . .
RUN find . -type f ! -name pyproject.toml ! -name uv.lock -delete \
    && find . -depth -type d -empty -delete

# --- build the uv workspace into /app/.venv (non-editable: no source tree needed later).
# The root project's dependencies only: the CLI and the four services. No development
# group and no extra, so neither the bench (matplotlib), nor the bundled local broker
# (ordermesh-cli[broker]), nor the risk training tools (ordermesh-payment[training])
# unless PAYMENT_EXTRAS asks for them (below).
# tests/k8s/test_image_contents.py runs these `uv sync` commands and checks the result.
FROM base AS builder
ARG UV_VERSION=0.13.9
ENV UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    UV_PYTHON_DOWNLOADS=never \
    UV_PYTHON=/usr/local/bin/python3.11 \
    UV_PROJECT_ENVIRONMENT=/app/.venv
RUN pip install --no-cache-dir --disable-pip-version-check "uv==${UV_VERSION}"
WORKDIR /src
COPY --from=manifests /src ./
# Third-party dependencies first: a cached layer across source changes.
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --frozen --no-dev --no-install-workspace
COPY libs ./libs
COPY services ./services
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --frozen --no-dev --no-editable \
    && /app/.venv/bin/ordermesh --help >/dev/null
# An extra of ordermesh-payment on top (--inexact keeps the rest), only when asked for:
# PAYMENT_EXTRAS=training builds the training image. Empty (the default): the image above.
ARG PAYMENT_EXTRAS=""
RUN --mount=type=cache,target=/root/.cache/uv \
    if [ -n "${PAYMENT_EXTRAS}" ]; then \
      uv sync --frozen --no-dev --no-editable --inexact --package ordermesh-payment --extra "${PAYMENT_EXTRAS}"; \
    fi

# --- runtime: the interpreter, the virtualenv and an unprivileged user; nothing else
FROM base AS runtime
ARG VERSION=0.1.0
LABEL org.opencontainers.image.title="ordermesh" \
      org.opencontainers.image.description="ordermesh order-processing services (order, inventory, payment, notification)" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.licenses="Apache-2.0"
# uid/gid 10001: the chart's securityContext runs as this user (runAsNonRoot).
RUN groupadd --system --gid 10001 ordermesh \
    && useradd --system --uid 10001 --gid 10001 --no-create-home \
       --home-dir /nonexistent --shell /usr/sbin/nologin ordermesh
# Owned by root and read-only for the service: the code cannot be changed at run time.
COPY --from=builder /app/.venv /app/.venv
ENV PATH=/app/.venv/bin:${PATH} \
    ORDERMESH_GRPC_HOST=0.0.0.0
# The root filesystem is read-only in Kubernetes; /tmp is the only writable path.
WORKDIR /tmp
USER 10001:10001
EXPOSE 50051 9464
ENTRYPOINT ["ordermesh"]
CMD ["serve", "order"]
