#!/usr/bin/env bash
# Installs Apache Flink's jars (from the PyPI package apache-flink-libraries) and compiles the
# reference job. Idempotent: downloads only when the jars are missing and recompiles only when the
# job's sources (or the JDK / Flink version) changed.
#
# Environment:
#   OXBOW_CACHE     cache root (default: $HOME/.cache/oxbow)
#   FLINK_VERSION   Flink version to install (default: 2.3.0)
#   PYTHON          python interpreter with pip (default: python3)
#
# Everything is logged to stderr; the last line on stdout is the Flink lib dir.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
CACHE="${OXBOW_CACHE:-$HOME/.cache/oxbow}"
FLINK_VERSION="${FLINK_VERSION:-2.3.0}"
PYTHON="${PYTHON:-python3}"
FLINK_HOME="$CACHE/flink-$FLINK_VERSION"
FLINK_LIB="$FLINK_HOME/lib"
JOB_DIR="$CACHE/flink-job"
CLASSES="$JOB_DIR/classes"

log() { echo "[flink-install] $*" >&2; }

# --- JDK -----------------------------------------------------------------------------------------
if ! command -v javac >/dev/null 2>&1; then
    if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
        log "javac not found; installing openjdk-17-jdk-headless"
        apt-get update -qq >&2
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq openjdk-17-jdk-headless >&2
    else
        log "javac not found: install a Java 17 JDK (Debian: apt-get install openjdk-17-jdk-headless)"
        exit 1
    fi
fi
JAVA_MAJOR="$(javac -version 2>&1 | sed -E 's/^javac ([0-9]+).*/\1/')"
if [ "${JAVA_MAJOR:-0}" -lt 17 ] 2>/dev/null; then
    log "need JDK >= 17, found: $(javac -version 2>&1)"
    exit 1
fi

# --- Flink jars ----------------------------------------------------------------------------------
if [ ! -f "$FLINK_LIB/flink-dist-$FLINK_VERSION.jar" ]; then
    log "downloading apache-flink-libraries==$FLINK_VERSION (about 330 MB) into $CACHE"
    mkdir -p "$CACHE"
    DL="$(mktemp -d "$CACHE/flink-dl.XXXXXX")"
    trap 'rm -rf "$DL"' EXIT
    "$PYTHON" -m pip download --quiet --no-deps --only-binary=:all: \
        -d "$DL" "apache-flink-libraries==$FLINK_VERSION" >&2
    WHEELS=("$DL"/apache_flink_libraries-*.whl)
    WHEEL="${WHEELS[0]}"
    [ -f "$WHEEL" ] || { log "pip downloaded no apache-flink-libraries wheel"; exit 1; }
    log "extracting jars from $(basename "$WHEEL")"
    STAGE="$DL/stage"
    "$PYTHON" - "$WHEEL" "$STAGE" <<'PY'
import os, sys, zipfile
wheel, out = sys.argv[1], sys.argv[2]
n = 0
with zipfile.ZipFile(wheel) as z:
    for info in z.infolist():
        name = info.filename
        # pyflink/lib/*.jar is Flink's lib/ folder (flink-dist, table, log4j, ...);
        # pyflink/opt holds optional jars (kept for completeness, not on the class path).
        if name.endswith(".jar") and (name.startswith("pyflink/lib/") or name.startswith("pyflink/opt/")):
            rel = name[len("pyflink/"):]
            dest = os.path.join(out, rel)
            os.makedirs(os.path.dirname(dest), exist_ok=True)
            with z.open(info) as src, open(dest, "wb") as dst:
                while True:
                    buf = src.read(1 << 20)
                    if not buf:
                        break
                    dst.write(buf)
            n += 1
print(f"extracted {n} jars", file=sys.stderr)
PY
    [ -f "$STAGE/lib/flink-dist-$FLINK_VERSION.jar" ] || { log "flink-dist-$FLINK_VERSION.jar not in the wheel"; exit 1; }
    rm -rf "$FLINK_HOME"
    mv "$STAGE" "$FLINK_HOME"
    rm -rf "$DL"
    trap - EXIT
fi
log "Flink lib: $FLINK_LIB"

# --- compile the job -----------------------------------------------------------------------------
SOURCES=()
while IFS= read -r f; do SOURCES+=("$f"); done < <(find "$HERE/src" -name '*.java' | LC_ALL=C sort)
[ "${#SOURCES[@]}" -gt 0 ] || { log "no Java sources under $HERE/src"; exit 1; }

STAMP="$( { cat "${SOURCES[@]}" "$HERE/log4j2.properties"; javac -version 2>&1; echo "flink=$FLINK_VERSION"; } \
    | sha256sum | cut -d' ' -f1)"
if [ -f "$JOB_DIR/stamp" ] && [ "$(cat "$JOB_DIR/stamp")" = "$STAMP" ] && [ -d "$CLASSES" ]; then
    log "job classes up to date: $CLASSES"
else
    log "compiling ${#SOURCES[@]} source file(s) into $CLASSES"
    rm -rf "$CLASSES" "$JOB_DIR/stamp"
    mkdir -p "$CLASSES"
    javac --release 17 -nowarn -encoding UTF-8 -cp "$FLINK_LIB/*" -d "$CLASSES" "${SOURCES[@]}" >&2
    cp "$HERE/log4j2.properties" "$CLASSES/log4j2.properties"
    echo "$STAMP" > "$JOB_DIR/stamp"
fi

echo "$FLINK_LIB"
