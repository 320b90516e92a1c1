#!/bin/bash
# edge-flash first boot, for Raspberry Pi OS images without cloud-init. The kernel runs it once
# through "systemd.run=<boot>/firstrun.sh systemd.run_success_action=reboot
# systemd.unit=kernel-command-line.target" in cmdline.txt (as Raspberry Pi Imager does). It removes
# that hook FIRST, so a failure below can never send every boot back here; then it applies
# edge-flash/settings.env (hostname, user + SSH key, Wi-Fi), installs the bundle, deletes the
# settings (they hold the Wi-Fi passphrase) and itself, and the system reboots.
#   firstrun.sh --remove-hook-only    only edit cmdline.txt (EDGE_FIRSTRUN_ROOT=DIR: under DIR)
set +e
R=${EDGE_FIRSTRUN_ROOT:-}
BOOT=/boot/firmware
[ -f "$R$BOOT/cmdline.txt" ] || BOOT=/boot

remove_hook() {
  sed -i -e 's| systemd\.run=[^ ]*/firstrun\.sh||g' \
         -e 's| systemd\.run_success_action=reboot||g' \
         -e 's| systemd\.unit=kernel-command-line\.target||g' "$R$BOOT/cmdline.txt"
}
if [ "${1:-}" = "--remove-hook-only" ]; then remove_hook; exit $?; fi

exec >>/var/log/edge-flash-firstrun.log 2>&1
echo "edge-flash firstrun $(date -u +%FT%TZ)"
remove_hook
# shellcheck disable=SC1091
. "$BOOT/edge-flash/settings.env"

if [ -n "$EDGE_HOSTNAME" ]; then
  old=$(cat /etc/hostname)
  echo "$EDGE_HOSTNAME" > /etc/hostname
  sed -i "s/127\.0\.1\.1.*$old/127.0.1.1\t$EDGE_HOSTNAME/" /etc/hosts
fi

if [ -n "$EDGE_SSH_KEY" ]; then
  if ! id "$EDGE_USER" >/dev/null 2>&1; then
    first=$(getent passwd 1000 | cut -d: -f1)
    if [ -n "$first" ] && [ "$first" != "$EDGE_USER" ]; then
      usermod -l "$EDGE_USER" "$first"; usermod -m -d "/home/$EDGE_USER" "$EDGE_USER"
      groupmod -n "$EDGE_USER" "$first" 2>/dev/null
    else
      useradd -m -s /bin/bash -G sudo,plugdev,video "$EDGE_USER"
    fi
  fi
  usermod -p '*' "$EDGE_USER"   # no password, key login only (a locked '!' account may refuse ssh)
  home=$(getent passwd "$EDGE_USER" | cut -d: -f6)
  install -d -m 700 -o "$EDGE_USER" -g "$EDGE_USER" "$home/.ssh"
  echo "$EDGE_SSH_KEY" >> "$home/.ssh/authorized_keys"
  chown "$EDGE_USER:$EDGE_USER" "$home/.ssh/authorized_keys"; chmod 600 "$home/.ssh/authorized_keys"
  echo "$EDGE_USER ALL=(ALL) NOPASSWD: ALL" > /etc/sudoers.d/010_edge-flash; chmod 440 /etc/sudoers.d/010_edge-flash
  # Raspberry Pi OS asks for a user at first boot unless told otherwise
  systemctl disable userconfig.service 2>/dev/null; rm -f /etc/ssh/sshd_config.d/rename_user.conf
  systemctl enable ssh
fi

if [ -n "$EDGE_WIFI_SSID" ]; then
  command -v raspi-config >/dev/null && raspi-config nonint do_wifi_country "$EDGE_WIFI_COUNTRY"
  if [ -d /etc/NetworkManager/system-connections ]; then
    f=/etc/NetworkManager/system-connections/edge-flash-wifi.nmconnection
    printf '[connection]\nid=edge-flash-wifi\ntype=wifi\n\n[wifi]\nmode=infrastructure\nssid=%s\n\n[wifi-security]\nkey-mgmt=wpa-psk\npsk=%s\n\n[ipv4]\nmethod=auto\n\n[ipv6]\nmethod=auto\n' \
      "$EDGE_WIFI_SSID" "$EDGE_WIFI_PSK" > "$f"
    chmod 600 "$f"
  else
    printf 'ctrl_interface=DIR=/var/run/wpa_supplicant GROUP=netdev\ncountry=%s\nupdate_config=1\n\nnetwork={\n\tssid="%s"\n\tpsk="%s"\n}\n' \
      "$EDGE_WIFI_COUNTRY" "$EDGE_WIFI_SSID" "$EDGE_WIFI_PSK" > /etc/wpa_supplicant/wpa_supplicant.conf
    chmod 600 /etc/wpa_supplicant/wpa_supplicant.conf
  fi
  rfkill unblock wifi 2>/dev/null
fi

bash "$BOOT/edge-flash/provision.sh" --no-start || echo "edge-flash: install failed; run $BOOT/edge-flash/provision.sh by hand"
rm -f "$BOOT/edge-flash/settings.env" "$BOOT/firstrun.sh"
exit 0
