"""Milliseconds per optimizer step: adamwkit against torch.optim.AdamW, measured in one run.

Usage:  python benchmarks/step_speed.py [--repeats 15] [--device cpu|cuda|all]

Cases
- gpt2-small: the 148 tensors of GPT-2 small (124M parameters).
- small-tensors: 300 tensors of 64x64 and 64 (0.6M parameters).
- population P=16: 16 stacked members along dim 0, each member with its own weight decay,
  through ``adamwkit.functional.adamw_step``; the peer is ``torch.optim.AdamW(fused=True)``
  stepping the very same tensors with one scalar weight decay. Layouts: one tensor per
  parameter ("per-tensor"), or each member's parameters in one flat buffer ("flat").

``ratio`` is peer ms / row ms (higher is faster; 1.00 means the peer's speed). The peer of
the single-model cases is ``torch.optim.AdamW(fused=True)``.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch

import adamwkit
from adamwkit import functional

P = 16


def gpt2_small_shapes() -> list[tuple[int, ...]]:
    d, vocab, ctx, layers = 768, 50257, 1024, 12
    shapes: list[tuple[int, ...]] = [(vocab, d), (ctx, d)]
    for _ in range(layers):
        shapes += [(d,), (d,), (3 * d, d), (3 * d,), (d, d), (d,)]
        shapes += [(d,), (d,), (4 * d, d), (4 * d,), (d, 4 * d), (d,)]
    return [*shapes, (d,), (d,)]


def small_shapes() -> list[tuple[int, ...]]:
    return [(64, 64) if i % 2 == 0 else (64,) for i in range(300)]


def make_params(shapes, device) -> list[torch.nn.Parameter]:
    gen = torch.Generator().manual_seed(0)
    params = []
    for s in shapes:
        p = torch.nn.Parameter((0.02 * torch.randn(s, generator=gen)).to(device))
        p.grad = (1e-3 * torch.randn(s, generator=gen)).to(device)
        params.append(p)
    return params


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def measure(fns: dict[str, Callable[[], object]], device: str, repeats: int) -> dict[str, float]:
    """Median ms per call of each function, rounds interleaved so drift hits all alike.

    Each round starts one function later, so each one follows every other equally often:
    a call runs slower after one that evicted its tensors from the caches (the foreach
    step's temporaries do), and a fixed order gave that cost to the same row every time.
    """
    for fn in fns.values():
        for _ in range(3):
            fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    order = list(fns.items())
    for r in range(repeats):
        for name, fn in order[r % len(order) :] + order[: r % len(order)]:
            sync(device)
            t0 = time.perf_counter()
            fn()
            sync(device)
            times[name].append(1e3 * (time.perf_counter() - t0))
    return {name: statistics.median(ts) for name, ts in times.items()}


def single_model_rows(case: str, shapes, device: str, repeats: int) -> list[tuple]:
    params = make_params(shapes, device)
    opts = {
        "torch.optim.AdamW(fused=True)": torch.optim.AdamW(params, weight_decay=0.1, fused=True),
        "torch.optim.AdamW(foreach=True)": torch.optim.AdamW(
            params, weight_decay=0.1, foreach=True
        ),
        'adamwkit.AdamW(decay_scale="lr")': adamwkit.AdamW(params, weight_decay=0.1),
        'adamwkit.AdamW(decay_scale="schedule")': adamwkit.AdamW(
            params, weight_decay=1e-4, decay_scale="schedule"
        ),
    }
    ms = measure({name: opt.step for name, opt in opts.items()}, device, repeats)
    peer = ms["torch.optim.AdamW(fused=True)"]
    numel = sum(p.numel() for p in params)
    return [(case, numel, name, t, peer / t) for name, t in ms.items()]


def population_rows(case: str, shapes, device: str, repeats: int, flat: bool) -> list[tuple]:
    member_numel = sum(torch.Size(s).numel() for s in shapes)
    stacked = [(P, member_numel)] if flat else [(P, *s) for s in shapes]
    params = make_params(stacked, device)
    grads = [p.grad for p in params]
    state = {k: [torch.zeros_like(p) for p in params] for k in ("m", "v")}
    steps = [torch.zeros((), dtype=torch.float32, device=device) for _ in params]
    wds = torch.logspace(-4, 0, P)
    peer = torch.optim.AdamW(params, weight_decay=0.1, fused=True)

    def ours() -> None:
        with torch.no_grad():
            functional.adamw_step(
                params, grads, state["m"], state["v"], steps, lr=1e-3, weight_decay=wds
            )

    label = f"{case}, P={P}, {'flat' if flat else 'per-tensor'}"
    ms = measure({"peer": peer.step, "ours": ours}, device, repeats)
    numel = sum(p.numel() for p in params)
    return [
        (label, numel, "torch.optim.AdamW(fused=True), one weight decay", ms["peer"], 1.0),
        (
            label,
            numel,
            "adamwkit.functional.adamw_step, weight decay per member",
            ms["ours"],
            ms["peer"] / ms["ours"],
        ),
    ]


def run(device: str, repeats: int) -> None:
    print(f"\n### {device}: {torch.get_num_threads()} threads, torch {torch.__version__}\n")
    print("| case | elements | optimizer | ms/step | ratio vs peer |")
    print("|---|---:|---|---:|---:|")
    rows = single_model_rows("gpt2-small", gpt2_small_shapes(), device, repeats)
    rows += single_model_rows("small-tensors", small_shapes(), device, repeats)
    gpt2_member = [(max(1, s[0] // P), *s[1:]) for s in gpt2_small_shapes()]
    for flat in (False, True):
        rows += population_rows("small-tensors", small_shapes(), device, repeats, flat)
        rows += population_rows("gpt2-small/16", gpt2_member, device, repeats, flat)
    for case, numel, name, ms, ratio in rows:
        print(f"| {case} | {numel:,} | {name} | {ms:.2f} | {ratio:.2f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=15, help="timed steps per row")
    parser.add_argument("--device", choices=("cpu", "cuda", "all"), default="all")
    args = parser.parse_args()
    if args.repeats < 1:
        parser.error(f"--repeats={args.repeats} is invalid: expected an integer >= 1")
    devices = ["cpu", "cuda"] if args.device == "all" else [args.device]
    for device in devices:
        if device == "cuda" and not torch.cuda.is_available():
            if args.device == "cuda":
                parser.error("--device cuda: no CUDA device is present")
            print("\n(no CUDA device present: CUDA table skipped)")
            continue
        run(device, args.repeats)


if __name__ == "__main__":
    main()
