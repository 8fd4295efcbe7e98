"""The DeepseekV3 model and moetrain objective for GPU training in PyTorch eager (BF16).

The same model and loss as the float64 parity reference tests/pytorch/deepseek_v3_ref.py
(same parameter names, same math), rewritten only where that reference is made for exact
CPU parity rather than speed on a device:
  * tensors it creates (causal mask, MTP inputs, RoPE tables) are made on the input's device;
  * attention goes through torch's fused scaled_dot_product_attention where it exists
    (torch >= 2.1; flash / memory-efficient / cuDNN kernels), else the reference's matmuls;
  * routing does no host synchronisation for decision margins (the reference measures them
    for parity; a benchmark does not need them): the one host sync per MoE layer left is the
    per-expert token count, which any eager per-expert loop needs (Hugging Face's does too);
  * the router (gate GEMM, sigmoid, top-k) runs in fp32 outside autocast, as DeepSeek-V3
    keeps it, so BF16 autocast does not change which experts are chosen.
Everything else (RMSNorm, RoPE, SwiGLU, the balance loss and expert loads, parameter names
and shapes) is imported from the reference, and tests/pytorch/gpu_bench_test.py checks in
float64 that forward() here gives the reference's losses.
"""

import math
import os
import sys

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "tests",
                                "pytorch"))
import deepseek_v3_ref as ref  # noqa: E402

# The fused attention with an explicit `scale` (MLA's softmax scale is not 1/sqrt(q/k dim)
# once YaRN applies): torch >= 2.1. Debian's 1.13 (CI) takes the explicit path.
_HAS_SDPA = tuple(int(v) for v in torch.__version__.split(".")[:2]) >= (2, 1)


def _fp32_or_wider(t):
    """fp32 for half-precision tensors; float64 stays float64 (the parity test's dtype)."""
    return t if t.dtype == torch.float64 else t.float()


def _autocast_dtype(device_type):
    """The autocast dtype in force for `device_type`, or None when autocast is off."""
    if hasattr(torch, "get_autocast_dtype"):  # torch >= 2.4 (the older calls are deprecated)
        on = torch.is_autocast_enabled(device_type)
        return torch.get_autocast_dtype(device_type) if on else None
    if device_type == "cuda":
        return torch.get_autocast_gpu_dtype() if torch.is_autocast_enabled() else None
    return torch.get_autocast_cpu_dtype() if torch.is_autocast_cpu_enabled() else None


def attention(cfg, p, a, x, cos, sin):
    """MLA, as ref.attention. x [B, S, hidden] -> [B, S, hidden]."""
    B, S, _ = x.shape
    N, dn, dr, dv = (cfg.num_attention_heads, cfg.qk_nope_head_dim, cfg.qk_rope_head_dim,
                     cfg.v_head_dim)
    if cfg.q_lora_rank:
        q = F.linear(ref.rms_norm(F.linear(x, p[a + "q_a_proj.weight"]),
                                  p[a + "q_a_layernorm.weight"], ref.QK_NORM_EPS),
                     p[a + "q_b_proj.weight"])
    else:
        q = F.linear(x, p[a + "q_proj.weight"])
    q = q.view(B, S, N, dn + dr)
    ckv = F.linear(x, p[a + "kv_a_proj_with_mqa.weight"])
    latent, k_rot = ckv[..., :cfg.kv_lora_rank], ckv[..., cfg.kv_lora_rank:]
    kv = F.linear(ref.rms_norm(latent, p[a + "kv_a_layernorm.weight"], ref.QK_NORM_EPS),
                  p[a + "kv_b_proj.weight"]).view(B, S, N, dn + dv)
    q_rot = ref.apply_rope(q[..., dn:], cos, sin)
    k_rot = ref.apply_rope(k_rot.unsqueeze(2), cos, sin).expand(B, S, N, dr)
    # Under autocast the pieces can differ in dtype (norm output fp32, GEMM output bf16).
    dt = kv.dtype
    qh = torch.cat([q[..., :dn].to(dt), q_rot.to(dt)], -1).transpose(1, 2)  # [B, N, S, dn+dr]
    kh = torch.cat([kv[..., :dn], k_rot.to(dt)], -1).transpose(1, 2)
    vh = kv[..., dn:].transpose(1, 2)
    scale = ref.softmax_scale(cfg)
    if _HAS_SDPA and x.device.type != "cpu":
        o = F.scaled_dot_product_attention(qh, kh, vh, is_causal=True, scale=scale)
    else:  # torch < 2.1 (Debian's 1.13 in CI) or CPU: the reference's explicit softmax
        scores = torch.matmul(qh, kh.transpose(-1, -2)) * scale
        causal = torch.ones(S, S, dtype=torch.bool, device=x.device).triu(1)
        probs = torch.softmax(scores.masked_fill(causal, float("-inf")), dim=-1)
        o = torch.matmul(probs.to(vh.dtype), vh)
    return F.linear(o.transpose(1, 2).reshape(B, S, N * dv), p[a + "o_proj.weight"])


def route(cfg, scores, bias):
    """noaux_tc selection as ref.route, without its margins: idx [T, K] on scores + bias."""
    T, E = scores.shape
    G, K, KG = cfg.n_group, cfg.num_experts_per_tok, cfg.topk_group
    c = scores.detach() + bias
    gscore = c.view(T, G, E // G).topk(min(2, E // G), dim=-1).values.sum(-1)  # [T, G]
    keep = torch.zeros_like(gscore, dtype=torch.bool)
    keep.scatter_(1, gscore.topk(KG, dim=-1).indices, True)
    masked = c.masked_fill(~keep.repeat_interleave(E // G, dim=1), float("-inf"))
    return masked.topk(K, dim=-1).indices


def moe(cfg, p, m, bias, x):
    """DeepSeekMoE, as ref.moe. x [T, hidden] -> (y [T, hidden], s [T, E] fp32, idx [T, K])."""
    with torch.autocast(device_type=x.device.type, enabled=False):
        s = torch.sigmoid(F.linear(_fp32_or_wider(x), _fp32_or_wider(p[m + "gate.weight"])))
        idx = route(cfg, s, bias.to(s.dtype))
        w = s.gather(1, idx)
        if cfg.norm_topk_prob:
            w = w / (w.sum(-1, keepdim=True) + 1e-20)
        w = w * cfg.routed_scaling_factor
    flat = idx.reshape(-1)
    order = flat.argsort()
    tok = order // idx.shape[1]
    counts = torch.bincount(flat, minlength=cfg.n_routed_experts).tolist()  # the host sync
    # Under autocast every expert GEMM casts its input to BF16 anyway: cast once before the
    # gather, so the K copies of each token move (and are saved) in BF16, not fp32.
    dt = _autocast_dtype(x.device.type)
    if dt is not None:
        x = x.to(dt)
    xs = x[tok].split(counts)
    outs = [ref.swiglu(p, f"{m}experts.{e}.", xs[e]) for e in range(len(counts)) if counts[e]]
    routed = torch.cat(outs)
    routed = routed * w.reshape(-1)[order].unsqueeze(-1).to(routed.dtype)
    y = torch.zeros(x.shape, dtype=routed.dtype, device=x.device).index_add(0, tok, routed)
    if cfg.n_shared_experts:
        y = y + ref.swiglu(p, m + "shared_experts.", x)
    return y, s, idx


def decoder_layer(cfg, p, biases, i, h, cos, sin):
    """One layer, as ref.decoder_layer. h [B, S, hidden] -> (h', (s, idx) or None)."""
    pre = f"model.layers.{i}."
    eps = cfg.rms_norm_eps
    x = ref.rms_norm(h, p[pre + "input_layernorm.weight"], eps)
    h = h + attention(cfg, p, pre + "self_attn.", x, cos, sin)
    x = ref.rms_norm(h, p[pre + "post_attention_layernorm.weight"], eps)
    if not cfg.is_moe_layer(i):
        return h + ref.swiglu(p, pre + "mlp.", x), None
    B, S, H = x.shape
    y, s, idx = moe(cfg, p, pre + "mlp.", biases[pre + "mlp.gate.e_score_correction_bias"],
                    x.reshape(B * S, H))
    return h + y.view(B, S, H), (s.view(B, S, -1), idx.view(B, S, -1))


def forward(cfg, params, biases, tokens, objective):
    """As ref.forward: tokens int64 [B, S+1] on the model's device. Returns dict: loss,
    main_loss, mtp_loss (list), balance_loss, expert_load (list per MoE layer, main then
    MTP, of per-expert counts as a device tensor)."""
    p = params
    B, S1 = tokens.shape
    S, D, L = S1 - 1, cfg.num_nextn_predict_layers, cfg.num_hidden_layers
    if S <= D:
        raise ref.ConfigError(f"sequence length {S} must exceed num_nextn_predict_layers {D}")
    emb, head = p["model.embed_tokens.weight"], p["lm_head.weight"]
    cos, sin = (t.to(tokens.device) for t in ref.rope_tables(cfg, S, emb.dtype))
    V, eps = cfg.vocab_size, cfg.rms_norm_eps
    routes = []  # (s, idx, valid positions)
    h = F.embedding(tokens[:, :S], emb)
    for i in range(L):
        h, r = decoder_layer(cfg, p, biases, i, h, cos, sin)
        if r is not None:
            routes.append((*r, S))
    h = ref.rms_norm(h, p["model.norm.weight"], eps)
    main_loss = F.cross_entropy(_fp32_or_wider(F.linear(h, head).reshape(-1, V)),
                                tokens[:, 1:].reshape(-1))
    mtp_losses = []
    for k in range(1, D + 1):
        pre = f"model.layers.{L + k - 1}."
        t_in = torch.zeros(B, S, dtype=tokens.dtype, device=tokens.device)
        t_in[:, :S1 - k] = tokens[:, k:]  # the fixed-length MTP convention of the reference
        x = torch.cat([ref.rms_norm(F.embedding(t_in, emb), p[pre + "enorm.weight"], eps),
                       ref.rms_norm(h, p[pre + "hnorm.weight"], eps)], dim=-1)
        h, r = decoder_layer(cfg, p, biases, L + k - 1, F.linear(x, p[pre + "eh_proj.weight"]),
                             cos, sin)
        if r is not None:
            routes.append((*r, S - k))
        valid = S - k
        logits = F.linear(ref.rms_norm(h[:, :valid], p[pre + "shared_head.norm.weight"], eps), head)
        mtp_losses.append(F.cross_entropy(_fp32_or_wider(logits.reshape(-1, V)),
                                          tokens[:, k + 1:].reshape(-1)))
    balance = main_loss.new_zeros(())
    loads = []
    for s, idx, T in routes:
        bal, load = balance_and_load(cfg, s, idx, T)
        balance = balance + bal
        loads.append(load)
    loss = main_loss + objective.balance_alpha * balance
    if D:
        loss = loss + (objective.mtp_lambda / D) * torch.stack(mtp_losses).sum()
    return {"loss": loss, "main_loss": main_loss, "mtp_loss": mtp_losses,
            "balance_loss": balance, "expert_load": loads}


def balance_and_load(cfg, s, idx, T):
    """ref._balance_and_load's balance loss, with the loads kept on the device (a [E]
    tensor) instead of a host list, so the step has no extra host sync."""
    E, K = cfg.n_routed_experts, cfg.num_experts_per_tok
    s, idx = s[:, :T], idx[:, :T]
    counts = F.one_hot(idx, E).sum(dim=(1, 2))  # [B, E]
    f = counts.to(s.dtype) * (E / (K * T))
    P = (s / s.sum(-1, keepdim=True)).mean(1)
    return (f * P).sum(-1).mean(), counts.sum(0)


def init_params(cfg, seed, device, dtype=torch.float32):
    """Random parameters on `device`, drawn there (a 2.5B model drawn on the host in float64,
    as ref.init_params does, would take minutes): Linear/embedding N(0, initializer_range),
    norms 1, router biases 0. Returns (params {name: leaf}, biases {name: tensor})."""
    g = torch.Generator(device=device).manual_seed(seed)
    std = getattr(cfg, "initializer_range", 0.02)
    params, biases = {}, {}
    for name, shape in ref.param_shapes(cfg).items():
        if ref.is_bias(name):
            biases[name] = torch.zeros(shape, dtype=torch.float32, device=device)
        elif name.endswith("norm.weight"):
            params[name] = torch.ones(shape, dtype=dtype, device=device).requires_grad_(True)
        else:
            t = torch.empty(shape, dtype=dtype, device=device).normal_(0.0, std, generator=g)
            params[name] = t.requires_grad_(True)
    return params, biases


def update_biases(biases, loads, gamma):
    """Aux-loss-free balancing after the optimizer step: b_i += gamma * sign(mean - load_i).
    `loads` are in forward's order (main MoE layers, then MTP), which is layer-index order."""
    names = sorted(biases, key=lambda n: int(n.split(".")[2]))
    with torch.no_grad():
        for name, load in zip(names, loads):
            load = load.to(biases[name].dtype)
            biases[name] += gamma * torch.sign(load.mean() - load)


def count_params(cfg):
    """(total, activated) parameter counts, MTP module included, router biases excluded.
    Activated: everything except the routed experts a token does not reach (all but top-k)."""
    total = routed = 0
    for name, shape in ref.param_shapes(cfg).items():
        if ref.is_bias(name):
            continue
        n = math.prod(shape)
        total += n
        if ".experts." in name:
            routed += n
    # Routed experts all have the same shape, so a token reaches K/E of their parameters.
    return total, total - routed + routed * cfg.num_experts_per_tok // cfg.n_routed_experts
