#!/usr/bin/env bash
# Runs the server on a fresh machine: installs build prerequisites, fetches the model named
# by WHISPER_MODEL (default models/ggml-tiny.en.bin) when absent, builds and starts it.
# Extra arguments go to whisper-api (see `scripts/run.sh --help`).
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/setup.sh
model="${WHISPER_MODEL:-models/ggml-tiny.en.bin}"
if [ ! -f "$model" ]; then
  name="$(basename "$model" .bin)"
  scripts/fetch-model.sh "${name#ggml-}"
fi
cargo build --release --bins
exec target/release/whisper-api "$@"
