"""adamwkit inspect / read_checkpoint / load_weights on every format, a crafted malicious
pickle, and loading what fits. Oracles: the tensors written, torch.linalg norms, the
equilibrium norm's closed form sqrt(lr * n / (2 wd)), and the optimizer's own state."""

from __future__ import annotations

import json
import math
import warnings

import numpy as np
import pytest
import torch
from torch import nn

import adamwkit
from adamwkit import inspect_checkpoint, load_weights, read_checkpoint
from adamwkit.checkpoint import UnsafeCheckpoint
from adamwkit.cli import main


class Net(nn.Module):
    def __init__(self, extra: bool = False) -> None:
        super().__init__()
        self.cls_token = nn.Parameter(torch.randn(1, 1, 8))
        self.fc = nn.Linear(8, 16)
        self.norm = nn.LayerNorm(16)
        self.head = nn.Linear(16, 4)
        if extra:
            self.coef = nn.Parameter(torch.ones(()))  # a new trainable coefficient


EXPECTED = {
    "cls_token": (False, "token (cls_token)"),
    "fc.weight": (True, "ndim >= 2"),
    "fc.bias": (False, "bias"),
    "norm.weight": (False, "ndim <= 1"),
    "norm.bias": (False, "bias"),
    "head.weight": (True, "ndim >= 2"),
    "head.bias": (False, "bias"),
}


def _state() -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    return {k: v.clone() for k, v in Net().state_dict().items()}


def _save(tmp_path, fmt: str) -> tuple:
    sd = _state()
    if fmt == "pt":
        path = tmp_path / "model.pt"
        torch.save(sd, path)
    elif fmt == "safetensors":
        from safetensors.torch import save_file

        path = tmp_path / "model.safetensors"
        save_file(sd, str(path))
    elif fmt == "npz":
        path = tmp_path / "model.npz"
        np.savez(path, **{k: v.numpy() for k, v in sd.items()})
    else:
        h5py = pytest.importorskip("h5py")
        path = tmp_path / "model.weights.h5"
        with h5py.File(path, "w") as f:  # Keras 3 layout: layers/<name>/vars/<i>
            for k, v in sd.items():
                f.create_dataset(k.replace(".", "/"), data=v.numpy())
    return path, sd


@pytest.mark.parametrize("fmt", ["pt", "safetensors", "npz", "h5"])
def test_every_format_reads_back_the_tensors_and_decisions(tmp_path, fmt):
    path, sd = _save(tmp_path, fmt)
    ck = read_checkpoint(path)
    assert set(ck.tensors) == set(sd)
    for k, v in sd.items():
        torch.testing.assert_close(ck.tensors[k], v, rtol=0, atol=0)
    info = inspect_checkpoint(path)
    rows = {r.name: r for r in info["tensors"]}
    for name, (decays, rule) in EXPECTED.items():
        assert (rows[name].decays, rows[name].rule) == (decays, rule), name
        norm = float(torch.linalg.vector_norm(sd[name].double()))
        assert rows[name].norm == pytest.approx(norm, rel=1e-12)
        assert rows[name].rms == pytest.approx(norm / math.sqrt(sd[name].numel()), rel=1e-12)
    assert info["decayed_parameters"] == 8 * 16 + 16 * 4


def test_decisions_by_name_agree_with_param_groups_by_module_type(tmp_path):
    """The name-and-ndim rule of a file gives param_groups' decisions on this model."""
    path, _ = _save(tmp_path, "pt")
    plan = adamwkit.param_groups(Net(), 0.1).plan
    rows = {r.name: r.decays for r in inspect_checkpoint(path)["tensors"]}
    assert rows == {e.name: e.decays for e in plan.entries}


def test_training_checkpoint_gives_the_optimizer_groups_and_equilibrium(tmp_path):
    torch.manual_seed(0)
    model = Net()
    opt = adamwkit.AdamW(adamwkit.param_groups(model, 0.05), lr=1e-3, decay_scale="schedule")
    for _ in range(3):
        opt.zero_grad()
        model.head(model.fc(torch.randn(4, 8))).pow(2).mean().backward()
        opt.step()
    path = tmp_path / "last.ckpt"
    torch.save({"state_dict": model.state_dict(), "optimizer_states": [opt.state_dict()],
                "epoch": 7, "global_step": 3}, path)  # fmt: skip
    info = inspect_checkpoint(path, lr=1e-3, weight_decay=0.05)
    assert info["extra"] == {"epoch": 7, "global_step": 3}
    groups = info["optimizer"]
    assert [g["weight_decay"] for g in groups] == [0.05, 0.0]
    assert groups[0]["decay_scale"] == "schedule" and groups[0]["step"] == 3
    assert groups[0]["params"] == 2 and groups[1]["params"] == 5
    fc = next(r for r in info["tensors"] if r.name == "fc.weight")
    eq = math.sqrt(1e-3 * 128 / (2 * 0.05))
    assert fc.equilibrium_norm == pytest.approx(eq)
    assert fc.norm_ratio == pytest.approx(fc.norm / eq)
    assert next(r for r in info["tensors"] if r.name == "fc.bias").equilibrium_norm is None
    # a torch.optim.AdamW checkpoint has no decay_scale key: PyTorch's convention
    torch.save({"model": model.state_dict(),
                "optimizer": torch.optim.AdamW(model.parameters()).state_dict()},
               tmp_path / "torch.pt")  # fmt: skip
    (g,) = inspect_checkpoint(tmp_path / "torch.pt")["optimizer"]
    assert g["decay_scale"] == "lr" and "no decay_scale" in g["convention"]


class _Payload:
    """Pickles to a call of Path.touch: loading the file would create the marker."""

    def __init__(self, marker) -> None:
        self.marker = marker

    def __reduce__(self):
        return (type(self.marker).touch, (self.marker,))


def test_a_malicious_pickle_is_refused_and_nothing_runs(tmp_path, capsys):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    torch.save({"fc.weight": torch.zeros(2, 2), "x": _Payload(marker)}, path)
    with pytest.raises(UnsafeCheckpoint, match="could run code"):
        read_checkpoint(path)
    with pytest.raises(UnsafeCheckpoint):
        load_weights(Net(), path)
    assert main(["inspect", str(path)]) == 2
    err = capsys.readouterr().err
    assert "could run code" in err and len(err.strip().splitlines()) == 1
    assert not marker.exists()
    # the oracle: an unrestricted load of the same file does run it
    with open(path, "rb") as f:
        torch.load(f, weights_only=False)
    assert marker.exists()


def test_an_npz_with_pickled_objects_is_refused(tmp_path):
    path = tmp_path / "obj.npz"
    np.savez(path, w=np.zeros(3), o=np.array([{"a": 1}], dtype=object))
    with pytest.raises(UnsafeCheckpoint, match="pickled Python objects"):
        read_checkpoint(path)


def test_load_weights_loads_what_fits_and_reports_the_rest(tmp_path):
    path, sd = _save(tmp_path, "pt")
    target = Net(extra=True)
    target.head = nn.Linear(16, 5)  # a new head of another size
    report = load_weights(target, path)
    assert report.missing == ["coef"]
    assert report.mismatched == [("head.weight", (4, 16), (5, 16)), ("head.bias", (4,), (5,))]
    assert report.unexpected == []
    torch.testing.assert_close(target.fc.weight.detach(), sd["fc.weight"])
    assert float(target.coef.detach()) == 1.0  # kept as initialised
    text = str(report)
    assert "missing (kept as initialised)" in text and "4x16" in text and "5x16" in text
    assert load_weights(Net(), sd).complete  # a state dict works as well as a path


def test_load_weights_strips_or_adds_a_wrappers_prefix():
    sd = {f"module.{k}": v for k, v in _state().items()}
    report = load_weights(Net(), sd)
    assert report.complete and report.stripped_prefix == "module."
    wrapped = nn.DataParallel(Net())
    report = load_weights(wrapped, _state())
    assert report.complete and report.stripped_prefix == "+module."


def test_load_weights_and_read_checkpoint_name_the_confusion(tmp_path):
    sd = _state()
    with pytest.raises(ValueError, match="the arguments are \\(model, path_or_state_dict\\)"):
        load_weights(sd, Net())  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="pass its state_dict\\(\\)"):
        load_weights(Net(), Net())  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="read_checkpoint takes the path of a file"):
        read_checkpoint(sd)  # type: ignore[arg-type]
    with (tmp_path / "f.pt").open("wb") as f, pytest.raises(ValueError, match="file object"):
        load_weights(Net(), f)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="no such file"):
        read_checkpoint(tmp_path / "missing.pt")
    (tmp_path / "w.txt").write_text("x")
    with pytest.raises(ValueError, match="expected a file ending in one of"):
        read_checkpoint(tmp_path / "w.txt")
    with pytest.raises(ValueError, match="lr and weight_decay go together"):
        inspect_checkpoint(tmp_path / "w.txt", lr=1e-3)


def test_cli_inspect_json_and_table(tmp_path, capsys):
    path, _ = _save(tmp_path, "safetensors")
    assert main(["inspect", str(path), "--lr", "1e-3", "--weight-decay", "0.05", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["format"] == "safetensors" and len(out["tensors"]) == 7
    fc = next(t for t in out["tensors"] if t["name"] == "fc.weight")
    assert fc["decays"] and fc["equilibrium_norm"] == pytest.approx(math.sqrt(1e-3 * 128 / 0.1))
    assert main(["inspect", str(path)]) == 0
    assert "would decay" in capsys.readouterr().out
    assert main(["inspect", str(path), "--lr", "1e-3"]) == 2
    assert "lr and weight_decay go together" in capsys.readouterr().err


def test_a_saved_model_folder_merges_its_shards(tmp_path):
    from safetensors.torch import save_file

    sd = _state()
    names = sorted(sd)
    save_file({k: sd[k] for k in names[:3]}, str(tmp_path / "model-00001-of-00002.safetensors"))
    save_file({k: sd[k] for k in names[3:]}, str(tmp_path / "model-00002-of-00002.safetensors"))
    ck = read_checkpoint(tmp_path)
    assert set(ck.tensors) == set(sd) and ck.format == "safetensors, 2 file(s)"
    assert load_weights(Net(), tmp_path).complete
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="a folder with no weight file"):
        read_checkpoint(tmp_path / "empty")


@pytest.mark.parametrize(
    ("name", "content", "what"),
    [
        ("g.pt", b"garbage", "is not a file torch.load can read (UnpicklingError: Unsupported"),
        ("e.pt", b"", "is not a file torch.load can read (EOFError"),
        ("g.safetensors", b"x", "is not a safetensors file"),
        ("g.npz", b"x", "is not an .npz file (not a zip archive"),
        ("g.weights.h5", b"x", "is not an HDF5 file h5py can read"),
    ],
)
def test_a_damaged_file_is_one_line_naming_it(tmp_path, capsys, name, content, what):
    if name.endswith(".h5"):
        pytest.importorskip("h5py")
    (tmp_path / name).write_bytes(content)
    assert main(["inspect", str(tmp_path / name)]) == 2
    err = capsys.readouterr().err
    assert what in err and len(err.strip().splitlines()) == 1


class Tied(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(10, 4)
        self.head = nn.Linear(4, 10, bias=False)
        self.head.weight = self.emb.weight


def test_load_weights_counts_a_tied_alias_the_file_left_out():
    sd = {"emb.weight": torch.randn(10, 4)}  # as save_pretrained drops the tied head
    model = Tied()
    report = load_weights(model, sd)
    assert report.complete and "head.weight" in report.loaded
    torch.testing.assert_close(model.head.weight.detach(), sd["emb.weight"])


def test_load_weights_strips_nested_wrapper_prefixes():
    sd = {f"module._orig_mod.{k}": v for k, v in _state().items()}
    report = load_weights(Net(), sd)
    assert report.complete and report.stripped_prefix == "module._orig_mod."


def test_npz_skips_strings_and_reads_big_endian(tmp_path):
    path = tmp_path / "mixed.npz"
    w = np.arange(6, dtype=">f4").reshape(2, 3)
    np.savez(path, w=w, names=np.array(["a", "b"]))
    ck = read_checkpoint(path)
    assert list(ck.tensors) == ["w"] and ck.skipped == ["names"]
    torch.testing.assert_close(ck.tensors["w"], torch.arange(6.0).reshape(2, 3))


def test_pickles_are_refused_on_torch_before_2_6(tmp_path, monkeypatch):
    path, _ = _save(tmp_path, "pt")
    monkeypatch.setattr(torch, "__version__", "2.5.1+cpu")
    with pytest.raises(UnsafeCheckpoint, match="CVE-2025-32434"):
        read_checkpoint(path)


def test_ordinary_kinds_of_tensor_and_value_are_read(tmp_path):
    """What torch.save writes for attributes on a tensor, a Parameter, bfloat16, uint16,
    float8, complex, a set and bytes (protocol 2 names them as Python 2's __builtin__)."""
    plain = torch.randn(3, 3)
    plain.note = "x"  # a Python attribute: saved through _rebuild_from_type_v2
    state = {"attr": plain, "param": nn.Parameter(torch.randn(2, 2)),
             "bf16": torch.randn(2, 2).bfloat16(), "u16": torch.tensor([1, 2], dtype=torch.uint16),
             "f8": torch.randn(4).to(torch.float8_e4m3fn), "c": torch.randn(2, dtype=torch.cfloat),
             "meta": {"tags": {"a", "b"}, "raw": b"\x00\x01", "buf": bytearray(b"xy"),
                      "size": torch.Size([2, 3]), "dtype": torch.float16}}  # fmt: skip
    torch.save(state, tmp_path / "kinds.pt")
    info = inspect_checkpoint(tmp_path / "kinds.pt")
    rows = {r.name: r for r in info["tensors"]}
    assert set(rows) == {"attr", "param", "bf16", "u16", "f8", "c"}
    assert rows["attr"].norm == pytest.approx(float(torch.linalg.vector_norm(plain.double())))
    assert rows["u16"].dtype == "uint16" and rows["f8"].dtype == "float8_e4m3fn"
    assert set(info["skipped"]) == {"meta.tags", "meta.raw", "meta.buf", "meta.size", "meta.dtype"}


def test_a_quantized_tensor_is_refused_in_one_line(tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # quantized tensors are deprecated in recent torch
        q = torch.quantize_per_tensor(torch.randn(4), 0.1, 0, torch.qint8)
    torch.save({"q": q}, tmp_path / "q.pt")
    with pytest.raises(ValueError, match="holds a quantized tensor"):
        read_checkpoint(tmp_path / "q.pt")


def test_a_large_norm_is_computed_in_pieces_without_losing_precision(tmp_path):
    from adamwkit.checkpoint import _NORM_CHUNK, _norm

    x = torch.randn(_NORM_CHUNK * 2 + 5)
    assert _norm(x) == pytest.approx(float(torch.linalg.vector_norm(x.double())), rel=1e-12)
    assert _norm(x[::2]) == pytest.approx(float(torch.linalg.vector_norm(x[::2].double())))


@pytest.mark.parametrize(
    "name",
    ["norm.weight", "ln_1.weight", "x_norm_y.weight", "h.0.ln_2.bias", "blocks.3.norm1.weight",
     "encoder.layer.0.attention.output.LayerNorm.weight", "model/layer_norm/gamma",
     "layers.0.post_attention_layernorm.weight", "x/moving_mean", "fc.weight", "normal.weight",
     "layers/functional/layers/batch_normalization/vars/3", "dense/kernel", "lnx.weight"],
)  # fmt: skip
def test_norm_names_are_read_as_the_whole_pattern_reads_them(name):
    from adamwkit.checkpoint import _NORM_NAME, _norm_by_name

    assert _norm_by_name(name) == bool(_NORM_NAME.search(name))
