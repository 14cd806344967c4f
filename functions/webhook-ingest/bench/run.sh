#!/usr/bin/env bash
# Load test of webhook-ingest vs a bare hyper HMAC server, plus exec->ready.
# Writes its numbers to stdout; BENCHMARKS.md records a run.
#   DURATION=10s CONNS=64 THREADS=2 READY_RUNS=20 bash functions/webhook-ingest/bench/run.sh
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../../.." && pwd)"
cd "$ROOT"
TARGET="${CARGO_TARGET_DIR:-$ROOT/target}"
DURATION="${DURATION:-10s}"
CONNS="${CONNS:-64}"
LIGHT_CONNS="${LIGHT_CONNS:-2}"
THREADS="${THREADS:-2}"
READY_RUNS="${READY_RUNS:-20}"
INGEST_PORT="${INGEST_PORT:-18080}"
BARE_PORT="${BARE_PORT:-18090}"
READY_PORT="${READY_PORT:-18081}"

command -v wrk >/dev/null || { echo "run.sh: wrk is required (apt-get install -y wrk)" >&2; exit 1; }

cargo build --release -p webhook-ingest --bin webhook-ingest \
  --example bare_hmac --example seed_local --example ready_probe

WORK="$(mktemp -d)"
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  rm -rf "$WORK"
}
trap cleanup EXIT

SECRET="bench-$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')"
export PATCHPANDA_BACKEND=local PATCHPANDA_HOME="$WORK/home" BENCH_DIR="$WORK"
"$TARGET/release/examples/seed_local" "$PATCHPANDA_HOME" "$SECRET" "$WORK"

wait_ready() { # url
  for _ in $(seq 1 500); do
    curl -fsS -o /dev/null "$1" 2>/dev/null && return 0
    sleep 0.02
  done
  echo "run.sh: $1 never answered" >&2; exit 1
}

hwm() { grep VmHWM "/proc/$1/status" | awk '{printf "%.1f MiB", $2/1024}'; }

load() { # name port conns [fixed-delivery-id]
  local name="$1" port="$2" conns="$3"
  echo "== $name: wrk -t$THREADS -c$conns -d$DURATION (8 KiB signed push, keep-alive)"
  BENCH_FIXED_DELIVERY="${4:-}" wrk -t"$THREADS" -c"$conns" -d"$DURATION" --latency \
    -s "$ROOT/functions/webhook-ingest/bench/post.lua" "http://127.0.0.1:$port/webhook" \
    | grep -E "Requests/sec|requests in|Non-2xx|Socket errors|p50|Latency  "
}

echo "payload: $(wc -c < "$WORK/payload.json") bytes"

BARE_SECRET="$SECRET" BARE_PORT="$BARE_PORT" "$TARGET/release/examples/bare_hmac" &
PIDS+=($!); BARE_PID=$!
PORT="$INGEST_PORT" "$TARGET/release/webhook-ingest" >"$WORK/ingest.log" 2>&1 &
PIDS+=($!); INGEST_PID=$!
wait_ready "http://127.0.0.1:$INGEST_PORT/ready"
sleep 0.5

# Warm-up, then the measured runs.
wrk -t1 -c4 -d2s -s "$ROOT/functions/webhook-ingest/bench/post.lua" "http://127.0.0.1:$BARE_PORT/webhook" >/dev/null
wrk -t1 -c4 -d2s -s "$ROOT/functions/webhook-ingest/bench/post.lua" "http://127.0.0.1:$INGEST_PORT/webhook" >/dev/null

load "bare hyper + HMAC" "$BARE_PORT" "$CONNS"
load "webhook-ingest (verify + parse + durable local publish)" "$INGEST_PORT" "$CONNS"
load "webhook-ingest, one delivery id (verify + parse + dedupe hit, no publish)" "$INGEST_PORT" "$CONNS" "bench-fixed-id"
load "bare hyper + HMAC, light load" "$BARE_PORT" "$LIGHT_CONNS"
load "webhook-ingest, light load" "$INGEST_PORT" "$LIGHT_CONNS"

echo "== peak RSS (VmHWM): webhook-ingest $(hwm "$INGEST_PID"), bare $(hwm "$BARE_PID")"
echo "== published on the local bus: $(du -sh "$PATCHPANDA_HOME" | cut -f1) under PATCHPANDA_HOME"
kill "$INGEST_PID" "$BARE_PID"; wait "$INGEST_PID" "$BARE_PID" 2>/dev/null || true
PIDS=()

echo "== exec -> /ready 200 ($READY_RUNS runs, local backend, seeded home)"
"$TARGET/release/examples/ready_probe" "$TARGET/release/webhook-ingest" "$READY_PORT" "$READY_RUNS"
