"""PyTorch + transformers + PEFT LoRA training-step timings, the peer of e2e-bench.ts, in the same call.

Takes one JSON argument: {"shapes": {name: config}, "batch", "seq", "rank", "steps", "warmup", "seed", "dtype",
"stepsPerReport"}.
With "dtype": "float16" (e2e-bench's mixed precision) the base model is held in bf16 and PEFT keeps the
adapter in f32 (its autocast_adapter_dtype default), as PyTorch users fine-tune in reduced precision.
For each shape: a random-weight model of its model_type in f32 on CUDA (TF32 off, SDPA attention),
PEFT LoRA (r = rank, alpha 16, dropout 0) on all seven linear layers of every block, AdamW (lr 1e-4)
over the adapter, and the same seeded tokens as e2e-bench.ts. A step is forward, cross-entropy,
backward, optimizer step, zero_grad and the loss read back (`.item()`), timed on the host around a
synchronized device, median of `steps` after `warmup`. With "stepsPerReport" N > 1 (e2e-bench's
`--steps-per-report`) the losses are read back every N steps and a step is the mean over the timed steps,
as a training loop that reports every N steps runs. Peak = max_memory_allocated during the timed
steps; GPU busy from nvidia-smi samples every 100 ms where it exists. Prints one JSON object.
"""
import json
import subprocess
import sys
import time

import torch
from peft import LoraConfig, get_peft_model
from transformers import AutoConfig, AutoModelForCausalLM

torch.backends.cuda.matmul.allow_tf32 = False
torch.backends.cudnn.allow_tf32 = False
dev = torch.device("cuda")
spec = json.loads(sys.argv[1])
B, L = spec["batch"], spec["seq"]


def tokens(count, vocab, seed):
    """The xorshift stream of e2e-bench.ts's randomTokens."""
    s = (seed & 0xFFFFFFFF) or 1
    out = []
    for _ in range(count):
        s ^= (s << 13) & 0xFFFFFFFF
        s ^= s >> 17
        s ^= (s << 5) & 0xFFFFFFFF
        out.append(s % vocab)
    return out


def busy_sampler():
    try:
        return subprocess.Popen(
            ["nvidia-smi", "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits", "-lms", "100", "-i", "0"],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
    except OSError:
        return None


def busy_stop(proc):
    if proc is None:
        return None
    proc.terminate()
    out, _ = proc.communicate()
    samples = [float(v) for v in out.split() if v.strip().replace(".", "", 1).isdigit()][1:]
    return sum(samples) / len(samples) / 100 if samples else None


results = {}
for name, shape in spec["shapes"].items():
    torch.manual_seed(0)
    shape = dict(shape)
    config = AutoConfig.for_model(shape.pop("model_type"), **shape)
    config._attn_implementation = "sdpa"
    model = AutoModelForCausalLM.from_config(config, attn_implementation="sdpa").to(dev)
    if spec.get("dtype") == "float16":
        model = model.to(torch.bfloat16)
    if spec.get("gradCheckpoint"):
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    keys = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    model = get_peft_model(model, LoraConfig(r=spec["rank"], lora_alpha=16, lora_dropout=0.0, target_modules=keys))
    model.train()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    flat = torch.tensor(tokens(B * (L + 1), config.vocab_size, spec["seed"]), device=dev).view(B, L + 1)
    inputs, targets = flat[:, :L].contiguous(), flat[:, 1:].contiguous()
    losses = []

    every = spec.get("stepsPerReport") or 1

    def record():
        logits = model(input_ids=inputs).logits
        loss = torch.nn.functional.cross_entropy(logits.view(-1, logits.shape[-1]).float(), targets.view(-1))
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss.detach()

    def step():
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        losses.append(record().item())
        torch.cuda.synchronize()
        return time.perf_counter() - t0

    def run(count):
        """`count` steps with the losses read every `every`: the mean time of a step."""
        pending = []
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        for i in range(1, count + 1):
            pending.append(record())
            if i % every == 0 or i == count:
                losses.extend(l.item() for l in pending)
                pending = []
        torch.cuda.synchronize()
        return (time.perf_counter() - t0) / count

    def timed(count):
        """`count` steps, timed each alone (the loss read every step), or as one mean (read every `every`)."""
        return [run(count)] if every > 1 else sorted(step() for _ in range(count))

    timed(spec["warmup"])
    torch.cuda.reset_peak_memory_stats()
    proc = busy_sampler()
    times = timed(spec["steps"])
    busy = busy_stop(proc)
    median = times[len(times) // 2]
    results[name] = {
        "stepMs": median * 1000,
        "tokensPerSecond": B * L / median,
        "peakBytes": torch.cuda.max_memory_allocated(),
        "gpuBusy": busy,
        "losses": losses,
    }
    del model, opt
    torch.cuda.empty_cache()

print(json.dumps({"device": f"{torch.cuda.get_device_name()} (PyTorch {torch.__version__})", "results": results}))
