#!/bin/sh
# FirstLook offline installer (run from the unpacked archive). Never uses the network.
#
#   sudo ./install.sh [--prefix /opt/firstlook] [--no-service] [--no-start] [--no-desktop]
#   ./install.sh --root DIR     stage everything under DIR (no user, no systemctl): for tests
#                               and image builders
#
# Installs the program to PREFIX (an upgrade swaps it in place and keeps
# /etc/firstlook/firstlook.toml and the data in /var/lib/firstlook), a `firstlook` system
# user, the group `firstlook-desktop` (may read the local API token), the systemd unit
# `firstlook.service` (firstlook --headless: DICOM node + HTTP API on 127.0.0.1:11113), a
# desktop entry (attaches to that service), the `firstlookctl` admin wrapper and a logrotate
# rule. See docs/install.md.
set -eu

PREFIX=/opt/firstlook
ROOT=""
SERVICE=1
START=1
DESKTOP=1
USER_NAME=firstlook
HERE=$(cd "$(dirname "$0")" && pwd)

usage() { sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//'; exit "${1:-0}"; }
say() { printf '%s\n' "install.sh: $*"; }
die() { printf '%s\n' "install.sh: ERROR: $*" >&2; exit 1; }

while [ $# -gt 0 ]; do
  case "$1" in
    --prefix) PREFIX=${2:?--prefix needs a folder}; shift 2 ;;
    --root) ROOT=${2:?--root needs a folder}; shift 2 ;;
    --no-service) SERVICE=0; shift ;;
    --no-start) START=0; shift ;;
    --no-desktop) DESKTOP=0; shift ;;
    -h|--help) usage 0 ;;
    *) printf 'unknown option %s\n' "$1" >&2; usage 2 ;;
  esac
done
case "$PREFIX" in /*) ;; *) die "--prefix must be an absolute path" ;; esac
if [ -n "$ROOT" ]; then
  mkdir -p "$ROOT"; ROOT=$(cd "$ROOT" && pwd); SERVICE_ACTIONS=0
else
  [ "$(id -u)" -eq 0 ] || die "run as root (sudo ./install.sh), or stage with --root DIR"
  SERVICE_ACTIONS=1
fi
DEST="$ROOT$PREFIX"

# 1. The archive is complete and this machine can run it.
[ -x "$HERE/firstlook/firstlook" ] || die "run install.sh from the unpacked archive (firstlook/ not found next to it)"
[ "$(uname -m)" = x86_64 ] || die "this bundle is for x86_64 Linux, not $(uname -m)"
if command -v sha256sum >/dev/null 2>&1; then
  (cd "$HERE" && sha256sum --quiet -c SHA256SUMS) || die "files differ from SHA256SUMS: copy the archive again"
  say "archive verified (SHA256SUMS)"
fi
need=$(sed -n 's/^built_with glibc //p' "$HERE/VERSION")
have=$(getconf GNU_LIBC_VERSION 2>/dev/null | sed 's/^glibc //')
if [ -n "$need" ] && [ -n "$have" ]; then
  lowest=$(printf '%s\n%s\n' "$need" "$have" | sort -V | head -n1)
  [ "$lowest" = "$need" ] || die "needs glibc >= $need, this system has $have (use a newer distribution)"
fi

# 2. Service user (system account, no login, home = data folder).
if [ "$SERVICE_ACTIONS" -eq 1 ] && ! id "$USER_NAME" >/dev/null 2>&1; then
  useradd --system --user-group --home-dir /var/lib/firstlook --no-create-home \
          --shell /usr/sbin/nologin --comment "FirstLook service" "$USER_NAME"
  say "created system user $USER_NAME"
fi
# Readers: members of this group may read the service's local API token
# (/run/firstlook/local-token), so a desktop on this machine attaches without a password.
DESKTOP_GROUP=firstlook-desktop
if [ "$SERVICE_ACTIONS" -eq 1 ]; then
  if ! getent group "$DESKTOP_GROUP" >/dev/null 2>&1; then
    groupadd --system "$DESKTOP_GROUP"
    say "created group $DESKTOP_GROUP (add reading users: sudo usermod -a -G $DESKTOP_GROUP USER)"
  fi
  usermod -a -G "$DESKTOP_GROUP" "$USER_NAME"
fi
if [ "$SERVICE_ACTIONS" -eq 1 ]; then
  for g in render video; do  # Intel GPU render node access for OpenVINO's GPU plugin
    getent group "$g" >/dev/null 2>&1 && usermod -a -G "$g" "$USER_NAME"
  done
fi

# 3. Program: copy beside the old one, stop the service, swap, start again.
was_active=0
if [ "$SERVICE_ACTIONS" -eq 1 ] && command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet firstlook 2>/dev/null; then
  was_active=1
fi
mkdir -p "$(dirname "$DEST")"
rm -rf "$DEST.new"
cp -a "$HERE/firstlook" "$DEST.new"
cp -a "$HERE/uninstall.sh" "$HERE/VERSION" "$DEST.new/"
mkdir -p "$DEST.new/docs" "$DEST.new/share"
cp -a "$HERE/docs/install.md" "$DEST.new/docs/"
cp -a "$HERE/share/." "$DEST.new/share/"
if [ "$was_active" -eq 1 ]; then
  say "stopping the running service for the upgrade"
  systemctl stop firstlook
fi
if [ -e "$DEST" ]; then
  rm -rf "$DEST.old"
  mv "$DEST" "$DEST.old"
fi
mv "$DEST.new" "$DEST"
rm -rf "$DEST.old"
chmod -R go-w "$DEST"
say "program installed in $DEST ($(sed -n 's/^firstlook //p' "$HERE/VERSION"))"

subst() { sed "s|@PREFIX@|$PREFIX|g" "$1" > "$2"; }

# 4. Configuration (kept on upgrade) and folders.
mkdir -p "$ROOT/etc/firstlook"
if [ ! -e "$ROOT/etc/firstlook/firstlook.toml" ]; then
  cp "$HERE/share/firstlook.toml.default" "$ROOT/etc/firstlook/firstlook.toml"
  say "wrote $ROOT/etc/firstlook/firstlook.toml (edit allow_ae / allow_ip before connecting modalities)"
else
  say "kept existing $ROOT/etc/firstlook/firstlook.toml"
fi
mkdir -p "$ROOT/var/lib/firstlook" "$ROOT/var/cache/firstlook" "$ROOT/var/log/firstlook"
chmod 0700 "$ROOT/var/lib/firstlook"  # patient data: the service user only (the store keeps it so)
chmod 0750 "$ROOT/var/cache/firstlook" "$ROOT/var/log/firstlook"
if [ "$SERVICE_ACTIONS" -eq 1 ]; then
  chown root:"$USER_NAME" "$ROOT/etc/firstlook" "$ROOT/etc/firstlook/firstlook.toml"
  chmod 0750 "$ROOT/etc/firstlook"; chmod 0640 "$ROOT/etc/firstlook/firstlook.toml"
  chown "$USER_NAME:$USER_NAME" "$ROOT/var/lib/firstlook" "$ROOT/var/cache/firstlook" "$ROOT/var/log/firstlook"
fi

# 5. Commands, desktop entry, logrotate.
mkdir -p "$ROOT/usr/local/bin" "$ROOT/usr/local/sbin"
ln -sfn "$PREFIX/firstlook" "$ROOT/usr/local/bin/firstlook"
subst "$HERE/share/firstlookctl" "$ROOT/usr/local/sbin/firstlookctl"
chmod 0755 "$ROOT/usr/local/sbin/firstlookctl"
if [ "$DESKTOP" -eq 1 ]; then
  mkdir -p "$ROOT/usr/share/applications" "$ROOT/usr/share/icons/hicolor/scalable/apps"
  subst "$HERE/share/firstlook.desktop" "$ROOT/usr/share/applications/firstlook.desktop"
  cp "$HERE/share/firstlook.svg" "$ROOT/usr/share/icons/hicolor/scalable/apps/firstlook.svg"
fi
if [ -d "$ROOT/etc/logrotate.d" ] || [ -n "$ROOT" ]; then
  mkdir -p "$ROOT/etc/logrotate.d"
  cp "$HERE/share/firstlook.logrotate" "$ROOT/etc/logrotate.d/firstlook"
fi

# 6. systemd unit.
if [ "$SERVICE" -eq 1 ]; then
  mkdir -p "$ROOT/etc/systemd/system"
  subst "$HERE/share/firstlook.service" "$ROOT/etc/systemd/system/firstlook.service"
  if [ "$SERVICE_ACTIONS" -eq 1 ] && [ -d /run/systemd/system ]; then
    systemctl daemon-reload
    systemctl enable firstlook >/dev/null 2>&1
    if [ "$START" -eq 1 ] || [ "$was_active" -eq 1 ]; then
      systemctl restart firstlook
      say "service firstlook enabled and started (systemctl status firstlook)"
    else
      say "service firstlook enabled, not started (--no-start)"
    fi
  elif [ "$SERVICE_ACTIONS" -eq 1 ]; then
    say "systemd is not running here: unit installed but not enabled"
  fi
fi

say "done. Check this machine now:  sudo firstlookctl --self-test"
