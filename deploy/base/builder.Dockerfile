# Local stand-in for the official rust:1-bookworm image, built by scripts/docker-base-images.sh
# from the debootstrapped debian:bookworm-slim and the host's own Rust toolchain (copied into the
# build context as toolchain/). Same layout as the official image: RUSTUP_HOME, CARGO_HOME and
# cargo on PATH, plus what whisper-rs needs to build whisper.cpp (cmake, clang, libclang).
ARG BASE_IMAGE=debian:bookworm-slim
FROM ${BASE_IMAGE}

SHELL ["/bin/bash", "-o", "pipefail", "-c"]

# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends \
        build-essential ca-certificates clang cmake curl git libclang-dev pkg-config \
    && rm -rf /var/lib/apt/lists/*

ENV RUSTUP_HOME=/usr/local/rustup \
    CARGO_HOME=/usr/local/cargo \
    PATH=/usr/local/cargo/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin

COPY toolchain/ /usr/local/rustup/toolchains/local/

RUN mkdir -p /usr/local/cargo/bin \
    && for tool in /usr/local/rustup/toolchains/local/bin/*; do ln -s "$tool" /usr/local/cargo/bin/; done \
    && cargo --version && rustc --version

CMD ["bash"]
