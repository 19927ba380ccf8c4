"""The rendering module (adamwkit.render): every result's blocks, shown the same way by
``str()`` (plain) and on the terminal (rich), and a leaf of the import graph."""

from __future__ import annotations

import ast
import io
import sys
from pathlib import Path
from types import MappingProxyType, SimpleNamespace

import pytest
from rich.console import Console

from adamwkit import render
from adamwkit._safe_load import printable

SRC = Path(__file__).resolve().parents[1] / "src" / "adamwkit"


def _runtime_imports(path: Path) -> set[str]:
    """The modules a file imports when it runs (lazily too), not under TYPE_CHECKING,
    as absolute names (``adamwkit._format``)."""
    tree = ast.parse(path.read_text())
    hidden = {id(n) for node in ast.walk(tree) if isinstance(node, ast.If)
              and "TYPE_CHECKING" in ast.unparse(node.test) for n in ast.walk(node)}  # fmt: skip
    rel = path.relative_to(SRC.parent).with_suffix("").parts
    package = list(rel[:-1])
    found = set()
    for node in ast.walk(tree):
        if id(node) in hidden:
            continue
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            target = ".".join(base + ([node.module] if node.module else []))
            for a in node.names:
                child = f"{target}.{a.name}"
                exists = (SRC.parent / Path(*child.split("."))).with_suffix(".py").exists()
                found.add(child if exists else target)
    return found


def test_render_is_a_leaf():
    """At run time render imports the standard library, adamwkit._format and rich only."""
    for name in _runtime_imports(SRC / "render.py"):
        top = name.split(".")[0]
        assert name == "adamwkit._format" or top == "rich" or top in sys.stdlib_module_names, name


def _graph() -> dict[str, set[str]]:
    graph = {}
    for path in SRC.rglob("*.py"):
        parts = path.relative_to(SRC.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        graph[name] = {m for m in _runtime_imports(path) if m.startswith("adamwkit")}
    return {m: {d for d in deps if d in graph and d != m} for m, deps in graph.items()}


OWN = ["adamwkit.cli", "adamwkit.render", "adamwkit.explain", "adamwkit.suggest",
       "adamwkit.tuning.options", "adamwkit.tuning.probe", "adamwkit.tuning.transfer"]  # fmt: skip


@pytest.mark.parametrize("module", OWN)
def test_no_import_cycle_passes_through(module):
    """No chain of imports (lazy ones included) leads from the module back to itself."""
    graph = _graph()
    seen, todo = set(), list(graph[module])
    while todo:
        m = todo.pop()
        assert m != module, f"{module} imports itself through {sorted(seen)}"
        if m not in seen:
            seen.add(m)
            todo += graph.get(m, ())


def _rich_text(blocks: list[render.Block]) -> str:
    console = Console(record=True, width=400, highlight=False, file=io.StringIO())
    render.to_rich(blocks, console)
    return " ".join(console.export_text().split())


def _same_content(blocks: list[render.Block]) -> str:
    """plain() of the blocks, after checking the terminal shows every line and cell."""
    terminal = _rich_text(blocks)
    for b in blocks:
        texts = [b.text, b.label] if isinstance(b, render.Line) else [*b.columns, *sum(b.rows, ())]
        texts += [b.title] if isinstance(b, render.Table) else []
        for t in texts:
            assert " ".join(t.split()) in terminal, t
    return render.plain(blocks)


def _candidate(wd, state="complete", reason=None, **kw):
    return {"weight_decay": wd, "lr": 1e-3, "tau_epoch": None if wd == 0 else 10 / wd,
            "mean": 0.5 + wd, "sem": 0.01, "paired_diff": wd, "paired_sem": 0.02,
            "state": state, "reason": reason, **kw}  # fmt: skip


SUMMARY = MappingProxyType(
    {"task": "digits", "folds": 5, "epochs": 30, "best_lr": 1e-3, "best_weight_decay": 0.01,
     "one_se_weight_decay": 0.1, "flat": False, "verdict": "Best weight decay 0.01.",
     "vectorize": "off (one run)", "notes": ["trial_timeout=3 was short"],
     "candidates": [_candidate(0.0), _candidate(0.01), _candidate(0.1),
                    _candidate(1.0, "failed", "exceeded trial_timeout of 3 s")]}
)  # fmt: skip


def test_a_tune_summary_read_only_with_its_marks_notes_and_paths():
    rename = str.upper
    blocks = render.tune_summary(SUMMARY, {"report": "r.html", "summary": "s.json"}, rename)
    text = _same_content(blocks)
    assert "digits: 5-fold CV, 30 epochs" in text
    lines = text.splitlines()
    assert next(ln for ln in lines if ln.lstrip().startswith("0.01 ")).endswith("complete best")
    assert next(ln for ln in lines if ln.lstrip().startswith("0.1 ")).endswith("one-SE")
    assert "failed (EXCEEDED TRIAL_TIMEOUT OF 3 S)" in text
    assert "note: TRIAL_TIMEOUT=3 WAS SHORT" in text
    assert "Report: r.html  (summary: s.json)" in text
    assert "Best weight decay 0.01." in text


def test_no_result_is_one_line_with_the_first_reason():
    line = render.no_result(SUMMARY, "r.html")
    assert "\n" not in line
    assert line.startswith("no candidate finished every fold: 3 complete, 1 failed")
    assert "(first reason: exceeded trial_timeout of 3 s)" in line
    assert render.no_result({"candidates": []}, "r").startswith(
        "no candidate finished every fold: no candidates;"
    )


def test_probe_and_transfer_results():
    confirm = SimpleNamespace(summary=SUMMARY, paths={"report": "r", "summary": "s"})
    probe = SimpleNamespace(verdict=lambda: "Probe says 0.05.", run_dir="runs/p",
                            confirm=confirm)  # fmt: skip
    text = _same_content(render.probe_result(probe))
    assert text.startswith("Probe says 0.05.\nProbe: runs/p\n")
    assert "digits: 5-fold CV" in text
    point = SimpleNamespace(fraction=0.25, n_train=1200, tau_star=12.5, band=(8.0, 20.0),
                            best_weight_decay=0.0123)  # fmt: skip
    transfer = SimpleNamespace(points=[point], verdict=lambda: "Extrapolated.",
                               paths={"plot": "t.png", "summary": "t.json"})  # fmt: skip
    text = _same_content(render.transfer_result(transfer))
    assert "0.25 1,200 12.5 8 to 20 0.0123" in " ".join(text.split())
    assert "Extrapolated.\nPlot: t.png  (summary: t.json)" in text


def test_a_checkpoint_report_escapes_the_files_strings():
    row = SimpleNamespace(name="evil\x1b[31m", shape=(4, 2), dtype="float32", norm=1.0,
                          rms=0.5, decays=False, rule="bias", equilibrium_norm=None,
                          norm_ratio=None)  # fmt: skip
    info = {"path": "ck.pt", "format": "torch", "tensors": [row] * 41, "parameters": 328,
            "decayed_parameters": 0, "optimizer": None, "extra": {"epoch": 3},
            "notes": ["a note"], "lr": 1e-3}  # fmt: skip
    text = _same_content(render.checkpoint_report(info, printable))
    assert "\x1b" not in text and "evil\\x1b[31m" in text
    assert "1 more tensors: --all shows them" in text
    assert "Run: epoch 3" in text and "note: a note" in text
    assert "more tensors" not in render.plain(
        render.checkpoint_report(info, printable, show_all=True)
    )


def test_a_monitor_log():
    run = SimpleNamespace(
        run="m.jsonl", optimizer="AdamW", steps=1200, every=10,
        layers=[{"layer": "w", "norm": 1.0, "pred_norm": 2.0, "angle": None,
                 "pred_angle": 0.1}],
        verdicts=[{"layer": "w", "code": "below", "text": "below its equilibrium"},
                  {"layer": "b", "code": "no-decay", "text": "not decayed"}],
    )  # fmt: skip
    text = _same_content(render.monitor_log(run, printable))
    assert text.startswith("m.jsonl: AdamW, 1,200 steps, recorded every 10\n")
    assert "w: below its equilibrium" in text and "not decayed: b" in text


def test_str_of_a_result_is_its_blocks():
    from adamwkit import explain, suggest

    sug = suggest(lr=1e-3, batch_size=256, dataset_size=100_000, epochs=100)
    assert str(sug) == render.plain(sug.blocks()) == _same_content(sug.blocks())
    ex = explain(0.05, lr=1e-3, batch_size=256, dataset_size=100_000, epochs=100)
    assert str(ex) == render.plain(ex.blocks()) == _same_content(ex.blocks())
