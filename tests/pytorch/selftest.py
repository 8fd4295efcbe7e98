#!/usr/bin/python3
"""Self-consistency tests of the PyTorch reference; they need no C++ side (CTest: pytorch_selftest).

- the tricky pieces against second, independent formulations: RoPE on adjacent pairs vs
  HF's permute + rotate_half form, YaRN numbers for DeepSeek-V3, noaux_tc routing vs a
  per-token loop, the balance loss vs a per-sequence loop;
- autograd gradients vs central finite differences in float64 (two configs);
- the safetensors writer and reader (round trip, exact bytes, malformed files);
- check_parity on a make_random_dir directory: passes with the reference's own (fp32)
  results, fails when a gradient, loss, load or tensor name is wrong.
Also an example of the exchange format (see test_parity_* and write_results).
"""

import copy
import io
import json
import math
import os
import subprocess
import sys
import tempfile
import unittest

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import check_parity  # noqa: E402
import deepseek_v3_ref as ref  # noqa: E402
import safetensors_io  # noqa: E402

# Tiny config with q LoRA, 4 groups of 2 experts (2 kept), top-2, a shared expert, one
# dense layer, MTP depth 2 and YaRN with a partial ramp (low 0, high 2) and attention_factor != 1.
CONFIG_A = {
    "vocab_size": 32, "hidden_size": 16, "intermediate_size": 24, "moe_intermediate_size": 8,
    "num_hidden_layers": 2, "num_attention_heads": 2, "num_key_value_heads": 2,
    "n_routed_experts": 8, "n_shared_experts": 1, "num_experts_per_tok": 2, "n_group": 4,
    "topk_group": 2, "first_k_dense_replace": 1, "q_lora_rank": 12, "kv_lora_rank": 8,
    "qk_nope_head_dim": 8, "qk_rope_head_dim": 8, "v_head_dim": 6,
    "num_nextn_predict_layers": 2, "rope_theta": 10000.0,
    "rope_scaling": {"type": "yarn", "factor": 4.0, "beta_fast": 32, "beta_slow": 1,
                     "mscale": 1.0, "mscale_all_dim": 0.707,
                     "original_max_position_embeddings": 64},
    "rms_norm_eps": 1e-5, "routed_scaling_factor": 2.5, "norm_topk_prob": True,
    "model_type": "deepseek_v3",
}
# Plain q_proj, no rope scaling, one group, no renormalisation, no shared expert, MTP 1.
CONFIG_B = dict(CONFIG_A, q_lora_rank=None, rope_scaling=None, n_group=1, topk_group=1,
                n_routed_experts=4, num_experts_per_tok=3, n_shared_experts=0,
                norm_topk_prob=False, num_nextn_predict_layers=1, first_k_dense_replace=0,
                routed_scaling_factor=1.5)
OBJECTIVE = {"mtp_lambda": 0.3, "balance_alpha": 0.5}  # large alpha: exercise its gradient


def read_bytes(path):
    with open(path, "rb") as f:
        return f.read()


def draw(cfg, seed, B=2, S=6, min_margin=1e-5):
    """Random float64 params/biases/tokens whose routing is far from ties."""
    for attempt in range(50):
        params, biases = ref.init_params(cfg, seed + attempt)
        tokens = torch.randint(0, cfg.vocab_size, (B, S + 1),
                               generator=torch.Generator().manual_seed(seed + attempt))
        with torch.no_grad():
            out = ref.forward(cfg, params, biases, tokens, ref.Objective(0.3, 0.5))
        if out["min_margin"] >= min_margin:
            return params, biases, tokens
    raise AssertionError("no draw with routing margins")


def write_results(D, dtype=torch.float32):
    """Plays the C++ side: writes losses.json and grads.safetensors from the reference."""
    _, results, grads = check_parity.compute_reference(D)
    losses = {k: results[k] for k in ("loss", "main_loss", "mtp_loss", "balance_loss",
                                      "expert_load")}
    with open(os.path.join(D, "losses.json"), "w") as f:
        json.dump(losses, f)
    safetensors_io.write(os.path.join(D, "grads.safetensors"),
                         {n: g.to(dtype) for n, g in grads.items()})
    return losses, grads


class PiecesTest(unittest.TestCase):
    def test_rope_equals_hf_interleave(self):
        cfg = ref.ModelConfig.from_dict(CONFIG_A)
        S, dr = 5, cfg.qk_rope_head_dim
        cos, sin = ref.rope_tables(cfg, S, torch.float64)
        x = torch.randn(2, S, 3, dr, dtype=torch.float64)
        # HF apply_rotary_pos_emb_interleave: permute to [x0,x2,..,x1,x3,..], rotate_half.
        xp = x.view(2, S, 3, dr // 2, 2).transpose(-1, -2).reshape(2, S, 3, dr)
        c2 = torch.cat([cos, cos], -1)[None, :, None, :]
        s2 = torch.cat([sin, sin], -1)[None, :, None, :]
        rot = torch.cat([-xp[..., dr // 2:], xp[..., :dr // 2]], -1)
        hf = xp * c2 + rot * s2
        mine = ref.apply_rope(x, cos, sin)
        mine_p = mine.view(2, S, 3, dr // 2, 2).transpose(-1, -2).reshape(2, S, 3, dr)
        torch.testing.assert_close(mine_p, hf, rtol=0, atol=1e-14)
        # Pair i of position 3 is rotated by 3 * inv_freq[i], scaled by attention_factor.
        inv, att = ref.rope_inv_freq(cfg)
        a = 3 * inv[1]
        want = att * (x[0, 3, 0, 2] * math.cos(a) - x[0, 3, 0, 3] * math.sin(a))
        self.assertAlmostEqual(mine[0, 3, 0, 2].item(), want.item(), places=13)

    def test_yarn_deepseek_v3_numbers(self):
        cfg = ref.ModelConfig.from_dict(dict(
            CONFIG_A, qk_nope_head_dim=128, qk_rope_head_dim=64, rope_theta=10000.0,
            rope_scaling={"type": "yarn", "factor": 40, "beta_fast": 32, "beta_slow": 1,
                          "mscale": 1.0, "mscale_all_dim": 1.0,
                          "original_max_position_embeddings": 4096}))
        inv, att = ref.rope_inv_freq(cfg)
        base = [10000.0 ** (-2 * i / 64) for i in range(32)]
        self.assertEqual(att, 1.0)
        for i in range(32):  # low = 10, high = 23 (ecosystem.md 1.5)
            ramp = min(max((i - 10) / 13, 0), 1)
            self.assertAlmostEqual(inv[i] / base[i], (1 - ramp) + ramp / 40, places=14)
        self.assertAlmostEqual(ref.softmax_scale(cfg), 0.1352338, places=6)
        plain = ref.ModelConfig.from_dict(dict(CONFIG_A, qk_nope_head_dim=128,
                                               qk_rope_head_dim=64, rope_scaling=None))
        self.assertAlmostEqual(ref.softmax_scale(plain), 0.0721688, places=6)

    def test_routing_matches_per_token_loop(self):
        cfg = ref.ModelConfig.from_dict(dict(CONFIG_A, n_routed_experts=12, n_group=4,
                                             topk_group=2, num_experts_per_tok=3))
        g = torch.Generator().manual_seed(3)
        s = torch.rand(40, 12, generator=g, dtype=torch.float64)
        bias = torch.randn(12, generator=g, dtype=torch.float64)  # some c < 0: -inf masking
        idx, _ = ref.route(cfg, s, bias)
        for t in range(40):
            c = [s[t, e].item() + bias[e].item() for e in range(12)]
            groups = [sorted(c[3 * j:3 * j + 3], reverse=True) for j in range(4)]
            gs = [v[0] + v[1] for v in groups]
            kept = sorted(range(4), key=lambda j: -gs[j])[:2]
            cand = [e for e in range(12) if e // 3 in kept]
            want = sorted(sorted(cand, key=lambda e: -c[e])[:3])
            self.assertEqual(sorted(idx[t].tolist()), want, f"token {t}")

    def test_mtp_equals_truncated_sequences(self):
        # Paper eq. 21-24: module k runs on the S-k positions that have labels. Causal
        # attention makes that equal to the fixed-length, zero-padded convention of forward().
        cfg = ref.ModelConfig.from_dict(CONFIG_A)
        p, biases, tokens = draw(cfg, 31, B=2, S=7)
        out = ref.forward(cfg, p, biases, tokens, ref.Objective(0.3, 0.5))
        S, L, eps = 7, cfg.num_hidden_layers, cfg.rms_norm_eps
        cos, sin = ref.rope_tables(cfg, S, torch.float64)
        h = p["model.embed_tokens.weight"][tokens[:, :S]]
        for i in range(L):
            h, _ = ref.decoder_layer(cfg, p, biases, i, h, cos, sin)
        h = ref.rms_norm(h, p["model.norm.weight"], eps)
        for k in (1, 2):
            T, pre = S - k, f"model.layers.{L + k - 1}."
            x = torch.cat([ref.rms_norm(p["model.embed_tokens.weight"][tokens[:, k:k + T]],
                                        p[pre + "enorm.weight"], eps),
                           ref.rms_norm(h[:, :T], p[pre + "hnorm.weight"], eps)], -1)
            h, (s, idx, _) = ref.decoder_layer(cfg, p, biases, L + k - 1,
                                               x @ p[pre + "eh_proj.weight"].T, cos[:T], sin[:T])
            hn = ref.rms_norm(h, p[pre + "shared_head.norm.weight"], eps)
            logits = hn @ p["lm_head.weight"].T
            nll = -torch.log_softmax(logits, -1).gather(-1, tokens[:, k + 1:, None]).mean()
            self.assertAlmostEqual(nll.item(), out["mtp_loss"][k - 1].item(), places=12)
            counts = torch.bincount(idx.flatten(), minlength=8).tolist()
            self.assertEqual(counts, out["expert_load"][k])

    def test_balance_matches_per_sequence_loop(self):
        cfg = ref.ModelConfig.from_dict(CONFIG_A)
        E, K, B, S, T = 8, 2, 3, 7, 5
        s = torch.rand(B, S, E, dtype=torch.float64)
        idx = torch.stack([torch.randperm(E)[:K] for _ in range(B * S)]).view(B, S, K)
        bal, load = ref._balance_and_load(cfg, s, idx, T)
        total, want_load = 0.0, [0] * E
        for b in range(B):
            f = [0.0] * E
            for t in range(T):
                for e in idx[b, t].tolist():
                    f[e] += E / (K * T)
                    want_load[e] += 1
            P = [sum(s[b, t, i].item() / s[b, t].sum().item() for t in range(T)) / T
                 for i in range(E)]
            total += sum(fi * pi for fi, pi in zip(f, P)) / B
        self.assertAlmostEqual(bal.item(), total, places=13)
        self.assertEqual(load, want_load)


class GradientTest(unittest.TestCase):
    def check_fd(self, config, seed):
        cfg = ref.ModelConfig.from_dict(config)
        obj = ref.Objective.from_dict(OBJECTIVE)
        params, biases, tokens = draw(cfg, seed)
        out = ref.forward(cfg, params, biases, tokens, obj)
        out["loss"].backward()
        self.assertGreater(out["balance_loss"].item(), 0)
        gen = torch.Generator().manual_seed(seed)
        checked = experts_seen = 0
        for name, p in params.items():
            if p.grad is None or p.grad.abs().sum() == 0:
                # Only an expert that no token chose may have no gradient.
                self.assertIn(".experts.", name, f"{name} got no gradient")
                continue
            if ".experts." in name:
                experts_seen += 1
                if experts_seen % 4:
                    continue  # a sample of the experts keeps the test fast
            # Embedding rows of unused tokens have exactly zero gradient: pick used ones.
            cand = p.grad.flatten().nonzero().flatten()
            for j in cand[torch.randint(len(cand), (1,), generator=gen)].tolist():
                flat = p.detach().view(-1)
                old = flat[j].item()
                vals = []
                for step in (1e-6, -1e-6):
                    flat[j] = old + step
                    with torch.no_grad():
                        o = ref.forward(cfg, params, biases, tokens, obj)
                    self.assertEqual(o["expert_load"], out["expert_load"], name)
                    vals.append(o["loss"].item())
                flat[j] = old
                fd = (vals[0] - vals[1]) / 2e-6
                ag = p.grad.view(-1)[j].item()
                self.assertLess(abs(fd - ag), 1e-7 + 1e-5 * abs(ag),
                                f"{name}[{j}]: fd {fd} ag {ag}")
                checked += 1
        self.assertGreater(checked, 20)

    def test_fd_config_a(self):
        self.check_fd(CONFIG_A, 11)

    def test_fd_config_b(self):
        self.check_fd(CONFIG_B, 23)

    def test_router_and_balance_gradient_nonzero(self):
        cfg = ref.ModelConfig.from_dict(CONFIG_A)
        params, biases, tokens = draw(cfg, 5)
        out = ref.forward(cfg, params, biases, tokens, ref.Objective(0.0, 1.0))
        out["balance_loss"].backward()
        for i in (1, 2, 3):  # main MoE layer and both MTP layers
            self.assertGreater(params[f"model.layers.{i}.mlp.gate.weight"].grad.norm(), 0)


class SafetensorsTest(unittest.TestCase):
    def test_round_trip_all_dtypes(self):
        tensors = {
            "f32": torch.randn(3, 5), "f64": torch.randn(7, dtype=torch.float64),
            "bf16": torch.randn(2, 3).to(torch.bfloat16),
            "i32": torch.tensor([[1, -2]], dtype=torch.int32),
            "i64": torch.tensor([2 ** 40, -3]), "scalar": torch.tensor(2.5),
            "empty": torch.zeros(0, 3),
        }
        with tempfile.TemporaryDirectory() as d:
            path = os.path.join(d, "t.safetensors")
            safetensors_io.write(path, tensors, {"note": "x"})
            back, meta = safetensors_io.read_with_metadata(path)
            self.assertEqual(meta, {"format": "pt", "note": "x"})
            self.assertEqual(set(back), set(tensors))
            for k, t in tensors.items():
                self.assertEqual(back[k].dtype, t.dtype, k)
                self.assertEqual(back[k].shape, t.shape, k)
                self.assertTrue(torch.equal(back[k], t), k)
            raw = read_bytes(path)
            n = int.from_bytes(raw[:8], "little")
            self.assertEqual(n % 8, 0)
            self.assertEqual(raw[8:9], b"{")

    def test_exact_bytes(self):
        with tempfile.TemporaryDirectory() as d:
            path = os.path.join(d, "t.safetensors")
            safetensors_io.write(path, {"w": torch.tensor([1.0, -2.0]),
                                        "b": torch.tensor([1.0]).to(torch.bfloat16)})
            raw = read_bytes(path)
            n = int.from_bytes(raw[:8], "little")
            header = json.loads(raw[8:8 + n])
            self.assertEqual(header["w"], {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]})
            self.assertEqual(header["b"], {"dtype": "BF16", "shape": [1], "data_offsets": [8, 10]})
            self.assertEqual(raw[8 + n:], bytes.fromhex("0000803f000000c0" "803f"))

    def test_malformed_files_rejected(self):
        with tempfile.TemporaryDirectory() as d:
            path = os.path.join(d, "t.safetensors")
            safetensors_io.write(path, {"a": torch.ones(4), "b": torch.ones(2)})
            good = read_bytes(path)
            n = int.from_bytes(good[:8], "little")
            bad_cases = {
                "truncated": good[:-1],
                "short": good[:5],
                "header too long": (10 ** 6).to_bytes(8, "little") + good[8:],
                "not json": good[:8] + b"x" * n + good[8 + n:],
                "hole": good[:8] + good[8:8 + n].replace(b"[0,8]", b"[1,9]") + good[8 + n:] + b"\0",
            }
            for what, data in bad_cases.items():
                with open(path, "wb") as f:
                    f.write(data)
                with self.assertRaises(safetensors_io.SafetensorsError, msg=what) as cm:
                    safetensors_io.read(path)
                self.assertIn(path, str(cm.exception))


class ParityTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.TemporaryDirectory()
        cls.D = os.path.join(cls.tmp.name, "D")
        ref.make_random_dir(cls.D, CONFIG_A, {"mtp_lambda": 0.3, "balance_alpha": 1e-2}, 2, 8, 7)
        cls.losses, cls.grads = write_results(cls.D)

    @classmethod
    def tearDownClass(cls):
        cls.tmp.cleanup()

    def run_parity(self, losses=None, grads=None):
        if losses is not None:
            with open(os.path.join(self.D, "losses.json"), "w") as f:
                json.dump(losses, f)
        if grads is not None:
            safetensors_io.write(os.path.join(self.D, "grads.safetensors"), grads)
        buf = io.StringIO()
        rc = check_parity.run(self.D, 1e-5, out=buf)
        write_results(self.D)  # restore
        return rc, buf.getvalue()

    def test_directory_contents(self):
        names = sorted(os.listdir(self.D))
        self.assertEqual(names, ["batch.json", "config.json", "grads.safetensors",
                                 "losses.json", "model.safetensors", "objective.json"])
        tensors, meta = safetensors_io.read_with_metadata(os.path.join(self.D, "model.safetensors"))
        self.assertEqual(meta["format"], "pt")
        self.assertTrue(all(t.dtype == torch.float32 for t in tensors.values()))
        self.assertIn("model.layers.3.mlp.gate.e_score_correction_bias", tensors)
        with open(os.path.join(self.D, "batch.json")) as f:
            tokens = json.load(f)["tokens"]
        self.assertEqual((len(tokens), len(tokens[0])), (2, 9))
        self.assertEqual(len(self.losses["expert_load"]), 3)  # layer 1 + two MTP layers

    def test_cli_passes_on_own_results(self):
        r = subprocess.run([sys.executable, os.path.join(HERE, "check_parity.py"), self.D],
                           capture_output=True, text=True)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        last = r.stdout.strip().splitlines()[-1]
        self.assertTrue(last.startswith("parity: ") and last.endswith(" 0 failed"), last)

    def test_perturbed_gradient_fails(self):
        grads = {n: g.float() for n, g in self.grads.items()}
        name = "model.layers.2.self_attn.kv_b_proj.weight"
        grads[name] = grads[name].clone()
        grads[name].view(-1)[0] += 1e-3 * grads[name].norm()
        rc, out = self.run_parity(grads=grads)
        self.assertEqual(rc, 1, out)
        self.assertIn("parity: ", out)
        self.assertTrue(any(name in line and "FAIL" in line for line in out.splitlines()), out)
        self.assertTrue(out.strip().endswith(" 1 failed"), out)

    def test_missing_and_extra_gradients_fail(self):
        grads = {n: g.float() for n, g in self.grads.items() if n != "lm_head.weight"}
        grads["model.layers.1.mlp.gate.e_score_correction_bias"] = torch.zeros(8)
        rc, out = self.run_parity(grads=grads)
        self.assertEqual(rc, 1)
        self.assertTrue(out.strip().endswith(" 2 failed"), out)

    def test_mtp_copies_are_ignored(self):
        # The C++ side may write the MTP copies of the shared embedding/head in both files.
        model_path = os.path.join(self.D, "model.safetensors")
        original = safetensors_io.read(model_path)
        copies = {"model.layers.2.embed_tokens.weight": original["model.embed_tokens.weight"],
                  "model.layers.3.shared_head.head.weight": original["lm_head.weight"]}
        safetensors_io.write(model_path, {**original, **copies})
        try:
            grads = {n: g.float() for n, g in self.grads.items()}
            grads.update({n: torch.ones_like(t) for n, t in copies.items()})
            rc, out = self.run_parity(grads=grads)
        finally:
            safetensors_io.write(model_path, original)
        self.assertEqual(rc, 0, out)
        self.assertIn("note: ignored 2 gradient(s)", out)

    def test_wrong_loss_or_load_fails(self):
        def bump_mtp(L):
            L["mtp_loss"][1] *= 1.001

        def bump_balance(L):
            L["balance_loss"] *= 1.001

        def bump_load(L):
            L["expert_load"][2][0] += 1

        for key, change in (("mtp_loss", bump_mtp), ("balance_loss", bump_balance),
                            ("expert_load", bump_load)):
            losses = copy.deepcopy(self.losses)
            change(losses)
            rc, out = self.run_parity(losses=losses)
            self.assertEqual(rc, 1, key)
            self.assertTrue(out.strip().endswith(" 1 failed"), key + "\n" + out)

    def test_bad_input_exits_2(self):
        rc = check_parity.run(os.path.join(self.tmp.name, "nowhere"), out=io.StringIO())
        self.assertEqual(rc, 2)


if __name__ == "__main__":
    torch.set_num_threads(1)
    unittest.main(verbosity=2)
