"""Writes tiny random checkpoints of each supported architecture with transformers, and their logits.

Run where torch and transformers are installed (the GPU machine has them), after the tokenizer
fixtures exist:
    python3 scripts/make_model_fixtures.py test/fixtures/models test/fixtures/tokenizers
Each folder is what `save_pretrained` writes (config.json, model.safetensors, generation_config.json)
plus a tokenizer of the tokenizer fixtures, and `expected.json`: token ids and the logits transformers
computes for them in float64 (eager attention), for comparison at 1e-4; and greedy continuations
(argmax of transformers' float64 logits, one token at a time) of one prompt and of two prompts of
different lengths (each continued alone: left padding with a mask and shifted positions must give
the same tokens, and float64 eager attention turns fully masked pad rows into NaN). The smallest top-1/top-2 logit gap of each continuation is recorded: a gap far above
f32 rounding means the tokens must match exactly.
"""
import json
import os
import shutil
import sys

import torch
import transformers
from transformers import AutoConfig, AutoModelForCausalLM

out = sys.argv[1] if len(sys.argv) > 1 else "test/fixtures/models"
tokenizers_dir = sys.argv[2] if len(sys.argv) > 2 else "test/fixtures/tokenizers"
os.makedirs(out, exist_ok=True)

COMMON = dict(hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128, initializer_range=0.08, rms_norm_eps=1e-5)

# name -> (model_type, extra config, tokenizer fixture, weight dtype)
CASES = {
    "llama": ("llama", dict(rope_theta=10000.0, tie_word_embeddings=False), "bpe-bytelevel", torch.float32),
    "llama3-rope-scaling": ("llama", dict(rope_theta=500000.0, tie_word_embeddings=True, head_dim=32, rope_scaling={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0, "original_max_position_embeddings": 16}), "bpe-bytelevel", torch.bfloat16),
    "mistral-sliding-window": ("mistral", dict(rope_theta=10000.0, sliding_window=5, tie_word_embeddings=False), "bpe-metaspace", torch.float16),
    "qwen2": ("qwen2", dict(rope_theta=1000000.0, tie_word_embeddings=True, use_sliding_window=False), "bpe-bytelevel", torch.float32),
    "qwen3": ("qwen3", dict(rope_theta=1000000.0, tie_word_embeddings=True, head_dim=32, attention_bias=False), "bpe-bytelevel", torch.bfloat16),
    # Gemma 3 text: (1 + w) norms, GeGLU (tanh GELU), q/k norm, query_pre_attn_scalar, one sliding
    # and one global layer with their own RoPE bases, linear RoPE scaling on the global one.
    "gemma3": ("gemma3_text", dict(head_dim=16, query_pre_attn_scalar=24, sliding_window=4, layer_types=["sliding_attention", "full_attention"], rope_theta=1000000.0, rope_local_base_freq=10000.0, rope_scaling={"rope_type": "linear", "factor": 8.0}, tie_word_embeddings=True, rms_norm_eps=1e-6, pad_token_id=0, bos_token_id=2, eos_token_id=1, hidden_activation="gelu_pytorch_tanh"), "bpe-metaspace", torch.bfloat16),
    # Phi-3: fused qkv_proj and gate_up_proj, partial rotary embedding, a sliding window.
    "phi3": ("phi3", dict(rope_theta=10000.0, partial_rotary_factor=0.5, sliding_window=6, tie_word_embeddings=False, pad_token_id=0, bos_token_id=1, eos_token_id=2), "bpe-metaspace", torch.float32),
}
only = set(os.environ.get("ONLY", "").split(",")) - {""}


def greedy(model, rows, steps, pad=0):
    """Greedy continuations of the prompts `rows` (left-padded with a mask), and the smallest top-2 gap."""
    width = max(len(r) for r in rows)
    ids = torch.tensor([[pad] * (width - len(r)) + r for r in rows])
    mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows])
    out = [[] for _ in rows]
    gap = float("inf")
    for _ in range(steps):
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        with torch.no_grad():
            logits = model(input_ids=ids, attention_mask=mask, position_ids=positions).logits[:, -1]
        top = logits.topk(2, dim=-1)
        gap = min(gap, (top.values[:, 0] - top.values[:, 1]).min().item())
        nxt = top.indices[:, 0]
        for i, t in enumerate(nxt.tolist()):
            out[i].append(t)
        ids = torch.cat([ids, nxt[:, None]], 1)
        mask = torch.cat([mask, torch.ones(len(rows), 1, dtype=mask.dtype)], 1)
    return out, gap

for name, (model_type, extra, tok_kind, dtype) in CASES.items():
    if only and name not in only:
        continue
    torch.manual_seed(0)
    tok_dir = os.path.join(tokenizers_dir, tok_kind)
    vocab = json.load(open(os.path.join(tok_dir, "expected.json")))["vocabSize"]
    config = AutoConfig.for_model(model_type, vocab_size=vocab, **{**COMMON, **extra})
    config._attn_implementation = "eager"
    model = AutoModelForCausalLM.from_config(config, attn_implementation="eager")
    # Random weights of some size everywhere (norm weights too), so every term matters.
    with torch.no_grad():
        for pname, p in model.named_parameters():
            if "norm" in pname:
                p.copy_(1.0 + 0.2 * torch.randn_like(p))
            elif pname.endswith("bias"):
                p.copy_(0.1 * torch.randn_like(p))
    model = model.to(dtype)
    d = os.path.join(out, name)
    model.save_pretrained(d, safe_serialization=True)
    for f in os.listdir(tok_dir):
        if f != "expected.json":
            shutil.copy(os.path.join(tok_dir, f), os.path.join(d, f))
    # The reference: the saved weights (rounded to their dtype) computed in float64.
    ref = AutoModelForCausalLM.from_pretrained(d, torch_dtype=torch.float64, attn_implementation="eager")
    ref.eval()
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(0, vocab, (2, 9), generator=g)
    with torch.no_grad():
        logits = ref(ids).logits
    prompt = ids[0, :5].tolist()
    single, single_gap = greedy(ref, [prompt], 10)
    pair = [greedy(ref, [row], 8) for row in (ids[1, :3].tolist(), ids[0, :6].tolist())]
    pair, pair_gap = [tokens[0] for tokens, _ in pair], min(gap for _, gap in pair)
    expected = {
        "library": {"torch": torch.__version__, "transformers": transformers.__version__},
        "modelType": model_type,
        "dtype": str(dtype).replace("torch.", ""),
        "ids": ids.tolist(),
        "logits": [round(v, 9) for v in logits.flatten().tolist()],
        "shape": list(logits.shape),
        "greedy": {"prompt": prompt, "tokens": single[0], "minGap": single_gap},
        "greedyBatch": {"prompts": [ids[1, :3].tolist(), ids[0, :6].tolist()], "tokens": pair, "minGap": pair_gap},
    }
    with open(os.path.join(d, "expected.json"), "w") as f:
        json.dump(expected, f)
        f.write("\n")
    print("  greedy gaps", single_gap, pair_gap)
    print(name, model_type, dtype, "params", sum(p.numel() for p in model.parameters()), "files", sorted(os.listdir(d)))
    print("  config:", json.dumps({k: v for k, v in json.load(open(os.path.join(d, "config.json"))).items() if "rope" in k or k in ("head_dim", "sliding_window", "attention_bias", "tie_word_embeddings", "dtype", "torch_dtype", "model_type", "use_sliding_window", "layer_types", "rope_local_base_freq", "query_pre_attn_scalar", "partial_rotary_factor", "sliding_window_pattern")}))
