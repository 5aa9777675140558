#!/usr/bin/env bash
# Puts a deploy backup's transcript database snapshot back in place (docs/deploy.md, "Rollback"):
# stops the active app container (it drains: open utterances get their finals, clients get 1012
# and reconnect once it is back), replaces storage/transcripts.db with the snapshot (owned like
# the storage directory, mode 600; the old WAL files go), and starts the container again.
# The database it replaces is kept as storage/transcripts.db.replaced-<UTC timestamp>.
#
# Usage: scripts/restore-transcripts.sh production|staging backups/<env>/<timestamp>
# Run on the server, in the checkout, as the deploy user. Only for SQLite in the storage volume
# (the default STORAGE_URL); for PostgreSQL restore the pg_dump on its own host.
set -euo pipefail

readonly STOP_GRACE_S="${STOP_GRACE_S:-45}"  # > the server's SHUTDOWN_GRACE_MS, as deploy.sh
readonly HEALTH_TIMEOUT_S="${HEALTH_TIMEOUT_S:-180}"

log() { printf '[restore] %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

[[ $# -eq 2 ]] || die "usage: $0 production|staging backups/<env>/<timestamp>"
environment="$1" backup="$2"
case "$environment" in
    production) data=. ;;
    staging) data=./staging ;;
    *) die "unknown environment '$environment' (production or staging)" ;;
esac
cd "$(dirname "${BASH_SOURCE[0]}")/.."
snapshot="$backup/transcripts.db"
[[ -f "$snapshot" ]] || die "$snapshot does not exist (backups made before the snapshots have only storage.tar.gz)"
sqlite3 "$snapshot" 'PRAGMA quick_check' | grep -qx ok || die "$snapshot fails SQLite's integrity check"

prefix="$(sed -n 's/^COMPOSE_PROJECT_PREFIX=//p' .deploy/settings 2>/dev/null | tail -n 1)"
project="${COMPOSE_PROJECT_PREFIX:-${prefix:-whisper}}-$environment"
color="$(sed -n 's/^ACTIVE_COLOR=//p' ".deploy/$environment/state" 2>/dev/null | tail -n 1)"
[[ -n "$color" ]] || die "no active deployment recorded in .deploy/$environment/state"
app="$(docker ps -q --filter "label=com.docker.compose.project=$project" \
    --filter "label=com.docker.compose.service=app-$color" | head -n 1)"
[[ -n "$app" ]] || die "app-$color of $project is not running"

db="$data/storage/transcripts.db"
log "stopping app-$color ($app), grace ${STOP_GRACE_S}s"
docker stop -t "$STOP_GRACE_S" "$app" >/dev/null
stamp="$(date -u +%Y%m%dT%H%M%SZ)"
[[ -f "$db" ]] && mv "$db" "$db.replaced-$stamp"
rm -f "$db-wal" "$db-shm"
install -m 600 -o "$(stat -c %u "$data/storage")" -g "$(stat -c %g "$data/storage")" "$snapshot" "$db"
log "restored $db from $snapshot (the replaced one: $db.replaced-$stamp)"
docker start "$app" >/dev/null

deadline=$((SECONDS + HEALTH_TIMEOUT_S))
until docker exec "$app" curl -fsS --max-time 5 http://127.0.0.1:8000/health >/dev/null 2>&1; do
    ((SECONDS < deadline)) || die "app-$color is not healthy after ${HEALTH_TIMEOUT_S}s: docker logs $app"
    sleep 1
done
# nginx resolved the app's address at its last reload; the restarted container may have a new one.
proxy="$(docker ps -q --filter "label=com.docker.compose.project=$project" \
    --filter "label=com.docker.compose.service=proxy" | head -n 1)"
[[ -z "$proxy" ]] || docker exec "$proxy" nginx -s reload
log "app-$color is serving the restored transcripts"
