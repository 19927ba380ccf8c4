"""What Monitor costs: a GPT-2-small training step and its AdamW step, with and without it.

GPT-2 small (124M parameters, built from its config: no weights are downloaded) on the CPU,
batch 2 x 128 tokens of random ids by default (``--batch``, ``--seq``). Each row times the
same step with no monitor, with ``Monitor(every=1)`` and with ``Monitor(every=10)``, in one
process, interleaved, and prints the median over repeats of the mean seconds per step over
``--steps`` steps (so that every=10 records its long-run share), and the ratio to the
unmonitored step. Run it alone
(2 cores thrash when anything else runs):

    .venv/bin/python benchmarks/monitor_overhead.py [--threads 2] [--repeats 3] [--seq 128]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

import adamwkit
from adamwkit import Monitor


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--seq", type=int, default=128, help="tokens per sequence (batch of 2)")
    ap.add_argument("--steps", type=int, default=20, help="timed steps per mode (10 or 20)")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config())  # GPT-2 small: 12 layers, 768 wide
    opt = adamwkit.AdamW(adamwkit.param_groups(model, weight_decay=0.1), lr=6e-4)
    ids = torch.randint(0, 50257, (a.batch, a.seq))
    n_params = sum(p.numel() for p in model.parameters())

    def train_step() -> None:
        opt.zero_grad(set_to_none=True)
        model(ids, labels=ids).loss.backward()
        opt.step()

    def opt_step() -> None:
        opt.step()

    # The time spent inside the monitor's hooks, measured directly: the step times above
    # it vary by several percent from run to run on a CPU, the hooks' time much less.
    inside = {"seconds": 0.0}
    before, after = Monitor.before_step, Monitor._after

    def timed_before(self: Monitor) -> None:
        start = time.perf_counter()
        before(self)
        inside["seconds"] += time.perf_counter() - start

    def timed_after(self: Monitor, *args: object) -> None:
        start = time.perf_counter()
        after(self, *args)
        inside["seconds"] += time.perf_counter() - start

    Monitor.before_step, Monitor._after = timed_before, timed_after  # type: ignore[method-assign]
    hooks: dict[tuple[str, str], list[float]] = {}
    modes: dict[str, int | None] = {"none": None, "every=1": 1, "every=10": 10}
    results: dict[tuple[str, str], list[float]] = {}
    train_step()  # warm up, and leave gradients for the optimizer-only rows
    for _ in range(a.repeats):
        for what, fn in (("training step", train_step), ("AdamW step", opt_step)):
            for mode, every in modes.items():
                mon = Monitor(opt, every=every, model=model) if every else None
                fn()  # step 1, which a new monitor always records: not timed
                # 10 or 20 timed steps: every=10 records once or twice, its long-run share.
                inside["seconds"] = 0.0
                start = time.perf_counter()
                for _ in range(a.steps):
                    fn()
                seconds = (time.perf_counter() - start) / a.steps
                results.setdefault((what, mode), []).append(seconds)
                hooks.setdefault((what, mode), []).append(inside["seconds"] / a.steps)
                if mon is not None:
                    mon.close()
    print(f"GPT-2 small, {n_params / 1e6:.0f}M parameters, batch {a.batch} x {a.seq} tokens, "
          f"{a.threads} threads, {a.repeats} repeats (median)")  # fmt: skip
    print("| step | monitor | seconds per step | ratio to no monitor | in the monitor's hooks "
          "| hooks / unmonitored step |")  # fmt: skip
    print("|---|---|---|---|---|---|")
    for what in ("training step", "AdamW step"):
        base = statistics.median(results[(what, "none")])
        for mode in modes:
            s = statistics.median(results[(what, mode)])
            h = statistics.median(hooks[(what, mode)])
            print(f"| {what} | {mode} | {s:.3f} | {s / base:.3f} | {h:.3f} | {h / base:.3f} |")


if __name__ == "__main__":
    main()
