#!/usr/bin/env bash
# tests/pytorch/parity_test.sh PARITY_DUMP: moetrain vs an independent PyTorch model.
#
# For each config (q LoRA + 4/2 expert groups + shared experts + MTP depth 2, with and
# without YaRN), the reference writes random weights and a batch, moetrain (parity_dump)
# computes the full objective and every gradient in fp32 and rewrites the weights with its
# own checkpoint writer, and check_parity.py recomputes everything in float64 from that
# file: losses, expert loads and every parameter's gradient must agree to 1e-5 relative.
set -euo pipefail
DUMP=$1
HERE=$(cd "$(dirname "$0")" && pwd)
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
base='"vocab_size": 97, "hidden_size": 32, "intermediate_size": 48, "moe_intermediate_size": 16,
  "num_hidden_layers": 3, "num_attention_heads": 4, "num_key_value_heads": 4,
  "n_routed_experts": 8, "n_shared_experts": 2, "num_experts_per_tok": 2, "n_group": 4,
  "topk_group": 2, "first_k_dense_replace": 1, "moe_layer_freq": 1, "q_lora_rank": 24,
  "kv_lora_rank": 16, "qk_nope_head_dim": 8, "qk_rope_head_dim": 8, "v_head_dim": 8,
  "num_nextn_predict_layers": 2, "rope_theta": 10000.0, "rms_norm_eps": 1e-6,
  "routed_scaling_factor": 2.5, "norm_topk_prob": true, "max_position_embeddings": 256,
  "scoring_func": "sigmoid", "topk_method": "noaux_tc", "hidden_act": "silu",
  "tie_word_embeddings": false, "bos_token_id": 1, "eos_token_id": 2'
echo "{$base, \"rope_scaling\": null}" > "$WORK/plain.json"
echo "{$base, \"rope_scaling\": {\"type\": \"yarn\", \"factor\": 4.0, \"beta_fast\": 32, \"beta_slow\": 1, \"mscale\": 1.0, \"mscale_all_dim\": 1.0, \"original_max_position_embeddings\": 8}}" > "$WORK/yarn.json"
status=0
for name in plain yarn; do
  D="$WORK/$name"
  /usr/bin/python3 "$HERE/deepseek_v3_ref.py" "$D" --config "$WORK/$name.json" --batch 3 \
    --seq 12 --seed 7 --mtp-lambda 0.3 --balance-alpha 0.01 >/dev/null
  "$DUMP" "$D"
  echo "== $name"
  /usr/bin/python3 "$HERE/check_parity.py" "$D" --rtol 1e-5 || status=1
done
exit $status
