"""How long ``adamwkit.audit`` takes on GPT-2 small (124M parameters, built from its
config), beside one step of the optimizer it audits (the peer, measured in the same run).

    .venv/bin/python benchmarks/audit_speed.py --repeats 3

Cases: ``adamwkit.AdamW`` over ``param_groups`` (float32; no finding), ``torch.optim.AdamW``
over every parameter (float32; norms and biases decayed), ``param_groups`` on the model in
bfloat16 (the precision bound of every tensor), nanoGPT's schedule as a ``LambdaLR``
(2,000 warmup steps, cosine over 600,000: its lambda is read at every step), and torch's
``CosineAnnealingLR`` over 100,000 steps (a copy of the scheduler is stepped 100,000
times). The first three read 100,000 steps at the peak lr. Prints a markdown table:
median seconds, and the audit over one optimizer step.
"""

from __future__ import annotations

import argparse
import statistics
import time
import warnings

import torch

import adamwkit


def _median(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _cosine(opt: torch.optim.Optimizer, warmup: int, total: int):
    import math

    def factor(t: int) -> float:
        if t < warmup:
            return (t + 1) / warmup
        return 0.1 + 0.45 * (1 + math.cos(math.pi * min(1.0, (t - warmup) / (total - warmup))))

    return torch.optim.lr_scheduler.LambdaLR(opt, factor)


def main() -> None:
    from transformers import GPT2Config, GPT2LMHeadModel

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    warnings.simplefilter("ignore")
    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config())
    n = sum(t.numel() for t in model.parameters())
    cases = [
        ("adamwkit.AdamW + param_groups, fp32", model,
         lambda m: adamwkit.AdamW(adamwkit.param_groups(m, 0.1), lr=6e-4)),
        ("torch.optim.AdamW, every parameter, fp32", model,
         lambda m: torch.optim.AdamW(m.parameters(), lr=6e-4, weight_decay=0.1)),
        ("torch.optim.AdamW + param_groups, bf16", None,
         lambda m: torch.optim.AdamW(adamwkit.param_groups(m, 0.1), lr=6e-4)),
        ("as the first, cosine schedule over 600,000 steps", model,
         lambda m: adamwkit.AdamW(adamwkit.param_groups(m, 0.1), lr=6e-4)),
        ("as the first, CosineAnnealingLR over 100,000 steps", model,
         lambda m: adamwkit.AdamW(adamwkit.param_groups(m, 0.1), lr=6e-4)),
    ]  # fmt: skip
    print(f"GPT-2 small, {n / 1e6:.1f}M parameters, torch {torch.__version__}, "
          f"{a.threads} threads, median of {a.repeats}")  # fmt: skip
    print("| case | audit s | one optimizer step s | audit / step | findings |")
    print("|---|---:|---:|---:|---|")
    for label, m, make in cases:
        m = m if m is not None else GPT2LMHeadModel(GPT2Config()).to(torch.bfloat16)
        opt = make(m)
        kw: dict = {"total_steps": 100_000}
        if "cosine schedule" in label:
            kw = {"total_steps": 600_000, "scheduler": _cosine(opt, 2_000, 600_000)}
        elif "CosineAnnealingLR" in label:
            sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=100_000)
            kw = {"total_steps": 100_000, "scheduler": sched}
        report = adamwkit.audit(opt, m, **kw)
        audit_s = _median(lambda o=opt, mm=m, k=kw: adamwkit.audit(o, mm, **k), a.repeats)
        for t in m.parameters():
            t.grad = torch.zeros_like(t)
        opt.step()  # the state is made outside the timing
        step_s = _median(opt.step, a.repeats)
        codes = ", ".join(report.codes()) or "none"
        print(f"| {label} | {audit_s:.3f} | {step_s:.3f} | {audit_s / step_s:.2f} | {codes} |")


if __name__ == "__main__":
    main()
