#!/usr/bin/env bash
# Load test of webhook-ingest against a bare hyper + HMAC server measured in
# the same session, plus exec->ready, peak RSS, the gcp-shaped path over a
# 30 ms stub publisher, and a kill -9 at full speed. Prints a summary table
# (medians over ROUNDS); BENCHMARKS.md records a run.
#
#   ROUNDS=3 DURATION=5s bash functions/webhook-ingest/bench/run.sh
#
# Every round runs, back to back: bare and webhook-ingest (full path: verify,
# parse, durable local publish, 202) at 32 and 64 connections, the same with
# one repeated delivery id (no-publish: the request path alone), then
# webhook-ingest over the stub publisher at STUB_CONNS. Then the local bus
# alone (examples bus_publish: publishers only, then with a dispatcher
# delivering), a kill -9 under load, and exec -> /ready.
# BEFORE_DIR=<dir with another build's webhook-ingest and bus_publish> adds
# those to every round (how BENCHMARKS.md compares before and after a
# change in one session).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../../.." && pwd)"
cd "$ROOT"
TARGET="${CARGO_TARGET_DIR:-$ROOT/target}"
BENCH="$ROOT/functions/webhook-ingest/bench"
DURATION="${DURATION:-5s}"
ROUNDS="${ROUNDS:-3}"
CONNS_LIST="${CONNS_LIST:-32 64}"
STUB_CONNS="${STUB_CONNS:-80}"
STUB_PUBLISH_MS="${STUB_PUBLISH_MS:-30}"
THREADS="${THREADS:-2}"
READY_RUNS="${READY_RUNS:-20}"
BEFORE_DIR="${BEFORE_DIR:-}"
BEFORE_BIN="${BEFORE_DIR:+$BEFORE_DIR/webhook-ingest}"
INGEST_PORT="${INGEST_PORT:-18080}"
BARE_PORT="${BARE_PORT:-18090}"
READY_PORT="${READY_PORT:-18081}"
STUB_PORT="${STUB_PORT:-18082}"
BEFORE_PORT="${BEFORE_PORT:-18083}"

command -v wrk >/dev/null || { echo "run.sh: wrk is required (apt-get install -y wrk)" >&2; exit 1; }
command -v python3 >/dev/null || { echo "run.sh: python3 is required (summary, kill -9 check)" >&2; exit 1; }

if [ "${SKIP_BUILD:-0}" != 1 ]; then
  cargo build --release -p webhook-ingest --bin webhook-ingest \
    --example bare_hmac --example seed_local --example ready_probe --example stub_publish \
    --example bus_publish
fi
INGEST_BIN="$TARGET/release/webhook-ingest"
EXAMPLES="$TARGET/release/examples"

WORK="$(mktemp -d)"
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  rm -rf "$WORK"
}
trap cleanup EXIT

SECRET="bench-$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')"
export PATCHPANDA_BACKEND=local BENCH_DIR="$WORK"
RESULTS="$WORK/results.tsv"
: >"$RESULTS"

seed() { # home
  "$EXAMPLES/seed_local" "$1" "$SECRET" "$WORK" >/dev/null
}

wait_ready() { # url
  for _ in $(seq 1 500); do
    curl -fsS -o /dev/null "$1" 2>/dev/null && return 0
    sleep 0.02
  done
  echo "run.sh: $1 never answered" >&2; exit 1
}

hwm_kib() { grep VmHWM "/proc/$1/status" | awk '{print $2}'; }

# Starts a server with a fresh seeded home; sets STARTED_PID.
start() { # name binary port [env...]
  local name="$1" bin="$2" port="$3"; shift 3
  local home="$WORK/home-$name"
  rm -rf "$home"; seed "$home"
  env "$@" PATCHPANDA_HOME="$home" PORT="$port" "$bin" >"$WORK/$name.log" 2>&1 &
  STARTED_PID=$!
  PIDS+=("$STARTED_PID")
  wait_ready "http://127.0.0.1:$port/ready"
}

stop() { # pid
  kill "$1" 2>/dev/null || true
  wait "$1" 2>/dev/null || true
}

# One wrk run; appends "round name conns req/s p50 p99 non2xx errors" to RESULTS.
load() { # round name port conns
  local round="$1" name="$2" port="$3" conns="$4" out
  out="$(wrk -t"$THREADS" -c"$conns" -d"$DURATION" --latency \
    -s "$BENCH/post.lua" "http://127.0.0.1:$port/webhook")"
  local rps p50 p99 non2xx errors
  rps="$(awk '/Requests\/sec/ {print $2}' <<<"$out")"
  p50="$(awk '/^p50/ {print $2}' <<<"$out")"
  p99="$(awk '/^p50/ {print $8}' <<<"$out")"
  non2xx="$(awk '/Non-2xx/ {print $NF}' <<<"$out")"
  errors="$(awk -F'[ ,]+' '/Socket errors/ {print $5+$7+$9+$11}' <<<"$out")"
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$round" "$name" "$conns" "$rps" "$p50" "$p99" \
    "${non2xx:-0}" "${errors:-0}" >>"$RESULTS"
  printf '  %-28s c=%-3s %9s req/s  p50 %6s ms  p99 %7s ms  non-2xx %s  socket errors %s\n' \
    "$name" "$conns" "$rps" "$p50" "$p99" "${non2xx:-0}" "${errors:-0}"
}

warm() { # port
  wrk -t1 -c4 -d1s -s "$BENCH/post.lua" "http://127.0.0.1:$1/webhook" >/dev/null
}

echo "load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"
for round in $(seq 1 "$ROUNDS"); do
  echo "== round $round/$ROUNDS (wrk -t$THREADS -d$DURATION, 8 KiB signed push, unique delivery ids)"
  BARE_SECRET="$SECRET" BARE_PORT="$BARE_PORT" "$EXAMPLES/bare_hmac" &
  BARE_PID=$!; PIDS+=("$BARE_PID")
  start ingest "$INGEST_BIN" "$INGEST_PORT"; INGEST_PID=$STARTED_PID
  BEFORE_PID=""
  if [ -n "$BEFORE_BIN" ]; then
    start before "$BEFORE_BIN" "$BEFORE_PORT"; BEFORE_PID=$STARTED_PID
  fi
  warm "$BARE_PORT"; warm "$INGEST_PORT"; [ -z "$BEFORE_PID" ] || warm "$BEFORE_PORT"
  for c in $CONNS_LIST; do
    load "$round" bare "$BARE_PORT" "$c"
    load "$round" full "$INGEST_PORT" "$c"
    [ -z "$BEFORE_PID" ] || load "$round" before "$BEFORE_PORT" "$c"
    # The same requests with one delivery id: verify, parse, log and answer
    # as a duplicate, no publish. What the request path costs on its own.
    BENCH_FIXED_DELIVERY="no-publish-$round-$c" load "$round" no-publish "$INGEST_PORT" "$c"
  done
  printf '%s\trss\tingest\t%s\n' "$round" "$(hwm_kib "$INGEST_PID")" >>"$RESULTS"
  printf '%s\trss\tbare\t%s\n' "$round" "$(hwm_kib "$BARE_PID")" >>"$RESULTS"
  [ -z "$BEFORE_PID" ] || printf '%s\trss\tbefore\t%s\n' "$round" "$(hwm_kib "$BEFORE_PID")" >>"$RESULTS"
  stop "$INGEST_PID"; [ -z "$BEFORE_PID" ] || stop "$BEFORE_PID"
  rm -rf "$WORK"/home-*

  start stub "$EXAMPLES/stub_publish" "$STUB_PORT" STUB_PUBLISH_MS="$STUB_PUBLISH_MS"
  STUB_PID=$STARTED_PID
  warm "$STUB_PORT"
  load "$round" "stub-${STUB_PUBLISH_MS}ms" "$STUB_PORT" "$STUB_CONNS"
  load "$round" bare "$BARE_PORT" "$STUB_CONNS"
  stop "$STUB_PID"; stop "$BARE_PID"
  PIDS=()
done

echo "== the local bus alone: 32 publishers of 8 KiB messages, without and with a dispatcher"
for round in $(seq 1 "$ROUNDS"); do
  for dispatch in 0 1; do
    for which in after ${BEFORE_DIR:+before}; do
      bin="$EXAMPLES/bus_publish"; [ "$which" = after ] || bin="$BEFORE_DIR/bus_publish"
      printf '  %-6s ' "$which"
      CONCURRENCY=32 SECONDS="${DURATION%s}" DISPATCH="$dispatch" "$bin" "$WORK/bus-$which-$round-$dispatch"
      rm -rf "$WORK/bus-$which-$round-$dispatch"
    done
  done
done

echo "== kill -9 at full speed: every 202 must be in the bus after a restart"
KILL_HOME="$WORK/home-kill"
ACCEPTED="$WORK/accepted"; mkdir -p "$ACCEPTED"
seed "$KILL_HOME"
PATCHPANDA_HOME="$KILL_HOME" PORT="$INGEST_PORT" "$INGEST_BIN" >"$WORK/kill.log" 2>&1 &
KILL_PID=$!; PIDS+=("$KILL_PID")
wait_ready "http://127.0.0.1:$INGEST_PORT/ready"
BENCH_ACCEPTED_DIR="$ACCEPTED" wrk -t"$THREADS" -c32 -d4s \
  -s "$BENCH/post.lua" "http://127.0.0.1:$INGEST_PORT/webhook" >"$WORK/kill-wrk.txt" 2>&1 &
WRK_PID=$!
sleep 2
kill -9 "$KILL_PID"; wait "$KILL_PID" 2>/dev/null || true
wait "$WRK_PID" || true
PATCHPANDA_HOME="$KILL_HOME" PORT="$INGEST_PORT" "$INGEST_BIN" >"$WORK/restart.log" 2>&1 &
RESTART_PID=$!; PIDS=("$RESTART_PID")
wait_ready "http://127.0.0.1:$INGEST_PORT/ready"
stop "$RESTART_PID"; PIDS=()
python3 "$BENCH/kill_check.py" "$KILL_HOME/bus.db" "$ACCEPTED" | tee -a "$WORK/kill.txt"

echo "== exec -> /ready 200 ($READY_RUNS runs, local backend, seeded home)"
seed "$WORK/home-ready"
PATCHPANDA_HOME="$WORK/home-ready" "$EXAMPLES/ready_probe" "$INGEST_BIN" "$READY_PORT" "$READY_RUNS" \
  | tee "$WORK/ready.txt"

echo "== summary (medians over $ROUNDS rounds; ratios are to bare in the same round)"
python3 "$BENCH/summary.py" "$RESULTS" "$WORK/ready.txt"
