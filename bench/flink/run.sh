#!/usr/bin/env bash
# Runs the Flink reference job in a local MiniCluster and prints its single result line:
#   engine=flink mode=json events=N cpu_seconds=X events_per_cpu_second=Y wall_seconds=W rows=R count=C sum=S
#
# usage: bench/flink/run.sh [--events N] [--json|--no-json] [--no-object-reuse]
#
# Environment:
#   OXBOW_CACHE        cache root (default: $HOME/.cache/oxbow)
#   FLINK_HEAP         JVM heap, -Xms and -Xmx (default: 2g)
#   FLINK_JAVA_OPTS    extra JVM options, appended
#   FLINK_SKIP_INSTALL set to 1 to skip the (cheap, idempotent) install.sh check
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
CACHE="${OXBOW_CACHE:-$HOME/.cache/oxbow}"
FLINK_VERSION="${FLINK_VERSION:-2.3.0}"
CLASSES="$CACHE/flink-job/classes"

if [ "${FLINK_SKIP_INSTALL:-0}" = 1 ]; then
    FLINK_LIB="$CACHE/flink-$FLINK_VERSION/lib"
else
    FLINK_LIB="$("$HERE/install.sh" | tail -n1)"
fi
[ -f "$FLINK_LIB/flink-dist-$FLINK_VERSION.jar" ] || { echo "Flink jars missing; run bench/flink/install.sh" >&2; exit 1; }
[ -d "$CLASSES" ] || { echo "job classes missing; run bench/flink/install.sh" >&2; exit 1; }

HEAP="${FLINK_HEAP:-2g}"
# Java 17 module opens that Flink's own config.yaml (env.java.opts.all) sets for every Flink JVM.
JAVA17_OPENS=(
    --add-exports=java.rmi/sun.rmi.registry=ALL-UNNAMED
    --add-exports=java.security.jgss/sun.security.krb5=ALL-UNNAMED
    --add-opens=java.base/java.lang=ALL-UNNAMED
    --add-opens=java.base/java.net=ALL-UNNAMED
    --add-opens=java.base/java.io=ALL-UNNAMED
    --add-opens=java.base/java.nio=ALL-UNNAMED
    --add-opens=java.base/sun.nio.ch=ALL-UNNAMED
    --add-opens=java.base/java.lang.reflect=ALL-UNNAMED
    --add-opens=java.base/java.text=ALL-UNNAMED
    --add-opens=java.base/java.time=ALL-UNNAMED
    --add-opens=java.base/java.util=ALL-UNNAMED
    --add-opens=java.base/java.util.concurrent=ALL-UNNAMED
    --add-opens=java.base/java.util.concurrent.atomic=ALL-UNNAMED
    --add-opens=java.base/java.util.concurrent.locks=ALL-UNNAMED
)
JVM_OPTS=(
    "-Xms$HEAP" "-Xmx$HEAP"
    -XX:+UseG1GC                     # the JDK 17 default, stated explicitly
    -XX:-UsePerfData                 # no hsperfdata mmap file
    -XX:+DisplayVMOutputToStderr     # JVM messages never mix into the result line on stdout
    -Xlog:disable -Xlog:all=warning:stderr
    -Dlog4j.configurationFile="$CLASSES/log4j2.properties"
    -Dlog4j2.configurationFile="$CLASSES/log4j2.properties"
    -Djava.net.preferIPv4Stack=true
    "${JAVA17_OPENS[@]}"
)
# shellcheck disable=SC2206
[ -n "${FLINK_JAVA_OPTS:-}" ] && JVM_OPTS+=(${FLINK_JAVA_OPTS})

# Flink's lib/ folder as a whole, as bin/flink would put it on the class path; the job needs only
# flink-dist (DataStream API, hashmap backend, shaded Jackson) and the log4j jars.
exec java "${JVM_OPTS[@]}" -cp "$CLASSES:$FLINK_LIB/*" oxbow.bench.OxbowReferenceJob "$@"
