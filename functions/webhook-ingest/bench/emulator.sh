#!/usr/bin/env bash
# webhook-ingest's gcp publish path (google-cloud-pubsub) against Google's
# Pub/Sub emulator: does one instance keep many publishes in flight, or does
# it serialize them? (issue 15). The same signed 8 KiB push as run.sh, at a
# few connection counts; if publishes serialized, req/s would stay flat as
# connections grow. Secrets stay local; only the bus is the emulator's.
#
#   bash functions/webhook-ingest/bench/emulator.sh        (CONNS_LIST="1 8 80")
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../../.." && pwd)"
cd "$ROOT"
TARGET="${CARGO_TARGET_DIR:-$ROOT/target}"
BENCH="$ROOT/functions/webhook-ingest/bench"
DURATION="${DURATION:-5s}"
CONNS_LIST="${CONNS_LIST:-1 8 80}"
THREADS="${THREADS:-2}"
PORT="${INGEST_PORT:-18084}"
PROJECT="patchpanda-bench"

command -v wrk >/dev/null || { echo "emulator.sh: wrk is required (apt-get install -y wrk)" >&2; exit 1; }
if [ "${SKIP_BUILD:-0}" != 1 ]; then
  cargo build --release -p webhook-ingest --bin webhook-ingest --example seed_local
fi

WORK="$(mktemp -d)"
INGEST_PID=""
cleanup() {
  [ -z "$INGEST_PID" ] || kill "$INGEST_PID" 2>/dev/null || true
  PUBSUB_EMULATOR_STATE="$WORK/emulator" bash scripts/pubsub-emulator.sh stop >/dev/null 2>&1 || true
  rm -rf "$WORK"
}
trap cleanup EXIT

line="$(PUBSUB_EMULATOR_STATE="$WORK/emulator" bash scripts/pubsub-emulator.sh start)"
export PUBSUB_EMULATOR_HOST="${line#export PUBSUB_EMULATOR_HOST=}"
export PUBSUB_PROJECT_ID="$PROJECT"
# The topic ingest publishes to, as infra/terraform/pubsub.tf names it.
curl -fsS -X PUT "http://$PUBSUB_EMULATOR_HOST/v1/projects/$PROJECT/topics/patchpanda-github-events" >/dev/null

SECRET="bench-$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')"
export PATCHPANDA_BACKEND=local BENCH_DIR="$WORK"
"$TARGET/release/examples/seed_local" "$WORK/home" "$SECRET" "$WORK" >/dev/null
PATCHPANDA_HOME="$WORK/home" PORT="$PORT" "$TARGET/release/webhook-ingest" >"$WORK/ingest.log" 2>&1 &
INGEST_PID=$!
for _ in $(seq 1 500); do
  curl -fsS -o /dev/null "http://127.0.0.1:$PORT/ready" 2>/dev/null && break
  sleep 0.02
done
curl -fsS -o /dev/null "http://127.0.0.1:$PORT/ready" || { cat "$WORK/ingest.log" >&2; exit 1; }

wrk -t1 -c4 -d2s -s "$BENCH/post.lua" "http://127.0.0.1:$PORT/webhook" >/dev/null
echo "load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"
printf '%-6s %10s %9s %9s %8s\n' conns 'req/s' 'p50 ms' 'p99 ms' non-2xx
for c in $CONNS_LIST; do
  t=$(( c < THREADS ? c : THREADS ))
  out="$(wrk -t"$t" -c"$c" -d"$DURATION" --latency -s "$BENCH/post.lua" "http://127.0.0.1:$PORT/webhook")"
  rps="$(awk '/Requests\/sec/ {print $2}' <<<"$out")"
  p50="$(awk '/^p50/ {print $2}' <<<"$out")"
  p99="$(awk '/^p50/ {print $8}' <<<"$out")"
  non2xx="$(awk '/Non-2xx/ {print $NF}' <<<"$out")"
  printf '%-6s %10s %9s %9s %8s\n' "$c" "$rps" "$p50" "$p99" "${non2xx:-0}"
done
echo "peak RSS of webhook-ingest: $(grep VmHWM "/proc/$INGEST_PID/status" | awk '{print $2}') KiB"
