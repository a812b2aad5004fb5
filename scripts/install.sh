#!/usr/bin/env bash
# Installs everything `rig` needs on a fresh Debian/Ubuntu machine into ./.venv, idempotently, one line
# per stage: the system libraries (MuJoCo's CPU renderer, librealsense's USB layer, FFmpeg for
# torchcodec) under whatever names this release gives them, torch 2.13 built for what the machine has,
# this package with its dev tools, and LeRobot for the interop tests.
#
# torch: PyPI's torch==2.13.0 for Linux x86_64 is a CUDA 13 build, which needs an NVIDIA driver R580 or
# newer. It is installed where `nvidia-smi` reports such a driver; elsewhere (no GPU, an older driver)
# the CPU build, from a local wheel when pip is configured with one, else from PyTorch's CPU index.
# TORCH_INDEX_URL overrides the choice (e.g. a CUDA 12 build for an older driver). A torch already in
# .venv is kept.
set -euo pipefail
cd "$(dirname "$0")/.."

TORCH_VERSION=2.13.0
CPU_INDEX=https://download.pytorch.org/whl/cpu
CUDA13_DRIVER=580

say() { printf '%-8s %s\n' "$1" "$2"; }

# -- system libraries -------------------------------------------------------------------------------
# Each library as the patterns its package names take across releases: FFmpeg's carry the soname
# (libavcodec59 on Debian 12, libavcodec58 on Ubuntu 22.04, libavcodec60 on Ubuntu 24.04, 61 on Debian 13).
LIBRARIES=(libosmesa6 libusb-1.0-0 libavcodec libavformat libavutil libswscale libswresample libavdevice libavfilter)

versioned() { [[ $1 == libav* || $1 == libsw* ]]; }

installed() {  # any package of this library installed?
    local patterns=("$1")
    versioned "$1" && patterns=("$1[0-9]*" "$1-extra[0-9]*")
    local states
    states=$(dpkg-query -W -f='${db:Status-Abbrev}\n' "${patterns[@]}" 2>/dev/null || true)
    [[ $states == *ii* ]]
}

has_candidate() {  # apt can install it here (output captured first: `grep -q` under pipefail misreads)
    local policy
    policy=$(apt-cache policy "$1" 2>/dev/null || true)
    [[ $policy =~ Candidate:\ [^\(] ]]
}

package_for() {  # the package this release installs the library from (the newest soname it has)
    if ! versioned "$1"; then
        has_candidate "$1" && echo "$1"
        return
    fi
    local name
    for name in $(apt-cache pkgnames "$1" | grep -E "^$1[0-9]+\$" | sort -rV || true); do
        if has_candidate "$name"; then echo "$name" && return; fi
    done
}

missing=()
for library in "${LIBRARIES[@]}"; do
    installed "$library" || missing+=("$library")
done
if ((${#missing[@]} == 0)); then
    say system "libraries present (MuJoCo CPU rendering, USB for RealSense, FFmpeg for torchcodec)"
else
    sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
    $sudo apt-get update -qq
    packages=()
    for library in "${missing[@]}"; do
        package=$(package_for "$library")
        if [ -z "$package" ]; then
            echo "install: this release's apt sources offer no package for $library; install it by hand" >&2
            exit 1
        fi
        packages+=("$package")
    done
    say system "installing ${packages[*]} (apt)"
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${packages[@]}" >/dev/null
fi

# -- Python environment ---------------------------------------------------------------------------
python=${PYTHON:-python3}
if [ -x .venv/bin/python ]; then
    say venv ".venv ($(.venv/bin/python --version))"
else
    "$python" -m venv .venv
    say venv "created .venv ($(.venv/bin/python --version))"
fi
pip=(.venv/bin/python -m pip install -q --disable-pip-version-check)

pip_install() {  # pip, quiet, with a line every 20 s so that a long download does not look like a hang
    "${pip[@]}" "$@" &
    local pid=$! waited=0
    while kill -0 "$pid" 2>/dev/null; do
        sleep 1
        waited=$((waited + 1))
        if ((waited % 20 == 0)); then say "" "... still installing ($waited s)"; fi
    done
    wait "$pid"
}

# -- torch ----------------------------------------------------------------------------------------
driver_major() {  # the NVIDIA driver's major version, or nothing without a working nvidia-smi
    command -v nvidia-smi >/dev/null || return 0
    nvidia-smi --query-gpu=driver_version --format=csv,noheader 2>/dev/null | head -n 1 | cut -d. -f1
}

local_wheel() {  # the torch version pip's own configuration (find-links) offers without any index
    .venv/bin/python -m pip install --dry-run --no-deps --no-index --ignore-installed --quiet \
        --disable-pip-version-check --report - "torch==$TORCH_VERSION" 2>/dev/null |
        .venv/bin/python -c 'import json, sys; print(json.load(sys.stdin)["install"][0]["metadata"]["version"])' \
            2>/dev/null || true
}

installed_torch=$(.venv/bin/python -c 'import torch; print(torch.__version__)' 2>/dev/null || true)
driver=$(driver_major)
if [ -n "$installed_torch" ]; then
    note=""
    if [[ -n $driver && $installed_torch == *+cpu ]]; then
        note="; a CPU build on a machine with an NVIDIA GPU: rm -r .venv and rerun for a CUDA build"
    fi
    say torch "keeping $installed_torch$note"
elif [ -n "${TORCH_INDEX_URL:-}" ]; then
    say torch "$TORCH_VERSION from $TORCH_INDEX_URL"
    pip_install "torch==$TORCH_VERSION" --index-url "$TORCH_INDEX_URL"
elif [ -n "$driver" ] && ((driver >= CUDA13_DRIVER)); then
    say torch "$TORCH_VERSION, PyPI's CUDA 13 build (NVIDIA driver R$driver; a few minutes)"
    pip_install "torch==$TORCH_VERSION"
else
    if [ -n "$driver" ]; then
        say torch "NVIDIA driver R$driver is older than R$CUDA13_DRIVER, which PyPI's CUDA 13 build needs: the CPU build."
        say torch "For the GPU, update the driver, or rerun with TORCH_INDEX_URL=https://download.pytorch.org/whl/cu12X"
        say torch "(the CUDA 12 variant pytorch.org lists for torch $TORCH_VERSION) after rm -r .venv"
    fi
    wheel=$(local_wheel)
    if [[ $wheel == *+cpu* ]]; then
        say torch "$wheel, the CPU build pip is configured with"
        pip_install "torch==$wheel"
    else
        say torch "$TORCH_VERSION, the CPU build from $CPU_INDEX (a few minutes)"
        pip_install "torch==$TORCH_VERSION" --index-url "$CPU_INDEX"
    fi
fi

# -- rig --------------------------------------------------------------------------------------------
say rig "this package, editable, with its dev tools (pytest, ruff, mypy)"
# --no-warn-conflicts: on a rerun LeRobot (below) is present, and pip would list its left-out pins.
pip_install --no-warn-conflicts -e ".[dev]"

# -- LeRobot interop (tests) ------------------------------------------------------------------------
# The tests load our dataset exports with LeRobot's dataset class and our weight exports into its π0
# module. LeRobot 0.4.4 declares torch<2.11 and torchvision, which would replace this torch, so it comes
# without its dependencies, plus those its dataset class and π0 module import (transformers 4.57 is the
# release LeRobot's π0 names follow; torchcodec 0.13 loads beside torch 2.13). pip is told not to list
# LeRobot's other declared dependencies as conflicts (pip's "ERROR: ... dependency resolver" block):
# they are left out on purpose.
if .venv/bin/python -c "import lerobot, torchcodec, transformers, draccus" 2>/dev/null; then
    say lerobot "present"
else
    say lerobot "lerobot 0.4.4 without its pins, torchcodec 0.13, transformers 4.57, datasets (interop tests)"
    pip_install --no-deps --no-warn-conflicts "lerobot==0.4.4" "torchcodec==0.13.0"
    pip_install --no-warn-conflicts "datasets>=4,<5" "huggingface_hub>=0.34.2,<0.36" "pandas<3" \
        "accelerate>=1.10,<2" "transformers==4.57.6" "draccus==0.10.0"
fi
# draccus 0.10.0's wheel also installs its own test suite as a top-level `tests` package, which would
# shadow this project's tests folder (`from tests.… import` in a child process): it goes.
site=$(.venv/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
if grep -qs '^tests/__init__.py,' "$site"/draccus-*.dist-info/RECORD && [ -d "$site/tests" ]; then
    rm -r "$site/tests"
fi
say done "$(.venv/bin/rig --version 2>/dev/null || echo rig) in .venv; run .venv/bin/rig demo"
