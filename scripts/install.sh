#!/usr/bin/env bash
# Installs everything `rig` needs on a fresh Debian/Ubuntu machine into ./.venv, idempotently:
# the system libraries (MuJoCo's CPU renderer, librealsense's USB layer), the pinned CPU torch
# where no torch is present, and this package with its dev tools.
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
for pkg in libosmesa6 libusb-1.0-0; do
    dpkg -s "$pkg" >/dev/null 2>&1 || need_apt+=("$pkg")
done
if ((${#need_apt[@]})); then
    sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

python=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$python" -m venv .venv
pip=(.venv/bin/python -m pip install -q --disable-pip-version-check)
# torch: keep whatever build is there (CUDA users), else the pinned CPU wheel (other requests download GBs).
.venv/bin/python -c "import torch" 2>/dev/null || "${pip[@]}" "torch==2.13.0"
"${pip[@]}" -e ".[dev]"
