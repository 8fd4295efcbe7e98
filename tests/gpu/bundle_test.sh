#!/usr/bin/env bash
# tests/gpu/bundle_test.sh BUILD_DIR: launch/bundle.sh makes a self-contained folder.
# Checks: the manifest matches the files; the libraries we depend on are bundled and glibc,
# the driver and the CUDA runtime are not; every bundled binary resolves each non-system
# library inside the bundle; `run moetrain --help` works from the bundle; the launcher puts
# the CUDA wheels' lib folders (site-packages/nvidia/*/lib) on the library path; the xz
# archive unpacks to the same folder; the launcher refuses an older glibc than the bundle needs.
#
# Then, as root where chroot works, the bundle alone on a bare machine: a root filesystem
# holding only glibc and its loader, the CUDA runtime libraries the binaries link (in
# /usr/local/cuda/lib64, standing in for the GPU machine's; cuDNN, which only a GPU run
# dlopens, is left out), bash, env and dirname (the launcher's needs), /dev/{null,zero,
# random,urandom}, /dev/shm, /tmp, /proc and /sys (when they can be mounted), and the bundle
# in /opt/bundle.
# In it: `run moetrain --help`, `moetrain prepare` of a small corpus (SentencePiece
# training), a 2-step CPU `moetrain train` of configs/default.yaml on it, the same on 2
# data-parallel ranks under the bundled mpirun (when the bundle has Open MPI's runtime),
# `moetrain report --png` (no Fontconfig error), gemm_plan_cache_test and
# device_allocator_test (host-only tests); and, proving the root has nothing of ours,
# bin/moetrain without the launcher must miss a library. A failure names what was missing
# (the loader's library, a file). Not root, or chroot/mknod not permitted: that part is
# skipped, saying why. About 5 s more (plus copying the CUDA libraries where /tmp is on
# another file system than they are).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
BUILD=$(cd "${1:?usage: bundle_test.sh BUILD_DIR}" && pwd)
TMP=$(mktemp -d)
ISO=$TMP/root
cleanup() {
  local m
  for m in proc sys; do
    if grep -qs " $ISO/$m " /proc/mounts; then umount "$ISO/$m" || umount -l "$ISO/$m"; fi
  done
  rm -rf --one-file-system "$TMP"
}
trap cleanup EXIT
trap 'exit 1' INT TERM  # a timed-out test still unmounts the root's /proc
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
# glibc: the bundle records what it needs; the launcher refuses an older glibc by name.
read -r glibc_need interp <"$OUT/GLIBC_MIN" || fail "GLIBC_MIN missing (objdump/readelf?)"
[[ "$glibc_need" =~ ^2\.[0-9]+$ && -x "$interp" ]] || fail "GLIBC_MIN malformed: $glibc_need $interp"
cp "$OUT/GLIBC_MIN" "$TMP/GLIBC_MIN"
echo "99.0 $interp" >"$OUT/GLIBC_MIN"
if "$OUT/run" moetrain --help >"$TMP/glibc.txt" 2>&1; then fail "run ignored GLIBC_MIN 99.0"; fi
grep -q "needs glibc >= 99.0" "$TMP/glibc.txt" || fail "run's glibc refusal: $(cat "$TMP/glibc.txt")"
cp "$TMP/GLIBC_MIN" "$OUT/GLIBC_MIN"
[ -f "$OUT/share/fonts/fonts.conf" ] && ls "$OUT"/share/fonts/*.ttf >/dev/null 2>&1 ||
  fail "share/fonts (fonts.conf and a .ttf for moetrain report --png) not bundled"
# Open MPI's runtime travels with libmpi (where this machine has ompi_info to find it).
mpi=0
if ls "$OUT"/lib/libmpi.so* >/dev/null 2>&1 && command -v ompi_info >/dev/null 2>&1; then
  mpi=1
  for f in bin/mpirun bin/orted openmpi/mca/mca_btl_vader.so openmpi/mca/mca_pml_ob1.so \
    openmpi/mca/mca_ess_hnp.so openmpi/share/openmpi/help-mpi-runtime.txt; do
    [ -e "$OUT/$f" ] || fail "Open MPI's runtime: $f not bundled"
  done
fi
echo "bundle_test: ok ($(grep -c '^lib/' "$OUT/MANIFEST") libraries, $(ls "$OUT/bin" | wc -l) binaries; needs glibc >= $glibc_need)"

# --- The bundle alone on a bare machine (chroot) ---------------------------------------------
iso_skip=""
if [ "$(id -u)" != 0 ]; then
  iso_skip="not root (uid $(id -u)); chroot needs root"
elif ! CHROOT=$(command -v chroot || command -v /usr/sbin/chroot); then
  iso_skip="no chroot command"
elif [ "${MOETRAIN_BUNDLE_TEST_NO_CHROOT:-0}" = 1 ]; then
  iso_skip="MOETRAIN_BUNDLE_TEST_NO_CHROOT=1"
fi
if [ -n "$iso_skip" ]; then
  echo "bundle_test: SKIPPED the isolated-root run (the bundle with only glibc and the CUDA libraries): $iso_skip"
  exit 0
fi
t0=$SECONDS
# put FILE DIR [NAME]: FILE (followed through symlinks) as ROOT/DIR/NAME: a hard link where
# the file system allows it (the CUDA libraries are ~800 MB), else a copy.
put() {
  local dst=$ISO$2/${3:-$(basename "$1")}
  mkdir -p "$ISO$2"
  ln -f "$(readlink -f "$1")" "$dst" 2>/dev/null || cp -L "$1" "$dst"
}
mkdir -p "$ISO"/{tmp,dev/shm,proc,sys,opt}
chmod 1777 "$ISO/tmp" "$ISO/dev/shm"
GLIBC_RE='^(ld-linux[^/]*|libc|libm|libpthread|libdl|librt|libresolv|libutil|libanl)\.so'
CUDA_RE='^(libcudart|libcublas|libcublasLt|libcudnn[^/]*|libnccl|libnvrtc[^/]*|libnvJitLink|libcufft|libcurand|libcusparse|libcusolver)\.so'
# The launcher's tools and what they link (bash: libtinfo), at their own paths.
for tool in bash env dirname; do
  p=$(command -v "$tool") || fail "no $tool here to build the isolated root"
  put "$p" /usr/bin
  while read -r name arrow path _; do
    [ "$arrow" = "=>" ] && [ -f "$path" ] && put "$path" "$(dirname "$path")" "$name"
  done < <(ldd "$p")
done
# glibc (what every GPU machine has) and its loader, where the binaries ask for them; the
# CUDA runtime libraries they link, in /usr/local/cuda/lib64.
glibc_dir=$(dirname "$(ldd "$(command -v bash)" | awk '$1 == "libc.so.6" {print $3}')")
for l in libc.so.6 libm.so.6 libpthread.so.0 libdl.so.2 librt.so.1; do
  [ -f "$glibc_dir/$l" ] && put "$glibc_dir/$l" "$glibc_dir"
done
put "$interp" "$(dirname "$interp")"
for b in "$OUT"/bin/*; do
  while read -r name arrow path _; do
    [ "$arrow" = "=>" ] && [ -f "$path" ] || continue
    if [[ "$name" =~ $GLIBC_RE ]]; then
      put "$path" "$(dirname "$path")" "$name"
    elif [[ "$name" =~ $CUDA_RE ]]; then
      [ -e "$ISO/usr/local/cuda/lib64/$name" ] || put "$path" /usr/local/cuda/lib64 "$name"
    fi
  done < <(LD_LIBRARY_PATH="$OUT/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" ldd "$b")
done
# A library the tools brought that the bundle also ships would hide its absence from lib/.
while read -r f; do
  [ -e "$OUT/lib/$(basename "$f")" ] && fail "the isolated root's tools brought $f, which the bundle ships too"
done < <(find "$ISO" -name '*.so*' ! -path "$ISO/usr/local/cuda/*")
for n in null:3 zero:5 random:8 urandom:9; do
  mknod -m 666 "$ISO/dev/${n%:*}" c 1 "${n#*:}" 2>/dev/null || {
    echo "bundle_test: SKIPPED the isolated-root run: mknod /dev/${n%:*} not permitted here"
    exit 0
  }
done
for m in proc sysfs; do
  mount -t $m $m "$ISO/${m%fs}" 2>/dev/null ||
    echo "bundle_test: note: /${m%fs} not mounted in the isolated root (not permitted here)"
done
cp -al "$OUT" "$ISO/opt/bundle" 2>/dev/null || cp -a "$OUT" "$ISO/opt/bundle"
if ! env -i PATH=/usr/bin:/bin "$CHROOT" "$ISO" /usr/bin/env bash -c : >"$TMP/chroot.txt" 2>&1; then
  if grep -q "Operation not permitted" "$TMP/chroot.txt"; then
    echo "bundle_test: SKIPPED the isolated-root run: chroot not permitted here: $(head -1 "$TMP/chroot.txt")"
    exit 0
  fi
  fail "the isolated root does not start bash: $(head -1 "$TMP/chroot.txt")"
fi
mkdir "$ISO/tmp/w"
# A small corpus: 200 documents of 20-80 words from a 25-word vocabulary.
awk 'BEGIN { srand(1); n = split("the cat sat on a mat and dog ran far away from home while " \
  "birds sang in trees quiet river flows under old stone bridge", w, " ");
  for (d = 0; d < 200; d++) { k = 20 + int(rand() * 60); s = "";
    for (i = 0; i < k; i++) s = s (i ? " " : "") w[1 + int(rand() * n)]; printf "%s\n\n", s } }' \
  >"$ISO/tmp/w/corpus.txt"

# in_root LOG COMMAND...: run the bundle's launcher in the root, with the bare environment
# of a fresh login (no LD_LIBRARY_PATH, no FONTCONFIG_FILE; tests/run.sh's BLAS thread
# counts kept); on failure, name what the output says was missing and show its tail.
in_root() {
  local log=$TMP/$1
  shift
  if ! env -i PATH=/usr/bin:/bin HOME=/tmp LANG=C.UTF-8 \
      OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 \
      ${OPENBLAS_NUM_THREADS:+OPENBLAS_NUM_THREADS=$OPENBLAS_NUM_THREADS} \
      ${OMP_NUM_THREADS:+OMP_NUM_THREADS=$OMP_NUM_THREADS} \
      "$CHROOT" "$ISO" /opt/bundle/run "$@" >"$log" 2>&1; then
    iso_fail "$*" "$log"
  fi
}
iso_fail() {
  local why cmd w
  read -ra w <<<"$1"
  cmd="${w[*]:0:4}"
  [ ${#w[@]} -le 4 ] || cmd+=" ..."
  why=$(grep -m1 -E 'error while loading shared libraries|cannot open shared object|not found \(required by|No such file|cannot open|Fontconfig error|not found' "$2" || true)
  tail -n 15 "$2" | sed 's/^/  | /' >&2
  fail "in the isolated root (only glibc, the CUDA libraries and the bundle), \`run $cmd\` failed${why:+: $why}"
}
in_root help.txt moetrain --help
grep -q "usage: moetrain" "$TMP/help.txt" || iso_fail "moetrain --help (no usage)" "$TMP/help.txt"
in_root prepare.txt moetrain prepare --input /tmp/w/corpus.txt --output /tmp/w/tiny --vocab-size 300 \
  --val-fraction 0.1 --split-blank-lines --seed 3 --no-progress
in_root train.txt moetrain train --config /opt/bundle/configs/default.yaml --set training.device=cpu \
  --set model.vocab_size=320 --set data.train_path=/tmp/w/tiny-train \
  --set data.val_path=/tmp/w/tiny-val --set data.tokenizer=/tmp/w/tiny.model \
  --set training.steps=2 --set training.micro_batch_size=2 --set training.global_batch_size=2 \
  --set training.seq_len=32 --set training.eval_interval=0 --set training.eval_batches=1 \
  --set training.generate_tokens=4 --set checkpoint.dir=/tmp/w/ckpt \
  --set logging.tensorboard_dir=/tmp/w/tb --set logging.metrics_file=/tmp/w/metrics.jsonl
grep -q '^\[moetrain\] done: 2 steps' "$TMP/train.txt" || iso_fail "moetrain train (no 'done: 2 steps')" "$TMP/train.txt"
[ -f "$ISO/tmp/w/ckpt/latest" ] || iso_fail "moetrain train (no checkpoint written)" "$TMP/train.txt"
in_root report.txt moetrain report /tmp/w/metrics.jsonl --out /tmp/w/report.html --png /tmp/w/png
if grep -qi fontconfig "$TMP/report.txt"; then iso_fail "moetrain report --png" "$TMP/report.txt"; fi
[ -s "$ISO/tmp/w/png/loss.png" ] || iso_fail "moetrain report --png (no loss.png)" "$TMP/report.txt"
# Two ranks (data-parallel) under the bundled mpirun, as root (Open MPI refuses it unless told).
if [ $mpi = 1 ]; then
  in_root mpi.txt mpirun -n 2 --oversubscribe moetrain train \
    --config /opt/bundle/configs/default.yaml --set training.device=cpu --set parallel.dp=2 \
    --set model.vocab_size=320 --set data.train_path=/tmp/w/tiny-train \
    --set data.val_path=/tmp/w/tiny-val --set data.tokenizer=/tmp/w/tiny.model \
    --set training.steps=2 --set training.micro_batch_size=2 --set training.global_batch_size=4 \
    --set training.seq_len=32 --set training.eval_interval=0 --set training.eval_batches=1 \
    --set training.generate_tokens=4 --set checkpoint.dir= --set logging.tensorboard_dir= \
    --set logging.metrics_file=
  grep -q '^\[moetrain\] layout: .*dp 2.* over 2 ranks' "$TMP/mpi.txt" &&
    grep -q '^\[moetrain\] done: 2 steps' "$TMP/mpi.txt" ||
    iso_fail "mpirun -n 2 moetrain train (no 2-rank run to 'done: 2 steps')" "$TMP/mpi.txt"
fi
for t in gemm_plan_cache_test device_allocator_test; do
  [ -x "$OUT/bin/$t" ] || continue
  in_root "$t.txt" "$t"
  grep -q '^\[  PASSED  \]' "$TMP/$t.txt" || iso_fail "$t (no PASSED)" "$TMP/$t.txt"
done
# The root has nothing of ours: without the launcher's library path a bundled binary must
# miss a library (else the runs above proved nothing).
if env -i PATH=/usr/bin:/bin "$CHROOT" "$ISO" /opt/bundle/bin/moetrain --help >"$TMP/bare.txt" 2>&1 ||
    ! grep -q "error while loading shared libraries" "$TMP/bare.txt"; then
  fail "the isolated root is not bare: bin/moetrain ran without the bundle's lib/ ($(head -1 "$TMP/bare.txt"))"
fi
echo "bundle_test: ok in an isolated root (glibc $glibc_need, CUDA libraries, the bundle): help, prepare, train 2 steps$([ $mpi = 1 ] && echo ", mpirun -n 2 train"), report --png, host tests ($((SECONDS - t0)) s)"
