"""The report's plots read at a glance: the learning curves' y axis is labelled whatever
the losses' range, and long tensor names fit their row of the monitor plot."""

from __future__ import annotations

import pytest

pytest.importorskip("matplotlib")

from adamwkit.tuning.report import LOG_SPAN, learning_curves_figure, short_names


def _summary(curves: dict[float, list[float]]) -> dict:
    return {
        "task": "t",
        "best_weight_decay": 0.0,
        "best_lr": 1e-3,
        "candidates": [
            {"weight_decay": wd, "lr": 1e-3,
             "fold_curves": {"0": [[i + 1, v] for i, v in enumerate(values)]}}
            for wd, values in curves.items()
        ],
    }  # fmt: skip


def _labelled_y_ticks(fig) -> list[str]:
    """The y tick labels drawn inside the axis's range (major and minor)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig).draw()  # tick labels are set when the figure is drawn
    ax = fig.axes[0]
    lo, hi = ax.get_ylim()
    ticks = ax.yaxis.get_major_ticks() + ax.yaxis.get_minor_ticks()
    drawn = [t for t in ticks if t.label1.get_visible() and lo <= t.get_loc() <= hi]
    return [t.label1.get_text() for t in drawn if t.label1.get_text()]


def test_losses_in_a_narrow_range_get_a_linear_labelled_axis():
    """A fine-tune's losses from 4.114 to 4.101: a log axis there labelled no tick (no 2,
    3 or 5 of a decade, no power of ten in range); linear, it labels several."""
    fig = learning_curves_figure(_summary({0.0: [4.114, 4.101], 0.1: [4.1142, 4.1014]}))
    assert fig.axes[0].get_yscale() == "linear"
    assert len(_labelled_y_ticks(fig)) >= 3
    steps = [t.get_loc() for t in fig.axes[0].xaxis.get_major_ticks()]
    assert all(float(s).is_integer() for s in steps)  # epochs, not 1.2 or 1.4


def test_losses_over_decades_get_a_log_axis_with_plain_labels():
    fig = learning_curves_figure(_summary({0.0: [2.3, 0.5, 0.05], 0.1: [2.3, 0.6, 0.1]}))
    assert 2.3 / 0.05 >= LOG_SPAN and fig.axes[0].get_yscale() == "log"
    labels = _labelled_y_ticks(fig)
    assert labels and all("10^" not in s and "times" not in s for s in labels)


def test_long_tensor_names_are_said_under_their_shared_prefix():
    names = [
        "model.base_model.model.transformer.h.0.mlp.c_fc.lora_B.default",
        "model.base_model.model.transformer.h.1.attn.c_attn.lora_B.default",
    ]
    prefix, label = short_names(names)
    assert prefix == "model.base_model.model.transformer."
    assert label[names[0]] == "h.0.mlp.c_fc.lora_B.default"
    long = ["encoder.layers.0.self_attention.query_key_value.lora_A.default.weight", "head.w"]
    prefix, label = short_names(long, width=34)
    first, second = label[long[0]].split("\n")
    assert prefix == "" and first.endswith(".") and first + second == long[0]
    assert max(len(first), len(second)) < len(long[0]) - 10  # cut near the middle
    assert label["head.w"] == "head.w"
