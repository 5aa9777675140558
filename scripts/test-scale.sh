#!/usr/bin/env bash
# Tests of running past one machine (scripts/test.sh calls it after the Rust suites):
#   monitoring  promtool check/test of the alert rules, a real Prometheus scraping a real
#               server on loopback, every metric of the rules and dashboard in /metrics (~15 s)
#   kubernetes  deploy/kubernetes rendered with kustomize and validated against the
#               Kubernetes schemas, offline (seconds)
#   all         both (default)
#   replicas    two app replicas behind nginx on the real Docker engine, live streams, one
#               drained (tests/e2e/test_replicas.py; reuses the container suite's image, so
#               scripts/test.sh runs it after scripts/test-deploy.sh)            (~1-2 min)
#
# Installs what it needs when missing (Debian: prometheus, kubectl via kubernetes-client, docker-compose;
# PyPI: pytest, kubernetes-validate, websockets), builds the release server binary when absent, fetches
# the model when absent. Extra arguments go to pytest.
#
# Usage: scripts/test-scale.sh [monitoring|kubernetes|all] [pytest args...]
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
readonly ROOT

log() { printf '[test-scale] %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

suite="${1:-all}"
[[ $# -gt 0 ]] && shift
case "$suite" in
    monitoring) files=(tests/monitoring/test_monitoring.py) ;;
    kubernetes) files=(tests/monitoring/test_kubernetes.py) ;;
    all) files=(tests/monitoring/test_monitoring.py tests/monitoring/test_kubernetes.py) ;;
    replicas) files=(tests/e2e/test_replicas.py) ;;
    *) die "unknown suite '$suite' (monitoring, kubernetes, replicas or all)" ;;
esac

apt_install() {
    local sudo=()
    [[ "$(id -u)" -eq 0 ]] || sudo=(sudo)
    log "installing $*"
    DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq --no-install-recommends "$@" >/dev/null 2>&1 || {
        "${sudo[@]}" apt-get update -qq
        DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq --no-install-recommends "$@" >/dev/null
    }
}

cd "$ROOT"
started=$SECONDS
missing=()
command -v promtool >/dev/null 2>&1 || missing+=(prometheus)
command -v kubectl >/dev/null 2>&1 || missing+=(kubernetes-client)
command -v docker-compose >/dev/null 2>&1 || missing+=(docker-compose) # compose files' config
[[ ${#missing[@]} -eq 0 ]] || apt_install "${missing[@]}"
pip_missing=()
python3 -c 'import pytest' 2>/dev/null || pip_missing+=(pytest)
python3 -c 'import kubernetes_validate' 2>/dev/null || pip_missing+=(kubernetes-validate)
python3 -c 'import websockets.sync.client' 2>/dev/null || pip_missing+=(websockets)
if [[ ${#pip_missing[@]} -gt 0 ]]; then
    log "pip installing ${pip_missing[*]}"
    python3 -m pip install --quiet --disable-pip-version-check "${pip_missing[@]}"
fi
if [[ "$suite" == replicas ]]; then
    command -v docker >/dev/null 2>&1 || die "docker is not installed: the replicas test needs a real Docker engine"
    docker info >/dev/null 2>&1 || die "the Docker engine is unavailable (is dockerd running?)"
    command -v debootstrap >/dev/null 2>&1 || apt_install debootstrap # for the local base images
    [[ -s models/ggml-tiny.en.bin ]] || scripts/fetch-model.sh tiny.en
elif [[ "$suite" != kubernetes ]]; then
    export WHISPER_BIN="${WHISPER_BIN:-${CARGO_TARGET_DIR:-$ROOT/target}/release/whisper-api}"
    [[ -x "$WHISPER_BIN" ]] || cargo build --release --quiet --bin whisper-api
    [[ -s models/ggml-tiny.en.bin ]] || scripts/fetch-model.sh tiny.en
fi
log "set-up took $((SECONDS - started))s; running ${files[*]}"
python3 -m pytest -p no:cacheprovider -v "${files[@]}" "$@"
log "took $((SECONDS - started))s"
