#!/usr/bin/env bash
# Build (once; cached) a Debian bookworm arm64 userland -- what Raspberry Pi OS (64-bit) is built on --
# that runs under qemu user-mode emulation, with three agent environments:
#   /opt/litert : ai-edge-litert + onnxruntime over Debian's numpy
#   /opt/tflrt  : tflite-runtime 2.14 over Debian's numpy 1.24 (older Raspberry Pi OS images)
#   /opt/executorch : executorch 1.5.1 without torch (--no-deps) over Debian's numpy, and Debian's g++: the
#                     agent builds its torch-free runner against the wheel's libraries, as on a Pi, where
#                     ExecuTorch's Python bindings cannot load (PyPI's aarch64 torch is a CUDA build that
#                     needs several GB of nvidia wheels to import at all)
# Usage: tests/arm64/make_root.sh ROOT        (needs root, network to Debian and PyPI)
set -euo pipefail
ROOT=${1:?usage: make_root.sh ROOT}
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
PY=${PYTHON:-python3}

need=()
command -v qemu-aarch64-static >/dev/null || need+=(qemu-user-static)
command -v debootstrap >/dev/null || need+=(debootstrap)
command -v update-binfmts >/dev/null || need+=(binfmt-support)
if [ ${#need[@]} -gt 0 ]; then
    apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${need[@]}"
fi
mountpoint -q /proc/sys/fs/binfmt_misc || mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc
update-binfmts --enable qemu-aarch64 2>/dev/null || true

if [ ! -x "$ROOT/usr/bin/python3" ]; then
    rm -rf "$ROOT.partial"
    debootstrap --arch=arm64 --variant=minbase \
        --include=python3,python3-venv,python3-pip,python3-numpy,ca-certificates bookworm "$ROOT.partial" "$MIRROR"
    mv "$ROOT.partial" "$ROOT"
fi

wheels=$(mktemp -d)
trap 'rm -rf "$wheels"' EXIT
fetch() {  # aarch64 wheels for CPython 3.11, also for the pure-python and abi3 dependencies
    "$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.11 --implementation cp \
        --platform manylinux_2_17_aarch64 --platform manylinux2014_aarch64 --platform manylinux_2_27_aarch64 \
        --platform manylinux_2_28_aarch64 --platform manylinux_2_34_aarch64 --platform any -d "$wheels/$1" "${@:2}"
}
if [ ! -x "$ROOT/opt/litert/bin/python" ]; then
    fetch litert ai-edge-litert==2.3.0 onnxruntime==1.32.0 backports.strenum flatbuffers protobuf ml_dtypes packaging \
        tqdm typing_extensions
    chroot "$ROOT" python3 -m venv --system-site-packages /opt/litert.partial
    cp -r "$wheels/litert" "$ROOT/tmp/wheels-litert"
    chroot "$ROOT" sh -c '/opt/litert.partial/bin/pip install -q --no-deps --no-index /tmp/wheels-litert/*.whl'
    rm -rf "$ROOT/tmp/wheels-litert"
    mv "$ROOT/opt/litert.partial" "$ROOT/opt/litert"
fi
if [ ! -x "$ROOT/opt/tflrt/bin/python" ]; then
    fetch tflrt tflite-runtime==2.14.0
    chroot "$ROOT" python3 -m venv --system-site-packages /opt/tflrt.partial
    cp -r "$wheels/tflrt" "$ROOT/tmp/wheels-tflrt"
    chroot "$ROOT" sh -c '/opt/tflrt.partial/bin/pip install -q --no-deps --no-index /tmp/wheels-tflrt/*.whl'
    rm -rf "$ROOT/tmp/wheels-tflrt"
    mv "$ROOT/opt/tflrt.partial" "$ROOT/opt/tflrt"
fi
if [ ! -x "$ROOT/usr/bin/g++" ]; then
    chroot "$ROOT" sh -c 'apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends g++'
fi
if [ ! -x "$ROOT/opt/executorch/bin/python" ]; then
    fetch executorch executorch==1.5.1
    chroot "$ROOT" python3 -m venv --system-site-packages /opt/executorch.partial
    cp -r "$wheels/executorch" "$ROOT/tmp/wheels-executorch"
    chroot "$ROOT" sh -c '/opt/executorch.partial/bin/pip install -q --no-deps --no-index /tmp/wheels-executorch/*.whl'
    rm -rf "$ROOT/tmp/wheels-executorch"
    mv "$ROOT/opt/executorch.partial" "$ROOT/opt/executorch"
fi
# XNNPACK's CPU probe (cpuinfo) reads which processors exist from sysfs, and without it ExecuTorch's XNNPACK
# backend does not start; the host's whole /sys must stay out (LiteRT's CPU probe crashes on it under qemu),
# so the root gets the two files a Pi's kernel provides, naming this machine's cores
mkdir -p "$ROOT/sys/devices/system/cpu"
for list in possible present; do echo "0-$(($(nproc) - 1))" > "$ROOT/sys/devices/system/cpu/$list"; done
echo "arm64 root ready: $ROOT"
