#!/usr/bin/env bash
# Build one function's container image from infra/Dockerfile
# (make image FUNCTION=webhook-ingest).
#
#   bash infra/image.sh [FUNCTION [TAG]]
#
# FUNCTION: webhook-ingest | rotation-worker | audit-alerter | patchpanda;
# none builds the three functions.
# The image is tagged IMAGE_REGISTRY/FUNCTION:TAG when IMAGE_REGISTRY is set
# (e.g. the `image_registry` Terraform output; then push it with
# PUSH=1), else patchpanda/FUNCTION:TAG. TAG defaults to the current git
# commit. CONTAINER_ENGINE=docker|podman picks the engine (default: the
# first one whose daemon answers).
#
# With no usable container engine (a docker client without a daemon, as on
# the project's build machines) it says so in one line and exits 0: the
# image build is then the deployer's step (docs/deploy.md).
set -euo pipefail

usage() {
  echo "usage: bash infra/image.sh [webhook-ingest|rotation-worker|audit-alerter|patchpanda [TAG]]" >&2
  exit 2
}

# No argument (make image without FUNCTION=): all three functions.
if [[ $# -eq 0 ]]; then
  for f in webhook-ingest rotation-worker audit-alerter; do
    bash "${BASH_SOURCE[0]}" "$f"
  done
  exit 0
fi
[[ $# -le 2 ]] || usage
function="$1"
case "$function" in
  webhook-ingest | rotation-worker | audit-alerter | patchpanda) ;;
  *) usage ;;
esac

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
tag="${2:-$(git -C "$root" rev-parse --short=12 HEAD 2>/dev/null || echo dev)}"
if [[ ! "$tag" =~ ^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$ ]]; then
  echo "infra/image.sh: '$tag' is not a valid image tag" >&2
  exit 2
fi

engine=""
candidates=("${CONTAINER_ENGINE:-}")
[[ -z "${CONTAINER_ENGINE:-}" ]] && candidates=(docker podman)
for e in "${candidates[@]}"; do
  # `info` talks to the daemon; a client alone is not enough.
  if command -v "$e" >/dev/null 2>&1 && timeout 20 "$e" info >/dev/null 2>&1; then
    engine="$e"
    break
  fi
done

if [[ -z "$engine" ]]; then
  echo "infra/image.sh: no container engine available (${candidates[*]}: not installed or no daemon answering); not building $function — build it where docker or podman runs (docs/deploy.md)."
  exit 0
fi

registry="${IMAGE_REGISTRY:-patchpanda}"
image="${registry%/}/${function}:${tag}"

echo "infra/image.sh: building $image with $engine"
"$engine" build \
  --file "$root/infra/Dockerfile" \
  --build-arg "FUNCTION=$function" \
  --tag "$image" \
  "$root"

if [[ "${PUSH:-0}" == "1" ]]; then
  "$engine" push "$image"
fi
echo "$image"
