#!/usr/bin/env bash
# tests/fuzz/run_fuzzers.sh: builds the libFuzzer targets with Debian's clang (AddressSanitizer
# and UndefinedBehaviorSanitizer) and runs each for a bounded time from its seed corpus.
#
#   tests/fuzz/run_fuzzers.sh [SECONDS_PER_TARGET]   (default 60)
#   MOETRAIN_FUZZ_TARGETS="config idx" tests/fuzz/run_fuzzers.sh 30   (a subset)
#
# Targets: safetensors (header parser), config (YAML config loader), idx (Megatron .idx/.bin
# reader); each seeds from tests/fuzz/corpus/<name>/.
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
  [safetensors]="trainer/safetensors.cc trainer/durable_file.cc data/sha256.cc kernels/tensor.cc"
  [config]="trainer/config.cc trainer/config_reader.cc trainer/config_model.cc trainer/config_validate.cc kernels/tensor.cc"
  [idx]="data/indexed_dataset.cc kernels/tensor.cc"
)
# Libraries a target needs besides Abseil and libcrypto. yaml-cpp is Debian's g++ build;
# clang++ links against the same libstdc++, so its C++ ABI matches.
declare -A libs=(
  [config]="-lyaml-cpp"
)

# MOETRAIN_FUZZ_TARGETS="config idx" runs a subset (default: every target, sorted).
read -r -a targets <<<"${MOETRAIN_FUZZ_TARGETS:-$(printf '%s\n' "${!sources[@]}" | sort | tr '\n' ' ')}"

status=0
for name in "${targets[@]}"; do
  bin="$out/${name}_fuzz"
  echo "[fuzz] building $bin"
  # shellcheck disable=SC2086
  "$cxx" "${flags[@]}" "tests/fuzz/${name}_fuzz.cc" ${sources[$name]} "${absl_libs[@]}" -lcrypto \
    ${libs[$name]:-} -o "$bin"
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
