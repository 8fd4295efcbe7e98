#!/usr/bin/env bash
# launch/bundle.sh: a self-contained folder to run moetrain and the GPU checks on a machine
# that has the NVIDIA driver and CUDA libraries (system or Python wheels) but none of our
# Debian packages.
#
#   bash launch/bundle.sh [BUILD_DIR=build] [OUT_DIR=BUILD_DIR/bundle]
#
# OUT_DIR/
#   bin/        moetrain, the GPU test binaries (tests/gpu), gemm_bench (bench/gpu)
#   lib/        every shared library they load (ldd) except glibc, the driver (libcuda,
#               libnvidia-*) and the CUDA toolkit's runtime libraries (cudart, cuBLAS(Lt),
#               cuDNN, NCCL, nvrtc, nvJitLink), which the GPU machine provides
#   run         the launcher: `OUT_DIR/run moetrain --help`, `OUT_DIR/run ops_gpu_test`;
#               sets LD_LIBRARY_PATH to lib/, then the CUDA wheels' site-packages/nvidia/*/lib,
#               then /usr/local/cuda and /usr/local/nvidia
#   check.sh    tests/gpu/check.sh (the one-script GPU check)
#   configs/    the repository's configs (the GPU model test and benchmark read them)
#   train_gpu.sh, train_multi_gpu.sh, data/cache/brown-*   `moetrain train` on one GPU and
#               on several, and its corpus (if prepared)
#   share/fonts/  DejaVu Sans (regular, bold) and a fonts.conf naming only them: `moetrain
#               report --png` draws its text through cairo and fontconfig, which on a machine
#               without fontconfig's /etc/fonts fall back to cairo's toy font
#               ("Fontconfig error: Cannot load default config file"); `run` points
#               FONTCONFIG_FILE here
#   GLIBC_MIN   the newest glibc symbol version any bundled file needs (e.g. 2.36): `run`
#               refuses, naming both versions, on a machine whose glibc is older
#   openmpi/    Open MPI's runtime, with bin/mpirun and bin/orted (see below)
#   MANIFEST    the bundled binaries, libraries and MPI components, one per line
# Set MOETRAIN_BUNDLE_CUDA_LIBS=1 to bundle the CUDA runtime libraries too, and
# MOETRAIN_BUNDLE_ARCHIVE=1 to also write OUT_DIR.tar.xz (what a GPU session carries).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BUILD=${1:-$ROOT/build}
OUT=${2:-$BUILD/bundle}
BUILD=$(cd "$BUILD" && pwd)

binaries=()
for b in moetrain tests/gpu/ops_gpu_test tests/gpu/runtime_test tests/gpu/device_allocator_test \
  tests/gpu/gemm_plan_cache_test tests/gpu/communicator_nccl_test tests/gpu/backend_table_test \
  tests/gpu/device_model_gpu_test tests/gpu/attention_choice_test bench/gpu/gemm_bench \
  bench/gpu/device_train_bench; do
  [ -x "$BUILD/$b" ] && binaries+=("$BUILD/$b")
done
if [ ! -x "$BUILD/moetrain" ]; then
  echo "bundle.sh: $BUILD/moetrain not found: build first (cmake --build $BUILD)" >&2
  exit 1
fi

# glibc and the dynamic loader, and the driver: always the target machine's own.
SYSTEM_RE='^(linux-vdso|linux-gate|ld-linux[^/]*|libc|libm|libpthread|libdl|librt|libresolv|libutil|libanl|libcuda|libnvidia-[^/]*)\.so'
# The CUDA toolkit's runtime libraries: from the GPU machine (wheels or /usr/local/cuda).
CUDA_RE='^(libcudart|libcublas|libcublasLt|libcudnn[^/]*|libnccl|libnvrtc[^/]*|libnvJitLink|libcufft|libcurand|libcusparse|libcusolver)\.so'
if [ "${MOETRAIN_BUNDLE_CUDA_LIBS:-0}" = 1 ]; then CUDA_RE='^$'; fi

rm -rf "$OUT"
mkdir -p "$OUT/bin" "$OUT/lib"
: >"$OUT/MANIFEST"
declare -A seen=()
# add_libs FILE: copy every library FILE loads (ldd) into lib/, except glibc, the driver and
# the CUDA runtime; a library ldd cannot find stops the bundle.
add_libs() {
  local name arrow path
  # "name => /path (addr)" lines.
  while read -r name arrow path _; do
    [ "$arrow" = "=>" ] || continue
    if [ "$path" = "not" ]; then
      if [[ ! "$name" =~ $SYSTEM_RE && ! "$name" =~ $CUDA_RE ]]; then
        echo "bundle.sh: $(basename "$1") needs $name, which ldd cannot find here" >&2
        exit 1
      fi
      continue
    fi
    [[ "$name" =~ $SYSTEM_RE || "$name" =~ $CUDA_RE ]] && continue
    [ -n "${seen[$name]:-}" ] && continue
    seen[$name]=1
    cp -L "$path" "$OUT/lib/$name"
    echo "lib/$name" >>"$OUT/MANIFEST"
  done < <(ldd "$1")
}
for b in "${binaries[@]}"; do
  cp "$b" "$OUT/bin/"
  echo "bin/$(basename "$b")" >>"$OUT/MANIFEST"
  add_libs "$b"
done

# Open MPI's runtime, when the binaries link libmpi: a bare machine has none, and MPI_Init
# dlopens its MCA components from the installation's pkglibdir and reads its help texts and
# openmpi-mca-params.conf there ("opal_init:startup:internal-failure" without them). The
# bundle carries mpirun (orterun) and orted in bin/, and in openmpi/: mca/ (every component
# whose libraries are bundled anyway: shared memory and TCP; the UCX, libfabric, verbs and
# PSM transports, which need the machine's fabric stack, are left out), pmix/ (PMIx's
# components), share/{openmpi,pmix} (help texts) and etc/. run points Open MPI and PMIx at
# them (OPAL_* and PMIX_* installation-directory variables), so `run mpirun -n 8 moetrain
# train ...` starts the bundled ranks on one machine.
ompi_path() { ompi_info --path "$1" --parsable 2>/dev/null | sed -n "s/^path:$1://p" | head -1; }
if [[ " ${!seen[*]} " == *" libmpi.so."* ]] && command -v ompi_info >/dev/null 2>&1; then
  ompi_bin=$(ompi_path bindir)
  ompi_mca=$(ompi_path pkglibdir)
  pmix_ext=$(ls "$ompi_mca"/mca_pmix_ext*.so 2>/dev/null | head -1 || true)
  pmix_lib=""
  [ -n "$pmix_ext" ] && pmix_lib=$(ldd "$pmix_ext" | awk '$1 ~ /^libpmix\.so/ {print $3}')
  mkdir -p "$OUT/openmpi/mca" "$OUT/openmpi/pmix" "$OUT/openmpi/share" "$OUT/openmpi/etc"
  for b in orterun:mpirun orted:orted; do
    cp -L "$ompi_bin/${b%:*}" "$OUT/bin/${b#*:}"
    echo "bin/${b#*:}" >>"$OUT/MANIFEST"
    add_libs "$OUT/bin/${b#*:}"
  done
  if [ -n "$pmix_lib" ]; then
    add_libs "$pmix_ext"
    pmix_dir=$(dirname "$(readlink -f "$pmix_lib")")
    for c in "$pmix_dir"/pmix/*.so; do
      [ -f "$c" ] || continue
      cp -L "$c" "$OUT/openmpi/pmix/"
      echo "openmpi/pmix/$(basename "$c")" >>"$OUT/MANIFEST"
      add_libs "$c"
    done
    for d in "$pmix_dir/../share/pmix" "$pmix_dir/../../share/pmix"; do
      [ -d "$d" ] && { cp -r "$d" "$OUT/openmpi/share/pmix"; break; }
    done
  fi
  cp -r "$(ompi_path pkgdatadir)" "$OUT/openmpi/share/openmpi"
  cp "$(ompi_path sysconfdir)/openmpi-mca-params.conf" "$OUT/openmpi/etc/" 2>/dev/null || true
  skipped=0
  for c in "$ompi_mca"/*.so; do
    ok=1
    while read -r name arrow path _; do
      [ "$arrow" = "=>" ] || continue
      [[ "$name" =~ $SYSTEM_RE || -n "${seen[$name]:-}" ]] || { ok=0; break; }
    done < <(ldd "$c")
    if [ $ok = 1 ]; then
      cp -L "$c" "$OUT/openmpi/mca/"
      echo "openmpi/mca/$(basename "$c")" >>"$OUT/MANIFEST"
    else
      skipped=$((skipped + 1))
    fi
  done
  echo "bundle.sh: Open MPI: mpirun, orted, $(ls "$OUT/openmpi/mca" | wc -l) MCA components ($skipped left out: they need the machine's fabric libraries)"
elif [[ " ${!seen[*]} " == *" libmpi.so."* ]]; then
  echo "bundle.sh: no ompi_info here: the bundle carries libmpi but no MPI runtime (mpirun)" >&2
fi
cp "$ROOT/tests/gpu/check.sh" "$OUT/check.sh"
# The configs the GPU model test and the step benchmark read (configs/default.yaml, ...),
# the GPU training script, and the prepared Brown corpus it trains on, when there is one.
cp -r "$ROOT/configs" "$OUT/configs"
cp "$ROOT/tests/gpu/train_gpu.sh" "$OUT/train_gpu.sh"
cp "$ROOT/tests/gpu/train_multi_gpu.sh" "$OUT/train_multi_gpu.sh"
if [ -f "$ROOT/data/cache/brown-train.idx" ]; then
  mkdir -p "$OUT/data/cache"
  cp "$ROOT"/data/cache/brown-{train,val}.{bin,idx} "$ROOT"/data/cache/brown.{model,json} \
    "$OUT/data/cache/"
fi

# Fonts for `moetrain report --png` (cairo asks fontconfig for "sans-serif", regular and bold).
font_files=()
for pattern in sans-serif sans-serif:bold; do
  f=$(fc-match -f '%{file}' "$pattern" 2>/dev/null || true)
  [ -f "$f" ] && font_files+=("$f")
done
if [ ${#font_files[@]} -eq 0 ]; then
  for f in /usr/share/fonts/truetype/dejavu/DejaVuSans.ttf \
    /usr/share/fonts/truetype/dejavu/DejaVuSans-Bold.ttf; do
    [ -f "$f" ] && font_files+=("$f")
  done
fi
mkdir -p "$OUT/share/fonts"
if [ ${#font_files[@]} -gt 0 ]; then
  cp -L "${font_files[@]}" "$OUT/share/fonts/"
  [ -f /usr/share/doc/fonts-dejavu-core/copyright ] &&
    cp /usr/share/doc/fonts-dejavu-core/copyright "$OUT/share/fonts/COPYRIGHT"
else
  echo "bundle.sh: no sans-serif font found (fonts-dejavu-core): report PNGs will use cairo's toy font" >&2
fi
cat >"$OUT/share/fonts/fonts.conf" <<'CONF'
<?xml version="1.0"?>
<!DOCTYPE fontconfig SYSTEM "urn:fontconfig:fonts.dtd">
<!-- The bundle's fonts only (launch/bundle.sh); run sets FONTCONFIG_FILE to this file. -->
<fontconfig>
  <dir prefix="relative">.</dir>
  <cachedir prefix="xdg">fontconfig</cachedir>
</fontconfig>
CONF

# The glibc the bundle needs: the newest GLIBC_x.y symbol version of any bundled file (the
# Debian 12 libstdc++ needs 2.36, so Ubuntu 22.04's 2.35 is too old), and the dynamic loader
# that reports the machine's version.
glibc_min=$(for f in "$OUT"/bin/* "$OUT"/lib/* "$OUT"/openmpi/*/*.so; do objdump -T "$f" 2>/dev/null; done |
  grep -o 'GLIBC_[0-9][0-9.]*' | sed 's/GLIBC_//' | sort -t. -k1,1n -k2,2n -k3,3n -u | tail -1 || true)
interp=$(readelf -l "$OUT/bin/moetrain" 2>/dev/null |
  sed -n 's/.*Requesting program interpreter: \(.*\)]$/\1/p' || true)
if [ -n "$glibc_min" ] && [ -n "$interp" ]; then
  echo "$glibc_min $interp" >"$OUT/GLIBC_MIN"
else
  echo "bundle.sh: objdump/readelf missing: the bundle records no glibc requirement" >&2
fi

cat >"$OUT/run" <<'RUN'
#!/usr/bin/env bash
# run: start a bundled binary with the bundle's libraries, then the CUDA libraries of the
# machine (Python wheels: site-packages/nvidia/*/lib; /usr/local/cuda; /usr/local/nvidia).
#   run BINARY [ARGS...]        run bin/BINARY
#   run --print-library-path    print the LD_LIBRARY_PATH it would use
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
paths="$here/lib"
py=${MOETRAIN_PYTHON:-python3}
if command -v "$py" >/dev/null 2>&1; then
  # CUDA 12 wheels install nvidia/<lib>/lib, CUDA 13 wheels nvidia/cu13/lib: take both.
  wheel_dirs=$("$py" -c '
import glob, os
try:
    import nvidia
except ImportError:
    raise SystemExit(0)
for base in list(nvidia.__path__):
    for d in sorted(set(glob.glob(os.path.join(base, "*", "lib")) + glob.glob(os.path.join(base, "*", "*", "lib")))):
        print(d)
' 2>/dev/null || true)
  for d in $wheel_dirs; do paths="$paths:$d"; done
fi
for d in /usr/local/cuda/lib64 /usr/local/cuda/lib /usr/local/nvidia/lib64 /usr/local/nvidia/lib; do
  if [ -d "$d" ]; then paths="$paths:$d"; fi
done
export LD_LIBRARY_PATH="$paths${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
# Open MPI and PMIx: the bundled installation (mpirun, orted, components, help texts); bin/
# first on PATH so that `run mpirun -n N moetrain ...` starts the bundled moetrain. Ranks on
# this machine only need no ssh: without ssh or rsh, mpirun starts them itself.
if [ -d "$here/openmpi" ]; then
  export OPAL_BINDIR=$here/bin OPAL_PKGLIBDIR=$here/openmpi/mca \
    OPAL_PKGDATADIR=$here/openmpi/share/openmpi OPAL_SYSCONFDIR=$here/openmpi/etc \
    PMIX_PKGLIBDIR=$here/openmpi/pmix PMIX_PKGDATADIR=$here/openmpi/share/pmix
  if [ -z "${OMPI_MCA_plm:-}" ] && ! command -v ssh >/dev/null 2>&1 &&
    ! command -v rsh >/dev/null 2>&1; then
    export OMPI_MCA_plm=isolated
  fi
  export PATH="$here/bin:$PATH"
fi
# `moetrain report --png`: the bundle's fonts, whatever fontconfig setup the machine has.
export FONTCONFIG_FILE=${FONTCONFIG_FILE:-$here/share/fonts/fonts.conf}
# glibc: the bundled files need GLIBC_MIN's version; the dynamic loader says the machine's
# ("ld.so (... GLIBC 2.35 ...) stable release version 2.35.").
if [ -f "$here/GLIBC_MIN" ]; then
  read -r need interp <"$here/GLIBC_MIN"
  if [[ "$need" =~ ^([0-9]+)\.([0-9]+) ]] && need_n=$((BASH_REMATCH[1] * 1000 + BASH_REMATCH[2])) &&
    [[ "$("$interp" --version 2>/dev/null)" =~ version\ ([0-9]+)\.([0-9]+) ]]; then
    have="${BASH_REMATCH[1]}.${BASH_REMATCH[2]}"
    if ((BASH_REMATCH[1] * 1000 + BASH_REMATCH[2] < need_n)); then
      echo "run: this bundle needs glibc >= $need (it was built on a newer distribution); this machine has glibc $have" >&2
      exit 1
    fi
  fi
fi
if [ "${1:-}" = "--print-library-path" ]; then
  echo "$LD_LIBRARY_PATH"
  exit 0
fi
if [ $# -eq 0 ] || [ ! -x "$here/bin/$1" ]; then
  echo "usage: run BINARY [ARGS...]; BINARY one of: $(ls "$here/bin" | tr '\n' ' ')" >&2
  exit 2
fi
bin=$1
shift
exec "$here/bin/$bin" "$@"
RUN
chmod +x "$OUT/run" "$OUT/check.sh"
echo "bundle.sh: $OUT ($(grep -c '^bin/' "$OUT/MANIFEST") binaries, $(grep -c '^lib/' "$OUT/MANIFEST") libraries, $(du -sh "$OUT" | cut -f1))"

# The folder is larger than a GPU session may carry (OpenBLAS and ICU's data alone are 70 MB);
# the xz archive is about a quarter of it. Unpack with `tar xJf`, or Python's tarfile where
# the GPU machine has no xz.
if [ "${MOETRAIN_BUNDLE_ARCHIVE:-0}" = 1 ]; then
  tar -C "$(dirname "$OUT")" -cf - "$(basename "$OUT")" |
    xz -T0 "-${MOETRAIN_BUNDLE_XZ_LEVEL:-6}" >"$OUT.tar.xz"
  echo "bundle.sh: $OUT.tar.xz ($(du -h "$OUT.tar.xz" | cut -f1))"
fi
