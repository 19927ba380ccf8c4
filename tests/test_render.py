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
            "fold_metrics": [0.9 - wd / 10, 0.92 - wd / 10],
            "state": state, "reason": reason, **kw}  # fmt: skip


SUMMARY = MappingProxyType(
    {"task": "digits", "folds": 5, "epochs": 30, "lr": 1e-3, "best_lr": 1e-3,
     "best_weight_decay": 0.01, "one_se_weight_decay": 0.1, "flat": False,
     "decay_scale": "lr", "metric_name": "accuracy",
     "verdict": "Best weight decay 0.01.\nSecond line.",
     "test": {"best": {"loss": 0.4, "metric": 0.93}, "zero": {"loss": 0.5, "metric": 0.91}},
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
    row = {ln.split()[0]: ln for ln in lines if ln.startswith(("  ", "> "))}
    assert row["0.01"].endswith("best") and row["0.1"].endswith("one-SE")
    assert row["1"].endswith("failed [1]")
    assert "[1] failed: EXCEEDED TRIAL_TIMEOUT OF 3 S" in lines
    # the accuracy column: each candidate's mean over its folds
    assert "accuracy" in lines[1] and "0.91" in row["0"].split() and "0.909" in row["0.01"].split()
    assert "note: TRIAL_TIMEOUT=3 WAS SHORT" in text
    assert "Report: r.html  (summary: s.json)" in text
    assert "BEST WEIGHT DECAY 0.01.\nSECOND LINE." in text  # a verdict line per fact
    # the answer comes last, with the copy-paste line and the test metric beside it
    assert lines[-4:] == [
        "Use weight_decay=0.01 (PyTorch's convention) with lr=0.001:",
        "    AdamW(param_groups(model, weight_decay=0.01), lr=0.001, decay_scale='lr')",
        "    one-SE alternative 0.1 (more decay, within one SE); test accuracy 0.93 (zero "
        "decay: 0.91)",
        "    why: the lowest held-out loss of 3 candidates (5-fold CV)",
    ]


def test_the_candidates_table_fits_80_columns_a_row_per_line():
    wide = dict(
        SUMMARY,
        candidates=[
            _candidate(
                w,
                tau_epoch=3.922e6 * w,
                mean=0.31734567,
                sem=0.0371234,
                paired_diff=0.00833,
                paired_sem=0.0066,
            )
            for w in (0.000123456, 1.23456, 12.3456)
        ]
        + [_candidate(46.19, "pruned", "at chance level after 75 of 300 epochs: " + "x " * 60)],
    )
    table = render.candidate_table(wide)
    assert table.width() > 80  # as it is, too wide: tau_epoch gives way first
    fitted = table.fit(80)
    assert fitted.width() <= 80 and "tau_epoch" not in fitted.columns
    assert fitted.columns == ("weight_decay", "CV loss ± SE", "vs best ± SE", "accuracy",
                              "state")  # fmt: skip
    console = Console(width=80, highlight=False, file=io.StringIO(), record=True)
    render.to_rich(render.tune_summary(wide), console)
    out = console.export_text().splitlines()
    assert all(len(line) <= 80 for line in out)
    rows = [ln for ln in out if ln.lstrip().startswith(("0.0001235", "1.235", "12.35", "46.19"))]
    assert len(rows) == 4 and rows[-1].endswith("pruned [1]")
    # one number format: zero's tau is inf, a missing SE shows no nan
    zero = render.candidate_table(dict(SUMMARY, candidates=[
        _candidate(0.0, tau_epoch=float("inf"), sem=float("nan"), paired_diff=0.1,
                   paired_sem=None)]))  # fmt: skip
    assert zero.rows[0][:3] == ("0", "inf", "0.5") and "nan" not in "".join(zero.rows[0])


def test_notebook_html_has_a_header_cell_per_column():
    html = render.to_html(render.tune_summary(SUMMARY))
    table = render.candidate_table(SUMMARY)
    assert html.count("<th>") == len(table.columns) == 6
    assert '<tr class="marked">' not in html  # marks are words in the state column
    assert "<code>AdamW(param_groups(model, weight_decay=0.01), lr=0.001" in html


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
        layers=[{"layer": "w", "step": 1190, "norm": 1.0, "pred_norm": 2.0, "norm_ratio": 0.5,
                 "angle": None, "pred_angle": 0.1, "scale_invariant": False}],
        verdicts=[{"layer": "w", "code": "below", "text": "below its equilibrium"},
                  {"layer": "b", "code": "no-decay", "text": "not decayed"}],
    )  # fmt: skip
    text = _same_content(render.monitor_log(run, printable))
    assert text.startswith("m.jsonl: AdamW, 1,200 steps, recorded every 10\n")
    assert "w: below its equilibrium" in text and "not decayed: b" in text
    row = next(ln for ln in text.splitlines() if ln.split()[:1] == ["w"])
    assert row.split() == ["w", "1,190", "1", "2", "0.5", "-", "0.1", "no:", "reference"]


def test_str_of_a_result_is_its_blocks():
    from adamwkit import explain, suggest

    sug = suggest(lr=1e-3, batch_size=256, dataset_size=100_000, epochs=100)
    assert str(sug) == render.plain(sug.blocks()) == _same_content(sug.blocks())
    ex = explain(0.05, lr=1e-3, batch_size=256, dataset_size=100_000, epochs=100)
    assert str(ex) == render.plain(ex.blocks()) == _same_content(ex.blocks())


def test_a_tune_result_in_a_notebook_is_short_and_shows_its_table(tmp_path):
    import adamwkit

    def objective(trial) -> dict[str, float]:
        loss = 1.0 + (trial.weight_decay - 0.3) ** 2 + 0.01 * trial.fold
        return {"loss": loss, "accuracy": 0.9 - abs(trial.weight_decay - 0.3)}

    result = adamwkit.tune(objective, examples=60, lr=1e-3, grid=[0.0, 0.1, 0.3, 1.0],
                           folds=3, out=tmp_path, progress=False, test=False)  # fmt: skip
    assert len(repr(result)) < 2000 and "best_weight_decay=0.3" in repr(result)
    page = result._repr_html_()
    for column in ("weight_decay", "CV loss ± SE", "vs best ± SE", "accuracy", "state"):
        assert f"<th>{column}</th>" in page
    assert "AdamW(param_groups(model, weight_decay=0.3), lr=0.001" in page
    text = str(result)
    assert text.splitlines()[-2].startswith("    AdamW(param_groups(model, weight_decay=0.3)")
    # the accuracy column: the mean of the folds' accuracy, 0.9 at 0.3
    row = next(ln for ln in text.splitlines() if ln.split()[:1] == ["0.3"])
    assert "0.9" in row.split() and row.rstrip().endswith("best, one-SE")


def _at_80(blocks: list[render.Block]) -> list[str]:
    console = Console(width=80, highlight=False, file=io.StringIO(), record=True)
    render.to_rich(blocks, console)
    return console.export_text().splitlines()


def test_suggest_and_inspect_tables_fit_80_columns():
    from adamwkit import suggest

    sug = suggest(lr=2e-5, batch_size=32, dataset_size=10_000, epochs=3)
    lines = _at_80(sug.blocks())
    assert all(len(line) <= 80 for line in lines)
    assert any(line.startswith("> calibrated") and "92.4" in line for line in lines)
    name = "bert.encoder.layer.11.attention.output.LayerNorm.weight"
    row = SimpleNamespace(name=name, shape=(768,), dtype="float32", norm=27.7, rms=0.9993,
                          decays=False, rule="normalisation layer", equilibrium_norm=3.2,
                          norm_ratio=8.66)  # fmt: skip
    info = {"path": "bert.safetensors", "format": "safetensors", "tensors": [row] * 3,
            "parameters": 2304, "decayed_parameters": 0, "optimizer": None, "extra": {},
            "notes": [], "lr": 1e-4}  # fmt: skip
    lines = _at_80(render.checkpoint_report(info, printable))
    rows = [line for line in lines if "LayerNorm.weight" in line]
    assert len(rows) == 3 and all(len(line) <= 80 for line in rows)
    # the name is cut in the middle; the numbers and the decision stay whole
    assert rows[0].split()[0].startswith("bert.encoder.") and "…" in rows[0].split()[0]
    assert rows[0].split()[1:] == ["27.7", "no:", "normalisation", "layer"]


def test_an_indented_line_wraps_under_its_indent_without_trailing_spaces():
    """The answer's "why:" line on a 50-column terminal: every wrapped piece keeps the
    line's 4-space indent, none is wider than the terminal or ends in a space, and the
    words read as written (oracle: the text itself)."""
    text = "    why: the lowest held-out loss of 10 candidates (3-fold CV), but weight decay " \
           "barely matters here"  # fmt: skip
    console = Console(width=50, highlight=False, file=io.StringIO(), record=True)
    render.to_rich([render.Line(text, style="dim"), render.Line("Use it", label="Use")], console)
    lines = console.export_text().splitlines()
    wrapped, last = lines[:-1], lines[-1]
    assert len(wrapped) == 3 and last == "Use Use it"
    assert all(line.startswith("    ") and not line.startswith("     ") for line in wrapped)
    assert all(len(line) <= 50 and not line.endswith(" ") for line in wrapped)
    assert " ".join(line.strip() for line in wrapped) == text.strip()
