"""Hostile checkpoint files: ``adamwkit inspect`` on each, in its own process under a
2 GiB address-space limit (forked from one that imported adamwkit; a few cases also
through ``python -m adamwkit.cli``), gives the expected outcome: a refusal in exactly one
line on stderr naming the file and the reason (exit 2), or the table with the file's
strings escaped (exit 0); never a traceback, and never a read of another file.

Files that claim gigabytes are crafted (headers, unwritten datasets, repeated deflate
blocks), so the whole table builds in seconds. Oracles: the reason each guard states, the
exit code, the absence of a secret kept in a file the checkpoint points to, and FIFOs as
the targets of external storage and links (opening one would block: the case would time
out instead of passing)."""

from __future__ import annotations

import io
import json
import os
import pickle
import resource
import struct
import subprocess
import sys
import tarfile
import warnings
import zipfile
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch

from adamwkit import inspect_checkpoint, load_weights, read_checkpoint
from adamwkit._safe_load import parse_byte_count, printable
from adamwkit.checkpoint import CheckpointRefused, LoadReport, UnsafeCheckpoint

h5py = pytest.importorskip("h5py")
safetensors_torch = pytest.importorskip("safetensors.torch")

LIMIT = 2 * 2**30  # the address-space limit every subprocess runs under
SECRET = "s3cret-Account-List-7f3a"
GIB = 2**30


# ------------------------------------------------------------------- crafting helpers


def _state() -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    return {"fc.weight": torch.randn(4, 3), "fc.bias": torch.zeros(4)}


def _global(module: str, name: str) -> bytes:
    return b"c" + f"{module}\n{name}\n".encode()


def _long(n: int) -> bytes:
    data = n.to_bytes((n.bit_length() + 8) // 8, "little", signed=True)
    return b"\x8a" + bytes([len(data)]) + data


def _torch_zip(path: Path, pkl: bytes, records: dict[str, bytes] | None = None) -> Path:
    """A zip laid out as torch.save lays it out, with ``pkl`` as its data.pkl."""
    entries = {"data.pkl": pkl, "byteorder": b"little", "version": b"3\n", **(records or {})}
    with zipfile.ZipFile(path, "w") as z:
        for name, data in entries.items():
            z.writestr(f"archive/{name}", data)
    return path


def _pickle(body: bytes) -> bytes:
    return b"\x80\x02" + body + b"."


def _rezip(src: Path, dst: Path, edit: Callable[[str, bytes], tuple[bytes, int]]) -> Path:
    """``src`` (a zip) rewritten entry by entry through ``edit(name, data) -> (data,
    method)``."""
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        for info in zin.infolist():
            data, method = edit(info.filename, zin.read(info))
            zout.writestr(info.filename, data, compress_type=method)
    return dst


def _npy_header(shape: tuple[int, ...]) -> bytes:
    """The header of a .npy file of float64 of ``shape``."""
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": "<f8", "fortran_order": False,
                                               "shape": shape})  # fmt: skip
    return buf.getvalue()


def _zip_one_deflated(path: Path, name: str, head: bytes, zeros: int) -> Path:
    """A zip of one deflated entry: ``head`` then ``zeros`` zero bytes, honestly declared,
    its deflate stream made of one compressed block of zeros repeated (a real zip bomb,
    built in well under a second)."""
    block = 1 << 24
    assert zeros % block == 0
    c = zlib.compressobj(9, zlib.DEFLATED, -15)
    stream = [c.compress(head) + c.flush(zlib.Z_FULL_FLUSH)]
    first = c.compress(bytes(block)) + c.flush(zlib.Z_FULL_FLUSH)
    again = c.compress(bytes(block)) + c.flush(zlib.Z_FULL_FLUSH)
    assert first == again  # a full flush resets the compressor: blocks repeat exactly
    stream += [first] * (zeros // block) + [c.flush()]
    data = b"".join(stream)
    crc = zlib.crc32(head)
    chunk = bytes(block)
    for _ in range(zeros // block):
        crc = zlib.crc32(chunk, crc)
    size, raw = len(head) + zeros, name.encode()
    assert size < 2**32
    local = struct.pack("<4s5H3L2H", b"PK\x03\x04", 20, 0, 8, 0, 0, crc, len(data), size,
                        len(raw), 0)  # fmt: skip
    central = struct.pack("<4s6H3L5H2L", b"PK\x01\x02", 20, 20, 0, 8, 0, 0, crc, len(data),
                          size, len(raw), 0, 0, 0, 0, 0, 0)  # fmt: skip
    offset = len(local) + len(raw) + len(data)
    end = struct.pack("<4s4H2LH", b"PK\x05\x06", 0, 0, 1, 1, len(central) + len(raw), offset, 0)
    path.write_bytes(local + raw + data + central + raw + end)
    return path


# ------------------------------------------------------------------------- builders


def pt_deflated_entry(d: Path) -> Path:
    src = d / "src.pt"
    torch.save({"w": torch.zeros(1 << 16)}, src)

    def deflate_data(name: str, data: bytes) -> tuple[bytes, int]:
        return data, zipfile.ZIP_DEFLATED if "/data/" in name else zipfile.ZIP_STORED

    return _rezip(src, d / "deflated.pt", deflate_data)


def pt_expand(d: Path) -> Path:
    torch.save({"w": torch.zeros(1).expand(100_000, 100_000)}, d / "expand.pt")
    return d / "expand.pt"


def pt_laughs_dicts(d: Path) -> Path:
    node: dict = {"w": torch.zeros(2)}
    for _ in range(9):
        node = {str(i): node for i in range(10)}
    torch.save(node, d / "laughs.pt")
    return d / "laughs.pt"


def pt_laughs_lists(d: Path) -> Path:
    """The nested lists (10 x 9 levels) in the places that are shown: betas, the counters."""
    node: list = [1.0]
    for _ in range(9):
        node = [node] * 10
    opt = {"state": {}, "param_groups": [{"params": [0], "lr": 1e-3, "betas": node}]}
    torch.save({"model": _state(), "optimizer": opt, "epoch": node, "junk": node},
               d / "laughs_lists.pt")  # fmt: skip
    return d / "laughs_lists.pt"


def pt_self_dict(d: Path) -> Path:
    node: dict = {"w": torch.zeros(2)}
    node["self"] = node
    torch.save(node, d / "self.pt")
    return d / "self.pt"


def pt_nested_200k(d: Path) -> Path:
    n = 200_000
    body = (b"}X\x01\x00\x00\x00a") * n + b"}" + b"s" * n
    return _torch_zip(d / "nested.pt", _pickle(body))


@contextmanager
def _quiet() -> Iterator[None]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def pt_sparse(d: Path) -> Path:
    with _quiet():
        s = torch.sparse_coo_tensor(torch.tensor([[0], [0]]), torch.tensor([1.0]), (10**6, 10**6))
    torch.save({"w": torch.zeros(2, 2), "s": s}, d / "sparse.pt")
    return d / "sparse.pt"


def pt_bytearray_bomb(d: Path) -> Path:
    body = _global("builtins", "bytearray") + _long(10**10) + b"\x85R"
    return _torch_zip(d / "bytearray.pt", _pickle(body))


def pt_copy_bomb(d: Path) -> Path:
    """A list of 100,000 items, memoized, then copied 10,000 times by torch.Size: 8 GB of
    tuples from a 170 kB pickle."""
    body = b"]q\x00(" + b"K\x00" * 100_000 + b"e"
    body += b"](" + (_global("torch", "Size") + b"h\x00\x85R") * 10_000 + b"e"
    return _torch_zip(d / "copies.pt", _pickle(b"}X\x01\x00\x00\x00x" + body + b"s"))


def pt_storage_call(d: Path) -> Path:
    body = _global("torch", "FloatStorage") + _long(10**10) + b"\x85R"
    return _torch_zip(d / "storage_call.pt", _pickle(body))


def pt_record_mismatch(d: Path) -> Path:
    src = d / "src.pt"
    torch.save({"w": torch.zeros(4)}, src)
    big = b"J" + struct.pack("<i", 300_000_000)

    def edit(name: str, data: bytes) -> tuple[bytes, int]:
        if name.endswith("data.pkl"):
            assert b"cpu" in data
            data = data.replace(b"K\x04t", big + b"t", 1)
        return data, zipfile.ZIP_STORED

    return _rezip(src, d / "mismatch.pt", edit)


def pt_legacy_big_storage(d: Path) -> Path:
    path = d / "legacy.pt"
    torch.save({"w": torch.zeros(4)}, path, _use_new_zipfile_serialization=False)
    data = path.read_bytes()
    old = b"cpuq\x06K\x04N"
    assert old in data
    path.write_bytes(data.replace(old, b"cpuq\x06J" + struct.pack("<i", 10**9) + b"N", 1))
    return path


def pt_tar(d: Path) -> Path:
    path = d / "old.pt"
    with tarfile.open(path, "w") as t:
        info = tarfile.TarInfo("storages")
        info.size = 4
        t.addfile(info, io.BytesIO(b"\x00" * 4))
    return path


def pt_torchscript(d: Path) -> Path:
    return _torch_zip(d / "script.pt", _pickle(b"}"), {"constants.pkl": _pickle(b")")})


class _Payload:
    def __reduce__(self):
        return (os.system, ("true",))


def pt_code(d: Path) -> Path:
    torch.save({"w": torch.zeros(2), "x": _Payload()}, d / "code.pt")
    return d / "code.pt"


def pt_garbage(d: Path) -> Path:
    (d / "junk.pt").write_bytes(b"garbage\n" * 8)
    return d / "junk.pt"


def pt_truncated(d: Path) -> Path:
    torch.save(_state(), d / "full.pt")
    data = (d / "full.pt").read_bytes()
    (d / "cut.pt").write_bytes(data[: len(data) // 2])
    return d / "cut.pt"


def pt_duplicate_entry(d: Path) -> Path:
    path = _torch_zip(d / "dup.pt", pickle.dumps({}, protocol=2))
    with zipfile.ZipFile(path, "a") as z, _quiet():
        z.writestr("archive/data.pkl", pickle.dumps({"x": 1}, protocol=2))
    return path


def pt_meta(d: Path) -> Path:
    state = {"w": torch.empty(10**6, 10**6, device="meta"), "b": torch.zeros(2)}
    torch.save(state, d / "meta.pt")
    return d / "meta.pt"


def _opt_file(d: Path, name: str, opt: dict) -> Path:
    torch.save({"model": _state(), "optimizer": opt}, d / name)
    return d / name


def pt_opt_groups_ints(d: Path) -> Path:
    return _opt_file(d, "groups_ints.pt", {"param_groups": [1, 2], "state": {}})


def pt_opt_wrong_types(d: Path) -> Path:
    group = {"params": [0], "lr": torch.ones(3), "betas": 7, "weight_decay": "0.1"}
    return _opt_file(d, "types.pt", {"param_groups": [group], "state": [1, 2]})


def pt_opt_inf_step(d: Path) -> Path:
    group = {"params": [0, 1], "lr": torch.tensor(1e-3), "betas": (0.9, 0.999)}
    state = {0: {"step": float("inf")}, 1: {"step": torch.tensor(float("nan"))}}
    return _opt_file(d, "inf_step.pt", {"param_groups": [group], "state": state})


def pt_markup_group(d: Path) -> Path:
    group = {"params": [0], "lr": 1e-3, "weight_decay": 0.1, "decay_scale": "[/bold]"}
    return _opt_file(d, "markup.pt", {"param_groups": [group], "state": {}})


ANSI = "\x1b]0;pwned\x07\x1b[2Jfake.weight"


def pt_ansi_names(d: Path) -> Path:
    names = [ANSI, "[red]x[/red].weight", ":fire:.weight", "\u202eevil.weight"]
    torch.save({n: torch.ones(2, 2) for n in names} | {7: torch.ones(2)}, d / "names.pt")
    return d / "names.pt"


def pt_ansi_file_name(d: Path) -> Path:
    path = d / "\x1b[2Jevil.pt"
    path.write_bytes(b"garbage")
    return path


def npz_zip_bomb(d: Path) -> Path:
    head = _npy_header((GIB // 8,))
    return _zip_one_deflated(d / "bomb.npz", "w.npy", head, GIB)


def npz_small_bomb(d: Path) -> Path:
    return _zip_one_deflated(d / "small_bomb.npz", "w.npy", _npy_header((2**24 // 8,)), 2**24)


def npz_header_claim(d: Path) -> Path:
    with zipfile.ZipFile(d / "claim.npz", "w") as z:
        z.writestr("w.npy", _npy_header((10**6, 10**6)) + bytes(64))
    return d / "claim.npz"


def npz_long_header(d: Path) -> Path:
    head = b"\x93NUMPY\x02\x00" + struct.pack("<I", 2**31) + b"{"
    with zipfile.ZipFile(d / "header.npz", "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("w.npy", head + bytes(2**20))
    return d / "header.npz"


def npz_bzip2(d: Path) -> Path:
    with zipfile.ZipFile(d / "bz.npz", "w", zipfile.ZIP_BZIP2) as z:
        z.writestr("w.npy", _npy_header((4,)) + bytes(32))
    return d / "bz.npz"


def npz_objects(d: Path) -> Path:
    np.savez(d / "obj.npz", w=np.zeros(3), o=np.array([{"a": 1}], dtype=object))
    return d / "obj.npz"


def npz_long_names(d: Path) -> Path:
    """50 names of 60,000 underscores: the norm-layer pattern took 72 s on each."""
    arrays = {"_" * 60_000 + f"{i}_norm": np.ones((2, 2), dtype=np.float32) for i in range(50)}
    np.savez(d / "long_names.npz", **arrays)
    return d / "long_names.npz"


def npz_ansi_name(d: Path) -> Path:
    np.savez(d / "names.npz", **{"\x1b[31mred": np.ones((2, 2), dtype=np.float32)})
    return d / "names.npz"


def _fifo(d: Path, name: str) -> Path:
    os.mkfifo(d / name)
    return d / name


def h5_external_storage_secret(d: Path) -> Path:
    secret = d / "accounts.txt"
    secret.write_text(SECRET * 4)
    with h5py.File(d / "ext_storage.h5", "w") as f:
        f["ok"] = np.ones(3)
        f.create_dataset("w", shape=(len(SECRET) * 4,), dtype="u1",
                         external=[(str(secret), 0, len(SECRET) * 4)])  # fmt: skip
    return d / "ext_storage.h5"


def h5_external_storage_fifo(d: Path) -> Path:
    fifo = _fifo(d, "never_open_me")
    with h5py.File(d / "ext_fifo.h5", "w") as f:
        f.create_dataset("w", shape=(16,), dtype="u1", external=[(str(fifo), 0, 16)])
    return d / "ext_fifo.h5"


def h5_virtual(d: Path) -> Path:
    fifo = _fifo(d, "never_open_me.h5")
    with h5py.File(d / "vds.h5", "w") as f:
        layout = h5py.VirtualLayout(shape=(4,), dtype="f8")
        layout[:] = h5py.VirtualSource(str(fifo), "x", shape=(4,))
        f.create_virtual_dataset("v", layout)
    return d / "vds.h5"


def h5_external_link(d: Path) -> Path:
    fifo = _fifo(d, "never_open_me.h5")
    with h5py.File(d / "link.h5", "w") as f:
        f["w"] = np.ones(3)
        f["ext"] = h5py.ExternalLink(str(fifo), "/x")
    return d / "link.h5"


def h5_soft_through_external(d: Path) -> Path:
    fifo = _fifo(d, "never_open_me.h5")
    with h5py.File(d / "soft_out.h5", "w") as f:
        f["a/w"] = np.ones(3)
        f["soft"] = h5py.SoftLink("/z/ext/x")  # listed before the link it passes through
        f.create_group("z")["ext"] = h5py.ExternalLink(str(fifo), "/g")
    return d / "soft_out.h5"


def h5_soft_inside_and_cycle(d: Path) -> Path:
    with h5py.File(d / "soft_in.h5", "w") as f:
        g = f.create_group("layer")
        g["kernel"] = np.ones((3, 2), dtype=np.float32)
        g["loop"] = g  # a hard link back to the group holding it
        f["alias"] = h5py.SoftLink("/layer/kernel")
        f["dangling"] = h5py.SoftLink("/nowhere")
    return d / "soft_in.h5"


def h5_unwritten(d: Path) -> Path:
    with h5py.File(d / "unwritten.h5", "w") as f:
        f.create_dataset("big", shape=(10**10,), dtype="f4", chunks=(2**20,))
    return d / "unwritten.h5"


def h5_gzip(d: Path) -> Path:
    with h5py.File(d / "gzip.h5", "w") as f:
        ds = f.create_dataset("w", shape=(2**28,), dtype="f4", chunks=(2**20,),
                              compression="gzip")  # fmt: skip
        ds[: 2**20] = 0.0
    return d / "gzip.h5"


def h5_deep_groups(d: Path) -> Path:
    """20,000 nested groups: HDF5's own recursive visit overflows the C stack on these."""
    with h5py.File(d / "deep.h5", "w") as f:
        group = f
        for _ in range(20_000):
            group = group.create_group("a")
        group["w"] = np.ones(2)
    return d / "deep.h5"


def h5_ansi_name(d: Path) -> Path:
    with h5py.File(d / "names.weights.h5", "w") as f:
        f["\x1b[31mdense"] = np.ones((2, 2), dtype=np.float32)
    return d / "names.weights.h5"


def st_bad_header(d: Path) -> Path:
    (d / "bad.safetensors").write_bytes(struct.pack("<Q", 10**12) + b"{" * 64)
    return d / "bad.safetensors"


def st_over_budget(d: Path) -> Path:
    safetensors_torch.save_file({"w": torch.zeros(2**20)}, str(d / "big.safetensors"))
    return d / "big.safetensors"


def fifo_pt(d: Path) -> Path:
    return _fifo(d, "pipe.pt")


def dev_zero(d: Path) -> Path:
    (d / "zero.npz").symlink_to("/dev/zero")
    return d / "zero.npz"


def empty_folder(d: Path) -> Path:
    (d / "model.pt").mkdir()
    return d / "model.pt"


def folder_in_folder(d: Path) -> Path:
    """Folders named like weight files, nested 300 deep (each read as a saved model)."""
    path = d / "saved"
    (path / "/".join(["x.pt"] * 300)).mkdir(parents=True)
    return path


def folder_with_fifo(d: Path) -> Path:
    (d / "saved").mkdir()
    _fifo(d / "saved", "model.safetensors")
    return d / "saved"


# ---------------------------------------------------------------------------- table


@dataclass(frozen=True)
class Case:
    """A hostile file, the arguments after its path, and the outcome: ``refused`` is the
    reason the one line on stderr must give (exit 2); otherwise ``shown`` are strings the
    table on stdout must hold (exit 0)."""

    name: str
    build: Callable[[Path], Path]
    refused: str | None = None
    shown: tuple[str, ...] = ()
    args: tuple[str, ...] = ()
    names_file: bool = True  # the refusal names the file


OVER = "over the byte budget"
CASES = [
    # memory bombs: declared, decompressed and strided sizes
    Case("npz zip bomb (1 MB -> 1 GiB)", npz_zip_bomb, "array 'w' would take 1 GiB"),
    Case("npz zip bomb, --max-bytes 8MB", npz_small_bomb, OVER, args=("--max-bytes", "8MB")),
    Case("npz header claiming 10^12 floats", npz_header_claim, "declares 1000000x1000000"),
    Case("npz .npy header of 2 GiB", npz_long_header, "has a .npy header of 2 GiB"),
    Case("npz bzip2 entry", npz_bzip2, "is compressed (bzip2)"),
    Case("npz object array", npz_objects, "pickled Python objects"),
    Case("pt deflated entry", pt_deflated_entry, "is compressed (deflate)"),
    Case("pt stride-0 expand 100000x100000", pt_expand, "is a 100000x100000 view of 4 bytes"),
    Case("pt storage larger than its record", pt_record_mismatch, "but its record holds"),
    Case("pt legacy storage claiming 4 GB", pt_legacy_big_storage, "of tensor data"),
    Case("pt bytearray(10**10)", pt_bytearray_bomb, "a bytearray its pickle makes"),
    Case("pt 10,000 copies of a memoized list", pt_copy_bomb, "a copy of 100,000 items"),
    Case("pt FloatStorage(10**10) called", pt_storage_call, "calls torch.FloatStorage"),
    Case("h5 unwritten 10^10 floats", h5_unwritten, "dataset 'big' would take 37.3 GiB"),
    Case("h5 gzip 1 GiB, one chunk written", h5_gzip, "dataset 'w' would take 1 GiB"),
    Case("safetensors over --max-bytes", st_over_budget, OVER, args=("--max-bytes", "1MiB")),
    # deep and shared structures
    Case("pt billion laughs (dicts)", pt_laughs_dicts, "more than 1,000,000 entries"),
    Case("pt billion laughs (lists)", pt_laughs_lists, shown=("fc.weight", "betas")),
    Case("pt dict holding itself", pt_self_dict, "'self' holds itself"),
    Case("pt 200,000 nested dicts", pt_nested_200k, "nest more than 100 levels"),
    Case("npz 50 names of 60,000 underscores", npz_long_names, shown=("more characters",)),
    Case("h5 20,000 nested groups", h5_deep_groups, "groups nest more than 100 levels"),
    # data kept elsewhere: never read
    Case("h5 external storage (a secret)", h5_external_storage_secret, "HDF5 external storage"),
    Case("h5 external storage (a FIFO)", h5_external_storage_fifo, "HDF5 external storage"),
    Case("h5 virtual dataset", h5_virtual, "is virtual"),
    Case("h5 external link", h5_external_link, "'ext' is an external link"),
    Case("h5 soft link through an external one", h5_soft_through_external, "passes through"),
    Case(
        "h5 soft links inside, a hard-link cycle",
        h5_soft_inside_and_cycle,
        shown=("layer.kernel", "soft link 'alias'", "leads nowhere"),
    ),
    # not a regular file
    Case("FIFO", fifo_pt, "is a FIFO (named pipe), not a regular file"),
    Case("/dev/zero", dev_zero, "is a character device, not a regular file"),
    Case("a folder where a file is expected", empty_folder, "a folder with no weight file"),
    Case("saved-model folder with a FIFO shard", folder_with_fifo, "is a FIFO"),
    Case("folders named x.pt, 300 deep", folder_in_folder, "x.pt is a folder, not a weight file"),
    # kinds of tensor and pickle that are not read
    Case("pt sparse tensor", pt_sparse, "holds a sparse tensor"),
    Case("pt meta tensor", pt_meta, shown=("'w': a meta tensor (it has no data), not read",)),
    Case("pt pickle that would run code", pt_code, "could run code"),
    Case("pt TorchScript archive", pt_torchscript, "TorchScript"),
    Case("pt tar format (torch < 0.4)", pt_tar, "tar format"),
    Case("pt two entries of one name", pt_duplicate_entry, "two entries are named"),
    Case("pt garbage", pt_garbage, "is not a file torch.load can read"),
    Case("pt truncated zip", pt_truncated, "is not a file torch.load can read"),
    Case("safetensors header of 10^12 bytes", st_bad_header, "is not a safetensors file"),
    # malformed optimizer sections: described, the weights still shown
    Case(
        "optimizer param_groups [1, 2]",
        pt_opt_groups_ints,
        shown=("fc.weight", "optimizer section malformed: param_groups[0] is an int"),
    ),
    Case(
        "optimizer state a list, lr a tensor, betas 7",
        pt_opt_wrong_types,
        shown=(
            "fc.weight",
            "its state is a list",
            "a tensor of shape 3",
            "betas'] is 7, not a pair",
        ),
    ),
    Case("optimizer step inf and nan", pt_opt_inf_step, shown=("fc.weight", "a step is inf")),
    # untrusted strings reach the terminal escaped
    Case("rich markup in decay_scale", pt_markup_group, shown=("[/bold]",)),
    Case(
        "ANSI, markup, emoji and bidi names",
        pt_ansi_names,
        shown=(printable(ANSI), "[red]x[/red].weight", ":fire:.weight", "\\u202eevil"),
    ),
    Case("ANSI names, --json", pt_ansi_names, shown=("\\u001b]0;pwned\\u0007",), args=("--json",)),
    Case("ANSI in the file's name", pt_ansi_file_name, "\\x1b[2Jevil.pt is not a file"),
    Case("ANSI in an .npz entry's name", npz_ansi_name, shown=("\\x1b[31mred",)),
    Case("ANSI in an .h5 dataset's name", h5_ansi_name, shown=("\\x1b[31mdense",)),
    Case(
        "--max-bytes not a size",
        pt_garbage,
        "invalid byte count value",
        args=("--max-bytes", "x"),
        names_file=False,
    ),
]


@dataclass(frozen=True)
class Outcome:
    """What one run of ``adamwkit inspect`` gave."""

    path: Path
    code: int
    out: str
    err: str


ENV = {**os.environ, "OMP_NUM_THREADS": "1", "COLUMNS": "240", "PYTHONWARNINGS": ""}

# Runs ``adamwkit inspect`` once per case, each in a process forked from one that has
# imported adamwkit (and so torch) once: the child sets the address-space limit, sends its
# stdout and stderr to files and exits with main's code. A case costs a fork, not
# torch's import; an alarm ends a child that blocks.
DRIVER = r"""
import json, os, resource, signal, sys
from adamwkit import cli
limit, jobs = json.load(sys.stdin)
results = []
for argv, out, err in jobs:
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
            signal.alarm(60)  # a guard against a hang, not a speed target
            for fd, name in ((1, out), (2, err)):
                os.dup2(os.open(name, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), fd)
            code = cli.main(argv)
        except BaseException:
            import traceback
            traceback.print_exc()
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
        os._exit(code)
    _, status = os.waitpid(pid, 0)
    results.append(os.waitstatus_to_exitcode(status))
json.dump(results, sys.stdout)
"""


def _inspect_all(runs: list[tuple[Path, tuple[str, ...]]], logs: Path) -> list[Outcome]:
    jobs = [[["inspect", str(path), *args], str(logs / f"{i}.out"), str(logs / f"{i}.err")]
            for i, (path, args) in enumerate(runs)]  # fmt: skip
    proc = subprocess.run(
        [sys.executable, "-c", DRIVER], input=json.dumps([LIMIT, jobs]), capture_output=True,
        text=True, env=ENV, timeout=600, check=True,
    )  # fmt: skip
    read = lambda name: Path(name).read_text(encoding="utf-8", errors="replace")  # noqa: E731
    return [Outcome(path, code, read(out), read(err))
            for (path, _), (_, out, err), code
            in zip(runs, jobs, json.loads(proc.stdout), strict=True)]  # fmt: skip


def _limit_memory() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (LIMIT, LIMIT))


def _inspect_script(path: Path, *args: str) -> Outcome:
    """``python -m adamwkit.cli inspect PATH ...`` in its own process, under the limit."""
    proc = subprocess.run(
        [sys.executable, "-m", "adamwkit.cli", "inspect", str(path), *args],
        capture_output=True, encoding="utf-8", errors="replace", env=ENV, timeout=120,
        preexec_fn=_limit_memory, check=False,
    )  # fmt: skip
    return Outcome(path, proc.returncode, proc.stdout, proc.stderr)


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory) -> dict[str, Outcome]:
    """Every case built, then inspected (see ``DRIVER``)."""
    root = tmp_path_factory.mktemp("hostile")
    runs = []
    for i, case in enumerate(CASES):
        (root / str(i)).mkdir()
        runs.append((case.build(root / str(i)), case.args))
    (root / "logs").mkdir()
    return dict(zip([c.name for c in CASES], _inspect_all(runs, root / "logs"), strict=True))


def _check(case: Case, got: Outcome) -> None:
    both = got.out + got.err
    assert "Traceback" not in both, both[-3000:]
    assert "\x1b" not in both and "\x07" not in both and "\u202e" not in both
    assert SECRET not in both
    if case.refused is not None:
        lines = got.err.strip().splitlines()
        assert got.code == 2, both[-3000:]
        assert len(lines) == 1, got.err
        assert case.refused in lines[0]
        if case.names_file:
            assert printable(got.path.name) in lines[0]
        assert got.out == ""
    else:
        assert got.code == 0, both[-3000:]
        assert got.err == ""
        for text in case.shown:
            assert text in got.out, got.out


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_inspect_on_a_hostile_file(case, outcomes):
    _check(case, outcomes[case.name])


@pytest.mark.parametrize("name", ["npz zip bomb (1 MB -> 1 GiB)", "FIFO",
                                  "ANSI, markup, emoji and bidi names"])  # fmt: skip
def test_the_command_itself_under_the_memory_limit(tmp_path, name):
    """A few cases again through ``python -m adamwkit.cli``, each its own process."""
    case = next(c for c in CASES if c.name == name)
    _check(case, _inspect_script(case.build(tmp_path), *case.args))


# --------------------------------------------------------------------- in-process API


@pytest.mark.parametrize(
    ("build", "reason"),
    [
        (pt_expand, "view of 4 bytes"),
        (pt_self_dict, "holds itself"),
        (pt_nested_200k, "nest more than 100 levels"),
        (pt_laughs_dicts, "more than 1,000,000 entries"),
        (pt_sparse, "sparse tensor"),
        (pt_deflated_entry, "is compressed (deflate)"),
        (pt_bytearray_bomb, "bytearray"),
        (npz_header_claim, "declares 1000000x1000000"),
        (npz_zip_bomb, "array 'w' would take 1 GiB"),
        (h5_external_storage_secret, "HDF5 external storage"),
        (h5_external_link, "external link"),
        (h5_unwritten, "dataset 'big'"),
        (fifo_pt, "FIFO"),
    ],
)
def test_the_api_refuses_with_one_line(tmp_path, build, reason):
    path = build(tmp_path)
    budget = 128 * 2**20
    for call in (lambda: read_checkpoint(path, max_bytes=budget),
                 lambda: inspect_checkpoint(path, max_bytes=budget),
                 lambda: load_weights(torch.nn.Linear(3, 4), path, max_bytes=budget)):  # fmt: skip
        with pytest.raises(CheckpointRefused) as info:
            call()
        message = str(info.value)
        assert reason in message and printable(path.name) in message
        assert "\n" not in message and SECRET not in message


def test_the_budget_counts_declared_sizes_before_reading(tmp_path):
    path = tmp_path / "w.safetensors"
    safetensors_torch.save_file({"w": torch.ones(1024)}, str(path))  # 4 KiB
    assert read_checkpoint(path, max_bytes=4096).tensors["w"].shape == (1024,)
    with pytest.raises(CheckpointRefused, match="its tensors would take 4 KiB"):
        read_checkpoint(path, max_bytes=4095)
    for bad in (0, -1, 1.5, True, "4GiB"):
        with pytest.raises(ValueError, match="max_bytes=.* is invalid"):
            read_checkpoint(path, max_bytes=bad)  # type: ignore[arg-type]


def test_malformed_optimizer_sections_are_notes_and_the_weights_are_read(tmp_path):
    info = inspect_checkpoint(pt_opt_wrong_types(tmp_path))
    assert {r.name for r in info["tensors"]} == {"fc.weight", "fc.bias"}
    (group,) = info["optimizer"]
    assert group["lr"] is None and group["betas"] is None and group["weight_decay"] is None
    assert any("its state is a list" in n for n in info["notes"])
    info = inspect_checkpoint(pt_opt_inf_step(tmp_path))
    assert (
        info["optimizer"][0]["lr"] == pytest.approx(1e-3) and info["optimizer"][0]["step"] is None
    )
    assert info["optimizer"][0]["betas"] == [0.9, 0.999]


def test_names_are_escaped_where_they_are_printed(tmp_path):
    report = LoadReport([], [ANSI], ["[/bold]"], [])
    text = str(report)
    assert "\x1b" not in text and printable(ANSI) in text and "[/bold]" in text
    assert printable("a\x1b[2J\u202eb") == "a\\x1b[2J\\u202eb"
    assert printable("x" * 300, limit=10) == "x" * 10 + "...(290 more characters)"


def test_unsafe_is_a_refusal_and_a_value_error():
    assert issubclass(UnsafeCheckpoint, CheckpointRefused)
    assert issubclass(CheckpointRefused, ValueError)


@pytest.mark.parametrize(
    ("text", "n"),
    [("4GiB", 4 * 2**30), ("500MB", 5 * 10**8), ("1e9", 10**9), ("1,024", 1024), ("2 kib", 2048)],
)
def test_byte_counts_parse(text, n):
    assert parse_byte_count(text) == n


def test_groups_sharing_one_long_list_of_parameters_are_read_quickly(tmp_path):
    """1,000 groups all holding one list of 100,000 ids: 10^8 look-ups unless bounded."""
    ids = list(range(100_000))
    opt = {"state": {0: {"step": 3}}, "param_groups": [{"params": ids, "lr": 0.1}] * 1000}
    torch.save({"model": _state(), "optimizer": opt}, tmp_path / "shared.pt")
    info = inspect_checkpoint(tmp_path / "shared.pt")  # the note below: the walk was bounded
    assert info["optimizer"][0]["step"] == 3 and len(info["optimizer"]) == 1000
    assert "steps are read for the first 1,000,000 parameters only" in info["notes"]
