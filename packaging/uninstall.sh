#!/bin/sh
# Remove FirstLook. Keeps the configuration, the studies and the logs unless --purge.
#
#   sudo /opt/firstlook/uninstall.sh [--prefix /opt/firstlook] [--purge]
#   ./uninstall.sh --root DIR [--purge]     undo an install staged with install.sh --root DIR
#
# --purge also deletes /etc/firstlook, /var/lib/firstlook (every stored study and result),
# /var/cache/firstlook, /var/log/firstlook, the firstlook user and the firstlook-desktop group.
# Back up first.
set -eu

PREFIX=/opt/firstlook
ROOT=""
PURGE=0
say() { printf '%s\n' "uninstall.sh: $*"; }
die() { printf '%s\n' "uninstall.sh: ERROR: $*" >&2; exit 1; }

while [ $# -gt 0 ]; do
  case "$1" in
    --prefix) PREFIX=${2:?--prefix needs a folder}; shift 2 ;;
    --root) ROOT=${2:?--root needs a folder}; shift 2 ;;
    --purge) PURGE=1; shift ;;
    -h|--help) sed -n '2,8p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown option $1" ;;
  esac
done
case "$PREFIX" in /*) ;; *) die "--prefix must be an absolute path" ;; esac
if [ -n "$ROOT" ]; then
  ROOT=$(cd "$ROOT" && pwd); SERVICE_ACTIONS=0
else
  [ "$(id -u)" -eq 0 ] || die "run as root (sudo)"
  SERVICE_ACTIONS=1
fi
DEST="$ROOT$PREFIX"
[ -x "$DEST/firstlook" ] || [ -e "$ROOT/etc/systemd/system/firstlook.service" ] || say "nothing installed in $DEST"

if [ "$SERVICE_ACTIONS" -eq 1 ] && [ -d /run/systemd/system ] && [ -e /etc/systemd/system/firstlook.service ]; then
  systemctl disable --now firstlook >/dev/null 2>&1 || true
fi
rm -f "$ROOT/etc/systemd/system/firstlook.service"
[ "$SERVICE_ACTIONS" -eq 1 ] && [ -d /run/systemd/system ] && systemctl daemon-reload || true
rm -f "$ROOT/usr/local/bin/firstlook" "$ROOT/usr/local/sbin/firstlookctl" \
      "$ROOT/usr/share/applications/firstlook.desktop" \
      "$ROOT/usr/share/icons/hicolor/scalable/apps/firstlook.svg" "$ROOT/etc/logrotate.d/firstlook"
case "$DEST" in
  */firstlook|*/firstlook/) rm -rf "$DEST" "$DEST.new" "$DEST.old" ;;
  *) [ -x "$DEST/firstlook" ] && rm -rf "$DEST" ;;
esac
say "program removed from $DEST"

if [ "$PURGE" -eq 1 ]; then
  rm -rf "$ROOT/etc/firstlook" "$ROOT/var/lib/firstlook" "$ROOT/var/cache/firstlook" "$ROOT/var/log/firstlook"
  if [ "$SERVICE_ACTIONS" -eq 1 ] && id firstlook >/dev/null 2>&1; then
    userdel firstlook >/dev/null 2>&1 || true
  fi
  if [ "$SERVICE_ACTIONS" -eq 1 ] && getent group firstlook-desktop >/dev/null 2>&1; then
    groupdel firstlook-desktop >/dev/null 2>&1 || true
  fi
  say "purged configuration, data, cache, logs, the firstlook user and the firstlook-desktop group"
else
  say "kept $ROOT/etc/firstlook, $ROOT/var/lib/firstlook (studies) and $ROOT/var/log/firstlook; --purge deletes them"
fi
