#!/usr/bin/env bash
# Run a command inside a (foreign-CPU) root filesystem built by build-rootfs.sh, without booting it:
#
#   sudo device-images/run-in-root.sh out/rootfs /opt/edge-agent/bin/edge-agent run --config ... --once
#
# chroot, in a private mount namespace with /proc and /dev (gone when the command ends), and
# qemu-<cpu>-static copied in for the duration when the root's CPU is not this host's: no
# binfmt_misc registration needed, so it works in containers and CI. The host's network is shared,
# so a broker on 127.0.0.1 is reachable.
set -euo pipefail
[ $# -ge 2 ] || { sed -n '2,9p' "$0"; exit 2; }
ROOT=$(cd "$1" && pwd); shift
[ "$(id -u)" = 0 ] || { echo "run-in-root.sh: needs root (chroot, mounts)" >&2; exit 2; }
probe=$ROOT/usr/bin/python3
[ -e "$probe" ] || probe=$(ls "$ROOT"/usr/bin/* | head -1)
case "$(od -An -tx1 -j18 -N2 "$(readlink -f "$probe")" | tr -d ' ')" in
  b700) CPU=aarch64 ;; 3e00) CPU=x86_64 ;; 2800) CPU=arm ;; *) CPU=unknown ;;
esac
RUNNER=()
QEMU_COPY=""
if [ "$CPU" != "$(uname -m)" ]; then
  qemu=$(command -v "qemu-$CPU-static" || true)
  [ -n "$qemu" ] || { echo "run-in-root.sh: the root is $CPU: install qemu-user-static" >&2; exit 2; }
  mkdir -p "$ROOT/usr/libexec"
  QEMU_COPY=$(mktemp "$ROOT/usr/libexec/.run-in-root-qemu.XXXXXX")
  cp "$qemu" "$QEMU_COPY"; chmod 755 "$QEMU_COPY"
  RUNNER=("/usr/libexec/$(basename "$QEMU_COPY")")
fi
trap '[ -n "$QEMU_COPY" ] && rm -f "$QEMU_COPY"' EXIT
mkdir -p "$ROOT/proc" "$ROOT/sys" "$ROOT/dev" "$ROOT/tmp"
export EDGE_RIR_ROOT=$ROOT
# /sys only for a native root: under qemu, XNNPACK's cpuinfo reads the host's /proc/cpuinfo AND
# /sys cpu lists and crashes on the mix; with one of them missing it falls back to generic ARM kernels.
export EDGE_RIR_SYS=0
[ -z "$QEMU_COPY" ] && EDGE_RIR_SYS=1
unshare --mount --propagation private -- bash -c '
  set -e
  mount -t proc proc "$EDGE_RIR_ROOT/proc"
  [ "$EDGE_RIR_SYS" = 1 ] && mount --rbind /sys "$EDGE_RIR_ROOT/sys"
  mount --rbind /dev "$EDGE_RIR_ROOT/dev"
  exec env -i PATH=/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin HOME=/root LANG=C.UTF-8 TERM="${TERM:-dumb}" \
    chroot "$EDGE_RIR_ROOT" "$@"' run-in-root "${RUNNER[@]}" "$@"
