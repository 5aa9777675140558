#!/usr/bin/env bash
# Transcript storage against a real PostgreSQL server, and the OpenAI-compatible file endpoint
# through the official openai Python SDK (with SRT/WebVTT checked by real parsers).
#
# `cargo test` already runs tests/storage.rs and tests/crash_recovery.rs on SQLite files; this
# runs the same Rust tests against PostgreSQL: Debian's postgresql, initialised in a private
# data directory under a temporary directory and started on a private loopback port, stopped
# on exit. Installs what is missing (postgresql, sox with MP3 support, the Python packages).
#
# Usage: scripts/test-storage.sh [all|postgres|files]   (default all)
# Environment: STORAGE_PG_PORT (default 18150), WHISPER_MODEL, CARGO_TARGET_DIR.
set -euo pipefail
cd "$(dirname "$0")/.."

what="${1:-all}"
as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }
apt_install() {
    local missing=()
    for pkg in "$@"; do dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg"); done
    [ ${#missing[@]} -eq 0 ] && return 0
    echo "test-storage: installing ${missing[*]}" >&2
    # Wait for another apt run rather than fail on its lock; refresh the lists only if needed.
    local install=(env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600
        install -y -qq --no-install-recommends "${missing[@]}")
    as_root "${install[@]}" >/dev/null ||
        { as_root apt-get -o DPkg::Lock::Timeout=600 update -qq && as_root "${install[@]}" >/dev/null; }
}

postgres_tests() {
    apt_install postgresql
    local bin
    bin=$(find /usr/lib/postgresql -mindepth 2 -maxdepth 2 -name bin -type d | sort -V | tail -1)
    local port="${STORAGE_PG_PORT:-18150}"
    local dir
    dir=$(mktemp -d /tmp/whisper-storage-pg.XXXXXX)
    # PostgreSQL refuses to run as root: the server runs as Debian's postgres user.
    local run=()
    if [ "$(id -u)" -eq 0 ]; then
        chown postgres: "$dir"
        run=(runuser -u postgres --)
    fi
    "${run[@]}" "$bin/initdb" --no-sync -A trust -U postgres -D "$dir/data" >/dev/null
    # Durability is not under test here (kill -9 of *our* server is): no fsync keeps it fast.
    "${run[@]}" "$bin/pg_ctl" -D "$dir/data" -l "$dir/log" -w -o \
        "-p $port -k $dir -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200" start >/dev/null
    # shellcheck disable=SC2064 # expand now: the trap must stop this server.
    trap "${run[*]} $bin/pg_ctl -D $dir/data -m immediate stop >/dev/null; rm -rf $dir" EXIT
    echo "== storage tests on PostgreSQL (127.0.0.1:$port)"
    STORAGE_TEST_URL="postgres://postgres@127.0.0.1:$port/postgres" \
        cargo test --release --quiet --test storage --test crash_recovery
}

file_tests() {
    apt_install sox libsox-fmt-mp3
    if ! python3 -c "import openai, srt, webvtt, pytest, selenium" 2>/dev/null; then
        echo "test-storage: installing openai, srt, webvtt-py, pytest" >&2
        local pkgs=(openai srt webvtt-py pytest selenium)
        # Debian's own python3 refuses pip installs into it (PEP 668) unless told otherwise.
        python3 -m pip install --quiet --disable-pip-version-check "${pkgs[@]}" 2>/dev/null ||
            python3 -m pip install --quiet --disable-pip-version-check --break-system-packages "${pkgs[@]}"
    fi
    cargo build --release --quiet --bin whisper-api
    echo "== file transcriptions through the openai SDK"
    python3 -m pytest -q -p no:cacheprovider tests/e2e/test_files.py
}

start=$(date +%s)
case "$what" in
    all) file_tests; postgres_tests ;;
    postgres) postgres_tests ;;
    files) file_tests ;;
    *) echo "usage: $0 [all|postgres|files]" >&2; exit 2 ;;
esac
echo "test-storage: took $(( $(date +%s) - start )) s" >&2
