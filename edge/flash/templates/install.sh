#!/usr/bin/env bash
# Install this edge-agent bundle offline (run it from the unpacked bundle directory).
#
#   sudo ./install.sh                      # /opt/edge-agent, systemd service enabled and (re)started
#   ./install.sh --prefix DIR --no-systemd # anywhere, no service (containers, tests, hosts without systemd)
#   sudo ./install.sh --root IMG_ROOT      # into an image's root filesystem from a build host
#                                          # (foreign CPUs run under qemu-<arch>-static, no binfmt needed)
#   sudo $PREFIX/current/install.sh --rollback   # back to the previous release
#
# Layout: $PREFIX/releases/<bundle id>/{venv,models,config,...}, $PREFIX/current and
# $PREFIX/previous are relative symlinks. A release becomes current only after its
# self-check (the runtime imports, every model loads and runs once) passed, so a
# failed update leaves the running release alone.
#
# Exit codes: 2 usage, 3 sha256 check failed, 4 bundle is for another machine,
# 5 nothing to roll back to, 6 self-check failed, 1 anything else.
set -euo pipefail
umask 022

PREFIX=/opt/edge-agent
ROOT=""
SYSTEMD=1
START=1
FORCE=0
ROLLBACK=0
COMPILE=1
PY=""
SERVICE=edge-agent

die() { local code=$1; shift; echo "install.sh: error: $*" >&2; exit "$code"; }
say() { echo "install.sh: $*" >&2; }

while [ $# -gt 0 ]; do
  case "$1" in
    --prefix) PREFIX=${2:?--prefix needs a directory}; shift 2 ;;
    --root) ROOT=${2:?--root needs a directory}; shift 2 ;;
    --python) PY=${2:?--python needs a path}; shift 2 ;;
    --no-systemd) SYSTEMD=0; shift ;;
    --no-start) START=0; shift ;;
    --force) FORCE=1; shift ;;
    --no-compile) COMPILE=0; shift ;;
    --rollback) ROLLBACK=1; shift ;;
    -h|--help) sed -n '2,16p' "$0"; exit 0 ;;
    *) die 2 "unknown option $1 (see --help)" ;;
  esac
done
case "$PREFIX" in /*) ;; *) die 2 "--prefix must be an absolute path, received $PREFIX" ;; esac
PREFIX=${PREFIX%/}
if [ -n "$ROOT" ]; then
  [ -d "$ROOT" ] || die 2 "--root $ROOT is not a directory"
  ROOT=$(cd "$ROOT" && pwd)
fi
H="$ROOT$PREFIX"   # the prefix as this shell sees it; $PREFIX is what the device sees
BUNDLE=$(cd "$(dirname "$0")" && pwd)

if [ "$SYSTEMD" = 1 ] && [ -z "$ROOT" ] && [ ! -d /run/systemd/system ]; then
  die 2 "systemd is not running here; use --no-systemd (and start \$PREFIX/bin/edge-agent yourself)"
fi

# --- the target's Python: here, or inside --root through chroot (+ qemu for a foreign CPU)
CLEAN_ENV=(env -i PATH=/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin HOME=/root LANG=C.UTF-8 PYTHONNOUSERSITE=1)
RUNNER=()
QEMU_COPY=""
cleanup() { [ -n "$QEMU_COPY" ] && rm -f "$QEMU_COPY"; return 0; }
trap cleanup EXIT

setup_runner() {  # $1: the CPU the target's binaries are built for
  [ -z "$ROOT" ] && return 0
  [ "$(id -u)" = 0 ] || die 2 "--root needs root (it uses chroot)"
  RUNNER=(chroot "$ROOT")
  if [ "$1" != "$(uname -m)" ]; then
    local qemu
    qemu=$(command -v "qemu-$1-static" || command -v "qemu-$1" || true)
    [ -n "$qemu" ] || die 2 "the root is $1 and this host is $(uname -m): install qemu-user-static"
    mkdir -p "$ROOT/usr/libexec"
    QEMU_COPY="$ROOT/usr/libexec/.edge-flash-qemu-$1"
    cp "$qemu" "$QEMU_COPY"
    RUNNER+=("/usr/libexec/.edge-flash-qemu-$1")
  fi
}

pick_python() {
  if [ -z "$PY" ]; then
    if [ -x "$ROOT/usr/bin/python3" ] || [ -L "$ROOT/usr/bin/python3" ]; then PY=/usr/bin/python3
    elif [ -z "$ROOT" ] && command -v python3 >/dev/null; then PY=$(command -v python3)
    else die 4 "no python3 on the target: install python3 (Raspberry Pi OS and Debian ship it)"
    fi
  fi
}

tpy() { "${CLEAN_ENV[@]}" "${RUNNER[@]}" "$PY" "$@"; }
tpath() { "${CLEAN_ENV[@]}" "${RUNNER[@]}" "$@"; }

swap_link() {  # atomically point $H/$1 at $2 (relative)
  ln -sfn "$2" "$H/.$1.new"
  mv -Tf "$H/.$1.new" "$H/$1"
}

restart_service() {
  [ "$SYSTEMD" = 1 ] || { say "no systemd: start it with $PREFIX/bin/edge-agent run --config $PREFIX/current/config/agent.toml"; return 0; }
  if [ -n "$ROOT" ]; then
    mkdir -p "$ROOT/etc/systemd/system/multi-user.target.wants"
    ln -sfn "/etc/systemd/system/$SERVICE.service" "$ROOT/etc/systemd/system/multi-user.target.wants/$SERVICE.service"
    say "enabled $SERVICE.service in $ROOT (it starts at first boot)"
    return 0
  fi
  systemctl daemon-reload
  systemctl enable "$SERVICE.service" >/dev/null 2>&1
  if [ "$START" = 1 ]; then systemctl restart "$SERVICE.service"; say "restarted $SERVICE.service"; fi
}

# --- rollback: swap current and previous, nothing else
if [ "$ROLLBACK" = 1 ]; then
  [ -L "$H/previous" ] && [ -e "$H/previous/.complete" ] || die 5 "no previous release under $PREFIX to roll back to"
  cur=$(readlink "$H/current" || true)
  prev=$(readlink "$H/previous")
  swap_link current "$prev"
  [ -n "$cur" ] && swap_link previous "$cur"
  say "rolled back: current is now ${prev#releases/} (was ${cur#releases/})"
  restart_service
  exit 0
fi

# --- 1. the bundle is whole: every file matches SHA256SUMS, and nothing is there that is not listed
cd "$BUNDLE"
[ -f SHA256SUMS ] && [ -f bundle.env ] || die 3 "$BUNDLE is not an edge bundle (no SHA256SUMS or bundle.env)"
if ! sha256sum --check --strict --quiet SHA256SUMS >&2; then
  die 3 "the bundle failed its sha256 check: it is corrupt or was altered; copy it again or rebuild it"
fi
listed=$(sed 's/^[0-9a-f]*  //' SHA256SUMS | sort)
present=$(find . -type f ! -name SHA256SUMS ! -name '.complete' | sed 's|^\./||' | sort)
if [ "$listed" != "$present" ]; then
  die 3 "the bundle holds files not in SHA256SUMS: $(comm -13 <(echo "$listed") <(echo "$present") | head -5 | tr '\n' ' ')"
fi
# shellcheck disable=SC1091
. ./bundle.env   # EDGE_BUNDLE_ID EDGE_ARCH EDGE_PYTHON EDGE_RUNTIME EDGE_AGENT_VERSION (checked just above)

# --- 2. the bundle is for this machine
setup_runner "$EDGE_ARCH"
pick_python
probe=$(tpy -c 'import platform, sys; print(platform.machine(), "%d.%d" % sys.version_info[:2])') \
  || die 4 "$PY does not run on the target"
read -r arch pyver <<<"$probe"
if [ "$arch" != "$EDGE_ARCH" ] || [ "$pyver" != "$EDGE_PYTHON" ]; then
  die 4 "this bundle is for $EDGE_ARCH with Python $EDGE_PYTHON, the target is $arch with Python $pyver; rebuild it: edge-flash bundle --arch $arch --python $pyver ..."
fi

# --- 3. the release: venv, offline pip install, config, self-check
REL="$PREFIX/releases/$EDGE_BUNDLE_ID"
HREL="$ROOT$REL"
mkdir -p "$H/releases" "$H/bin"
if [ -e "$HREL/.complete" ] && [ "$FORCE" = 0 ]; then
  say "release $EDGE_BUNDLE_ID is already installed; activating it (--force reinstalls)"
else
  [ "$(readlink "$H/current" 2>/dev/null || true)" = "releases/$EDGE_BUNDLE_ID" ] && [ "$FORCE" = 1 ] \
    && say "reinstalling the current release (--force)"
  rm -rf "$HREL"
  failed() { rm -rf "$HREL"; cleanup; }
  trap failed EXIT
  mkdir -p "$HREL"
  cp -a "$BUNDLE/." "$HREL/"
  say "creating the venv for Python $pyver ($arch)"
  tpy -m venv --without-pip "$REL/venv"
  pipwhl=$(cd "$HREL/wheels" && ls pip-*.whl | head -1)
  compile=(); [ "$COMPILE" = 1 ] || compile=(--no-compile)
  say "installing $(ls "$HREL/wheels" | wc -l) wheels offline"
  tpath "$REL/venv/bin/python" "$REL/wheels/$pipwhl/pip" install --isolated --no-index --find-links "$REL/wheels" \
    --no-cache-dir --disable-pip-version-check --no-warn-script-location --quiet "${compile[@]}" \
    -r "$REL/requirements.txt" >&2
  if [ "$SYSTEMD" = 1 ]; then STATE=/var/lib/$SERVICE; else STATE="$PREFIX/state"; mkdir -p "$ROOT$STATE"; fi
  sed -i -e "s|@RELEASE@|$REL|g" -e "s|@STATE_DIR@|$STATE|g" -e "s|@PREFIX@|$PREFIX|g" "$HREL/config/agent.toml"
  say "self-check: importing $EDGE_RUNTIME and running the model once"
  if ! check=$(tpath "$REL/venv/bin/python" -m edge.flash.selfcheck --release "$REL"); then
    echo "$check" >&2
    die 6 "the new release failed its self-check; the current release is unchanged"
  fi
  echo "$check" > "$HREL/selfcheck.json"
  rm -rf "$HREL/wheels"   # the venv has them; keeps the SD card from filling up release after release
  touch "$HREL/.complete"
  trap cleanup EXIT
fi

# --- 4. switch: current -> this release, previous -> the one before; older releases go
cur=$(readlink "$H/current" 2>/dev/null || true)
if [ "$cur" != "releases/$EDGE_BUNDLE_ID" ]; then
  [ -n "$cur" ] && [ -e "$H/$cur/.complete" ] && swap_link previous "$cur"
  swap_link current "releases/$EDGE_BUNDLE_ID"
fi
keep_prev=$(readlink "$H/previous" 2>/dev/null || true)
for d in "$H"/releases/*; do
  [ -e "$d" ] || continue
  rel="releases/$(basename "$d")"
  [ "$rel" = "releases/$EDGE_BUNDLE_ID" ] || [ "$rel" = "$keep_prev" ] || rm -rf "$d"
done
cat > "$H/bin/edge-agent" <<EOF
#!/bin/sh
# The agent of the current release (installed by edge-flash)
exec "$PREFIX/current/venv/bin/python" -m edge "\$@"
EOF
chmod 755 "$H/bin/edge-agent"
cp "$BUNDLE/uninstall.sh" "$H/uninstall.sh"

if [ "$SYSTEMD" = 1 ]; then
  mkdir -p "$ROOT/etc/systemd/system" "$ROOT/etc/sysusers.d"
  sed -e "s|@PREFIX@|$PREFIX|g" "$BUNDLE/systemd/$SERVICE.service" > "$ROOT/etc/systemd/system/$SERVICE.service"
  cp "$BUNDLE/systemd/$SERVICE.sysusers" "$ROOT/etc/sysusers.d/$SERVICE.conf"
  # --root: systemd-sysusers.service creates the user at first boot
  [ -z "$ROOT" ] && systemd-sysusers "/etc/sysusers.d/$SERVICE.conf"
fi
say "installed edge-agent $EDGE_AGENT_VERSION ($EDGE_RUNTIME) release $EDGE_BUNDLE_ID at $PREFIX${ROOT:+ in $ROOT}; previous: ${keep_prev#releases/}"
restart_service
echo "release=$EDGE_BUNDLE_ID previous=${keep_prev#releases/} prefix=$PREFIX"
