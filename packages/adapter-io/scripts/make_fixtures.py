"""Writes the golden fixtures of @metal-lora/adapter-io with the reference Python libraries.

Run where torch, safetensors, transformers and peft are installed (the GPU machine has them):
    python3 scripts/make_fixtures.py test/fixtures
Outputs (small; committed):
  reference.safetensors + reference.json   every decodable dtype, written by safetensors' own writer,
                                            with the values as float64 (torch upcast) for comparison
  peft-lora/ (adapter_model.safetensors, adapter_config.json, expected.json)
                                            a PEFT LoRA adapter of a tiny Llama (r=4, alpha=8, q_proj
                                            and v_proj of layer 1), with its scaling and weights
  peft-rslora/                              the same with use_rslora (scaling alpha/sqrt(r))
"""
import json
import os
import sys

import torch
from safetensors.torch import save_file

out = sys.argv[1] if len(sys.argv) > 1 else "test/fixtures"
os.makedirs(out, exist_ok=True)
torch.manual_seed(0)

tensors = {
    "weight": (torch.arange(15, dtype=torch.float32).reshape(3, 5) * 0.5 - 1.25),
    "bias_f16": torch.tensor([0.1, -2.5, 65504.0, 6e-8, -0.0], dtype=torch.float16),
    "bf16": torch.tensor([[1.0, -3.140625, 1e-3], [256.5, -0.0078125, 3e38]], dtype=torch.bfloat16),
    "ids_i64": torch.tensor([0, -1, 2**40, 7], dtype=torch.int64),
    "mask_bool": torch.tensor([True, False, True]),
    "i8": torch.tensor([-128, -1, 0, 127], dtype=torch.int8),
    "u8": torch.tensor([0, 255], dtype=torch.uint8),
    "i16": torch.tensor([-32768, 12345], dtype=torch.int16),
    "i32": torch.tensor([-(2**31), 2**31 - 1], dtype=torch.int32),
    "f64": torch.tensor([1 / 3, -1e300], dtype=torch.float64),
    "f8_e4m3": torch.tensor([0.5, -448.0, 0.001953125, 3.0], dtype=torch.float8_e4m3fn),
    "f8_e5m2": torch.tensor([0.5, -57344.0, 1.52587890625e-05, float("inf")], dtype=torch.float8_e5m2),
    "empty": torch.zeros(0, 3),
    "scalar": torch.tensor(2.5),
}
metadata = {"format": "pt", "source": "metal-lora adapter-io fixture"}
save_file(tensors, os.path.join(out, "reference.safetensors"), metadata=metadata)
names = {torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16", torch.int64: "I64", torch.bool: "BOOL",
         torch.int8: "I8", torch.uint8: "U8", torch.int16: "I16", torch.int32: "I32", torch.float64: "F64",
         torch.float8_e4m3fn: "F8_E4M3", torch.float8_e5m2: "F8_E5M2"}
expected = {k: {"dtype": names[v.dtype], "shape": list(v.shape), "values": v.double().flatten().tolist()} for k, v in tensors.items()}
with open(os.path.join(out, "reference.json"), "w") as f:
    json.dump({"metadata": metadata, "tensors": expected}, f, indent=1, allow_nan=True)

from peft import LoraConfig, get_peft_model  # noqa: E402
from transformers import LlamaConfig, LlamaForCausalLM  # noqa: E402

for name, rslora in (("peft-lora", False), ("peft-rslora", True)):
    torch.manual_seed(1)
    cfg = LlamaConfig(hidden_size=16, intermediate_size=32, num_hidden_layers=2, num_attention_heads=2,
                      num_key_value_heads=1, vocab_size=64, max_position_embeddings=32)
    model = LlamaForCausalLM(cfg)
    lcfg = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], lora_dropout=0.05,
                      layers_to_transform=[1], use_rslora=rslora, task_type="CAUSAL_LM")
    peft_model = get_peft_model(model, lcfg)
    with torch.no_grad():
        for n, p in peft_model.named_parameters():
            if "lora_B" in n:
                p.copy_(torch.randn_like(p) * 0.1)  # B starts at zero: make the adapter non-trivial
    d = os.path.join(out, name)
    peft_model.save_pretrained(d)
    exp = {"scaling": {}, "weights": {}}
    for mod_name, mod in peft_model.named_modules():
        if hasattr(mod, "scaling") and isinstance(mod.scaling, dict) and "default" in mod.scaling:
            path = mod_name.replace("base_model.model.", "", 1)
            exp["scaling"][path] = mod.scaling["default"]
            exp["weights"][path] = {"A": mod.lora_A["default"].weight.detach().double().tolist(),
                                    "B": mod.lora_B["default"].weight.detach().double().tolist()}
    with open(os.path.join(d, "expected.json"), "w") as f:
        json.dump(exp, f)
    os.remove(os.path.join(d, "README.md")) if os.path.exists(os.path.join(d, "README.md")) else None
print("fixtures written to", out)
for root, _, files in os.walk(out):
    for fn in files:
        print(os.path.join(root, fn), os.path.getsize(os.path.join(root, fn)))
