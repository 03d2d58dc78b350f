#!/usr/bin/env bash
# Set up napari-vessel in ./.venv on Debian/Ubuntu (Python 3.10+).
#   bash scripts/setup.sh          the plugin, its command line and napari with PyQt6
#   bash scripts/setup.sh --test   the same plus the test tools and a virtual X server
# System packages (Qt/OpenGL libraries for napari; Xvfb for headless tests) need root or sudo.
set -euo pipefail
cd "$(dirname "$0")/.."

WITH_TEST=0
[[ "${1:-}" == "--test" ]] && WITH_TEST=1

APT_PACKAGES=(
  python3-venv
  libgl1 libegl1 libgl1-mesa-dri libglx-mesa0 libfontconfig1 fonts-dejavu-core libdbus-1-3
  libxkbcommon0 libxkbcommon-x11-0 libx11-xcb1 libxcb-icccm4 libxcb-image0 libxcb-keysyms1
  libxcb-randr0 libxcb-render-util0 libxcb-xinerama0 libxcb-xfixes0 libxcb-shape0 libxcb-cursor0
)
if (( WITH_TEST )); then APT_PACKAGES+=(xvfb xauth); fi

if command -v apt-get >/dev/null 2>&1; then
  SUDO=""
  if [[ $(id -u) -ne 0 ]]; then SUDO="sudo"; fi
  missing=()
  for pkg in "${APT_PACKAGES[@]}"; do
    dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
  done
  if (( ${#missing[@]} )); then
    echo "installing system packages: ${missing[*]}"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
  fi
else
  echo "apt-get not found: install the Qt/OpenGL libraries for napari with your system's package manager"
fi

PYTHON="${PYTHON:-}"
if [[ -z "$PYTHON" ]]; then
  for candidate in python3.11 python3.12 python3.10 python3; do
    if command -v "$candidate" >/dev/null 2>&1; then PYTHON="$candidate"; break; fi
  done
fi
[[ -d .venv ]] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip

# torch is pinned in the same pip call as the project: on this CPU-only setup 2.13.0 is the CPU
# build; on a CUDA or Apple-silicon machine pip's torch is the accelerated one, found at run time.
EXTRAS="qt"
(( WITH_TEST )) && EXTRAS="qt,test"
.venv/bin/python -m pip install -q -e ".[${EXTRAS}]" "torch==2.13.0"
echo "napari-vessel is installed in .venv (try: .venv/bin/napari-vessel --help)"
