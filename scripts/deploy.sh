#!/usr/bin/env bash
# Deploys whisper-api on this server with zero downtime: scripts/deploy.sh production|staging
#
# Run by CI over SSH (scripts/deploy-remote.sh) and by hand, from the server's checkout:
#   1. refuses clearly when a prerequisite is missing; one deploy per environment at a time
#   2. writes everything it does to <data>/logs/deployment-<timestamp>.log
#   3. backs up the current state (storage, env file, running images, git revision) into
#      backups/<env>/<timestamp>, keeping the newest $BACKUP_KEEP
#   4. checks out the requested commit (--ref SHA, exactly that one even when the branch moved
#      on; without it the branch's head, fast-forward only) and updates the env file from the
#      environment (OPENAI_API_KEY and friends; values are never printed)
#   5. pulls the app image CI built for that commit (IMAGE_REPO + IMAGE_TAG, checked against
#      IMAGE_DIGEST and the image's revision label), or builds it here when no IMAGE_REPO is set;
#      builds the proxy image
#   6. blue/green: starts the new colour, waits for /health, checks /health?deep=1 (the OpenAI
#      status included), points nginx at it and reloads, then stops the old colour with SIGTERM
#      and a grace period: its sessions send their finals and close with 1012, clients reconnect
#   7. on any failure before the switch completes: the new container is removed, the checkout
#      returns to the previous revision and the previous image keeps serving (automatic rollback)
#   8. prunes old images, then notifies Slack and/or Telegram when configured
#
# Safe to re-run: an environment already running this revision and env file is left alone.
# Options: --ref SHA (deploy that commit), --rollback (redeploy the previous image, revision and
# env file), --force (blue/green switch even when image and env file are unchanged; nothing is
# rebuilt), --refresh-proxy (rebuild the proxy image without the layer cache, pulling its base
# where it is an official image: Debian and nginx security updates; for a weekly schedule),
# --secrets-stdin (read KEY=VALUE lines for the secrets below from stdin, so they never appear
# on a command line). Server-local settings: .deploy/settings (see below); HTTP_BIND, HTTP_PORT,
# MODEL_FILE, APP_MEM_LIMIT and APP_CPUS may also be set in the env file.
# See docs/deploy.md.
set -euo pipefail
umask 027

readonly COMPOSE_FILE=docker-compose.prod.yml
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
readonly ROOT
# Server-local settings, kept out of git: .deploy/settings, then .deploy/<env>/settings, as
# KEY=VALUE lines. Only the keys below are read; the environment wins over the files.
readonly SETTINGS_KEYS=" HTTP_PORT HTTP_BIND COMPOSE_PROJECT_PREFIX APP_IMAGE_NAME PROXY_IMAGE_NAME
    DEPLOY_BRANCH GIT_REMOTE HEALTH_TIMEOUT_S STOP_GRACE_S BACKUP_KEEP REQUIRE_OPENAI IMAGE_REPO
    RUNTIME_IMAGE SLACK_WEBHOOK_URL TELEGRAM_BOT_TOKEN TELEGRAM_CHAT_ID TELEGRAM_API_URL "
load_settings() {
    local line key
    [[ -f "$1" ]] || return 0
    while IFS= read -r line || [[ -n "$line" ]]; do
        [[ "$line" =~ ^[[:space:]]*(#|$) ]] && continue
        key="${line%%=*}"
        [[ "$SETTINGS_KEYS" == *" $key "* ]] || { printf 'ignoring unknown setting %s in %s\n' "$key" "$1" >&2; continue; }
        [[ -n "${!key:-}" ]] || export "$key=${line#*=}"
    done <"$1"
}
for arg in "$@"; do
    case "$arg" in production|staging)
        load_settings "$ROOT/.deploy/settings"
        load_settings "$ROOT/.deploy/$arg/settings" ;;
    esac
done

readonly APP_IMAGE_NAME="${APP_IMAGE_NAME:-whisper-api}"
readonly PROXY_IMAGE_NAME="${PROXY_IMAGE_NAME:-whisper-api-proxy}"
readonly DEPLOY_BRANCH="${DEPLOY_BRANCH:-main}"
readonly GIT_REMOTE="${GIT_REMOTE:-origin}"
readonly HEALTH_TIMEOUT_S="${HEALTH_TIMEOUT_S:-180}"   # model loading included
readonly STOP_GRACE_S="${STOP_GRACE_S:-45}"             # > the server's SHUTDOWN_GRACE_MS
readonly BACKUP_KEEP="${BACKUP_KEEP:-5}"
readonly REQUIRE_OPENAI="${REQUIRE_OPENAI:-false}"      # true: a failing OpenAI probe fails the deploy
readonly REVISION_LABEL=org.whisper-api.revision
readonly SQLITE_BUSY_TIMEOUT_MS=10000  # the backup snapshot waits this long for the live writer
# Variables copied from the environment into the env file when set (never echoed).
readonly ENV_PASSTHROUGH=(OPENAI_API_KEY PRIMARY_SERVICE FALLBACK_TO_LOCAL OPENAI_MODEL
    OPENAI_BASE_URL OPENAI_TIMEOUT_MS OPENAI_KEYWORDS LANGUAGE WORKERS THREADS_PER_WORKER LEND_IDLE_CORES MAX_SESSIONS)
readonly STDIN_SECRETS=(OPENAI_API_KEY SLACK_WEBHOOK_URL TELEGRAM_BOT_TOKEN TELEGRAM_CHAT_ID)

STAMP="$(date -u +%Y%m%dT%H%M%SZ)"
readonly STAMP

log() { printf '%s [%s] %s\n' "$(date -u +%H:%M:%S)" "${ENVIRONMENT:-deploy}" "$*"; }
warn() { log "WARNING: $*"; }
die() { log "ERROR: $*" >&2; exit 1; }

usage() {
    sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'
    exit "${1:-0}"
}

# ---------------------------------------------------------------- arguments and prerequisites

parse_args() {
    ENVIRONMENT="" MODE=deploy FORCE=0 SECRETS_STDIN=0 REFRESH_PROXY=0 REF="${DEPLOY_REF:-}"
    while [[ $# -gt 0 ]]; do
        arg="$1"
        shift
        case "$arg" in
            production|staging) ENVIRONMENT="$arg" ;;
            --ref) [[ $# -gt 0 && -n "$1" ]] || { printf -- '--ref needs a commit\n' >&2; usage 2; }
                REF="$1"; shift ;;
            --ref=*) REF="${arg#--ref=}" ;;
            --refresh-proxy) REFRESH_PROXY=1 ;;
            --rollback) MODE=rollback ;;
            --force) FORCE=1 ;;
            --secrets-stdin) SECRETS_STDIN=1 ;;
            -h|--help) usage 0 ;;
            *) printf 'unknown argument: %s\n\n' "$arg" >&2; usage 2 ;;
        esac
    done
    [[ -n "$ENVIRONMENT" ]] || { printf 'name the environment: production or staging\n\n' >&2; usage 2; }

    if [[ "$ENVIRONMENT" == production ]]; then
        DATA_DIR=. ENV_FILE=.env DEFAULT_PORT=8000
    else
        DATA_DIR=./staging ENV_FILE=.env.staging DEFAULT_PORT=8001
    fi
    # What the environment (or .deploy settings) says, before the env file is consulted.
    HTTP_PORT_GIVEN="${HTTP_PORT:-}" HTTP_BIND_GIVEN="${HTTP_BIND:-}"
    PROJECT="${COMPOSE_PROJECT_PREFIX:-whisper}-$ENVIRONMENT"
    STATE_DIR=".deploy/$ENVIRONMENT"
    BACKUP_DIR="backups/$ENVIRONMENT"
}

read_stdin_secrets() {
    local line key value allowed
    while IFS= read -r line || [[ -n "$line" ]]; do
        [[ -z "$line" || "$line" == \#* ]] && continue
        key="${line%%=*}" value="${line#*=}"
        allowed=0
        for name in "${STDIN_SECRETS[@]}"; do [[ "$key" == "$name" ]] && allowed=1; done
        [[ $allowed -eq 1 ]] || die "--secrets-stdin: '$key' is not one of ${STDIN_SECRETS[*]}"
        if [[ -n "$value" ]]; then export "$key=$value"; fi
    done
    return 0
}

preflight() {
    local missing=()
    for tool in docker git curl flock tar sha256sum sqlite3; do
        command -v "$tool" >/dev/null 2>&1 || missing+=("$tool")
    done
    [[ ${#missing[@]} -eq 0 ]] || die "missing prerequisites: ${missing[*]} (see docs/deploy.md, 'Server preparation')"
    if [[ -n "${COMPOSE:-}" ]]; then
        read -r -a COMPOSE_CMD <<<"$COMPOSE"
    elif docker compose version >/dev/null 2>&1; then
        COMPOSE_CMD=(docker compose)
    elif command -v docker-compose >/dev/null 2>&1; then
        COMPOSE_CMD=(docker-compose)
    else
        die "Docker Compose is missing: install the compose plugin or docker-compose"
    fi
    docker info >/dev/null 2>&1 || die "the Docker engine is not reachable (is dockerd running, is $(id -un) in the docker group?)"
    git -C "$ROOT" rev-parse --git-dir >/dev/null 2>&1 || die "$ROOT is not a git checkout"
    [[ -f "$ROOT/$COMPOSE_FILE" ]] || die "$COMPOSE_FILE is missing from $ROOT"
    [[ -f "$ROOT/.env.prod.sample" || -f "$ROOT/$ENV_FILE" ]] || die "neither $ENV_FILE nor .env.prod.sample exists"
    if ! ls "$ROOT"/models/*.bin >/dev/null 2>&1; then
        warn "no model in models/: the container will fetch it at first start (slower first deploy)"
    fi
}

# ---------------------------------------------------------------- state (one KEY=VALUE file)

state_get() {
    local file="$STATE_DIR/state"
    [[ -f "$file" ]] || return 0
    sed -n "s/^$1=//p" "$file" | tail -n 1
}

state_save() {
    local tmp="$STATE_DIR/state.tmp"
    {
        printf 'ACTIVE_COLOR=%s\nACTIVE_IMAGE=%s\nACTIVE_REVISION=%s\n' "$1" "$2" "$3"
        printf 'PREVIOUS_IMAGE=%s\nPREVIOUS_REVISION=%s\nENV_HASH=%s\nDEPLOYED_AT=%s\n' \
            "$4" "$5" "$(env_hash)" "$STAMP"
    } >"$tmp"
    mv "$tmp" "$STATE_DIR/state"
    # The env file each deployment ran with, for --rollback.
    if [[ -f "$STATE_DIR/env.active" ]]; then
        install -m 600 "$STATE_DIR/env.active" "$STATE_DIR/env.previous"
    fi
    install -m 600 "$ENV_FILE" "$STATE_DIR/env.active"
}

env_hash() { sha256sum "$ENV_FILE" | cut -c1-16; }

# ---------------------------------------------------------------- compose and containers

# The environment's env file is also compose's interpolation file (--env-file), so MODEL_FILE,
# APP_MEM_LIMIT and APP_CPUS set there apply to this environment (staging's to staging).
compose() {
    APP_UID="$APP_UID" APP_GID="$APP_GID" APP_ENV_FILE="$ENV_FILE" DATA_DIR="$DATA_DIR" STATE_DIR="$STATE_DIR" HTTP_PORT="$HTTP_PORT" \
        HTTP_BIND="$HTTP_BIND" PROXY_IMAGE="${PROXY_IMAGE:-$PROXY_IMAGE_NAME:latest}" \
        BLUE_IMAGE="${BLUE_IMAGE:-$APP_IMAGE_NAME:none}" GREEN_IMAGE="${GREEN_IMAGE:-$APP_IMAGE_NAME:none}" \
        "${COMPOSE_CMD[@]}" --env-file "$ENV_FILE" -p "$PROJECT" -f "$COMPOSE_FILE" "$@"
}

# The last KEY=value line of the env file ('' when absent).
env_file_value() {
    [[ -f "$ENV_FILE" ]] || return 0
    sed -n "s/^$1=//p" "$ENV_FILE" | tail -n 1 | sed -E "s/^[\"']//; s/[\"']$//"
}

# HTTP_BIND and HTTP_PORT: the environment (or .deploy settings) first, then the env file, then
# the defaults (all addresses; 8000, staging 8001).
resolve_http_settings() {
    HTTP_PORT="${HTTP_PORT_GIVEN:-$(env_file_value HTTP_PORT)}" HTTP_PORT="${HTTP_PORT:-$DEFAULT_PORT}"
    HTTP_BIND="${HTTP_BIND_GIVEN:-$(env_file_value HTTP_BIND)}" HTTP_BIND="${HTTP_BIND:-0.0.0.0}"
    [[ "$HTTP_PORT" =~ ^[0-9]+$ ]] || die "HTTP_PORT '$HTTP_PORT' is not a port number"
}

container_of() { compose ps -q "$1" 2>/dev/null | head -n 1; }

running() {
    local id
    id="$(container_of "$1")"
    [[ -n "$id" ]] && [[ "$(docker inspect -f '{{.State.Running}}' "$id" 2>/dev/null)" == true ]]
}

# The body of GET $2 inside container $1; fails on a non-2xx answer.
http_in() { docker exec "$1" curl -fsS --max-time 10 "http://127.0.0.1:8000$2"; }
# The same on the container's admin listener (ADMIN_ADDR in the compose file: /metrics and the
# deep health check are not on the public port).
admin_in() { docker exec "$1" curl -fsS --max-time 10 "http://127.0.0.1:9091$2"; }

wait_healthy() {
    local service="$1" deadline=$((SECONDS + HEALTH_TIMEOUT_S)) id
    log "waiting up to ${HEALTH_TIMEOUT_S}s for $service to report healthy"
    while ((SECONDS < deadline)); do
        id="$(container_of "$service")"
        if [[ -z "$id" || "$(docker inspect -f '{{.State.Status}}' "$id" 2>/dev/null)" != running ]]; then
            log "$service is not running (it exited or keeps restarting)"
            [[ -n "$id" && "$(docker inspect -f '{{.RestartCount}}' "$id")" -gt 0 ]] && break
        elif http_in "$id" /health >/dev/null 2>&1; then
            log "$service is healthy after $((HEALTH_TIMEOUT_S - deadline + SECONDS))s"
            return 0
        fi
        sleep 1
    done
    log "$service did not become healthy; its last log lines:"
    [[ -n "${id:-}" ]] && docker logs --tail 30 "$id" 2>&1 | sed 's/^/    /'
    return 1
}

# Deep health: /health?deep=1 also asks OpenAI (GET /models with the key). 'ok' and 'degraded'
# pass; the OpenAI state and probe are logged, and fail the deploy only with REQUIRE_OPENAI=true
# (without it, a failing OpenAI means local finals: the service works, degraded).
deep_health() {
    local id body status openai probe
    id="$(container_of "$1")"
    body="$(admin_in "$id" '/health?deep=1')" || { log "deep health check failed (no 2xx answer)"; return 1; }
    read -r status openai probe < <(health_fields "$body")
    log "deep health: status=$status openai=$openai openai_check=$probe"
    case "$status" in ok|degraded) ;; *) log "unexpected health status '$status'"; return 1 ;; esac
    if [[ "$REQUIRE_OPENAI" == true && "$probe" != ok ]]; then
        log "REQUIRE_OPENAI=true and the OpenAI probe did not succeed ($probe)"
        return 1
    fi
}

# Prints "<status> <openai state> <openai probe>" of a /health body (jq, else python3).
health_fields() {
    if command -v jq >/dev/null 2>&1; then
        jq -r '[.status // "unknown", (.openai.state // .openai.status // "not-reported"),
            (if .openai_check == null then "not-run" elif .openai_check.ok then "ok"
             else (.openai_check.error // "failed") end)] | join(" ")' <<<"$1"
    elif command -v python3 >/dev/null 2>&1; then
        python3 - "$1" <<'PY'
import json, sys
b = json.loads(sys.argv[1])
o = b.get("openai") if isinstance(b.get("openai"), dict) else {}
c = b.get("openai_check")
probe = "not-run" if not isinstance(c, dict) else ("ok" if c.get("ok") else (c.get("error") or "failed"))
print(b.get("status", "unknown"), o.get("state", o.get("status", "not-reported")), probe)
PY
    elif grep -Eq '"status" *: *"(ok|degraded)"' <<<"$1"; then
        echo "ok unknown unknown"
    else
        echo "unknown unknown unknown"
    fi
}

write_upstream() {
    mkdir -p "$STATE_DIR/nginx"
    printf '# Written by scripts/deploy.sh at %s: the active colour.\nupstream whisper_app {\n    server app-%s:8000;\n    keepalive 16;\n}\n' \
        "$STAMP" "$1" >"$STATE_DIR/nginx/upstream.conf.tmp"
    chmod 644 "$STATE_DIR/nginx/upstream.conf.tmp"
    mv "$STATE_DIR/nginx/upstream.conf.tmp" "$STATE_DIR/nginx/upstream.conf"
}

# Points nginx at a colour: a reload keeps old connections on the old workers and sends new
# ones to the new colour. The proxy is (re)created only when it is missing or its image changed.
switch_proxy() {
    write_upstream "$1"
    local id current=""
    id="$(container_of proxy)"
    if [[ -n "$id" ]]; then current="$(docker inspect -f '{{.Config.Image}}' "$id" 2>/dev/null || true)"; fi
    if running proxy && [[ "$current" == "$PROXY_IMAGE" ]]; then
        compose exec -T proxy nginx -t -q && compose exec -T proxy nginx -s reload
    else
        [[ -n "$id" ]] && warn "the proxy's image changed ($current -> $PROXY_IMAGE): recreating it (a short interruption)"
        compose up -d --no-deps --force-recreate proxy
    fi
}

proxy_serves() {
    local deadline=$((SECONDS + 30)) host=127.0.0.1
    [[ "$HTTP_BIND" == 0.0.0.0 || "$HTTP_BIND" == "::" ]] || host="$HTTP_BIND"
    while ((SECONDS < deadline)); do
        curl -fsS --max-time 5 "http://$host:$HTTP_PORT/health" >/dev/null 2>&1 && return 0
        sleep 1
    done
    return 1
}

# ---------------------------------------------------------------- steps

# The app runs as the deploy user (or, for a root deploy, as the image's uid 10001, which then
# gets the volume directories it writes to: storage, and models for a first model fetch).
prepare_dirs() {
    mkdir -p "$DATA_DIR/storage" "$DATA_DIR/logs" models
    if [[ "$(id -u)" -eq 0 ]]; then
        APP_UID=10001 APP_GID=10001
        chown "$APP_UID:$APP_GID" "$DATA_DIR/storage" models
    else
        APP_UID="$(id -u)" APP_GID="$(id -g)"
    fi
}

# The SQLite transcript database on the host, when STORAGE_URL (the env file's, else the
# server's default) names a file in the storage volume ('' for PostgreSQL, none, elsewhere).
sqlite_db() {
    local url path
    url="$(env_file_value STORAGE_URL)"
    url="${url:-sqlite://storage/transcripts.db}"
    path="${url#sqlite://}" path="${path%%\?*}"
    [[ "$url" == sqlite://* ]] || return 0
    path="${path#/app/}"
    [[ "$path" == storage/* ]] && printf '%s/%s' "$DATA_DIR" "$path"
    return 0
}

backup() {
    local dir="$BACKUP_DIR/$STAMP"
    mkdir -p "$dir"
    git rev-parse HEAD >"$dir/revision"
    [[ -f "$ENV_FILE" ]] && install -m 600 "$ENV_FILE" "$dir/env"
    [[ -f "$STATE_DIR/state" ]] && cp "$STATE_DIR/state" "$dir/state"
    compose ps 2>/dev/null >"$dir/containers.txt" || true
    local db
    db="$(sqlite_db)"
    if [[ -n "$db" && -f "$db" ]]; then
        # The live server keeps writing (WAL): a copy of the files could be torn, VACUUM INTO
        # writes one consistent snapshot of the database as of a single read transaction.
        sqlite3 "$db" ".timeout $SQLITE_BUSY_TIMEOUT_MS" "VACUUM INTO '$dir/transcripts.db'" \
            || die "could not snapshot the transcript database $db"
        chmod 600 "$dir/transcripts.db"
        log "backup: transcript database snapshot ($(sqlite3 "$dir/transcripts.db" 'SELECT count(*) FROM finals') finals)"
    fi
    if [[ -d "$DATA_DIR/storage" ]]; then
        # The rest of storage; the database files are in the snapshot above.
        tar -czf "$dir/storage.tar.gz" --exclude='*.db' --exclude='*.db-wal' --exclude='*.db-shm' \
            -C "$DATA_DIR" storage
    fi
    log "backup: $dir ($(du -sh "$dir" | cut -f1))"
    # Bounded: the newest $BACKUP_KEEP stay.
    find "$BACKUP_DIR" -mindepth 1 -maxdepth 1 -type d | sort | head -n "-$BACKUP_KEEP" | while read -r old; do
        rm -rf "$old" && log "backup: removed $old"
    done
}

# With --ref: exactly that commit, which must be on the fetched branch (CI passes the SHA it
# tested and built, so a push that landed meanwhile is not deployed untested). Without: the
# branch's head, fast-forward only.
pull_code() {
    if [[ -n "$(git status --porcelain --untracked-files=no)" ]]; then
        die "the checkout has local changes to tracked files; commit or discard them first (git status)"
    fi
    log "fetching $GIT_REMOTE/$DEPLOY_BRANCH"
    git fetch --quiet "$GIT_REMOTE" "$DEPLOY_BRANCH"
    [[ "$(git rev-parse --abbrev-ref HEAD)" == "$DEPLOY_BRANCH" ]] || git checkout --quiet "$DEPLOY_BRANCH"
    if [[ -n "$REF" ]]; then
        local want
        want="$(git rev-parse --verify --quiet "$REF^{commit}")" \
            || die "--ref $REF: no such commit on $GIT_REMOTE/$DEPLOY_BRANCH (pushed?)"
        git merge-base --is-ancestor "$want" FETCH_HEAD \
            || die "--ref $REF is not on $GIT_REMOTE/$DEPLOY_BRANCH; set DEPLOY_BRANCH to the branch it is on"
        git reset --quiet --hard "$want"
        [[ "$want" == "$(git rev-parse FETCH_HEAD)" ]] \
            || log "$GIT_REMOTE/$DEPLOY_BRANCH has moved on to $(git rev-parse --short=12 FETCH_HEAD); deploying the requested ${want:0:12}"
    else
        git merge --quiet --ff-only FETCH_HEAD || die "cannot fast-forward $DEPLOY_BRANCH to $GIT_REMOTE/$DEPLOY_BRANCH (diverged history?)"
    fi
    log "code at $(git log -1 --format='%h %s')"
}

# Copies the passthrough variables that are set into the env file, without printing them.
update_env_file() {
    if [[ ! -f "$ENV_FILE" ]]; then
        install -m 600 .env.prod.sample "$ENV_FILE"
        log "created $ENV_FILE from .env.prod.sample"
    fi
    chmod 600 "$ENV_FILE"
    local name
    for name in "${ENV_PASSTHROUGH[@]}"; do
        [[ -n "${!name:-}" ]] || continue
        KEY="$name" VALUE="${!name}" awk 'BEGIN { k = ENVIRON["KEY"]; v = ENVIRON["VALUE"]; done = 0 }
            index($0, k "=") == 1 { print k "=" v; done = 1; next } { print }
            END { if (!done) print k "=" v }' "$ENV_FILE" >"$ENV_FILE.tmp"
        chmod 600 "$ENV_FILE.tmp" && mv "$ENV_FILE.tmp" "$ENV_FILE"
        log "set $name in $ENV_FILE (value not shown)"
    done
}

# Pulls $IMAGE_REPO:$IMAGE_TAG (by digest when IMAGE_DIGEST is given) and accepts it only when
# its revision label is the commit being deployed; then names it like a local build and drops
# the registry name, so that prune_images manages it like any other.
pull_image() {
    local rev="$1" ref="$IMAGE_REPO:${IMAGE_TAG:-$1}" label
    [[ -n "${IMAGE_DIGEST:-}" ]] && ref="$IMAGE_REPO@$IMAGE_DIGEST"
    log "pulling $ref"
    if ! docker pull --quiet "$ref" >/dev/null; then
        log "could not pull $ref (registry reachable? logged in? tag pushed?); nothing was switched"
        return 1
    fi
    label="$(docker image inspect -f "{{ index .Config.Labels \"$REVISION_LABEL\" }}" "$ref")"
    if [[ "$label" != "$rev" ]]; then
        log "$ref is labelled revision '${label:-none}', not $rev: refusing it"
        docker rmi "$ref" >/dev/null 2>&1 || true
        return 1
    fi
    docker tag "$ref" "$APP_IMAGE"
    docker rmi "$ref" >/dev/null 2>&1 || true
    log "pulled $ref as $APP_IMAGE"
}

ensure_images() {
    local rev="$1" short="${1:0:12}"
    APP_IMAGE="$APP_IMAGE_NAME:$short"
    PROXY_IMAGE="$PROXY_IMAGE_NAME:$(git rev-parse --short=12 "$rev:deploy/nginx")"
    if docker image inspect "$APP_IMAGE" >/dev/null 2>&1; then
        log "image $APP_IMAGE exists; not rebuilt"
    elif [[ -n "${IMAGE_REPO:-}" ]]; then
        pull_image "$rev" || return 1
    else
        log "building $APP_IMAGE"
        local started=$SECONDS
        # shellcheck disable=SC2046  # one --build-arg per line of the base-image list
        docker build $(base_image_args) --build-arg "GIT_REVISION=$rev" --label "$REVISION_LABEL=$rev" -t "$APP_IMAGE" . \
            || { log "hint: where no registry is reachable, run scripts/docker-base-images.sh once"; return 1; }
        # Tag the (cached) builder stage too, so that no image prune drops the compiled
        # dependencies the next build starts from.
        # shellcheck disable=SC2046
        docker build $(base_image_args) -q --target builder -t whisper-api-builder:cache . >/dev/null || true
        log "built $APP_IMAGE in $((SECONDS - started))s"
    fi
    build_proxy || return 1
    log "app image $APP_IMAGE: id $(docker image inspect -f '{{.Id}}' "$APP_IMAGE")${IMAGE_DIGEST:+, registry digest $IMAGE_DIGEST}"
}

# --build-arg lines naming the base images scripts/docker-base-images.sh chose (our own local
# names, or the official images where a registry is reachable).
base_image_args() {
    local line
    while IFS= read -r line; do
        [[ -n "$line" ]] && printf -- '--build-arg %s\n' "$line"
    done < <(scripts/docker-base-images.sh --print 2>/dev/null || true)
}

# The proxy image, named after deploy/nginx's tree; --refresh-proxy rebuilds it without the
# cache (fresh Debian and nginx packages), pulling the base first where it is official.
build_proxy() {
    local pull=()
    if [[ $REFRESH_PROXY -eq 1 ]]; then
        docker image inspect -f '{{ index .Config.Labels "org.whisper-api.base" }}' "$(base_runtime_image)" 2>/dev/null \
            | grep -q . || pull=(--pull)
        PROXY_IMAGE="$PROXY_IMAGE-$STAMP"
        log "rebuilding the proxy image as $PROXY_IMAGE (--refresh-proxy, no cache ${pull[*]})"
        # shellcheck disable=SC2046
        docker build "${pull[@]}" --no-cache $(base_image_args) --label "$REVISION_LABEL=proxy" -t "$PROXY_IMAGE" deploy/nginx
    elif ! docker image inspect "$PROXY_IMAGE" >/dev/null 2>&1; then
        log "building $PROXY_IMAGE"
        # shellcheck disable=SC2046
        docker build $(base_image_args) --label "$REVISION_LABEL=proxy" -t "$PROXY_IMAGE" deploy/nginx
    fi
}

base_runtime_image() {
    scripts/docker-base-images.sh --print 2>/dev/null | sed -n 's/^RUNTIME_IMAGE=//p'
}

# Blue/green switch to $APP_IMAGE. Returns non-zero, with the old colour still serving, when
# the new one is not healthy; the caller rolls back.
switch_to() {
    local new_image="$1" old_color new_color
    old_color="$(state_get ACTIVE_COLOR)"
    if [[ -z "$old_color" ]]; then
        running app-green && old_color=green
        running app-blue && old_color=blue
    fi
    new_color=blue
    [[ "$old_color" == blue ]] && new_color=green
    local old_image
    old_image="$(state_get ACTIVE_IMAGE)"
    if [[ "$new_color" == blue ]]; then BLUE_IMAGE="$new_image" GREEN_IMAGE="$old_image"
    else GREEN_IMAGE="$new_image" BLUE_IMAGE="$old_image"; fi

    log "starting app-$new_color with $new_image (active: ${old_color:-none})"
    compose up -d --no-deps --force-recreate "app-$new_color"
    [[ -n "$(container_of "app-$new_color")" ]] || { log "compose did not create app-$new_color"; return 1; }
    if ! wait_healthy "app-$new_color" || ! deep_health "app-$new_color"; then
        compose rm -s -f "app-$new_color" >/dev/null 2>&1 || true
        return 1
    fi

    log "switching the proxy to app-$new_color"
    switch_proxy "$new_color"
    if ! proxy_serves; then
        log "the proxy does not serve through app-$new_color"
        if [[ -n "$old_color" ]] && running "app-$old_color"; then switch_proxy "$old_color"; fi
        compose rm -s -f "app-$new_color" >/dev/null 2>&1 || true
        return 1
    fi
    if [[ -n "$old_color" ]] && [[ -n "$(container_of "app-$old_color")" ]]; then
        log "draining app-$old_color (SIGTERM, up to ${STOP_GRACE_S}s: finals, then 1012 closes)"
        compose stop -t "$STOP_GRACE_S" "app-$old_color"
        compose rm -f "app-$old_color" >/dev/null
    fi
    NEW_COLOR="$new_color"
}

# Removes app images that no environment needs: every environment's active and previous image
# (staging beside production) and any image a container still uses are kept.
prune_images() {
    local keep=() state image
    for state in .deploy/*/state; do
        [[ -f "$state" ]] || continue
        keep+=("$(sed -n 's/^ACTIVE_IMAGE=//p' "$state")" "$(sed -n 's/^PREVIOUS_IMAGE=//p' "$state")")
    done
    while read -r image; do
        [[ " ${keep[*]} " == *" $image "* ]] && continue
        [[ -n "$(docker ps -a -q --filter "ancestor=$image")" ]] && continue
        docker rmi "$image" >/dev/null 2>&1 && log "pruned image $image"
    done < <(docker images --filter "label=$REVISION_LABEL" --format '{{.Repository}}:{{.Tag}}' | grep "^$APP_IMAGE_NAME:")
    # No `docker image prune`: the builder stage's layers are untagged, and pruning them would
    # make the next deploy compile every dependency again. They are kept alive by a tag instead.
}

notify() {
    local status="$1" text="$2"
    text="whisper-api $ENVIRONMENT deploy $status on $(hostname): $text"
    if [[ -n "${SLACK_WEBHOOK_URL:-}" ]]; then
        local json
        json="$(printf '%s' "$text" | sed 's/\\/\\\\/g; s/"/\\"/g' | tr '\n' ' ')"
        # The webhook URL is a secret: give it to curl on stdin, not on its command line.
        if printf 'url = "%s"\n' "$SLACK_WEBHOOK_URL" | curl -fsS -m 10 -K - -H 'Content-Type: application/json' \
            --data "{\"text\":\"$json\"}" >/dev/null; then log "notified Slack"; else warn "Slack notification failed"; fi
    fi
    if [[ -n "${TELEGRAM_BOT_TOKEN:-}" && -n "${TELEGRAM_CHAT_ID:-}" ]]; then
        if printf 'url = "%s/bot%s/sendMessage"\n' "${TELEGRAM_API_URL:-https://api.telegram.org}" "$TELEGRAM_BOT_TOKEN" \
            | curl -fsS -m 10 -K - --data-urlencode "chat_id=$TELEGRAM_CHAT_ID" --data-urlencode "text=$text" >/dev/null; then
            log "notified Telegram"
        else
            warn "Telegram notification failed"
        fi
    fi
}

# ---------------------------------------------------------------- main

main() {
    parse_args "$@"
    [[ $SECRETS_STDIN -eq 1 ]] && read_stdin_secrets
    cd "$ROOT"

    # The log starts first, so that refused runs (a missing prerequisite, a held lock) are
    # recorded too, with who asked for what.
    if [[ -z "${DEPLOY_RESUMED:-}" ]]; then
        mkdir -p "$DATA_DIR/logs"
        LOG_FILE="$DATA_DIR/logs/deployment-$STAMP.log"
        exec > >(tee -a "$LOG_FILE") 2>&1
        export TEE_PID=$!
        log "deployment log: $LOG_FILE"
        log "requested: mode=$MODE ref=${REF:-<branch head>} actor=${DEPLOY_ACTOR:-$(id -un)} run=${DEPLOY_RUN_ID:-manual} image=${IMAGE_REPO:+$IMAGE_REPO:${IMAGE_TAG:-<rev>}}${IMAGE_DIGEST:+@$IMAGE_DIGEST}"
    else
        log "continuing with the updated deploy script"
    fi
    preflight
    mkdir -p "$STATE_DIR" "$BACKUP_DIR"
    prepare_dirs
    resolve_http_settings
    if [[ -z "${DEPLOY_RESUMED:-}" ]]; then
        exec 9>"$STATE_DIR/lock"
        flock -n 9 || die "another $ENVIRONMENT deploy is running (lock $STATE_DIR/lock)"
        PREV_REVISION="$(git rev-parse HEAD)"
    fi

    local target_rev target_image
    if [[ "$MODE" == rollback ]]; then
        target_image="$(state_get PREVIOUS_IMAGE)" target_rev="$(state_get PREVIOUS_REVISION)"
        [[ -n "$target_image" && -n "$target_rev" ]] || die "no previous deployment recorded to roll back to"
        docker image inspect "$target_image" >/dev/null 2>&1 || die "the previous image $target_image is gone"
        log "rolling back to $target_image ($target_rev)"
        backup
        git checkout --quiet "$DEPLOY_BRANCH" && git reset --quiet --hard "$target_rev"
        if [[ -f "$STATE_DIR/env.previous" ]]; then
            install -m 600 "$STATE_DIR/env.previous" "$ENV_FILE"
            log "restored $ENV_FILE as it was at the previous deployment"
        fi
        resolve_http_settings
        PROXY_IMAGE="$PROXY_IMAGE_NAME:$(git rev-parse --short=12 "HEAD:deploy/nginx")"
        build_proxy
    else
        [[ -z "${DEPLOY_RESUMED:-}" ]] && backup
        if [[ -z "${DEPLOY_RESUMED:-}" ]]; then
            local script_before
            script_before="$(sha256sum scripts/deploy.sh)"
            pull_code
            if [[ "$(sha256sum scripts/deploy.sh)" != "$script_before" ]]; then
                export DEPLOY_RESUMED=1 LOG_FILE PREV_REVISION STAMP_RESUMED="$STAMP"
                exec bash scripts/deploy.sh "$@"
            fi
        fi
        update_env_file
        resolve_http_settings
        target_rev="$(git rev-parse HEAD)"
        if ! ensure_images "$target_rev"; then
            rollback_revision
            notify failed "image build for ${target_rev:0:12} failed; still serving $(state_get ACTIVE_IMAGE)"
            die "the image build failed; nothing was switched"
        fi
        target_image="$APP_IMAGE"
    fi

    local active_image active_color
    active_image="$(state_get ACTIVE_IMAGE)" active_color="$(state_get ACTIVE_COLOR)"
    if [[ $FORCE -eq 0 && "$MODE" == deploy && "$target_image" == "$active_image" \
        && "$(state_get ENV_HASH)" == "$(env_hash)" ]] && running "app-$active_color" \
        && http_in "$(container_of "app-$active_color")" /health >/dev/null 2>&1; then
        log "$target_image is already serving with this env file: nothing to do"
        notify succeeded "already up to date at ${target_rev:0:12}"
        return 0
    fi

    if ! switch_to "$target_image"; then
        rollback_revision
        notify failed "${target_rev:0:12} was not healthy: rolled back, still serving ${active_image:-nothing}"
        die "deploy of $target_image failed its health check; rolled back to ${active_image:-nothing} at ${PREV_REVISION:0:12}"
    fi
    local prev_image="$active_image" prev_rev
    prev_rev="$(state_get ACTIVE_REVISION)"
    if [[ "$MODE" == rollback ]]; then prev_image="" prev_rev=""; fi
    state_save "$NEW_COLOR" "$target_image" "$target_rev" "$prev_image" "$prev_rev"
    prune_images "$target_image" "$prev_image"
    log "deployed $target_image (${target_rev:0:12}) on app-$NEW_COLOR, port $HTTP_PORT"
    notify succeeded "${target_rev:0:12} is live (app-$NEW_COLOR)"
}

# The previous revision and env file go back: the previous image keeps serving with the
# settings it was started with, and the next deploy starts from a consistent tree.
rollback_revision() {
    if [[ -n "${PREV_REVISION:-}" && "$(git rev-parse HEAD)" != "$PREV_REVISION" ]]; then
        git reset --quiet --hard "$PREV_REVISION"
        log "checkout returned to ${PREV_REVISION:0:12}"
    fi
    local saved="$BACKUP_DIR/${STAMP_RESUMED:-$STAMP}/env"
    if [[ -f "$saved" ]] && ! cmp -s "$saved" "$ENV_FILE"; then
        install -m 600 "$saved" "$ENV_FILE"
        log "restored $ENV_FILE from $saved"
    fi
}

# Lets tee write the last lines to the log (and to the SSH session) before the script ends.
# shellcheck disable=SC2317  # invoked by the EXIT trap
finish() {
    local rc=$?
    exec 1>&- 2>&-
    local waited=0
    while [[ -n "${TEE_PID:-}" ]] && kill -0 "$TEE_PID" 2>/dev/null && ((waited++ < 50)); do sleep 0.1; done
    exit "$rc"
}
trap finish EXIT

# One line, so that a `git pull` rewriting this file mid-run cannot change what bash reads next.
main "$@"; exit $?
