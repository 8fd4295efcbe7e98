#!/usr/bin/env bash
# tests/gpu/bundle_test.sh BUILD_DIR: launch/bundle.sh makes a self-contained folder.
# Checks: the manifest matches the files; the libraries we depend on are bundled and glibc,
# the driver and the CUDA runtime are not; every bundled binary resolves each non-system
# library inside the bundle; `run moetrain --help` works from the bundle; the launcher puts
# the CUDA wheels' lib folders (site-packages/nvidia/*/lib) on the library path; the xz
# archive unpacks to the same folder.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
BUILD=$(cd "${1:?usage: bundle_test.sh BUILD_DIR}" && pwd)
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
OUT=$TMP/bundle
fail() { echo "bundle_test: FAIL: $*" >&2; exit 1; }

MOETRAIN_BUNDLE_ARCHIVE=1 MOETRAIN_BUNDLE_XZ_LEVEL=0 bash "$ROOT/launch/bundle.sh" "$BUILD" "$OUT"
# The archive unpacks to the same files (what a GPU session carries instead of the folder).
mkdir "$TMP/unpacked"
tar -C "$TMP/unpacked" -xJf "$OUT.tar.xz" || fail "bundle.tar.xz does not unpack"
diff -r "$OUT" "$TMP/unpacked/bundle" >/dev/null || fail "bundle.tar.xz differs from the folder"

while read -r f; do [ -f "$OUT/$f" ] || fail "MANIFEST lists $f, which is missing"; done <"$OUT/MANIFEST"
[ "$(ls "$OUT/lib" | wc -l)" -eq "$(grep -c '^lib/' "$OUT/MANIFEST")" ] || fail "lib/ differs from MANIFEST"
[ -x "$OUT/run" ] && [ -x "$OUT/check.sh" ] || fail "run or check.sh missing"
for b in moetrain tests/gpu/ops_gpu_test bench/gpu/gemm_bench; do
  if [ -x "$BUILD/$b" ]; then
    [ -x "$OUT/bin/$(basename "$b")" ] || fail "bin/$(basename "$b") not bundled"
  fi
done
for lib in libabsl_status.so libyaml-cpp.so libopenblas.so libstdc++.so libmpi.so libgomp.so; do
  ls "$OUT/lib/$lib"* >/dev/null 2>&1 || fail "$lib not bundled"
done
for lib in libc.so libm.so ld-linux libcuda.so libcudart.so libcublasLt.so libnccl.so; do
  if ls "$OUT/lib/$lib"* >/dev/null 2>&1; then fail "$lib must come from the target machine"; fi
done

# Self-contained: with only the bundle on the path, every library that is not glibc, the
# driver or the CUDA runtime resolves inside lib/.
SYSTEM_RE='^(linux-vdso|ld-linux[^/]*|libc|libm|libpthread|libdl|librt|libresolv|libcuda|libnvidia-[^/]*|libcudart|libcublas|libcublasLt|libcudnn[^/]*|libnccl|libnvrtc[^/]*|libnvJitLink)\.so'
for b in "$OUT"/bin/*; do
  while read -r name arrow path _; do
    [ "$arrow" = "=>" ] || continue
    [[ "$name" =~ $SYSTEM_RE ]] && continue
    [[ "$path" == "$OUT/lib/"* ]] || fail "$(basename "$b"): $name resolves to $path, outside the bundle"
  done < <(LD_LIBRARY_PATH="$OUT/lib" ldd "$b")
done

"$OUT/run" moetrain --help >"$TMP/help.txt" 2>&1 || fail "run moetrain --help exited non-zero"
grep -q "usage: moetrain" "$TMP/help.txt" || fail "run moetrain --help printed no usage"
if "$OUT/run" no_such_binary >/dev/null 2>&1; then fail "run accepted an unknown binary"; fi

# CUDA libraries from Python wheels: a fake site-packages with CUDA 13 and CUDA 12 layouts.
mkdir -p "$TMP/site/nvidia/cu13/lib" "$TMP/site/nvidia/cublas/lib"
path=$(PYTHONPATH="$TMP/site" "$OUT/run" --print-library-path)
[[ "$path" == "$OUT/lib:"* ]] || fail "the bundle's lib/ must come first: $path"
[[ ":$path:" == *":$TMP/site/nvidia/cu13/lib:"* ]] || fail "CUDA 13 wheel lib not found: $path"
[[ ":$path:" == *":$TMP/site/nvidia/cublas/lib:"* ]] || fail "CUDA 12 wheel lib not found: $path"

if [ -x "$OUT/bin/ops_gpu_test" ]; then
  "$OUT/run" ops_gpu_test --gtest_list_tests >"$TMP/list.txt" 2>&1 || fail "run ops_gpu_test failed"
  grep -q "gemm_fp8_block_scaled" "$TMP/list.txt" || fail "ops_gpu_test lists no FP8 GEMM"
fi
echo "bundle_test: ok ($(grep -c '^lib/' "$OUT/MANIFEST") libraries, $(ls "$OUT/bin" | wc -l) binaries)"
