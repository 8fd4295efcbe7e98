# tests/parallel/tiny_moe.sh: sourced by the multi-rank scripts (the layout tests, the
# comm-stats test, bench/parallel_bench.sh) so they train the same small DeepseekV3 on the
# same kind of data.
#
#   tiny_data BIN DIR [DOCUMENTS] [SEED]   a random corpus over a 25-word vocabulary,
#                                          prepared into DIR/tiny-{train,val} + DIR/tiny.model
#   tiny_model_yaml [WIDTH]                the `model:` section: 4 layers (1 dense), 8 routed
#                                          experts in 2 groups (top-2 within 1 group), a
#                                          shared expert, MLA with q LoRA, MTP depth 1; WIDTH
#                                          32 (default, the tests) or 128 (the benchmark)

tiny_data() {
  local bin=$1 dir=$2 docs=${3:-200} seed=${4:-1}
  /usr/bin/python3 - "$dir/corpus.txt" "$docs" "$seed" <<'PYEOF'
import random, sys
path, docs, seed = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
random.seed(seed)
w = ("the cat sat on a mat and dog ran far away from home while birds sang in trees quiet "
     "river flows under old stone bridge").split()
with open(path, "w") as f:
    f.write("\n\n".join(" ".join(random.choice(w) for _ in range(random.randint(20, 80)))
                        for _ in range(docs)))
PYEOF
  if ! "$bin" prepare --input "$dir/corpus.txt" --output "$dir/tiny" --vocab-size 300 \
      --val-fraction 0.1 --split-blank-lines --seed 3 --no-progress > "$dir/prepare.log" 2>&1; then
    echo "FAIL: moetrain prepare:"
    cat "$dir/prepare.log"
    return 1
  fi
}

tiny_model_yaml() {
  local h=${1:-32} heads lora nope rope v
  case $h in
    32) heads=2 lora=16 nope=8 rope=4 v=8 ;;
    128) heads=4 lora=32 nope=16 rope=8 v=16 ;;
    *) echo "tiny_model_yaml: WIDTH is 32 or 128, not $h" >&2; return 1 ;;
  esac
  cat <<YAML
model:
  vocab_size: 320
  hidden_size: $h
  intermediate_size: $((2 * h))
  moe_intermediate_size: $((h / 2))
  num_hidden_layers: 4
  num_attention_heads: $heads
  num_key_value_heads: $heads
  n_routed_experts: 8
  n_shared_experts: 1
  num_experts_per_tok: 2
  n_group: 2
  topk_group: 1
  first_k_dense_replace: 1
  q_lora_rank: $lora
  kv_lora_rank: $lora
  qk_nope_head_dim: $nope
  qk_rope_head_dim: $rope
  v_head_dim: $v
  num_nextn_predict_layers: 1
  max_position_embeddings: 64
  rope_scaling: null
  bos_token_id: 1
  eos_token_id: 2
YAML
}
