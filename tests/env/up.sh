#!/usr/bin/env bash
# Start the real test components on 127.0.0.1, on free ports, in a run directory.
#
#   up.sh [--watch-pid PID] [k8s] [kafka] [s3]      (default: all three)
#
#   k8s    etcd + kube-apiserver + kube-controller-manager  -> KUBECONFIG, OXBOW_TEST_KUBECONFIG
#   kafka  noida-db (Kafka protocol)                          -> OXBOW_TEST_BOOTSTRAP
#          Tansu                                              -> OXBOW_TEST_BOOTSTRAP_TANSU
#   s3     moto S3 server (single-threaded) + bucket          -> OXBOW_TEST_S3_ENDPOINT, ...
#
#   --watch-pid PID   also start a detached watchdog that runs down.sh for this run
#                     directory as soon as process PID exits.
#
# Prints `export NAME=value` lines on stdout (everything else goes to stderr) and writes
# them to $OXBOW_ENV_DIR/env.sh. Run directory: ${OXBOW_ENV_DIR:-$(mktemp -d)}; it holds
# pids/<name>.pid, logs/<name>.log and each component's data. Stop with down.sh.
# Needs the components installed by install.sh (cache: ${OXBOW_CACHE:-$HOME/.cache/oxbow}).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
CACHE="${OXBOW_CACHE:-$HOME/.cache/oxbow}"
K8S_BIN="$CACHE/k8s-1.20.2/bin"
BIN="$CACHE/bin"
VENV="$CACHE/venv"
READY_TIMEOUT="${OXBOW_ENV_TIMEOUT:-60}"
S3_BUCKET=oxbow-test

log() { printf 'up: %s\n' "$*" >&2; }
usage() { awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0" >&2; }

want_k8s=0 want_kafka=0 want_s3=0 watch_pid=""
while [[ $# -gt 0 ]]; do
  case "$1" in
    k8s) want_k8s=1 ;;
    kafka) want_kafka=1 ;;
    s3) want_s3=1 ;;
    --watch-pid)
      [[ $# -ge 2 && "$2" =~ ^[0-9]+$ ]] || { usage; echo "up: --watch-pid needs a PID" >&2; exit 2; }
      watch_pid="$2"
      shift
      ;;
    --watch-pid=*) watch_pid="${1#--watch-pid=}" ;;
    -h|--help) usage; exit 0 ;;
    *) usage; echo "up: unknown argument '$1'" >&2; exit 2 ;;
  esac
  shift
done
if [[ $want_k8s == 0 && $want_kafka == 0 && $want_s3 == 0 ]]; then
  want_k8s=1 want_kafka=1 want_s3=1
fi

# ---- preflight: everything installed? ----
missing=()
if [[ $want_k8s == 1 ]]; then
  for f in "$K8S_BIN/kube-apiserver" "$K8S_BIN/kube-controller-manager"; do
    [[ -x "$f" ]] || missing+=("$f")
  done
  for c in etcd openssl curl base64; do
    command -v "$c" >/dev/null 2>&1 || missing+=("$c")
  done
fi
if [[ $want_kafka == 1 ]]; then
  for f in "$BIN/noida-db" "$BIN/tansu"; do [[ -x "$f" ]] || missing+=("$f"); done
fi
if [[ $want_s3 == 1 ]]; then
  [[ -x "$VENV/bin/python" ]] || missing+=("$VENV/bin/python")
  command -v curl >/dev/null 2>&1 || missing+=(curl)
fi
if [[ ${#missing[@]} -gt 0 ]]; then
  echo "up: ERROR: not installed: ${missing[*]} (run $HERE/install.sh first)" >&2
  exit 1
fi

PY="${OXBOW_PYTHON:-}"
if [[ -z "$PY" ]]; then
  if [[ -x "$VENV/bin/python" ]]; then PY="$VENV/bin/python"; else PY=python3; fi
fi
command -v "$PY" >/dev/null 2>&1 || { echo "up: ERROR: no python ($PY) to pick free ports" >&2; exit 1; }

# ---- run directory ----
if [[ -n "${OXBOW_ENV_DIR:-}" ]]; then
  DIR="$OXBOW_ENV_DIR"
  mkdir -p "$DIR"
else
  DIR="$(mktemp -d "${TMPDIR:-/tmp}/oxbow-env.XXXXXX")"
fi
DIR="$(cd "$DIR" && pwd)"
if compgen -G "$DIR/pids/*.pid" >/dev/null; then
  for f in "$DIR"/pids/*.pid; do
    if kill -0 "$(cat "$f")" 2>/dev/null; then
      echo "up: ERROR: $DIR already has running components ($(basename "$f" .pid)); run down.sh $DIR first" >&2
      exit 1
    fi
  done
  rm -f "$DIR"/pids/*.pid
fi
mkdir -p "$DIR/pids" "$DIR/logs"
export OXBOW_ENV_DIR="$DIR"

started_ok=0
cleanup_on_error() {
  if [[ $started_ok == 0 ]]; then
    log "startup failed; stopping what was started"
    "$HERE/down.sh" "$DIR" >&2 || true
  fi
}
trap cleanup_on_error EXIT

fail() {
  local name="$1"
  shift
  printf 'up: ERROR: %s: %s\n' "$name" "$*" >&2
  if [[ -f "$DIR/logs/$name.log" ]]; then
    printf 'up: ---- last lines of %s ----\n' "$DIR/logs/$name.log" >&2
    tail -n 30 "$DIR/logs/$name.log" >&2 || true
    printf 'up: ----\n' >&2
  fi
  exit 1
}

# start NAME CMD... : run CMD in the background, stdin/stdout/stderr detached, log to logs/NAME.log.
start() {
  local name="$1"
  shift
  "$@" </dev/null >"$DIR/logs/$name.log" 2>&1 &
  echo $! >"$DIR/pids/$name.pid"
}

alive() { kill -0 "$(cat "$DIR/pids/$1.pid")" 2>/dev/null; }

# wait_for NAME WHAT CHECK... : poll CHECK until it succeeds; fail if NAME dies or times out.
wait_for() {
  local name="$1" what="$2" deadline=$((SECONDS + READY_TIMEOUT))
  shift 2
  until "$@" >/dev/null 2>&1; do
    alive "$name" || fail "$name" "exited while waiting for $what"
    ((SECONDS < deadline)) || fail "$name" "not ready after ${READY_TIMEOUT}s ($what)"
    sleep 0.2
  done
}

tcp_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# Hold all sockets at once so the ports are distinct.
free_ports() {
  "$PY" -c '
import socket, sys
socks = []
for _ in range(int(sys.argv[1])):
    s = socket.socket(); s.bind(("127.0.0.1", 0)); socks.append(s)
print(" ".join(str(s.getsockname()[1]) for s in socks))
' "$1"
}

read -r P_ETCD P_ETCD_PEER P_APISERVER P_NOIDA P_TANSU P_MOTO <<<"$(free_ports 6)"

EXPORTS=()
export_var() { EXPORTS+=("export $1=$(printf '%q' "$2")"); }
export_var OXBOW_ENV_DIR "$DIR"

t_start=$SECONDS

# ---- Kafka-protocol brokers (start first: they come up while the control plane boots) ----
if [[ $want_kafka == 1 ]]; then
  mkdir -p "$DIR/kafka/noida"
  start noida-db "$BIN/noida-db" start --only kafka --host 127.0.0.1 \
    --kafka-port "$P_NOIDA" --data-dir "$DIR/kafka/noida"
  start tansu env -u CLUSTER_ID -u LISTENER_URL -u ADVERTISED_LISTENER_URL -u STORAGE_ENGINE \
    "$BIN/tansu" broker --listener-url "tcp://127.0.0.1:$P_TANSU" \
    --advertised-listener-url "tcp://127.0.0.1:$P_TANSU" --storage-engine memory://tansu/
fi

# ---- S3 (moto) ----
if [[ $want_s3 == 1 ]]; then
  start moto "$VENV/bin/python" "$HERE/moto_server.py" --host 127.0.0.1 --port "$P_MOTO"
fi

# ---- Kubernetes control plane ----
if [[ $want_k8s == 1 ]]; then
  K="$DIR/k8s"
  mkdir -p "$K/certs" "$K/etcd"
  chmod 700 "$K"
  openssl genrsa -out "$K/sa.key" 2048 2>/dev/null
  openssl rsa -in "$K/sa.key" -pubout -out "$K/sa.pub" 2>/dev/null
  ADMIN_TOKEN="$(openssl rand -hex 24)"
  KCM_TOKEN="$(openssl rand -hex 24)"
  (
    umask 077
    printf '%s,admin,admin,"system:masters"\n' "$ADMIN_TOKEN"
    printf '%s,system:kube-controller-manager,kcm,"system:masters"\n' "$KCM_TOKEN"
  ) >"$K/tokens.csv"

  start etcd etcd --name oxbow --data-dir "$K/etcd" \
    --listen-client-urls "http://127.0.0.1:$P_ETCD" --advertise-client-urls "http://127.0.0.1:$P_ETCD" \
    --listen-peer-urls "http://127.0.0.1:$P_ETCD_PEER" \
    --initial-advertise-peer-urls "http://127.0.0.1:$P_ETCD_PEER" \
    --initial-cluster "oxbow=http://127.0.0.1:$P_ETCD_PEER" --initial-cluster-state new
  wait_for etcd "etcd /health" curl -fsS "http://127.0.0.1:$P_ETCD/health"

  start kube-apiserver "$K8S_BIN/kube-apiserver" \
    --etcd-servers="http://127.0.0.1:$P_ETCD" \
    --secure-port="$P_APISERVER" --bind-address=127.0.0.1 --advertise-address=127.0.0.1 \
    --endpoint-reconciler-type=none --cert-dir="$K/certs" --token-auth-file="$K/tokens.csv" \
    --authorization-mode=RBAC \
    --service-account-issuer=https://kubernetes.default.svc \
    --service-account-key-file="$K/sa.pub" --service-account-signing-key-file="$K/sa.key" \
    --service-cluster-ip-range=10.96.0.0/24 --disable-admission-plugins=ServiceAccount \
    --enable-admission-plugins=OwnerReferencesPermissionEnforcement \
    --allow-privileged=true
  CA="$K/certs/apiserver.crt"
  apiserver_ready() {
    [[ -s "$CA" ]] && curl -fsS --cacert "$CA" -H "Authorization: Bearer $ADMIN_TOKEN" \
      "https://127.0.0.1:$P_APISERVER/readyz"
  }
  wait_for kube-apiserver "https://127.0.0.1:$P_APISERVER/readyz" apiserver_ready

  # kubeconfig NAME TOKEN USER: a self-contained kubeconfig (CA embedded).
  kubeconfig() {
    local ca_data
    ca_data="$(base64 -w0 <"$CA")"
    cat <<EOF
apiVersion: v1
kind: Config
clusters:
- name: oxbow
  cluster:
    server: https://127.0.0.1:$P_APISERVER
    certificate-authority-data: $ca_data
users:
- name: $3
  user:
    token: $2
contexts:
- name: oxbow
  context:
    cluster: oxbow
    user: $3
    namespace: default
current-context: oxbow
EOF
  }
  (umask 077 && kubeconfig kubeconfig "$ADMIN_TOKEN" admin >"$DIR/kubeconfig")
  (umask 077 && kubeconfig kcm "$KCM_TOKEN" kube-controller-manager >"$K/kcm.kubeconfig")

  start kube-controller-manager "$K8S_BIN/kube-controller-manager" \
    --kubeconfig="$K/kcm.kubeconfig" --leader-elect=false --secure-port=0 --port=0 \
    --service-account-private-key-file="$K/sa.key" --root-ca-file="$CA" --controllers='*'
  # The serviceaccount controller creating `default` in `default` shows the manager is working.
  wait_for kube-controller-manager "the default ServiceAccount" \
    curl -fsS --cacert "$CA" -H "Authorization: Bearer $ADMIN_TOKEN" \
    "https://127.0.0.1:$P_APISERVER/api/v1/namespaces/default/serviceaccounts/default"

  export_var KUBECONFIG "$DIR/kubeconfig"
  export_var OXBOW_TEST_KUBECONFIG "$DIR/kubeconfig"
  log "k8s: apiserver https://127.0.0.1:$P_APISERVER (etcd :$P_ETCD) ready"
fi

if [[ $want_kafka == 1 ]]; then
  wait_for noida-db "TCP 127.0.0.1:$P_NOIDA" tcp_open "$P_NOIDA"
  wait_for tansu "TCP 127.0.0.1:$P_TANSU" tcp_open "$P_TANSU"
  export_var OXBOW_TEST_BOOTSTRAP "127.0.0.1:$P_NOIDA"
  export_var OXBOW_TEST_BOOTSTRAP_TANSU "127.0.0.1:$P_TANSU"
  log "kafka: noida-db 127.0.0.1:$P_NOIDA, tansu 127.0.0.1:$P_TANSU ready"
fi

if [[ $want_s3 == 1 ]]; then
  S3="http://127.0.0.1:$P_MOTO"
  wait_for moto "HTTP $S3" curl -fsS "$S3/"
  # moto does not check signatures: a plain path-style PUT creates the bucket.
  curl -fsS -X PUT "$S3/$S3_BUCKET" >/dev/null || fail moto "cannot create bucket $S3_BUCKET"
  export_var OXBOW_TEST_S3_ENDPOINT "$S3"
  export_var OXBOW_TEST_S3_BUCKET "$S3_BUCKET"
  export_var AWS_ACCESS_KEY_ID test
  export_var AWS_SECRET_ACCESS_KEY test
  export_var AWS_REGION us-east-1
  log "s3: moto $S3 ready, bucket $S3_BUCKET"
fi

[[ -x "$BIN/helm" ]] && export_var OXBOW_TEST_HELM "$BIN/helm"

# ---- watchdog ----
if [[ -n "$watch_pid" ]]; then
  kill -0 "$watch_pid" 2>/dev/null || fail watchdog "--watch-pid $watch_pid is not running"
  # Remember the watched process's start time so a recycled PID is not mistaken for it.
  start_time="$(sed 's/.*) //' "/proc/$watch_pid/stat" 2>/dev/null | cut -d' ' -f20 || true)"
  # shellcheck disable=SC2016  # the script expands its own positional arguments
  setsid -f bash -c '
    echo $$ >"$1/pids/watchdog.pid"
    while kill -0 "$2" 2>/dev/null; do
      stat="$(cat "/proc/$2/stat" 2>/dev/null)" || break
      stat="${stat##*) }" # fields after the command name: state is 1st, start time 20th
      read -r -a f <<<"$stat"
      [[ "${f[0]}" != Z && ( -z "$3" || "${f[19]}" == "$3" ) ]] || break
      sleep 1
    done
    exec "$4" "$1"
  ' oxbow-watchdog "$DIR" "$watch_pid" "$start_time" "$HERE/down.sh" \
    </dev/null >>"$DIR/logs/watchdog.log" 2>&1
  for _ in $(seq 50); do [[ -s "$DIR/pids/watchdog.pid" ]] && break; sleep 0.1; done
  [[ -s "$DIR/pids/watchdog.pid" ]] || fail watchdog "did not start"
  log "watchdog $(cat "$DIR/pids/watchdog.pid") stops this env when PID $watch_pid exits"
fi

printf '%s\n' "${EXPORTS[@]}" >"$DIR/env.sh"
started_ok=1
log "ready in $((SECONDS - t_start)) s; env: $DIR/env.sh; stop: $HERE/down.sh $DIR"
printf '%s\n' "${EXPORTS[@]}"
