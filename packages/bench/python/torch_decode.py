"""PyTorch + transformers greedy decoding timings, the peer of decode-bench.ts, in the same call.

Takes one JSON argument: {"shapes": {name: config}, "prompt": N, "tokens": N}. For each shape: a
random-weight model of the shape's model_type in f32 on CUDA (TF32 off, SDPA attention), `generate` with greedy
decoding and exactly `tokens` new tokens (min_new_tokens = max_new_tokens), timed with the device
synchronized: time to first token = generate of one token; tokens/s = (tokens - 1) / (the full
run minus the first-token time). Median of 3 after a warm-up. Prints one JSON object.
"""
import json
import sys
import time

import torch
from transformers import AutoConfig, AutoModelForCausalLM

torch.backends.cuda.matmul.allow_tf32 = False
dev = torch.device("cuda")
spec = json.loads(sys.argv[1])


def timed(fn):
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    fn()
    torch.cuda.synchronize()
    return time.perf_counter() - t0


results = {}
for name, shape in spec["shapes"].items():
    torch.manual_seed(0)
    shape = dict(shape)
    config = AutoConfig.for_model(shape.pop("model_type"), **shape)
    model = AutoModelForCausalLM.from_config(config).to(dev).eval()
    ids = (torch.arange(spec["prompt"], device=dev)[None] * 7919 + 13) % config.vocab_size

    def gen(n):
        with torch.no_grad():
            model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=n, min_new_tokens=n, do_sample=False, pad_token_id=0)

    gen(4)
    first = sorted(timed(lambda: gen(1)) for _ in range(3))[1]
    full = sorted(timed(lambda: gen(spec["tokens"])) for _ in range(3))[1]
    results[name] = {"ttftMs": first * 1000, "tokensPerSecond": (spec["tokens"] - 1) / max(full - first, 1e-9)}
    del model
    torch.cuda.empty_cache()

print(json.dumps({"device": f"{torch.cuda.get_device_name()} (PyTorch {torch.__version__})", "results": results}))
