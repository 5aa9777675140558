#!/usr/bin/env bash
# Browser tests: the demo page and the caption view in headless Chromium, driven through
# chromedriver against the real server binary and the real tiny.en model.
#
# Installs what is missing (Debian chromium + chromium-driver, Python selenium + pytest),
# builds the release binary (a no-op when it is up to date) and runs tests/e2e with pytest.
# Idempotent; safe to run again.
#
# Usage: scripts/test-browser.sh [--screenshot] [pytest args...]
#   --screenshot   also save the finished demo page to docs/demo.png
# Environment: CARGO_TARGET_DIR, WHISPER_API_BIN (use this binary, build nothing),
#   CHROMIUM_BIN + CHROMEDRIVER_BIN (an installed browser instead of Debian's chromium),
#   WHISPER_MODEL (default models/ggml-tiny.en.bin). Speech clips: tests/fixtures/speech.
set -euo pipefail
cd "$(dirname "$0")/.."

as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

# CHROMIUM_BIN + CHROMEDRIVER_BIN: a browser already installed (GitHub's runners have Chrome).
if [ -x "${CHROMIUM_BIN:-}" ] && [ -x "${CHROMEDRIVER_BIN:-}" ]; then
    echo "test-browser: using $CHROMIUM_BIN and $CHROMEDRIVER_BIN" >&2
elif ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null; then
    echo "test-browser: installing chromium and chromium-driver" >&2
    # Wait for another apt run rather than fail on its lock; refresh the lists only if needed.
    apt_install() { as_root env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -qq chromium chromium-driver; }
    apt_install || { as_root apt-get -o DPkg::Lock::Timeout=600 update -qq && apt_install; }
fi

if ! python3 -c "import selenium, pytest" 2>/dev/null; then
    echo "test-browser: installing selenium and pytest" >&2
    # Debian's own python3 refuses pip installs into it (PEP 668) unless told otherwise.
    python3 -m pip install --quiet --disable-pip-version-check selenium pytest 2>/dev/null ||
        python3 -m pip install --quiet --disable-pip-version-check --break-system-packages selenium pytest
fi

if [ -z "${WHISPER_API_BIN:-}" ]; then
    cargo build --release --quiet --bin whisper-api
fi

model="${WHISPER_MODEL:-models/ggml-tiny.en.bin}"
if [ ! -f "$model" ]; then
    if [ -x scripts/fetch-model.sh ]; then
        scripts/fetch-model.sh
    else
        echo "test-browser: $model is missing" >&2
        exit 1
    fi
fi

if [ "${1:-}" = "--screenshot" ]; then
    export DEMO_SCREENSHOT="$PWD/docs/demo.png"
    shift
fi

start=$(date +%s)
status=0
python3 -m pytest -q -p no:cacheprovider tests/e2e/test_browser.py tests/e2e/test_browser_reopen.py "$@" || status=$?
echo "test-browser: browser tests took $(( $(date +%s) - start )) s" >&2
exit "$status"
