#!/usr/bin/env bash
# tests/fuzz/run_fuzzers.sh: builds the libFuzzer targets with Debian's clang (AddressSanitizer
# and UndefinedBehaviorSanitizer) and runs each for a bounded time from its seed corpus.
#
#   tests/fuzz/run_fuzzers.sh [SECONDS_PER_TARGET]   (default 60)
#
# Needs clang and libclang-rt-14-dev (launch/setup.sh installs both). Sources are compiled
# directly, no CMake. Exits non-zero when a target finds a crash; the reproducer is left in
# $MOETRAIN_FUZZ_DIR (default build-fuzz/) as crash-*.
set -euo pipefail
cd "$(dirname "$0")/../.."

seconds=${1:-60}
out=${MOETRAIN_FUZZ_DIR:-build-fuzz}
cxx=${CXX_FUZZ:-$(command -v clang++-14 || command -v clang++)}
mkdir -p "$out"

flags=(-std=c++20 -O1 -g -fno-omit-frame-pointer -I.
  -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined)
read -r -a absl_libs <<<"$(pkg-config --libs absl_status absl_statusor absl_strings absl_str_format)"

# target name -> the sources it needs besides tests/fuzz/<name>_fuzz.cc
declare -A sources=(
  [safetensors]="trainer/safetensors.cc trainer/durable_file.cc kernels/tensor.cc"
)

status=0
for name in "${!sources[@]}"; do
  bin="$out/${name}_fuzz"
  echo "[fuzz] building $bin"
  # shellcheck disable=SC2086
  "$cxx" "${flags[@]}" "tests/fuzz/${name}_fuzz.cc" ${sources[$name]} "${absl_libs[@]}" -lcrypto \
    -o "$bin"
  # New inputs go to a scratch corpus so the checked-in seeds stay small.
  work="$out/corpus/$name"
  mkdir -p "$work"
  echo "[fuzz] running $name for ${seconds}s"
  if ! "$bin" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
      -artifact_prefix="$out/" "$work" "tests/fuzz/corpus/$name"; then
    echo "[fuzz] $name FAILED (reproducer in $out/)"
    status=1
  fi
done
exit $status
