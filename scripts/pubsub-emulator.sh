#!/usr/bin/env bash
# Google's Pub/Sub emulator for the emulator-mode tests and `patchpanda dev`.
#
#   scripts/pubsub-emulator.sh run -- CMD...   start, run CMD with
#                                              PUBSUB_EMULATOR_HOST set, stop
#   scripts/pubsub-emulator.sh start           start; print the export line
#   scripts/pubsub-emulator.sh stop            stop the one `start` started
#
# The emulator runs offline (`gcloud beta emulators pubsub start`). gcloud
# starts a Java child that outlives it, so the emulator gets its own process
# group (setsid) and stopping it signals the whole group.
#
# Environment: PUBSUB_EMULATOR_PORT (default: a free port),
# PUBSUB_EMULATOR_STATE (where start/stop keep the process group, port, data
# and log; default ./.patchpanda/pubsub-emulator). The emulator serves every
# project id; the stack picks its own (PUBSUB_PROJECT_ID, see
# shared/src/bus/emulator.rs).
set -euo pipefail

STATE="${PUBSUB_EMULATOR_STATE:-./.patchpanda/pubsub-emulator}"
# Only the emulator's default; clients name their project in each request.
PROJECT="patchpanda-local"
START_TIMEOUT="${PUBSUB_EMULATOR_START_TIMEOUT:-60}"

die() { echo "pubsub-emulator: $*" >&2; exit 1; }

have_emulator() {
  command -v gcloud >/dev/null 2>&1 && command -v java >/dev/null 2>&1
}

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

# Answers once the emulator serves requests (its root says "Ok").
answers() {
  curl -sf --max-time 2 "http://127.0.0.1:$1/" >/dev/null 2>&1
}

start() {
  have_emulator || die "gcloud or java is missing; install the Cloud SDK's pubsub-emulator component"
  local port="${PUBSUB_EMULATOR_PORT:-$(free_port)}"
  mkdir -p "$STATE/data"
  if [[ -f "$STATE/pgid" ]] && kill -0 -- "-$(cat "$STATE/pgid")" 2>/dev/null; then
    die "already running (process group $(cat "$STATE/pgid")); run '$0 stop' first"
  fi
  # setsid: the emulator leads a new process group, so `stop` reaches the
  # Java child too. Offline: no update checks, no prompts.
  CLOUDSDK_CORE_DISABLE_PROMPTS=1 CLOUDSDK_COMPONENT_MANAGER_DISABLE_UPDATE_CHECK=1 \
    setsid gcloud beta emulators pubsub start \
      --host-port="127.0.0.1:$port" --project="$PROJECT" --data-dir="$STATE/data" \
      >"$STATE/log" 2>&1 < /dev/null &
  local pgid=$!
  echo "$pgid" >"$STATE/pgid"
  echo "$port" >"$STATE/port"
  local waited=0
  until answers "$port"; do
    if ! kill -0 "$pgid" 2>/dev/null; then
      tail -n 20 "$STATE/log" >&2 || true
      rm -f "$STATE/pgid"
      die "the emulator exited during start (log above, full log in $STATE/log)"
    fi
    if (( waited >= START_TIMEOUT * 4 )); then
      stop
      die "the emulator did not answer on 127.0.0.1:$port within ${START_TIMEOUT}s (log: $STATE/log)"
    fi
    sleep 0.25
    waited=$((waited + 1))
  done
  echo "export PUBSUB_EMULATOR_HOST=127.0.0.1:$port"
}

stop() {
  [[ -f "$STATE/pgid" ]] || return 0
  local pgid
  pgid="$(cat "$STATE/pgid")"
  if kill -TERM -- "-$pgid" 2>/dev/null; then
    for _ in $(seq 1 40); do
      kill -0 -- "-$pgid" 2>/dev/null || break
      sleep 0.25
    done
    kill -KILL -- "-$pgid" 2>/dev/null || true
  fi
  rm -f "$STATE/pgid" "$STATE/port"
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  run)
    shift
    [[ "${1:-}" == "--" ]] && shift
    (( $# > 0 )) || die "usage: $0 run -- CMD..."
    if ! have_emulator; then
      echo "pubsub-emulator: gcloud/java not found; running without the emulator (its tests will say SKIPPED)" >&2
      exec "$@"
    fi
    # A private state dir per run, so parallel runs never stop each other's.
    STATE="$(mktemp -d "${TMPDIR:-/tmp}/pubsub-emulator.XXXXXX")"
    trap 'stop; rm -rf "$STATE"' EXIT
    trap 'exit 130' INT TERM
    if line="$(start)"; then
      export PUBSUB_EMULATOR_HOST="${line#export PUBSUB_EMULATOR_HOST=}"
      echo "pubsub-emulator: up at $PUBSUB_EMULATOR_HOST" >&2
    else
      echo "pubsub-emulator: could not start; running without it (its tests will say SKIPPED)" >&2
    fi
    set +e
    "$@"
    rc=$?
    set -e
    exit "$rc"
    ;;
  *) die "usage: $0 start | stop | run -- CMD..." ;;
esac
