"""Independent PyTorch reference of the DeepseekV3 architecture and moetrain's objective.

Written from reference/ecosystem.md section 1 and design.md ("Training objective"), not from
the C++ code, so that check_parity.py can hold the C++ trainer's losses and gradients against
it. Functional style: parameters live in a dict {HF tensor name: tensor}, so the same code
serves float64 parity checks (autograd gives the gradients), finite differences, and the
float32 training benchmark (bench/pytorch_train.py).

Objective (per batch of B sequences of S+1 tokens):
  loss = main CE + (mtp_lambda / D) * sum_k mtp CE_k + balance_alpha * balance_loss
with the MTP fixed-length convention and the sequence-wise balance loss of DeepSeek-V3.

Library use:
  cfg = ModelConfig.from_dict(json.load(open("config.json")))
  params, biases = init_params(cfg, seed=0)            # or load_params(path)
  out = forward(cfg, params, biases, tokens, Objective(0.3, 1e-4))
  out["loss"].backward()
  make_random_dir(D, config_dict, objective_dict, B, S, seed)  # a parity exchange directory
CLI: /usr/bin/python3 deepseek_v3_ref.py D --config config.json [--batch 2 --seq 8 --seed 0]
"""

import json
import math
import os

import torch
import torch.nn.functional as F

import safetensors_io
from deepseek_v3_params import (ConfigError, ModelConfig, Objective, init_params, is_bias,
                                load_params, mtp_copy_names, param_shapes)

__all__ = [  # the library API (config and parameters come from deepseek_v3_params)
    "ConfigError", "ModelConfig", "Objective", "param_shapes", "is_bias", "mtp_copy_names",
    "init_params", "load_params", "forward", "read_tokens", "make_random_dir",
    "rms_norm", "rope_inv_freq", "rope_tables", "softmax_scale", "apply_rope", "attention",
    "swiglu", "route", "moe", "decoder_layer",
]

QK_NORM_EPS = 1e-6  # q_a_layernorm / kv_a_layernorm are built without eps in HF

# ----------------------------------------------------------------------------- building blocks

def rms_norm(x, w, eps):
    return w * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps))


def _yarn_mscale(scale, m):
    return 1.0 if scale <= 1 else 0.1 * m * math.log(scale) + 1.0


def rope_inv_freq(cfg):
    """inv_freq [dr/2] (YaRN-corrected when rope_scaling is set) and attention_factor."""
    dim, base = cfg.qk_rope_head_dim, float(cfg.rope_theta)
    inv = [base ** (-2.0 * i / dim) for i in range(dim // 2)]
    rs = cfg.rope_scaling
    if rs is None:
        return inv, 1.0
    factor = float(rs["factor"])
    l0 = float(rs.get("original_max_position_embeddings") or 4096)
    beta_fast, beta_slow = float(rs.get("beta_fast") or 32), float(rs.get("beta_slow") or 1)

    def corr(nrot):
        return dim * math.log(l0 / (nrot * 2 * math.pi)) / (2 * math.log(base))

    low, high = max(math.floor(corr(beta_fast)), 0), min(math.ceil(corr(beta_slow)), dim - 1)
    if low == high:
        high += 0.001
    out = []
    for i, f in enumerate(inv):
        ramp = min(max((i - low) / (high - low), 0.0), 1.0)
        out.append(f / factor * ramp + f * (1.0 - ramp))
    if rs.get("attention_factor") is not None:
        att = float(rs["attention_factor"])
    elif rs.get("mscale") and rs.get("mscale_all_dim"):
        att = _yarn_mscale(factor, rs["mscale"]) / _yarn_mscale(factor, rs["mscale_all_dim"])
    else:
        att = _yarn_mscale(factor, 1.0)
    return out, att


def softmax_scale(cfg):
    scale = (cfg.qk_nope_head_dim + cfg.qk_rope_head_dim) ** -0.5
    rs = cfg.rope_scaling
    if rs is not None and rs.get("mscale_all_dim"):
        m = _yarn_mscale(float(rs["factor"]), float(rs["mscale_all_dim"]))
        scale *= m * m
    return scale


def rope_tables(cfg, seq_len, dtype):
    """cos, sin [S, dr/2], both already multiplied by the YaRN attention_factor."""
    inv, att = rope_inv_freq(cfg)
    pos = torch.arange(seq_len, dtype=torch.float64)
    ang = pos[:, None] * torch.tensor(inv, dtype=torch.float64)
    return (torch.cos(ang) * att).to(dtype), (torch.sin(ang) * att).to(dtype)


def apply_rope(x, cos, sin):
    """Rotates adjacent pairs (x[2i], x[2i+1]) by pos*inv_freq[i]. x [B, S, h, dr]."""
    xp = x.reshape(*x.shape[:-1], -1, 2)
    x0, x1 = xp[..., 0], xp[..., 1]
    c, s = cos[None, :, None, :], sin[None, :, None, :]
    return torch.stack([x0 * c - x1 * s, x0 * s + x1 * c], dim=-1).flatten(-2)


def attention(cfg, p, a, x, cos, sin):
    """MLA. x [B, S, H] -> [B, S, H]; `a` is the 'model.layers.{i}.self_attn.' prefix."""
    B, S, _ = x.shape
    N, dn, dr, dv = (cfg.num_attention_heads, cfg.qk_nope_head_dim, cfg.qk_rope_head_dim,
                     cfg.v_head_dim)
    if cfg.q_lora_rank:
        q = F.linear(rms_norm(F.linear(x, p[a + "q_a_proj.weight"]),
                              p[a + "q_a_layernorm.weight"], QK_NORM_EPS), p[a + "q_b_proj.weight"])
    else:
        q = F.linear(x, p[a + "q_proj.weight"])
    q = q.view(B, S, N, dn + dr)
    ckv = F.linear(x, p[a + "kv_a_proj_with_mqa.weight"])
    latent, k_rot = ckv[..., :cfg.kv_lora_rank], ckv[..., cfg.kv_lora_rank:]
    kv = F.linear(rms_norm(latent, p[a + "kv_a_layernorm.weight"], QK_NORM_EPS),
                  p[a + "kv_b_proj.weight"]).view(B, S, N, dn + dv)
    q_rot = apply_rope(q[..., dn:], cos, sin)
    k_rot = apply_rope(k_rot.unsqueeze(2), cos, sin).expand(B, S, N, dr)
    qh = torch.cat([q[..., :dn], q_rot], -1).transpose(1, 2)  # [B, N, S, dn+dr]
    kh = torch.cat([kv[..., :dn], k_rot], -1).transpose(1, 2)
    vh = kv[..., dn:].transpose(1, 2)  # [B, N, S, dv]
    scores = torch.matmul(qh, kh.transpose(-1, -2)) * softmax_scale(cfg)
    causal = torch.ones(S, S, dtype=torch.bool).triu(1)
    probs = torch.softmax(scores.masked_fill(causal, float("-inf")), dim=-1)
    o = torch.matmul(probs, vh).transpose(1, 2).reshape(B, S, N * dv)
    return F.linear(o, p[a + "o_proj.weight"])


def swiglu(p, m, x):
    gate = F.silu(F.linear(x, p[m + "gate_proj.weight"]))
    return F.linear(gate * F.linear(x, p[m + "up_proj.weight"]), p[m + "down_proj.weight"])


def route(cfg, scores, bias):
    """noaux_tc selection. scores s [T, E] (sigmoid), bias [E].

    Returns idx [T, K] (chosen on s + bias, detached) and the smallest decision margin
    (group-score gap or expert gap at the top-k boundary), which says how close a token was
    to choosing differently: parity with a float32 implementation needs it above ~1e-5.
    """
    T, E = scores.shape
    G, K, KG = cfg.n_group, cfg.num_experts_per_tok, cfg.topk_group
    c = scores.detach() + bias
    per_group = c.view(T, G, E // G)
    gscore = per_group.topk(min(2, E // G), dim=-1).values.sum(-1)  # [T, G]
    gsorted = gscore.sort(dim=-1, descending=True).values
    margin = (gsorted[:, KG - 1] - gsorted[:, KG]).min().item() if KG < G else math.inf
    keep = torch.zeros_like(gscore, dtype=torch.bool)
    keep.scatter_(1, gscore.topk(KG, dim=-1).indices, True)
    masked = c.masked_fill(~keep.repeat_interleave(E // G, dim=1), float("-inf"))
    top = masked.topk(min(K + 1, E), dim=-1)
    if K < E:
        gap = top.values[:, K - 1] - top.values[:, K]
        margin = min(margin, gap.min().item())
    return top.indices[:, :K], margin


def moe(cfg, p, m, bias, x):
    """x [T, H] -> (y [T, H], s [T, E], idx [T, K], margin)."""
    s = torch.sigmoid(F.linear(x, p[m + "gate.weight"]))
    idx, margin = route(cfg, s, bias)
    w = s.gather(1, idx)
    if cfg.norm_topk_prob:
        w = w / (w.sum(-1, keepdim=True) + 1e-20)
    w = w * cfg.routed_scaling_factor
    # Group the (token, slot) pairs by expert so each expert runs one GEMM on its tokens.
    flat = idx.reshape(-1)
    order = flat.argsort()
    tok = order // idx.shape[1]
    counts = torch.bincount(flat, minlength=cfg.n_routed_experts).tolist()
    xs = x[tok].split(counts)
    outs = [swiglu(p, f"{m}experts.{e}.", xs[e]) for e in range(len(counts)) if counts[e]]
    routed = torch.cat(outs) * w.reshape(-1)[order].unsqueeze(-1)
    y = torch.zeros_like(x).index_add(0, tok, routed)
    if cfg.n_shared_experts:
        y = y + swiglu(p, m + "shared_experts.", x)
    return y, s, idx, margin


def decoder_layer(cfg, p, biases, i, h, cos, sin):
    """One layer. h [B, S, H] -> (h', routing (s [B,S,E], idx [B,S,K], margin) or None)."""
    pre = f"model.layers.{i}."
    eps = cfg.rms_norm_eps
    x = rms_norm(h, p[pre + "input_layernorm.weight"], eps)
    h = h + attention(cfg, p, pre + "self_attn.", x, cos, sin)
    x = rms_norm(h, p[pre + "post_attention_layernorm.weight"], eps)
    if not cfg.is_moe_layer(i):
        return h + swiglu(p, pre + "mlp.", x), None
    B, S, H = x.shape
    y, s, idx, margin = moe(cfg, p, pre + "mlp.", biases[pre + "mlp.gate.e_score_correction_bias"],
                            x.reshape(B * S, H))
    return h + y.view(B, S, H), (s.view(B, S, -1), idx.view(B, S, -1), margin)


# ----------------------------------------------------------------------------- objective

def _balance_and_load(cfg, s, idx, T):
    """Sequence-wise balance loss (mean over sequences) and expert counts over the first T
    positions of each sequence. s [B, S, E], idx [B, S, K]."""
    E, K = cfg.n_routed_experts, cfg.num_experts_per_tok
    s, idx = s[:, :T], idx[:, :T]
    counts = F.one_hot(idx, E).sum(dim=(1, 2))  # [B, E]: each token picks distinct experts
    f = counts.to(s.dtype) * (E / (K * T))
    P = (s / s.sum(-1, keepdim=True)).mean(1)  # [B, E]
    return (f * P).sum(-1).mean(), counts.sum(0).tolist()


def forward(cfg, params, biases, tokens, objective):
    """tokens: int64 [B, S+1]. Returns dict: loss, main_loss, mtp_loss (list), balance_loss
    (tensors), expert_load (list of E-int lists: main MoE layers, then MTP), min_margin."""
    p = params
    B, S1 = tokens.shape
    S, D, L = S1 - 1, cfg.num_nextn_predict_layers, cfg.num_hidden_layers
    if S <= D:
        raise ConfigError(f"sequence length {S} must exceed num_nextn_predict_layers {D}")
    dtype = p["lm_head.weight"].dtype
    cos, sin = rope_tables(cfg, S, dtype)
    emb = p["model.embed_tokens.weight"]
    head = p["lm_head.weight"]
    V, eps = cfg.vocab_size, cfg.rms_norm_eps
    routes = []  # (s, idx, valid T)
    margin = math.inf
    h = F.embedding(tokens[:, :S], emb)
    for i in range(L):
        h, r = decoder_layer(cfg, p, biases, i, h, cos, sin)
        if r is not None:
            routes.append((r[0], r[1], S))
            margin = min(margin, r[2])
    h = rms_norm(h, p["model.norm.weight"], eps)
    main_loss = F.cross_entropy(F.linear(h, head).reshape(-1, V), tokens[:, 1:].reshape(-1))
    mtp_losses = []
    for k in range(1, D + 1):
        pre = f"model.layers.{L + k - 1}."
        t_in = torch.zeros(B, S, dtype=tokens.dtype)
        t_in[:, :S1 - k] = tokens[:, k:]  # t_k[i] = tokens[i+k] if i+k <= S, else 0
        x = torch.cat([rms_norm(F.embedding(t_in, emb), p[pre + "enorm.weight"], eps),
                       rms_norm(h, p[pre + "hnorm.weight"], eps)], dim=-1)
        h, r = decoder_layer(cfg, p, biases, L + k - 1, F.linear(x, p[pre + "eh_proj.weight"]),
                             cos, sin)
        if r is not None:
            routes.append((r[0], r[1], S - k))
            margin = min(margin, r[2])
        valid = S - k  # positions i <= S-1-k have a label tokens[i+k+1]
        logits = F.linear(rms_norm(h[:, :valid], p[pre + "shared_head.norm.weight"], eps), head)
        mtp_losses.append(F.cross_entropy(logits.reshape(-1, V), tokens[:, k + 1:].reshape(-1)))
    balance = main_loss.new_zeros(())
    loads = []
    for s, idx, T in routes:
        bal, load = _balance_and_load(cfg, s, idx, T)
        balance = balance + bal
        loads.append(load)
    loss = main_loss + objective.balance_alpha * balance
    if D:
        loss = loss + (objective.mtp_lambda / D) * torch.stack(mtp_losses).sum()
    return {"loss": loss, "main_loss": main_loss, "mtp_loss": mtp_losses,
            "balance_loss": balance, "expert_load": loads, "min_margin": margin}


# ----------------------------------------------------------------------------- exchange dirs

def read_tokens(path):
    """batch.json -> int64 [B, S+1] tensor, with one clear error for a malformed file."""
    with open(path) as f:
        batch = json.load(f)
    rows = batch.get("tokens") if isinstance(batch, dict) else None
    if (not isinstance(rows, list) or not rows
            or not all(isinstance(r, list) and len(r) == len(rows[0]) for r in rows)):
        raise ConfigError(f"{path}: expected {{\"tokens\": [[S+1 ints], ...]}} with equal lengths")
    return torch.tensor(rows, dtype=torch.int64)


def make_random_dir(D, config, objective, B, S, seed, min_margin=1e-5, max_tries=64):
    """Writes config.json, objective.json, model.safetensors (fp32) and batch.json into D.

    Weights N(0, 0.02) (norms 1 + N(0, 0.02)), router biases N(0, 0.01), tokens uniform.
    Draws are repeated (seed, seed+1000, ...) until every routing decision has a margin of at
    least `min_margin` in float64, so a float32 implementation selects the same experts.
    Returns the seed used.
    """
    cfg = ModelConfig.from_dict(config, "make_random_dir config")
    obj = Objective.from_dict(objective, "make_random_dir objective")
    os.makedirs(D, exist_ok=True)
    for attempt in range(max_tries):
        s = seed + 1000 * attempt
        params, biases = init_params(cfg, s)
        # Round to fp32 first: the files hold fp32, and margins must hold for those values.
        params = {n: t.detach().float().double() for n, t in params.items()}
        biases = {n: t.float().double() for n, t in biases.items()}
        g = torch.Generator().manual_seed(s + 1)
        tokens = torch.randint(0, cfg.vocab_size, (B, S + 1), generator=g)
        with torch.no_grad():
            out = forward(cfg, params, biases, tokens, obj)
        if out["min_margin"] >= min_margin:
            break
    else:
        raise RuntimeError(f"make_random_dir: no draw in {max_tries} tries had routing margins "
                           f">= {min_margin}; lower min_margin or change the config")
    with open(os.path.join(D, "config.json"), "w") as f:
        json.dump(config, f, indent=2)
    with open(os.path.join(D, "objective.json"), "w") as f:
        json.dump({"mtp_lambda": obj.mtp_lambda, "balance_alpha": obj.balance_alpha}, f)
    with open(os.path.join(D, "batch.json"), "w") as f:
        json.dump({"tokens": tokens.tolist()}, f)
    tensors = {n: t.float() for n, t in {**params, **biases}.items()}
    safetensors_io.write(os.path.join(D, "model.safetensors"), tensors)
    return s


def main(argv=None):
    """CLI: write a random exchange directory (for C++ tests that want one on disk)."""
    import argparse
    ap = argparse.ArgumentParser(description="Write a random parity exchange directory: "
                                 "config.json, objective.json, model.safetensors, batch.json")
    ap.add_argument("dir")
    ap.add_argument("--config", required=True, help="Hugging Face DeepseekV3 config.json")
    ap.add_argument("--mtp-lambda", type=float, default=0.3)
    ap.add_argument("--balance-alpha", type=float, default=1e-4)
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--seq", type=int, default=8)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    with open(args.config) as f:
        config = json.load(f)
    seed = make_random_dir(args.dir, config, {"mtp_lambda": args.mtp_lambda,
                                              "balance_alpha": args.balance_alpha},
                           args.batch, args.seq, args.seed)
    print(f"wrote {args.dir} (seed {seed})")


if __name__ == "__main__":
    main()
