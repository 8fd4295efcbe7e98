"""DeepseekV3 config (Hugging Face config.json keys) and parameter naming for the PyTorch
reference: which tensors exist, with which shapes, and how they are drawn or loaded.

Names and shapes follow reference/ecosystem.md section 1.2. Re-exported by deepseek_v3_ref.
"""

import torch

import safetensors_io

_REQUIRED = [
    "vocab_size", "hidden_size", "intermediate_size", "moe_intermediate_size",
    "num_hidden_layers", "num_attention_heads", "n_routed_experts", "n_shared_experts",
    "num_experts_per_tok", "n_group", "topk_group", "first_k_dense_replace", "q_lora_rank",
    "kv_lora_rank", "qk_nope_head_dim", "qk_rope_head_dim", "v_head_dim", "rope_theta",
    "rms_norm_eps", "routed_scaling_factor", "norm_topk_prob",
]


class ConfigError(ValueError):
    pass


class ModelConfig:
    """The Hugging Face DeepseekV3 config.json keys this model needs (same names)."""

    def __init__(self, d, source="config"):
        missing = [k for k in _REQUIRED if k not in d]
        if missing:
            raise ConfigError(f"{source}: missing key(s) {missing}")
        for k in _REQUIRED:
            setattr(self, k, d[k])
        self.q_lora_rank = d["q_lora_rank"] or 0  # null / 0: plain q_proj
        self.num_nextn_predict_layers = d.get("num_nextn_predict_layers") or 0
        self.moe_layer_freq = d.get("moe_layer_freq") or 1
        self.rope_scaling = d.get("rope_scaling")
        self.source = source
        E, G = self.n_routed_experts, self.n_group
        if E <= 0 or G <= 0 or E % G:
            raise ConfigError(f"{source}: n_routed_experts ({E}) must be a positive multiple "
                              f"of n_group ({G})")
        if not 1 <= self.topk_group <= G:
            raise ConfigError(f"{source}: topk_group ({self.topk_group}) must be in [1, {G}]")
        if not 1 <= self.num_experts_per_tok <= self.topk_group * (E // G):
            raise ConfigError(f"{source}: num_experts_per_tok ({self.num_experts_per_tok}) "
                              "exceeds the experts in the kept groups")
        if self.qk_rope_head_dim % 2:
            raise ConfigError(f"{source}: qk_rope_head_dim must be even")
        if self.rope_scaling is not None:
            kind = self.rope_scaling.get("type", self.rope_scaling.get("rope_type"))
            if kind != "yarn" or "factor" not in self.rope_scaling:
                raise ConfigError(f"{source}: rope_scaling must be null or a yarn dict with "
                                  f"'factor', got {self.rope_scaling!r}")

    @classmethod
    def from_dict(cls, d, source="config"):
        return cls(d, source)

    @property
    def num_layers_total(self):  # main layers + MTP modules
        return self.num_hidden_layers + self.num_nextn_predict_layers

    def is_moe_layer(self, i):
        return i >= self.first_k_dense_replace and i % self.moe_layer_freq == 0


class Objective:
    def __init__(self, mtp_lambda, balance_alpha):
        self.mtp_lambda = float(mtp_lambda)
        self.balance_alpha = float(balance_alpha)

    @classmethod
    def from_dict(cls, d, source="objective"):
        try:
            return cls(d["mtp_lambda"], d["balance_alpha"])
        except KeyError as e:
            raise ConfigError(f"{source}: missing key {e}")


# ----------------------------------------------------------------------------- parameters

def param_shapes(cfg):
    """Ordered {name: shape} of every tensor, biases included, MTP copies excluded."""
    H, N = cfg.hidden_size, cfg.num_attention_heads
    dn, dr, dv = cfg.qk_nope_head_dim, cfg.qk_rope_head_dim, cfg.v_head_dim
    shapes = {"model.embed_tokens.weight": [cfg.vocab_size, H]}
    for i in range(cfg.num_layers_total):
        p = f"model.layers.{i}."
        if i >= cfg.num_hidden_layers:
            shapes.update({p + "enorm.weight": [H], p + "hnorm.weight": [H],
                           p + "eh_proj.weight": [H, 2 * H]})
        shapes[p + "input_layernorm.weight"] = [H]
        a = p + "self_attn."
        if cfg.q_lora_rank:
            shapes.update({a + "q_a_proj.weight": [cfg.q_lora_rank, H],
                           a + "q_a_layernorm.weight": [cfg.q_lora_rank],
                           a + "q_b_proj.weight": [N * (dn + dr), cfg.q_lora_rank]})
        else:
            shapes[a + "q_proj.weight"] = [N * (dn + dr), H]
        shapes.update({a + "kv_a_proj_with_mqa.weight": [cfg.kv_lora_rank + dr, H],
                       a + "kv_a_layernorm.weight": [cfg.kv_lora_rank],
                       a + "kv_b_proj.weight": [N * (dn + dv), cfg.kv_lora_rank],
                       a + "o_proj.weight": [H, N * dv],
                       p + "post_attention_layernorm.weight": [H]})
        m = p + "mlp."
        if cfg.is_moe_layer(i):
            shapes[m + "gate.weight"] = [cfg.n_routed_experts, H]
            shapes[m + "gate.e_score_correction_bias"] = [cfg.n_routed_experts]
            experts = [f"experts.{e}." for e in range(cfg.n_routed_experts)]
            widths = [cfg.moe_intermediate_size] * len(experts)
            if cfg.n_shared_experts:
                experts.append("shared_experts.")
                widths.append(cfg.n_shared_experts * cfg.moe_intermediate_size)
        else:
            experts, widths = [""], [cfg.intermediate_size]
        for e, w in zip(experts, widths):
            shapes.update({m + e + "gate_proj.weight": [w, H], m + e + "up_proj.weight": [w, H],
                           m + e + "down_proj.weight": [H, w]})
        if i >= cfg.num_hidden_layers:
            shapes[p + "shared_head.norm.weight"] = [H]
    shapes["model.norm.weight"] = [H]
    shapes["lm_head.weight"] = [cfg.vocab_size, H]
    return shapes


def is_bias(name):
    return name.endswith("e_score_correction_bias")


def mtp_copy_names(cfg):
    """The MTP copies of the shared embedding/head: accepted in files, never used."""
    names = set()
    for k in range(cfg.num_nextn_predict_layers):
        p = f"model.layers.{cfg.num_hidden_layers + k}."
        names.update({p + "embed_tokens.weight", p + "shared_head.head.weight"})
    return names


def init_params(cfg, seed, dtype=torch.float64, std=0.02, bias_std=0.01):
    """Random parameters: Linear/embedding N(0, std), norms 1 + N(0, std), biases N(0, bias_std).

    Returns (params: {name: leaf tensor, requires_grad}, biases: {name: tensor}).
    """
    g = torch.Generator().manual_seed(seed)
    params, biases = {}, {}
    for name, shape in param_shapes(cfg).items():
        if is_bias(name):
            b = torch.randn(shape, generator=g, dtype=torch.float64) * bias_std
            biases[name] = b.to(dtype)
            continue
        t = torch.randn(shape, generator=g, dtype=torch.float64) * std
        if name.endswith("norm.weight"):
            t += 1.0
        params[name] = t.to(dtype).requires_grad_(True)
    return params, biases


def load_params(cfg, path, dtype=torch.float64):
    """Reads model.safetensors; checks names and shapes. Returns (params, biases)."""
    tensors = safetensors_io.read(path)
    shapes = param_shapes(cfg)
    missing = [n for n in shapes if n not in tensors]
    extra = [n for n in tensors if n not in shapes and n not in mtp_copy_names(cfg)]
    if missing or extra:
        raise ConfigError(f"{path}: tensors do not match the config: missing {missing[:10]}"
                          f"{'...' if len(missing) > 10 else ''}, unexpected {extra[:10]}")
    params, biases = {}, {}
    for name, shape in shapes.items():
        t = tensors[name]
        if list(t.shape) != shape:
            raise ConfigError(f"{path}: tensor {name!r} has shape {list(t.shape)}, "
                              f"expected {shape}")
        if is_bias(name):
            biases[name] = t.to(dtype)
        else:
            params[name] = t.to(dtype).requires_grad_(True)
    return params, biases
