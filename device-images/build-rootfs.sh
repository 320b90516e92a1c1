#!/usr/bin/env bash
# Build an arm64 Debian root filesystem with the edge agent installed, with mmdebstrap.
#
#   sudo device-images/build-rootfs.sh --bundle pi.tar.gz out/rootfs          # directory
#   sudo device-images/build-rootfs.sh --bundle pi.tar.gz out/rootfs.tar      # tarball (for an image builder)
#
# Variants:
#   --variant full     (default when the host runs arm64 binaries: natively, or via binfmt_misc +
#                      qemu-user-static) a bootable userland: systemd, ssh, networking, python3.
#                      Put it on the root partition of a Raspberry Pi OS image, or add
#                      --include linux-image-arm64,raspi-firmware for Debian's own Pi support.
#   --variant extract  (default otherwise, and what CI uses) packages are unpacked, not configured:
#                      enough to run python3 and the agent under qemu-aarch64-static without root
#                      privileges for the foreign CPU, and seconds to build.
# The bundle is installed by its own install.sh --root, which runs the target's python3 through
# chroot (and qemu-<arch>-static copied in for the duration when the CPU differs).
set -euo pipefail

SUITE=bookworm
ARCH=arm64
VARIANT=""
BUNDLE=""
EXTRA=""
MIRROR=""
NO_SYSTEMD=0
usage() { sed -n '2,19p' "$0"; exit "${1:-0}"; }
while [ $# -gt 0 ]; do
  case "$1" in
    --bundle) BUNDLE=$2; shift 2 ;;
    --suite) SUITE=$2; shift 2 ;;
    --arch) ARCH=$2; shift 2 ;;
    --variant) VARIANT=$2; shift 2 ;;
    --include) EXTRA=$2; shift 2 ;;
    --mirror) MIRROR=$2; shift 2 ;;
    --no-systemd) NO_SYSTEMD=1; shift ;;
    -h|--help) usage ;;
    -*) echo "build-rootfs.sh: unknown option $1" >&2; usage 2 ;;
    *) OUT=$1; shift ;;
  esac
done
[ -n "${OUT:-}" ] || { echo "build-rootfs.sh: give the output directory or .tar" >&2; usage 2; }
case "$ARCH" in arm64) CPU=aarch64 ;; amd64) CPU=x86_64 ;; *) echo "--arch arm64 or amd64" >&2; exit 2 ;; esac

if [ -z "$VARIANT" ]; then
  if [ "$(uname -m)" = "$CPU" ] || [ -e "/proc/sys/fs/binfmt_misc/qemu-$CPU" ]; then VARIANT=full; else VARIANT=extract; fi
fi
# What the agent needs: python3 (+ venv module), the C++ runtime of the TFLite wheels, and for
# install.sh coreutils/sed/findutils (run from the host in --root mode, so only on a real device).
PKGS=python3,python3-venv,libstdc++6,ca-certificates,tzdata
case "$VARIANT" in
  extract) MM_VARIANT=extract ;;
  full) MM_VARIANT=important
        PKGS=$PKGS,systemd,systemd-sysv,systemd-timesyncd,openssh-server,sudo,iproute2,ifupdown,isc-dhcp-client,netbase,less,nano ;;
  *) echo "build-rootfs.sh: --variant full or extract" >&2; exit 2 ;;
esac
[ -n "$EXTRA" ] && PKGS=$PKGS,$EXTRA

DIR=$OUT
case "$OUT" in *.tar|*.tar.gz|*.tar.zst) DIR=$(mktemp -d); trap 'rm -rf "$DIR"' EXIT ;; esac
mkdir -p "$(dirname "$DIR")"
echo "build-rootfs.sh: mmdebstrap $SUITE $ARCH ($VARIANT) -> $DIR" >&2
# shellcheck disable=SC2086
mmdebstrap --quiet --variant="$MM_VARIANT" --architectures="$ARCH" --include="$PKGS" \
  --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-exclude=/usr/share/man/*' \
  "$SUITE" "$DIR" $MIRROR

if [ -n "$BUNDLE" ]; then
  work=$(mktemp -d)
  tar -xzf "$BUNDLE" -C "$work"
  flags=(--root "$DIR" --no-start)
  [ "$NO_SYSTEMD" = 1 ] && flags+=(--no-systemd)
  bash "$work/edge-bundle/install.sh" "${flags[@]}"
  rm -rf "$work"
fi

case "$OUT" in
  *.tar) tar -C "$DIR" -cf "$OUT" . ;;
  *.tar.gz) tar -C "$DIR" -czf "$OUT" . ;;
  *.tar.zst) tar -C "$DIR" --zstd -cf "$OUT" . ;;
esac
echo "build-rootfs.sh: done: $OUT" >&2
