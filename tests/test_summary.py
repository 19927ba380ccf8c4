"""adamwkit.tuning.summary: the typed summary of a tune run (summary.json's schema).

Each test checks against an oracle of its own: the keys written out by hand from
run.py's ``_summarize``, statistics derived by hand from chosen fold losses, sentences
written out by hand, and (while it exists) run.py's own ``_summarize``.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from adamwkit import suggest
from adamwkit.tuning import cv
from adamwkit.tuning.config import StudySpec
from adamwkit.tuning.executor import Decision
from adamwkit.tuning.summary import (
    KEYS,
    TuneSummary,
    build_summary,
    edge_text,
    verdict_lines,
    verdict_text,
)

# The keys of summary.json today, in order, copied from run.py's ``_summarize`` (then
# "verdict" and "state" from ``_run_study`` and "notes" from ``_work_and_summarize``).
SUMMARY_KEYS = [
    "task",
    "description",
    "metric_name",
    "folds",
    "epochs",
    "lr",
    "best_lr",
    "batch_size",
    "n_train",
    "decay_scale",
    "best_weight_decay",
    "one_se_weight_decay",
    "suggested_weight_decay",
    "suggested_rule",
    "suggested_range",
    "best_weight_decay_conventions",
    "one_se_weight_decay_conventions",
    "suggested_weight_decay_conventions",
    "best_total_decay",  # added with the total decay in the verdict (not in older summaries)
    "best_mean",
    "best_sem",
    "flat",
    "zero_paired_diff",
    "zero_paired_sem",
    "hurts_from",
    "edge",
    "learned",  # added with the check that the model learned (not in older summaries)
    "baseline",
    "uncertainty",
    "repeats",
    "extended",
    "budget",  # added with budget= (not in older summaries)
    "spent_runs",
    "pruned",
    "failed",
    "candidates",
    "tau_epoch_factor",
    "settings",
    "device",
    "precision",
    "vectorize",
    "stacking",
    "test",
    "created",
    "seconds",  # added with the report's run time (not in older summaries)
    "verdict",
    "state",
    "notes",
    "audit",  # the optimizer audit of the first run with decay (not in older summaries)
]

LR, BS, N_TRAIN, EPOCHS = 0.01, 32, 800, 10
SEM3 = 0.1 / math.sqrt(3)  # the standard error of three values 0.1 apart (sd 0.1)
SEM3_SMALL = 0.02 / math.sqrt(3)  # of three values 0.02 apart (sd 0.02)

# Five candidates at lr 0.01 on three folds; the paired differences to the best (1e-3):
#   wd 0     [0.70, 0.90, 1.10]  diffs [0.20, 0.30, 0.40]  mean 0.30, paired SE 0.0577
#   wd 1e-4  [0.60, 0.80, 1.00]  diffs [0.10, 0.20, 0.30]  mean 0.20, paired SE 0.0577
#   wd 1e-3  [0.50, 0.60, 0.70]  the best: mean 0.60, SE 0.1/sqrt(3) = 0.0577
#   wd 1e-2  [0.51, 0.59, 0.73]  diffs [0.01, -0.01, 0.03] mean 0.01, paired SE 0.0115
#   wd 1e-1  [0.54, 0.62, 0.76]  diffs [0.04, 0.02, 0.06]  mean 0.04, paired SE 0.0115
# One-SE (paired): 1e-2 is within one paired SE (0.01 <= 0.0115), 1e-1 is not (0.04 >
# 0.0115), so one_se = 1e-2. (An unpaired rule would take 1e-1: its mean 0.64 is within
# 0.60 + 0.0577.) 1e-1 is worse by more than two paired SEs (0.04 > 0.0231), the first such
# above the best: hurts_from = 0.1. Zero is 0.30 worse, far beyond 2.4 paired SEs
# (0.14): not flat. The best is neither the smallest nor the largest positive decay: no edge.
FOLD_LOSSES = {
    0.0: [0.70, 0.90, 1.10],
    1e-4: [0.60, 0.80, 1.00],
    1e-3: [0.50, 0.60, 0.70],
    1e-2: [0.51, 0.59, 0.73],
    1e-1: [0.54, 0.62, 0.76],
}
GRID = (0.0, 1e-4, 1e-3, 1e-2)  # 1e-1 was added past the grid's edge: "extended"


def make_spec(scale: str = "lr", grid: tuple[float, ...] = GRID) -> StudySpec:
    return StudySpec(
        source="hand",
        data="0123456789abcdef",
        folds=3,
        epochs=EPOCHS,
        lr=LR,
        batch_size=BS,
        decay_scale=scale,
        schedule=None,
        seed=0,
        test_fraction=0.2,
        sampler="grid",
        grid=grid,
    )


def make_candidates(losses: dict[float, list[float]] = FOLD_LOSSES) -> list[cv.Candidate]:
    # given in descending order: build_summary sorts them by (lr, weight decay)
    return [
        cv.Candidate(wd, LR, fold_losses=dict(enumerate(ls)), fold_metrics=dict(enumerate(ls)))
        for wd, ls in sorted(losses.items(), reverse=True)
    ]


def build(scale: str = "lr", **kw: Any) -> TuneSummary:
    args: dict[str, Any] = dict(
        task="hand",
        description="hand-made candidates",
        metric_name="accuracy",
        spec=make_spec(scale),
        device="cpu",
        n_train=N_TRAIN,
        suggestion=None,
        candidates=make_candidates(),
        decision=None,
        stack_refusal=None,
        created="2024-01-02T03:04:05",
    )
    args.update(kw)
    return build_summary(**args)


# ---------------------------------------------------------------------------- (a) the keys


def test_keys_are_those_of_summary_json_in_order() -> None:
    assert list(KEYS) == SUMMARY_KEYS
    s = build()
    assert list(s) == SUMMARY_KEYS
    assert list(s.keys()) == SUMMARY_KEYS
    assert list(s.to_dict()) == SUMMARY_KEYS
    assert len(s) == len(SUMMARY_KEYS)


# ---------------------------------------------------------------------------- (b) the values


@pytest.mark.parametrize("scale", ["lr", "schedule"])
def test_build_summary_hand_derived(scale: str) -> None:
    s = build(scale)
    # best and one-SE as derived above
    assert s["best_weight_decay"] == 1e-3
    assert s["one_se_weight_decay"] == 1e-2
    assert s["best_lr"] == LR
    assert s["best_mean"] == pytest.approx(0.60)
    assert s["best_sem"] == pytest.approx(SEM3)
    assert s["zero_paired_diff"] == pytest.approx(0.30)
    assert s["zero_paired_sem"] == pytest.approx(SEM3)
    assert s["flat"] is False
    assert s["hurts_from"] == 0.1
    assert s["edge"] is None
    assert s["extended"] == [0.1]
    assert (s["pruned"], s["failed"], s["repeats"], s["folds"]) == (0, 0, 1, 3)
    assert s["state"] == "complete"
    assert s["notes"] == [] and s["test"] == {}
    # PyTorch's convention: wd itself with decay_scale "lr"; wd / lr with "schedule"
    to_torch = 1.0 if scale == "lr" else 1.0 / LR
    assert s["best_weight_decay_conventions"] == pytest.approx(
        {"torch": 1e-3 * to_torch, "independent": 1e-3 * to_torch * LR}
    )
    assert s["one_se_weight_decay_conventions"] == pytest.approx(
        {"torch": 1e-2 * to_torch, "independent": 1e-2 * to_torch * LR}
    )
    assert s["suggested_weight_decay_conventions"] == {"torch": None, "independent": None}
    # the candidates, sorted by weight decay, each with tau_epoch = B / (lr * wd_torch * N)
    cands = s["candidates"]
    assert [c["weight_decay"] for c in cands] == sorted(FOLD_LOSSES)
    for c in cands:
        wd_torch = c["weight_decay"] * to_torch
        expected = math.inf if wd_torch == 0 else BS / (LR * wd_torch * N_TRAIN)
        assert c["tau_epoch"] == pytest.approx(expected)
        assert c["mean"] == pytest.approx(float(np.mean(FOLD_LOSSES[c["weight_decay"]])))
        assert c["fold_losses"] == FOLD_LOSSES[c["weight_decay"]]
    by_wd = {c["weight_decay"]: c for c in cands}
    assert by_wd[1e-2]["paired_diff"] == pytest.approx(0.01)
    assert by_wd[1e-2]["paired_sem"] == pytest.approx(SEM3_SMALL)
    assert by_wd[1e-1]["paired_diff"] == pytest.approx(0.04)
    assert by_wd[1e-1]["paired_sem"] == pytest.approx(SEM3_SMALL)
    # tau_epoch = factor / wd (wd in decay_scale's convention)
    assert s["tau_epoch_factor"] == pytest.approx(BS / (LR * N_TRAIN) / to_torch)
    assert s["tau_epoch_factor"] / 1e-3 == pytest.approx(by_wd[1e-3]["tau_epoch"])


def test_build_summary_settings_and_plain_keys() -> None:
    spec = make_spec()
    s = build(spec=spec)
    assert s["task"] == "hand" and s["description"] == "hand-made candidates"
    assert s["metric_name"] == "accuracy" and s["device"] == "cpu"
    assert (s["epochs"], s["lr"], s["batch_size"], s["n_train"]) == (EPOCHS, LR, BS, N_TRAIN)
    assert s["decay_scale"] == "lr" and s["precision"] == "fp32"
    assert s["created"] == "2024-01-02T03:04:05"
    assert s["settings"]["grid"] == list(GRID)  # JSON values: the tuple as a list
    assert s["settings"]["folds"] == 3 and s["settings"]["source"] == "hand"


def test_build_summary_stacking_decision() -> None:
    assert build()["vectorize"] == "off (no run trained here)"
    refused = build(stack_refusal="asked")
    assert refused["vectorize"] == "off (asked)"
    assert refused["stacking"] == {
        "mode": "off",
        "reason": "asked",
        "ratio": None,
        "members": None,
        "keep": True,
    }
    on = build(decision=Decision("on", ratio=1.5, members=8), stack_refusal="ignored")
    assert on["vectorize"] == "on (8 members together: 1.50x one at a time, measured)"
    assert on["stacking"]["mode"] == "on" and on["stacking"]["members"] == 8


def test_build_summary_with_a_suggestion() -> None:
    sug = suggest(lr=LR, batch_size=BS, dataset_size=N_TRAIN, epochs=EPOCHS, decay_scale="lr")
    s = build(suggestion=sug)
    assert s["suggested_weight_decay"] == sug.weight_decay  # PyTorch's convention: "lr"
    assert s["suggested_rule"] == sug.rule
    if sug.low is None:
        assert s["suggested_range"] is None
    else:
        assert s["suggested_range"] == [sug.low, sug.high]
    assert s["suggested_weight_decay_conventions"] == pytest.approx(
        {"torch": sug.weight_decay, "independent": sug.weight_decay * LR}
    )
    assert "adamwkit suggest predicted" in s["verdict"]


def test_build_summary_without_a_best() -> None:
    # every candidate lacks a fold or failed: nothing to recommend
    cands = [
        cv.Candidate(0.0, LR, fold_losses={0: 1.0, 1: 1.1}, state="pruned"),
        cv.Candidate(1e-3, LR, fold_losses={0: 0.9}, state="failed", reason="boom"),
        cv.Candidate(1e-2, LR, state="failed", reason="boom"),
    ]
    s = build(candidates=cands, spec=make_spec(grid=(0.0, 1e-3, 1e-2)))
    assert s["best_weight_decay"] is None and s["one_se_weight_decay"] is None
    assert s["best_lr"] == LR  # the lr asked for
    assert s["best_weight_decay_conventions"] == {"torch": None, "independent": None}
    assert (s["best_mean"], s["best_sem"], s["zero_paired_diff"]) == (None, None, None)
    assert s["flat"] is False and s["edge"] is None and s["hurts_from"] is None
    assert (s["pruned"], s["failed"], s["extended"]) == (1, 2, [])
    assert s["state"] == "failed"
    assert s["verdict"] == "No candidate finished every fold: nothing to recommend yet."


def test_build_summary_without_a_batch_size() -> None:
    spec = dataclasses.replace(make_spec(), batch_size=None)
    s = build(spec=spec)
    assert s["tau_epoch_factor"] is None and s["batch_size"] is None
    assert all(c["tau_epoch"] is None for c in s["candidates"])


# ---------------------------------------------------------------------------- (c) the verdict


def hand_summary(**kw: Any) -> dict[str, Any]:
    s: dict[str, Any] = {
        "best_weight_decay": 0.01,
        "one_se_weight_decay": 0.1,
        "best_weight_decay_conventions": {"torch": 0.01, "independent": 0.0001},
        "one_se_weight_decay_conventions": {"torch": 0.1, "independent": 0.001},
        "suggested_weight_decay_conventions": {"torch": None, "independent": None},
        "suggested_weight_decay": None,
        "suggested_range": None,
        "flat": False,
        "zero_paired_diff": None,
        "zero_paired_sem": None,
        "hurts_from": None,
        "edge": None,
        "test": {},
        "failed": 0,
    }
    s.update(kw)
    return s


CHOICE = "Best weight decay 0.01; the largest within one standard error: 0.1."
CONVENTIONS = (
    'Conventions: 0.01 in PyTorch\'s (decay_scale "lr": each step multiplies the weights by '
    "1 - lr x wd) is 0.0001 in the AdamW paper's, independent of the lr (decay_scale "
    '"schedule": wd x lr).'
)


def test_verdict_clear_best() -> None:
    assert verdict_text(hand_summary()) == CHOICE + "\n" + CONVENTIONS


def test_verdict_failed() -> None:
    assert verdict_text({"best_weight_decay": None}) == (
        "No candidate finished every fold: nothing to recommend yet."
    )


def test_verdict_flat_with_suggestion_test_losses_and_failures() -> None:
    s = hand_summary(
        flat=True,
        zero_paired_diff=0.01234,
        zero_paired_sem=0.00567,
        hurts_from=0.5,
        suggested_weight_decay=0.05,
        suggested_weight_decay_conventions={"torch": 0.05, "independent": 0.0005},
        suggested_range=[0.02, 0.2],
        metric_name="accuracy",
        test={
            "best": {"loss": 0.51234, "weight_decay": 0.01, "metric": 0.91},
            "one_se": {"loss": 0.52, "weight_decay": 0.1},
            "zero": {"loss": None},
            "torch_default": {"loss": 0.6, "weight_decay": 0.01},
        },
        failed=2,
    )
    assert verdict_lines(s) == [
        CHOICE,
        "Weight decay barely matters here: zero decay is within noise of the best "
        "(0.0123 ± 0.0057 worse, paired); from 0.5 up it hurts.",
        "adamwkit suggest predicted 0.05 (80% range 0.02 to 0.2).",
        CONVENTIONS,
        "Test loss after refitting on the training pool: the best: 0.5123 (accuracy 0.91); "
        "the one-SE choice: 0.52; PyTorch's default 0.01: 0.6.",
        "2 candidate(s) failed: their reasons are in the report.",
    ]
    assert verdict_text(s) == "\n".join(verdict_lines(s))


def test_verdict_no_test_line_without_the_best_refit() -> None:
    s = hand_summary(test={"best": {"loss": None}, "zero": {"loss": 0.7}})
    assert verdict_lines(s) == [CHOICE, CONVENTIONS]
    g = {"torch": 0.05, "independent": None}
    s = hand_summary(
        suggested_weight_decay=0.05, suggested_range=None, suggested_weight_decay_conventions=g
    )
    assert verdict_lines(s) == [CHOICE, "adamwkit suggest predicted 0.05.", CONVENTIONS]


ZERO_BEST = {
    "flat": True,
    "best_weight_decay": 0.0,
    "one_se_weight_decay": 0.0,
    "best_weight_decay_conventions": {"torch": 0.0, "independent": 0.0},
    "one_se_weight_decay_conventions": {"torch": 0.0, "independent": 0.0},
    "edge": "low",
    "candidates": [{"weight_decay": w, "mean": 1.0} for w in (0.0, 1e-3, 1e-2)],
}


def test_verdict_zero_best_at_the_low_edge_never_contradicts_the_run() -> None:
    s = hand_summary(**ZERO_BEST)
    assert verdict_lines(s) == [
        "Best weight decay 0; the largest within one standard error: the same.",
        "Weight decay barely matters here: zero decay is the best candidate.",
        "Zero decay is the best: even the smallest decay tried, 0.001, is worse; a smaller "
        "one may still help (lower grid_min).",
    ]
    # after the grid was extended down, nothing more to try is proposed
    s = hand_summary(**ZERO_BEST, extended=[1e-3])
    assert verdict_lines(s)[2] == (
        "Zero decay is the best: even the smallest decay tried, 0.001, is worse (after "
        "extending the grid down)."
    )
    assert "widen" not in verdict_text(s) and "may lie beyond" not in verdict_text(s)


def test_verdict_flat_without_zero_and_high_edge() -> None:
    s = hand_summary(flat=True, best_weight_decay=0.1, edge="high")
    assert verdict_lines(s)[1:3] == [
        "Weight decay barely matters here: no candidate is worse than the best by more than "
        "two paired standard errors.",
        "The best weight decay 0.1 is the largest positive candidate: the optimum may lie "
        "beyond it (widen the grid with grid_max).",
    ]
    s = hand_summary(best_weight_decay=0.1, edge="high", extended=[0.2, 0.4])
    assert verdict_lines(s)[1].endswith(
        "(the grid was extended and the best is still at its edge: widen it with grid_max)."
    )


def test_edge_text() -> None:
    assert edge_text(0.0, "low") == (
        "zero decay is the best and the smallest decay tried already hurts"
    )
    assert edge_text(0.0123456, "high") == (
        "the best weight decay 0.01235 is the largest positive candidate"
    )
    assert edge_text(1e-5, "low") == (
        "the best weight decay 1e-05 is the smallest positive candidate"
    )


def test_verdict_of_a_built_summary() -> None:
    s = build()
    # from the hand derivation: best 1e-3, one-SE 1e-2, decay_scale "lr"
    assert verdict_lines(s) == [
        # mean and SE over the 3 folds: 0.6 +- 0.0577; zero decay's mean 0.9
        "Best weight decay 0.001 (held-out loss 0.6 ± 0.058; zero decay 0.9); the largest "
        "within one standard error: 0.01.",
        # 10 epochs x 800 / 32 steps; D = 1e-3 x 0.01 x 250 = 0.0025, exp(-D) = 0.997503
        "Over a run of 250 steps the best takes 0.25% (factor exp(-D) 0.997503, D 0.0025) off "
        "the weights by decay alone (D = lr x wd x steps at the peak lr).",
        'Conventions: 0.001 in PyTorch\'s (decay_scale "lr": each step multiplies the weights '
        "by 1 - lr x wd) is 1e-05 in the AdamW paper's, independent of the lr (decay_scale "
        '"schedule": wd x lr at lr 0.01).',
    ]
    assert verdict_text(s) == s["verdict"]  # a TuneSummary is a Mapping


# ---------------------------------------------------------------------------- (d) the mapping


def test_mapping_reads_and_sets() -> None:
    s = build()
    assert s["notes"] is s.notes  # the value itself, not a copy
    s["notes"] += ["x"]
    assert s.notes == ["x"] and s.to_dict()["notes"] == ["x"]
    s["notes"].append("y")
    assert s.to_dict()["notes"] == ["x", "y"]
    assert s.setdefault("notes", []) == ["x", "y"]
    s["test"] = {"best": {"weight_decay": 1e-3, "loss": 0.5}}
    assert s.test["best"]["loss"] == 0.5
    assert s.get("test") is s.test and s.get("nope") is None and s.get("nope", 7) == 7
    assert "flat" in s and "nope" not in s
    d = dict(s)
    assert list(d) == SUMMARY_KEYS and d["candidates"] is s.candidates
    assert {**s}["best_weight_decay"] == 1e-3
    assert list(s.values())[SUMMARY_KEYS.index("verdict")] == s.verdict


def test_mapping_keys_are_fixed() -> None:
    s = build()
    with pytest.raises(KeyError):
        s["nope"] = 1
    with pytest.raises(KeyError):
        s["nope"]
    with pytest.raises(TypeError):
        del s["notes"]
    with pytest.raises(TypeError):
        s.pop("notes")
    with pytest.raises(KeyError):
        s.update({"best_weight_decay": 2.0, "nope": 1})
    assert list(s) == SUMMARY_KEYS


def test_to_dict_is_plain_json() -> None:
    s = build()
    s["suggested_range"] = (0.1, 0.2)
    s["settings"] = {"grid": (0.0, 1e-3), "n": {1: (2, 3)}}
    d = s.to_dict()
    assert d["suggested_range"] == [0.1, 0.2]
    assert d["settings"] == {"grid": [0.0, 1e-3], "n": {"1": [2, 3]}}
    assert json.loads(json.dumps(d)) == d
    d["notes"].append("not shared")
    d["candidates"][0]["state"] = "not shared"
    assert s.notes == [] and s.candidates[0]["state"] == "complete"
    assert math.isinf(d["candidates"][0]["tau_epoch"])  # zero decay: kept as inf


def test_round_trip_through_json() -> None:
    s = build()
    s["notes"] += ["a note"]
    back = TuneSummary.from_dict(json.loads(json.dumps(s.to_dict())))
    assert back == s
    assert back.to_dict() == s.to_dict()
    assert back == s.to_dict()  # equal to its dict, as a Mapping
    back["notes"] += ["only here"]
    assert back != s


def test_from_dict_refuses_unknown_and_missing_keys() -> None:
    d = build().to_dict()
    with pytest.raises(ValueError, match="'extra'"):
        TuneSummary.from_dict({**d, "extra": 1})
    del d["verdict"]
    del d["n_train"]
    with pytest.raises(ValueError, match="'n_train', 'verdict'"):
        TuneSummary.from_dict(d)
    running = {"state": "running", "study": "s", "created": "2024-01-02T03:04:05"}
    with pytest.raises(ValueError, match="'running'"):
        TuneSummary.from_dict(running)
    with pytest.raises(ValueError):
        TuneSummary.from_dict([("task", "x")])  # type: ignore[arg-type]


def test_from_dict_copies() -> None:
    d = build().to_dict()
    s = TuneSummary.from_dict(d)
    s["notes"] += ["x"]
    assert d["notes"] == []


# ---------------------------------------------------------------------------- (e) today's


def test_equals_run_summarize(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """build_summary gives, key by key, what run.py's ``_summarize`` + ``verdict_text``
    give for the same candidates (while run.py still has them)."""
    run = pytest.importorskip("adamwkit.tuning.run")
    for name in ("_summarize", "verdict_text", "Prepared", "Plan", "_candidates"):
        if not hasattr(run, name):
            pytest.skip(f"run.py no longer has {name}")
    from adamwkit.tuning.config import TuneConfig

    scale = "schedule"
    losses = {**FOLD_LOSSES, 0.3: [0.9, 1.1]}  # a pruned one with two folds
    cands = make_candidates(losses)
    cands[0].state = "pruned"
    cands.append(cv.Candidate(0.5, LR, fold_losses={0: 2.0}, state="failed", reason="boom"))
    spec = make_spec(scale)
    sug = suggest(lr=LR, batch_size=BS, dataset_size=N_TRAIN, epochs=EPOCHS, decay_scale=scale)
    decision = Decision("on", ratio=1.25, members=4)
    folds = [(np.arange(N_TRAIN + i), np.arange(5)) for i in range(3)]  # n_train: the fewest
    splits = cv.Splits(np.arange(N_TRAIN + 10), np.arange(3), folds)
    config = TuneConfig(spec=spec, enqueue=(), study="s", run_dir=tmp_path, device="cpu")
    plan = run.Plan(config, splits, sug)
    prep = run.Prepared("hand", None, None, N_TRAIN, None, None, "hand-made", "accuracy")
    theirs = copy.deepcopy(cands)
    monkeypatch.setattr(run, "_candidates", lambda spec, studies: sorted(
        theirs, key=lambda c: (c.lr, c.weight_decay)))  # fmt: skip
    old = run._summarize(prep, plan, [], decision)
    old["verdict"] = run.verdict_text(old)
    old["state"] = "complete" if old["best_weight_decay"] is not None else "failed"
    old["notes"] = []
    new = build_summary(
        task=prep.name,
        description=prep.description,
        metric_name=prep.metric_name,
        spec=spec,
        device=config.device,
        n_train=splits.n_train,
        suggestion=sug,
        candidates=cands,
        decision=decision,
        stack_refusal=config.stack_refusal,
        created=old["created"],
    )
    assert list(new.to_dict()) == list(old)
    for key in old:  # as JSON text: NaN (a one-fold SE) and key order compare too
        assert json.dumps(new.to_dict()[key]) == json.dumps(old[key]), key
    assert new["pruned"] == 1 and new["failed"] == 1 and new["extended"] == [0.1, 0.3, 0.5]


# ------------------------------------------------------------------ (e) the total decay


def _shrink_by_torch_adamw(wd: float, lr: float, steps: int, cosine: bool) -> float:
    """The factor torch.optim.AdamW's decay alone multiplies a weight by over ``steps``
    steps (zero gradients: the Adam update is 0), with a constant lr or cosine to zero."""
    p = torch.nn.Parameter(torch.ones(1, dtype=torch.float64))
    opt = torch.optim.AdamW([p], lr=lr, weight_decay=wd)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda t: 0.5 * (1 + math.cos(math.pi * t / steps)) if cosine else 1.0
    )
    for _ in range(steps):
        p.grad = torch.zeros_like(p)
        opt.step()
        sched.step()
    return float(p.detach())


@pytest.mark.parametrize(("scale", "schedule"), [("lr", None), ("schedule", "cosine")])
def test_best_total_decay_is_what_adamw_does_to_the_weights(scale: str, schedule: Any) -> None:
    spec = dataclasses.replace(make_spec(scale), schedule=schedule)
    td = build(scale, spec=spec)["best_total_decay"]
    steps = EPOCHS * math.ceil(N_TRAIN / BS)
    wd_torch = 1e-3 if scale == "lr" else 1e-3 / LR
    assert td["steps"] == steps
    assert td["lr_mean_factor"] == (1.0 if schedule is None else pytest.approx(0.5, abs=0.01))
    oracle = _shrink_by_torch_adamw(wd_torch, LR, steps, cosine=schedule is not None)
    # exp(-D) against the product of (1 - lr_t wd): equal to first order in lr wd
    assert td["shrink"] == pytest.approx(oracle, rel=1e-3)
    assert td["D"] == pytest.approx(-math.log(td["shrink"]))


def test_verdict_states_the_total_decay() -> None:
    s = build()
    d = s["best_total_decay"]["D"]
    assert f"{100 * -math.expm1(-d):.3g}% (factor exp(-D)" in s["verdict"]
    assert "D = lr x wd x steps at the peak lr" in s["verdict"]
    assert build(spec=dataclasses.replace(make_spec(), batch_size=None))["best_total_decay"] is None


def test_the_suggestion_says_the_regime_its_rule_assumes() -> None:
    """A LoRA run tuned without --adapters shows the from-scratch rule for what it is."""
    for rule, words in (("calibrated", "a rule for training from scratch, multi-epoch"),
                        ("finetune", "a rule for fine-tuning"),
                        ("torch-default", "PyTorch's default, no rule applied")):  # fmt: skip
        s = hand_summary(suggested_weight_decay=0.05, suggested_range=[0.02, 0.2],
                         suggested_rule=rule)  # fmt: skip
        line = next(x for x in verdict_lines(s) if x.startswith("adamwkit suggest"))
        assert line == f"adamwkit suggest predicted 0.05 (80% range 0.02 to 0.2; {words})."
