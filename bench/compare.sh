#!/usr/bin/env bash
# Side-by-side benchmark: Oxbow's in-process pipeline benchmark against the same reference job on
# Apache Flink (local MiniCluster), interleaved, checksums cross-checked. See bench/README.md.
#
# usage: bench/compare.sh [--events N] [--rounds R]      (defaults: 20000000 and 3)
#
# Environment:
#   OXBOW_WORKER   the oxbow-worker binary (default: ${CARGO_TARGET_DIR:-<repo>/target}/release/oxbow-worker)
#   OXBOW_CACHE    cache root for Flink's jars and the compiled job (default: $HOME/.cache/oxbow)
#   FLINK_HEAP, FLINK_JAVA_OPTS   passed on to bench/flink/run.sh
#
# Prints one line per run, a table of medians per engine, then
#   ratio_vs_flink_no_json=<oxbow median / flink-no-json median>
#   ratio_events_per_cpu_second=<oxbow median / flink-json median>
# (events per CPU-second, 2 decimals); the last line is always ratio_events_per_cpu_second=.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/.." && pwd)"

EVENTS=20000000
ROUNDS=3
while [ $# -gt 0 ]; do
    case "$1" in
        --events) EVENTS="${2:?--events needs a value}"; shift 2 ;;
        --events=*) EVENTS="${1#*=}"; shift ;;
        --rounds) ROUNDS="${2:?--rounds needs a value}"; shift 2 ;;
        --rounds=*) ROUNDS="${1#*=}"; shift ;;
        -h|--help) sed -n '2,16p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "compare.sh: unknown argument: $1" >&2; exit 2 ;;
    esac
done
EVENTS="${EVENTS//_/}"
[[ "$EVENTS" =~ ^[0-9]+$ && "$EVENTS" -ge 1 ]] || { echo "compare.sh: --events must be a positive integer" >&2; exit 2; }
[[ "$ROUNDS" =~ ^[0-9]+$ && "$ROUNDS" -ge 1 ]] || { echo "compare.sh: --rounds must be a positive integer" >&2; exit 2; }

OXBOW_WORKER="${OXBOW_WORKER:-${CARGO_TARGET_DIR:-$ROOT/target}/release/oxbow-worker}"
if [ ! -x "$OXBOW_WORKER" ]; then
    echo "compare.sh: Oxbow binary not found at $OXBOW_WORKER" >&2
    echo "compare.sh: build it first with: cargo build --release -p oxbow-worker   (or set OXBOW_WORKER)" >&2
    exit 1
fi

echo "compare.sh: installing Flink and compiling the reference job (cached)" >&2
"$HERE/flink/install.sh" >/dev/null

WORK="$(mktemp -d "${TMPDIR:-/tmp}/oxbow-compare.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT
RESULTS="$WORK/results.txt"
: > "$RESULTS"

# run LABEL EXPECTED_ENGINE CMD...: runs one benchmark, keeps its last `engine=` line.
run() {
    local label="$1" engine="$2"
    shift 2
    local out="$WORK/$label.out" err="$WORK/$label.err" line
    if ! "$@" > "$out" 2> "$err"; then
        echo "compare.sh: FAILED: $label ($*) exited non-zero; stderr tail:" >&2
        tail -n 30 "$err" >&2
        exit 1
    fi
    line="$(grep -E '^engine=' "$out" | tail -n 1 || true)"
    if [ -z "$line" ] || [[ " $line " != *" engine=$engine "* ]]; then
        echo "compare.sh: FAILED: $label printed no 'engine=$engine ...' line; stdout:" >&2
        cat "$out" >&2
        tail -n 30 "$err" >&2
        exit 1
    fi
    echo "run=$label $line"
    echo "label=$label $line" >> "$RESULTS"
}

export FLINK_SKIP_INSTALL=1
for r in $(seq 1 "$ROUNDS"); do
    echo "compare.sh: round $r/$ROUNDS (events=$EVENTS)" >&2
    run oxbow oxbow "$OXBOW_WORKER" bench pipeline --events "$EVENTS"
    run flink-json flink "$HERE/flink/run.sh" --events "$EVENTS" --json
    run flink-no-json flink "$HERE/flink/run.sh" --events "$EVENTS" --no-json
done

# Cross-check the checksums and summarise (awk: no dependencies beyond POSIX tools).
awk -v want_events="$EVENTS" '
function med(label, field,    n, i, j, t, a) {
    n = cnt[label]
    for (i = 1; i <= n; i++) a[i] = val[label, field, i]
    for (i = 2; i <= n; i++) { t = a[i]; for (j = i - 1; j >= 1 && a[j] > t; j--) a[j + 1] = a[j]; a[j + 1] = t }
    return (n % 2) ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
}
{
    delete kv
    for (i = 1; i <= NF; i++) { p = index($i, "="); if (p > 1) kv[substr($i, 1, p - 1)] = substr($i, p + 1) }
    label = kv["label"]
    for (f in need) if (!(f in kv) || kv[f] == "") { printf "compare.sh: FAILED: %s line lacks %s: %s\n", label, f, $0 > "/dev/stderr"; bad = 1 }
    if (kv["events"] != want_events) { printf "compare.sh: FAILED: %s ran events=%s, wanted %s\n", label, kv["events"], want_events > "/dev/stderr"; bad = 1 }
    sig = kv["rows"] " " kv["count"] " " kv["sum"]
    if (label == "oxbow") { if (oxsig == "") oxsig = sig; else if (sig != oxsig) { printf "compare.sh: FAILED: Oxbow runs disagree: rows/count/sum %s vs %s\n", oxsig, sig > "/dev/stderr"; bad = 1 } }
    else { fsig[++nf] = sig; flab[nf] = label }
    n = ++cnt[label]
    if (!(label in seen)) { seen[label] = 1; order[++nl] = label }
    val[label, "epcs", n] = kv["events_per_cpu_second"] + 0
    val[label, "cpu", n] = kv["cpu_seconds"] + 0
    val[label, "wall", n] = kv["wall_seconds"] + 0
    val[label, "weps", n] = (kv["wall_seconds"] > 0) ? kv["events"] / kv["wall_seconds"] : 0
}
BEGIN { need["events"]; need["cpu_seconds"]; need["events_per_cpu_second"]; need["wall_seconds"]; need["rows"]; need["count"]; need["sum"] }
END {
    if (oxsig == "") { print "compare.sh: FAILED: no Oxbow result" > "/dev/stderr"; exit 1 }
    for (i = 1; i <= nf; i++) if (fsig[i] != oxsig) {
        printf "compare.sh: CHECKSUM MISMATCH: oxbow rows/count/sum = %s but %s run gave %s\n", oxsig, flab[i], fsig[i] > "/dev/stderr"
        bad = 1
    }
    if (bad) exit 1
    split(oxsig, s, " ")
    printf "checksum: rows=%s count=%s sum=%s (identical in all %d runs)\n", s[1], s[2], s[3], NR
    printf "%-14s %5s %22s %16s %14s %22s\n", "engine", "runs", "events_per_cpu_second", "cpu_seconds", "wall_seconds", "wall_events_per_second"
    for (i = 1; i <= nl; i++) {
        l = order[i]
        printf "%-14s %5d %22.0f %16.3f %14.3f %22.0f\n", l, cnt[l], med(l, "epcs"), med(l, "cpu"), med(l, "wall"), med(l, "weps")
    }
    print "(medians over the runs of each engine)"
    ox = med("oxbow", "epcs"); fj = med("flink-json", "epcs"); fn = med("flink-no-json", "epcs")
    printf "ratio_wall_events_per_second=%.2f\n", med("oxbow", "weps") / med("flink-json", "weps")
    printf "ratio_vs_flink_no_json=%.2f\n", ox / fn
    printf "ratio_events_per_cpu_second=%.2f\n", ox / fj
}
' "$RESULTS"
