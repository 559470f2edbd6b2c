"""PyTorch/cuBLAS f32 (TF32 off) LoRA layer timings, the peer of lora-bench.ts, in the same call.

For M = 2048, in = out = 4096 and r in (8, 16, 32, 64), and decode (M = 1, 16; r = 16): the base GEMM, the unfused LoRA forward
(x@Wᵀ + s·(x@Aᵀ)@Bᵀ, as PEFT computes it), and a training step (forward + backward for x, A, B
through autograd, W frozen), with CUDA events (median of 7 trials of ≥ 20 ms after a 50 ms warm-up)
and the step's peak allocated bytes. Prints one JSON object.
"""
import json
import sys

import torch

torch.backends.cuda.matmul.allow_tf32 = False
dev = torch.device("cuda")


def events_ms(fn, reps):
    """GPU time of `reps` calls of fn, ms per call, with CUDA events."""
    torch.cuda.synchronize()
    s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    s.record()
    for _ in range(reps):
        fn()
    e.record()
    torch.cuda.synchronize()
    return s.elapsed_time(e) / reps


def time_ms(fn):
    reps = 1
    while events_ms(fn, reps) * reps < 50:  # warm up for >= 50 ms
        reps *= 2
    once = events_ms(fn, reps)
    per = max(1, min(2000, int(20 / max(once, 1e-4)) + 1))
    times = sorted(events_ms(fn, per) for _ in range(7))
    return times[3]


quick = "--quick" in sys.argv
IN, OUT = (128, 128) if quick else (4096, 4096)
configs = [(64, 8), (1, 8)] if quick else [(2048, 8), (2048, 16), (2048, 32), (2048, 64), (1, 16), (16, 16)]
M0 = configs[0][0]
results = []
for M, r in configs:
    x = torch.randn(M, IN, device=dev)
    w = torch.randn(OUT, IN, device=dev) / IN ** 0.5
    dy = torch.randn(M, OUT, device=dev)
    a = (torch.randn(r, IN, device=dev) / IN ** 0.5).requires_grad_()
    b = (torch.randn(OUT, r, device=dev) * 0.1).requires_grad_()
    s = 16 / r
    xg = x.clone().requires_grad_()

    def forward(xs):
        return xs @ w.t() + s * ((xs @ a.t()) @ b.t())

    def step():
        y = forward(xg)
        y.backward(dy)
        xg.grad = a.grad = b.grad = None

    with torch.no_grad():
        base = time_ms(lambda: x @ w.t())
        fwd = time_ms(lambda: forward(x))
    st = time_ms(step)
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    before = torch.cuda.memory_allocated()
    step()
    torch.cuda.synchronize()
    peak = torch.cuda.max_memory_allocated() - before
    results.append({"M": M, "r": r, "baseMs": base, "unfusedFwdMs": fwd, "unfusedStepMs": st, "stepPeakBytes": peak})
json.dump({"device": torch.cuda.get_device_name(), "torch": torch.__version__, "M": M0, "in": IN, "out": OUT, "results": results}, sys.stdout, indent=1)
