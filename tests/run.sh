#!/usr/bin/env bash
# Runs every Oxbow test — unit, integration and end-to-end — against the real components:
# installs them once (cached under ${OXBOW_CACHE:-$HOME/.cache/oxbow}), starts them on
# 127.0.0.1, runs `cargo test --workspace`, and stops them.
#
#   bash tests/run.sh [extra cargo test arguments]
#
# To run against your own Kafka, export OXBOW_TEST_BOOTSTRAP=host:port first (and
# OXBOW_TEST_BOOTSTRAP_TANSU for the second-broker checks); components whose variables are
# already set are not started.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

components=()
# Only an explicit OXBOW_TEST_KUBECONFIG is reused: a KUBECONFIG pointing at a real cluster is
# never where the tests create their namespaces and CRDs.
[[ -n "${OXBOW_TEST_KUBECONFIG:-}" ]] || components+=(k8s)
[[ -n "${OXBOW_TEST_BOOTSTRAP:-}" ]] || components+=(kafka)
[[ -n "${OXBOW_TEST_S3_ENDPOINT:-}" ]] || components+=(s3)

# helm and checkov: the chart and install-file tests (tests/tests/install_chart_*.rs).
bash tests/env/install.sh build helm checkov "${components[@]}"
if [[ ${#components[@]} -gt 0 ]]; then
  exports="$(bash tests/env/up.sh --watch-pid $$ "${components[@]}")"
  eval "$exports"
  trap 'bash tests/env/down.sh "$OXBOW_ENV_DIR" >&2' EXIT
fi

log="$(mktemp)"
status=0
# The tests run the binaries (oxbow-operator has no integration tests of its own, so `cargo
# test` alone would not build it).
cargo build --workspace --bins --locked 2>&1 | tee "$log" || status=$?
[[ $status == 0 ]] && { cargo test --workspace --locked "$@" 2>&1 | tee -a "$log" || status=$?; }
# One closing line over every test binary, in the form CI reads.
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i; if ($(i+1) ~ /^ignored/) s += $i } }
     END { printf "tests: %d passed, %d failed, %d skipped\n", p, f, s }' "$log"
rm -f "$log"
exit "$status"
