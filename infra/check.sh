#!/usr/bin/env bash
# Static checks of the deployment (make infra-check):
#   1. every .tf parses with python-hcl2 and every var./local./resource
#      reference resolves (infra/hcl_check.py);
#   2. terraform fmt -check, only when a terraform binary happens to be on
#      PATH (it is not installable from this project's registries);
#   3. checkov on infra/ (terraform + dockerfile) with zero failed checks;
#      every skip is justified inline next to the resource it concerns.
# `terraform validate` / `plan` need the Google providers and credentials:
# the deployer runs them (docs/deploy.md).
# Installs its tools itself into infra/.venv, once; later runs are quiet.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
venv="$here/.venv"
hcl2_lib="$venv/hcl2"
stamp="$venv/.installed"
want="$(cat "$here/requirements.txt" "$here/requirements-hcl2.txt" | sha256sum | cut -d' ' -f1)"

pick_python() {
  for p in python3.11 python3.12 python3.13 python3; do
    if command -v "$p" >/dev/null 2>&1; then echo "$p"; return 0; fi
  done
  echo "infra/check.sh: no python3 on PATH" >&2
  return 1
}

if [[ ! -f "$stamp" || "$(cat "$stamp")" != "$want" ]]; then
  echo "infra/check.sh: installing checkov and python-hcl2 into infra/.venv (once)"
  py="$(pick_python)"
  rm -rf "$venv"
  "$py" -m venv "$venv"
  log="$(mktemp)"
  trap 'rm -f "$log"' EXIT
  pip=("$venv/bin/python" -m pip --disable-pip-version-check --no-input -q)
  if ! "${pip[@]}" install -r "$here/requirements.txt" >"$log" 2>&1 \
    || ! "${pip[@]}" install --no-deps --target "$hcl2_lib" -r "$here/requirements-hcl2.txt" >>"$log" 2>&1; then
    cat "$log" >&2
    echo "infra/check.sh: installing the Python tools failed (see above)" >&2
    rm -rf "$venv"
    exit 1
  fi
  echo "$want" >"$stamp"
fi

status=0

echo "== python-hcl2: parse and resolve references (infra/terraform)"
if ! PYTHONPATH="$hcl2_lib" "$venv/bin/python" "$here/hcl_check.py" "$here/terraform"; then
  status=1
fi

echo "== terraform fmt"
if command -v terraform >/dev/null 2>&1; then
  tfrc="$(mktemp)"
  if TF_CLI_CONFIG_FILE="$tfrc" terraform fmt -check -diff -recursive "$here/terraform"; then
    echo "formatted"
  else
    echo "FAIL  terraform fmt: run terraform fmt -recursive infra/terraform"
    status=1
  fi
  rm -f "$tfrc"
else
  echo "skipped: no terraform binary on PATH"
fi

echo "== checkov (terraform, dockerfile)"
report="$(mktemp)"
set +e
# --skip-download: no call home for policy metadata; the built-in checks are
# all we use. Telemetry off for the same reason.
BC_SKIP_MAPPING=TRUE CHECKOV_RUN_SCA_PACKAGE_SCAN_V2=false \
  "$venv/bin/checkov" \
  --directory "$here" \
  --framework terraform dockerfile \
  --skip-path '\.venv' \
  --skip-download \
  --quiet --compact \
  --output cli --output json --output-file-path console,"$report" \
  >"$report.cli" 2>&1
ck=$?
set -e
# JSON file is results_json.json inside the path for multiple outputs.
json="$report"
[[ -d "$report" ]] && json="$report/results_json.json"
summary="$("$venv/bin/python" - "$json" <<'PY'
import json, sys
try:
    data = json.load(open(sys.argv[1]))
except Exception as e:
    print(f"unreadable checkov report: {e}")
    sys.exit(0)
reports = data if isinstance(data, list) else [data]
p = f = s = 0
for r in reports:
    sm = r.get("summary", {})
    p += sm.get("passed", 0); f += sm.get("failed", 0); s += sm.get("skipped", 0)
print(f"checkov: {p} passed, {f} failed, {s} skipped")
PY
)"
if [[ $ck -ne 0 ]]; then
  cat "$report.cli"
  status=1
fi
echo "$summary"
rm -rf "$report" "$report.cli"

if [[ $status -ne 0 ]]; then
  echo "infra/check.sh: FAILED"
  exit 1
fi
echo "infra/check.sh: ok"
