#!/usr/bin/env bash
# Installs, from Debian, whatever of edgetune's build dependencies is missing. Idempotent: when
# everything is present it only checks and prints nothing. Sourced by demo.sh and test.sh.
set -euo pipefail

EDGETUNE_APT_PACKAGES=(
  build-essential cmake pkg-config
  libeigen3-dev libxtensor-dev xtl-dev libxsimd-dev nlohmann-json3-dev catch2
  libutf8proc-dev libcli11-dev libomp-dev
  libsodium-dev libopenmpi-dev openmpi-bin librsvg2-bin
)

edgetune_install_missing() {
  local missing=()
  local p
  for p in "$@"; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
      missing+=("$p")
    fi
  done
  if [ ${#missing[@]} -eq 0 ]; then
    return 0
  fi
  echo "edgetune: installing missing packages: ${missing[*]}"
  local sudo=""
  if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

edgetune_install_missing "${EDGETUNE_APT_PACKAGES[@]}"
