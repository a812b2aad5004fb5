#!/usr/bin/env bash
# Installs everything `rig` needs on a fresh Debian/Ubuntu machine into ./.venv, idempotently:
# the system libraries (MuJoCo's CPU renderer, librealsense's USB layer), the pinned CPU torch
# where no torch is present, and this package with its dev tools.
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
# libosmesa6: MuJoCo's CPU renderer; libusb: pyrealsense2; libav*: torchcodec, which LeRobot's dataset
# class decodes with in the interop test.
for pkg in libosmesa6 libusb-1.0-0 libavcodec59 libavformat59 libavutil57 libswscale6 libswresample4 libavdevice59 libavfilter8; do
    dpkg -s "$pkg" >/dev/null 2>&1 || need_apt+=("$pkg")
done
if ((${#need_apt[@]})); then
    sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
fi

python=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$python" -m venv .venv
pip=(.venv/bin/python -m pip install -q --disable-pip-version-check)
# torch: keep whatever build is there (CUDA users), else the pinned CPU wheel (other requests download GBs).
.venv/bin/python -c "import torch" 2>/dev/null || "${pip[@]}" "torch==2.13.0"
"${pip[@]}" -e ".[dev]"
# LeRobot, for the test that loads our export with its own dataset class. Its declared pins (torch<2.11,
# torchvision) would replace the pinned torch, so it comes without its dependencies, plus those its
# dataset class needs; torchcodec 0.13 is the release that loads beside torch 2.13.
.venv/bin/python -c "import lerobot, torchcodec" 2>/dev/null || {
    "${pip[@]}" --no-deps "lerobot==0.4.4" "torchcodec==0.13.0"
    "${pip[@]}" "datasets>=4,<5" "huggingface_hub>=0.34.2,<0.36" "pandas<3" "accelerate>=1.10,<2"
}
