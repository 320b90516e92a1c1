#!/usr/bin/env bash
# Remove the edge agent installed by edge-flash: service, releases, wrapper.
#   sudo /opt/edge-agent/uninstall.sh            # keeps /var/lib/edge-agent (spool, sequence numbers)
#   sudo /opt/edge-agent/uninstall.sh --purge    # removes it too
#   ./uninstall.sh --prefix DIR --no-systemd     # an install made with --no-systemd
set -euo pipefail
PREFIX=/opt/edge-agent
ROOT=""
SYSTEMD=1
PURGE=0
SERVICE=edge-agent
while [ $# -gt 0 ]; do
  case "$1" in
    --prefix) PREFIX=${2:?}; shift 2 ;;
    --root) ROOT=${2:?}; shift 2 ;;
    --no-systemd) SYSTEMD=0; shift ;;
    --purge) PURGE=1; shift ;;
    -h|--help) sed -n '2,5p' "$0"; exit 0 ;;
    *) echo "uninstall.sh: unknown option $1" >&2; exit 2 ;;
  esac
done
PREFIX=${PREFIX%/}
H="$ROOT$PREFIX"
[ -L "$H/current" ] || [ -d "$H/releases" ] || { echo "uninstall.sh: nothing installed under $H" >&2; exit 1; }
if [ "$SYSTEMD" = 1 ]; then
  if [ -z "$ROOT" ] && [ -d /run/systemd/system ]; then
    systemctl disable --now "$SERVICE.service" 2>/dev/null || true
  fi
  rm -f "$ROOT/etc/systemd/system/$SERVICE.service" \
        "$ROOT/etc/systemd/system/multi-user.target.wants/$SERVICE.service" \
        "$ROOT/etc/sysusers.d/$SERVICE.conf"
  [ -z "$ROOT" ] && [ -d /run/systemd/system ] && systemctl daemon-reload
  if [ "$PURGE" = 1 ]; then
    rm -rf "$ROOT/var/lib/$SERVICE" "$ROOT/var/lib/private/$SERVICE"
    [ -z "$ROOT" ] && getent passwd "$SERVICE" >/dev/null && userdel "$SERVICE" 2>/dev/null || true
  fi
fi
# Releases, links and wrapper; $PREFIX/state (the --no-systemd spool) only with --purge.
rm -rf "$H/releases" "$H/current" "$H/previous" "$H/bin/edge-agent" "$H/.current.new" "$H/.previous.new"
[ "$PURGE" = 1 ] && rm -rf "$H/state"
rm -f "$H/uninstall.sh"
rmdir "$H/bin" "$H" 2>/dev/null || true
echo "uninstall.sh: removed the edge agent from $H" >&2
