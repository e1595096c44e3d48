#!/usr/bin/env bash
# Debian packages FirstLook needs: DCMTK (independent DICOM peer for tests), Orthanc with its
# DICOMweb plugin (the PACS peer), dicom3tools (dciodvfy validates every object FirstLook creates),
# Chromium (the status page's browser test), Xvfb and the X/GL libraries Qt's xcb plugin loads. Installs only what is missing.
set -euo pipefail
pkgs=(dcmtk orthanc orthanc-dicomweb dicom3tools chromium xvfb xauth libgl1 libegl1 libxkbcommon0 libxkbcommon-x11-0 libfontconfig1 libdbus-1-3
      libxcb-cursor0 libxcb-icccm4 libxcb-keysyms1 libxcb-shape0 libxcb-xinerama0 libxcb-randr0
      libxcb-render-util0 libxcb-image0 util-linux)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
