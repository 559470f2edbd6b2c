"""cuBLAS f32 (TF32 off) reference timings for the GEMM shapes of gemm-bench.ts, in the same call.

Prints one JSON object: device name, copy bandwidth (bytes read + written), and per shape the
median time over repeats with CUDA events, inputs rotated among copies larger than L2.
"""
import json
import sys

import torch

torch.backends.cuda.matmul.allow_tf32 = False
torch.backends.cudnn.allow_tf32 = False
dev = torch.device("cuda")


def median_ms(fn, reps):
    for _ in range(3):
        fn(0)
    torch.cuda.synchronize()
    times = []
    for trial in range(7):
        start = torch.cuda.Event(enable_timing=True)
        end = torch.cuda.Event(enable_timing=True)
        start.record()
        for i in range(reps):
            fn(i)
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end) / reps)
    times.sort()
    return times[len(times) // 2], times[-1] - times[0]


def gemm(M, N, K, trans_a, trans_b):
    bytes_per_set = (M * K + K * N + M * N) * 4
    copies = max(1, min(4, -(-150_000_000 // bytes_per_set)))
    sets = []
    for _ in range(copies):
        a = torch.randn((K, M) if trans_a else (M, K), device=dev)
        b = torch.randn((N, K) if trans_b else (K, N), device=dev)
        sets.append((a, b, torch.empty(M, N, device=dev)))

    def run(i):
        a, b, c = sets[i % copies]
        torch.matmul(a.t() if trans_a else a, b.t() if trans_b else b, out=c)

    flops = 2 * M * N * K
    reps = max(3, min(200, -(-int(2e11 / max(flops, 1)) // 4)))
    ms, spread = median_ms(run, reps)
    return {"M": M, "N": N, "K": K, "transA": trans_a, "transB": trans_b, "ms": ms, "spreadMs": spread,
            "tflops": flops / (ms * 1e-3) / 1e12, "gbps": (M * K + K * N + M * N) * 4 / (ms * 1e-3) / 1e9}


def copy_bandwidth():
    n = 512 * 1024 * 1024 // 4
    src = torch.randn(n, device=dev)
    dst = torch.empty_like(src)
    ms, _ = median_ms(lambda i: dst.copy_(src), 10)
    return 2 * n * 4 / (ms * 1e-3) / 1e9


shapes = [(2048, 4096, 4096, False, True), (2048, 4096, 4096, False, False)]
shapes += [(m, 4096, 4096, False, True) for m in (1, 4, 16)]
for r in (8, 16, 32, 64):
    shapes += [(2048, r, 4096, False, True), (r, 4096, 2048, True, False), (4096, r, 2048, True, False), (2048, 4096, r, False, True)]
out = {"device": torch.cuda.get_device_name(), "torch": torch.__version__, "copyGBps": copy_bandwidth(),
       "results": [gemm(*s) for s in shapes]}
json.dump(out, sys.stdout, indent=1)
