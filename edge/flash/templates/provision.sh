#!/usr/bin/env bash
# Install the edge-agent bundle that edge-flash sd put on the boot partition (run at first boot by
# cloud-init or firstrun.sh; run it again by hand if that failed: sudo bash /boot/firmware/edge-flash/provision.sh).
# Extra arguments go to install.sh (firstrun.sh passes --no-start: systemd is not fully up yet).
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
cd "$HERE"
if ! sha256sum --check --quiet bundle.tar.gz.sha256; then
  echo "provision.sh: bundle.tar.gz on the boot partition is corrupt; copy it again with edge-flash sd" >&2
  exit 3
fi
work=$(mktemp -d /var/tmp/edge-flash.XXXXXX)
trap 'rm -rf "$work"' EXIT
tar -xzf bundle.tar.gz -C "$work"
bash "$work/edge-bundle/install.sh" "$@"
date -u +%FT%TZ > "$HERE/installed"
