"""Writes PEFT LoRA adapters for the model fixtures, with the logits and gradients PEFT computes.

Run where torch, transformers and peft are installed (the GPU machine has them), after the model
fixtures exist:
    python3 scripts/make_peft_fixtures.py test/fixtures/models test/fixtures/peft
For each model below: a LoRA adapter on every linear layer of the blocks (r = 4, alpha = 8, no
dropout) with lora_B made non-zero, saved by `save_pretrained`, and `expected.json`: the logits of
the adapted model for the model fixture's ids, the mean next-token cross-entropy, and the gradients
of that loss with respect to some lora_A / lora_B, all in float64.
"""
import json
import os
import sys

import peft
import torch
from peft import LoraConfig, get_peft_model
from transformers import AutoModelForCausalLM

models_dir = sys.argv[1] if len(sys.argv) > 1 else "test/fixtures/models"
out = sys.argv[2] if len(sys.argv) > 2 else "test/fixtures/peft"
os.makedirs(out, exist_ok=True)
TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
CHECKED = ["model.layers.1.self_attn.q_proj", "model.layers.0.mlp.down_proj", "model.layers.1.self_attn.v_proj"]
# Phi-3's fused projections are the LoRA targets there.
PHI3_TARGETS = ["qkv_proj", "o_proj", "gate_up_proj", "down_proj"]
PHI3_CHECKED = ["model.layers.1.self_attn.qkv_proj", "model.layers.0.mlp.down_proj", "model.layers.1.mlp.gate_up_proj"]
CASES = {"llama": (TARGETS, CHECKED), "qwen3": (TARGETS, CHECKED), "gemma3": (TARGETS, CHECKED), "phi3": (PHI3_TARGETS, PHI3_CHECKED)}
only = set(os.environ.get("ONLY", "").split(",")) - {""}

for name, (TARGETS, CHECKED) in CASES.items():
    if only and name not in only:
        continue
    torch.manual_seed(3)
    base = AutoModelForCausalLM.from_pretrained(os.path.join(models_dir, name), dtype=torch.float64, attn_implementation="eager")
    model = get_peft_model(base, LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0, target_modules=TARGETS, bias="none"))
    with torch.no_grad():
        for pname, p in model.named_parameters():
            if "lora_B" in pname:
                p.copy_(0.05 * torch.randn_like(p))
    d = os.path.join(out, name)
    model.to(torch.float32).save_pretrained(d, safe_serialization=True)
    # The reference: the saved (f32) factors, computed in float64.
    model = model.to(torch.float64)
    model.eval()
    ids = torch.tensor(json.load(open(os.path.join(models_dir, name, "expected.json")))["ids"])
    logits = model(ids).logits
    loss = torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), ids[:, 1:].reshape(-1))
    loss.backward()
    grads = {}
    for pname, p in model.named_parameters():
        for m in CHECKED:
            if pname.startswith(f"base_model.model.{m}.lora_"):
                kind = "A" if ".lora_A." in pname else "B"
                grads[f"{m}.lora_{kind}"] = {"shape": list(p.grad.shape), "values": [round(v, 12) for v in p.grad.flatten().tolist()]}
    expected = {
        "library": {"torch": torch.__version__, "peft": peft.__version__},
        "model": name,
        "ids": ids.tolist(),
        "logits": [round(v, 9) for v in logits.detach().flatten().tolist()],
        "shape": list(logits.shape),
        "loss": loss.item(),
        "grads": grads,
    }
    with open(os.path.join(d, "expected.json"), "w") as f:
        json.dump(expected, f)
        f.write("\n")
    print(name, "loss", loss.item(), "grads", sorted(grads), "files", sorted(os.listdir(d)))
