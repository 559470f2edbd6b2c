#!/usr/bin/env bash
# Installs Mesa's lavapipe, a Vulkan driver that runs on the CPU, so that Dawn (npm package
# `webgpu`) finds a WebGPU adapter on Linux machines without a GPU (CI, containers, laptops
# without Vulkan). Debian bookworm's own Mesa 22 is too old for Dawn; the backports suite has
# Mesa 25. Needs root and apt; safe to run twice. On other systems it explains and exits 0.
set -euo pipefail

if [ "$(uname -s)" != "Linux" ]; then
  echo "install-lavapipe: not Linux; WebGPU uses the system's GPU driver here (Metal on macOS)."
  exit 0
fi
have=$(dpkg-query -W -f='${Version}' mesa-vulkan-drivers 2>/dev/null || true)
if [[ "$have" =~ ^(2[5-9]|[3-9][0-9]) ]]; then
  echo "install-lavapipe: mesa-vulkan-drivers $have already installed."
  exit 0
fi
if ! command -v apt-get >/dev/null; then
  echo "install-lavapipe: no apt-get; install Mesa >= 25 with its Vulkan drivers (lavapipe) from your distribution." >&2
  exit 1
fi
if [ "$(id -u)" != 0 ]; then
  echo "install-lavapipe: needs root (run with sudo)." >&2
  exit 1
fi
. /etc/os-release
suite="${VERSION_CODENAME}-backports"
if [ "${ID:-}" = debian ] && ! grep -rqs -- "$suite" /etc/apt/sources.list /etc/apt/sources.list.d/; then
  # Reuse the mirror apt is already configured with (deb822 or one-line format).
  mirror=$(awk '/^URIs:/ {print $2; exit}' /etc/apt/sources.list.d/*.sources 2>/dev/null || true)
  if [ -z "$mirror" ]; then
    mirror=$(awk '$1 == "deb" { for (i = 2; i <= NF; i++) if ($i ~ /^https?:/) { print $i; exit } }' /etc/apt/sources.list 2>/dev/null || true)
  fi
  if [ -z "$mirror" ]; then
    echo "install-lavapipe: could not find the Debian mirror in apt's sources." >&2
    exit 1
  fi
  echo "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] $mirror $suite main" > /etc/apt/sources.list.d/metal-lora-backports.list
fi
apt-get update -qq
target=()
[ "${ID:-}" = debian ] && target=(-t "$suite")
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${target[@]}" mesa-vulkan-drivers libvulkan1 >/dev/null
echo "install-lavapipe: installed mesa-vulkan-drivers $(dpkg-query -W -f='${Version}' mesa-vulkan-drivers)."
