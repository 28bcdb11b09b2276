#!/usr/bin/env python3
"""The forward pass of a Mixtral, Qwen2-MoE, Qwen3-MoE or OLMoE checkpoint folder computed the way transformers'
modeling files compute it in eager mode (the same PyTorch operations in the same order and dtypes: RMSNorm in float32
cast back before the weight, RoPE tables in float32, attention and router softmax in float32, the expert loop with
index_add_), written out with plain PyTorch so that no transformers install is needed. The tests compare moescope's
C++ forward in float32 and bfloat16 against it (tests/model/test_hf.cpp).

Usage: hf_eager_reference.py MODEL_DIR IDS OUT
  IDS: comma-separated token ids of one sequence; OUT: the logits [S, V] as little-endian float32.
"""
import json
import math
import struct
import sys

import numpy as np
import torch
import torch.nn.functional as F


def read_safetensors(path):
    with open(path, "rb") as f:
        data = f.read()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + n])
    base = 8 + n
    out = {}
    for name, e in header.items():
        if name == "__metadata__":
            continue
        a, b = e["data_offsets"]
        raw = data[base + a : base + b]
        shape = e["shape"]
        if e["dtype"] == "F32":
            t = torch.from_numpy(np.frombuffer(raw, dtype="<f4").copy())
        elif e["dtype"] == "F64":
            t = torch.from_numpy(np.frombuffer(raw, dtype="<f8").copy())
        elif e["dtype"] == "BF16":  # widen the 16 stored bits to float32 exactly, then back to bfloat16
            bits = np.frombuffer(raw, dtype="<u2").astype(np.uint32) << 16
            t = torch.from_numpy(bits.view(np.float32).copy()).to(torch.bfloat16)
        else:
            raise SystemExit(f"{path}: {name}: dtype {e['dtype']} not handled")
        out[name] = t.reshape(shape)
    return out


def rms_norm(x, w, eps):  # LlamaRMSNorm
    input_dtype = x.dtype
    h = x.to(torch.float32)
    variance = h.pow(2).mean(-1, keepdim=True)
    h = h * torch.rsqrt(variance + eps)
    return w * h.to(input_dtype)


def rotate_half(x):
    x1 = x[..., : x.shape[-1] // 2]
    x2 = x[..., x.shape[-1] // 2 :]
    return torch.cat((-x2, x1), dim=-1)


def repeat_kv(x, n_rep):
    b, kv, s, d = x.shape
    if n_rep == 1:
        return x
    return x[:, :, None, :, :].expand(b, kv, n_rep, s, d).reshape(b, kv * n_rep, s, d)


def linear(x, w, b=None):
    return F.linear(x, w, b)


def main():
    folder, ids_arg, out_path = sys.argv[1:4]
    cfg = json.load(open(f"{folder}/config.json"))
    W = read_safetensors(f"{folder}/model.safetensors")
    arch = cfg["architectures"][0]
    dtype = W["model.embed_tokens.weight"].dtype
    H, nh = cfg["hidden_size"], cfg["num_attention_heads"]
    kv = cfg.get("num_key_value_heads") or nh
    hd = cfg.get("head_dim") or H // nh
    eps = cfg["rms_norm_eps"]
    ids = torch.tensor([[int(t) for t in ids_arg.split(",")]])
    S = ids.shape[1]

    # rotary tables (LlamaRotaryEmbedding / default rope init)
    base = cfg["rope_theta"]
    inv_freq = 1.0 / (base ** (torch.arange(0, hd, 2, dtype=torch.int64).to(dtype=torch.float) / hd))
    rs = cfg.get("rope_scaling")
    if rs and rs.get("rope_type", rs.get("type")) == "linear":
        inv_freq = inv_freq / rs["factor"]
    position_ids = torch.arange(S)[None, :]
    freqs = (inv_freq[None, :, None].float() @ position_ids[:, None, :].float()).transpose(1, 2)
    emb = torch.cat((freqs, freqs), dim=-1)
    cos, sin = (emb.cos() * 1.0).to(dtype), (emb.sin() * 1.0).to(dtype)

    # causal (and sliding-window) mask, added as transformers' eager attention does
    window = cfg.get("sliding_window") if arch == "MixtralForCausalLM" else None
    q_idx = torch.arange(S)[:, None]
    kv_idx = torch.arange(S)[None, :]
    allowed = kv_idx <= q_idx
    if window:
        allowed &= kv_idx > q_idx - window
    mask = torch.zeros(S, S, dtype=dtype).masked_fill(~allowed, torch.finfo(dtype).min)[None, None]

    h = W["model.embed_tokens.weight"][ids]
    for l in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{l}."
        residual = h
        x = rms_norm(h, W[p + "input_layernorm.weight"], eps)
        a = p + "self_attn."
        bias = lambda n: W.get(a + n + ".bias")
        q, k, v = (linear(x, W[a + n + ".weight"], bias(n)) for n in ("q_proj", "k_proj", "v_proj"))
        if arch == "OlmoeForCausalLM":
            q = rms_norm(q, W[a + "q_norm.weight"], eps)
            k = rms_norm(k, W[a + "k_norm.weight"], eps)
            if cfg.get("clip_qkv") is not None:
                c = cfg["clip_qkv"]
                q.clamp_(min=-c, max=c)
                k.clamp_(min=-c, max=c)
                v.clamp_(min=-c, max=c)
        q = q.view(1, S, -1, hd)
        k = k.view(1, S, -1, hd)
        v = v.view(1, S, -1, hd)
        if arch == "Qwen3MoeForCausalLM":
            q = rms_norm(q, W[a + "q_norm.weight"], eps)
            k = rms_norm(k, W[a + "k_norm.weight"], eps)
        q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)
        q = (q * cos) + (rotate_half(q) * sin)
        k = (k * cos) + (rotate_half(k) * sin)
        k, v = repeat_kv(k, nh // kv), repeat_kv(v, nh // kv)
        scores = torch.matmul(q, k.transpose(2, 3)) * hd**-0.5 + mask
        probs = F.softmax(scores, dim=-1, dtype=torch.float32).to(q.dtype)
        att = torch.matmul(probs, v).transpose(1, 2).contiguous().reshape(1, S, -1)
        h = residual + linear(att, W[a + "o_proj.weight"], W.get(a + "o_proj.bias"))

        residual = h
        x = rms_norm(h, W[p + "post_attention_layernorm.weight"], eps)
        mixtral = arch == "MixtralForCausalLM"
        m = p + ("block_sparse_moe." if mixtral else "mlp.")
        names = ("w1", "w3", "w2") if mixtral else ("gate_proj", "up_proj", "down_proj")
        mlp = lambda pre, n, t: linear(F.silu(linear(t, W[pre + n[0] + ".weight"])) * linear(t, W[pre + n[1] + ".weight"]), W[pre + n[2] + ".weight"])
        if m + "gate.weight" not in W:  # a dense layer
            h = residual + mlp(m, ("gate_proj", "up_proj", "down_proj"), x)
            continue
        flat = x.view(-1, H)
        router_logits = linear(flat, W[m + "gate.weight"])
        routing_weights = F.softmax(router_logits, dim=1, dtype=torch.float)
        routing_weights, selected = torch.topk(routing_weights, cfg["num_experts_per_tok"], dim=-1)
        if mixtral or cfg.get("norm_topk_prob", False):
            routing_weights /= routing_weights.sum(dim=-1, keepdim=True)
        routing_weights = routing_weights.to(flat.dtype)
        final = torch.zeros_like(flat)
        n_experts = W[m + "gate.weight"].shape[0]
        expert_mask = F.one_hot(selected, num_classes=n_experts).permute(2, 1, 0)
        for e in range(n_experts):
            idx, top_x = torch.where(expert_mask[e])
            if top_x.numel() == 0:
                continue
            current = flat[None, top_x].reshape(-1, H)
            out = mlp(m + f"experts.{e}.", names, current) * routing_weights[top_x, idx, None]
            final.index_add_(0, top_x, out.to(flat.dtype))
        if m + "shared_expert_gate.weight" in W:
            shared = mlp(m + "shared_expert.", ("gate_proj", "up_proj", "down_proj"), flat)
            shared = torch.sigmoid(linear(flat, W[m + "shared_expert_gate.weight"])) * shared
            final = final + shared
        h = residual + final.view(1, S, H)

    h = rms_norm(h, W["model.norm.weight"], eps)
    head = W["model.embed_tokens.weight"] if cfg.get("tie_word_embeddings") else W["lm_head.weight"]
    logits = linear(h, head)[0]
    logits.to(torch.float32).numpy().astype("<f4").tofile(out_path)


if __name__ == "__main__":
    torch.set_num_threads(1)
    main()
