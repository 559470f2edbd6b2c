"""Reference trajectories of torch.optim for @metal-lora/nn's optimizer tests (run where torch is):
    python3 scripts/make_optimizer_fixture.py > test/fixtures/optimizers.json
A parameter of 5 values takes 6 steps with gradients g_t = sin(3·p + t) + 0.1·t (deterministic,
never zero); each optimizer's parameter after every step is recorded in float64.
"""
import json
import math
import sys

import torch

torch.set_default_dtype(torch.float64)
init = [0.5, -1.0, 2.0, 0.0, -0.25]
configs = {
    "sgd": ("SGD", {"lr": 0.1}),
    "sgd_momentum": ("SGD", {"lr": 0.1, "momentum": 0.9, "dampening": 0.1, "weight_decay": 0.01}),
    "sgd_nesterov": ("SGD", {"lr": 0.1, "momentum": 0.9, "nesterov": True}),
    "adam": ("Adam", {"lr": 0.01, "betas": (0.9, 0.999), "eps": 1e-8}),
    "adam_l2": ("Adam", {"lr": 0.01, "weight_decay": 0.1}),
    "adamw": ("AdamW", {"lr": 0.01, "betas": (0.8, 0.99), "eps": 1e-6, "weight_decay": 0.1}),
}
out = {"init": init, "grad": "sin(3*p + t) + 0.1*t for step t = 1..6", "trajectories": {}}
for name, (cls, kw) in configs.items():
    p = torch.tensor(init, requires_grad=True)
    opt = getattr(torch.optim, cls)([p], **kw)
    traj = []
    for t in range(1, 7):
        opt.zero_grad()
        p.grad = torch.sin(3 * p.detach() + t) + 0.1 * t
        opt.step()
        traj.append(p.detach().tolist())
    out["trajectories"][name] = {"optimizer": cls, "options": {k: (list(v) if isinstance(v, tuple) else v) for k, v in kw.items()}, "params": traj}
json.dump(out, sys.stdout, indent=1)
