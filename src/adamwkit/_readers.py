"""The format readers behind :func:`adamwkit.read_checkpoint`, each treating its file as
hostile: sizes are checked against a :class:`~adamwkit._safe_load.Budget` before anything
is allocated, nothing outside the named file is read, and every failure is one line
naming the file (a :class:`~adamwkit._safe_load.CheckpointRefused`)."""

from __future__ import annotations

import math
import pickle
import re
import struct
import warnings
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ._safe_load import (
    MAX_DEPTH,
    MAX_ENTRIES,
    Budget,
    CheckpointRefused,
    UnsafeCheckpoint,
    check_torch_file,
    check_zip_entries,
    file_size,
    open_regular,
    printable,
    size_text,
)

__all__ = ["Tensors", "read_h5", "read_npz", "read_safetensors", "read_torch", "unreadable"]


@dataclass
class Tensors:
    """What a reader of arrays gives: tensors by name, the entries that are not numeric
    arrays (``skipped``) and one-line remarks about the file (``notes``, escaped)."""

    tensors: dict[str, Tensor] = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def add(self, name: str, a: np.ndarray) -> None:
        """``a`` as a tensor (in native byte order, without a copy), or skipped with a note
        when torch has no such dtype."""
        if not a.dtype.isnative:
            a = a.byteswap(inplace=True).view(a.dtype.newbyteorder("="))
        try:
            self.tensors[name] = torch.from_numpy(np.asarray(a))
        except TypeError:
            self.skipped.append(name)
            self.notes.append(f"{printable(name)!r}: dtype {a.dtype} has no torch dtype, not read")


def unreadable(p: Path, what: str, err: BaseException) -> CheckpointRefused:
    """A file of the right name that its reader cannot parse (damaged, truncated, other)."""
    text = " ".join(str(err).split())
    detail = printable(text) if text else "empty or truncated"
    return CheckpointRefused(f"{printable(str(p))} is not {what} ({type(err).__name__}: {detail})")


def _shape_bytes(shape: tuple[int, ...], itemsize: int) -> int:
    return math.prod(shape) * itemsize


# ----------------------------------------------------------------------------- torch


def read_torch(p: Path, budget: Budget) -> Any:
    """What ``torch.load(weights_only=True)`` returns for ``p``, after its archive and
    pickle are checked (:func:`~adamwkit._safe_load.check_torch_file`)."""
    major, minor = (int(x) for x in re.findall(r"\d+", torch.__version__)[:2])
    if (major, minor) < (2, 6):
        raise UnsafeCheckpoint(
            f"reading {printable(str(p))} safely needs torch>=2.6: on torch "
            f"{torch.__version__}, weights_only loading can still run code (CVE-2025-32434); "
            "upgrade torch, or convert the file to .safetensors where it was made"
        )
    with open_regular(p) as f:
        try:
            check_torch_file(f, budget)
        except CheckpointRefused:
            raise
        except (zipfile.BadZipFile, EOFError, pickle.UnpicklingError, ValueError, struct.error,
                OSError, IndexError) as err:  # fmt: skip
            raise unreadable(p, "a file torch.load can read", err) from None
        return _torch_load(p, f)


def _torch_load(p: Path, f: Any) -> Any:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # its warnings quote the file's contents
            return torch.load(f, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        lines = [line.strip() for line in str(err).strip().splitlines()]
        why = next((line for line in lines if "GLOBAL" in line or "Unsupported global" in line),
                   None)  # fmt: skip
        if why is None:  # not a refusal of a global: a damaged or foreign file
            detail = next((line for line in lines if line.startswith("Unsupported")), None)
            raise unreadable(
                p, "a file torch.load can read", pickle.UnpicklingError(detail or lines[0])
            ) from None
        raise UnsafeCheckpoint(
            f"{printable(str(p))} is a pickle that names Python objects to import "
            f"({printable(why)}): loading it could run code, so adamwkit does not. If you "
            "trust its source, load it with torch.load(path, weights_only=False) and save "
            "model.state_dict(), or convert it to .safetensors"
        ) from None
    except (RuntimeError, EOFError, OSError, ValueError, AssertionError, TypeError) as err:
        raise unreadable(p, "a file torch.load can read", err) from None


# ------------------------------------------------------------------------------- npz

_NPY_MAGIC = b"\x93NUMPY"


def read_npz(p: Path, budget: Budget) -> Tensors:
    """The numeric arrays of an ``.npz`` file. Each entry's ``.npy`` header is read first
    (its length bounded), and its shape times its item size must fit in the entry and the
    budget before the array is read; object arrays are refused (they are pickles)."""
    out = Tensors()
    with open_regular(p) as f:
        if not zipfile.is_zipfile(f):
            raise CheckpointRefused(
                f"{printable(str(p))} is not an .npz file (not a zip archive of .npy arrays)"
            )
        try:
            zf = zipfile.ZipFile(f)
            methods = (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED)
            for info in check_zip_entries(zf, file_size(f), budget, methods, "numpy.savez"):
                _npz_entry(zf, info, budget, out)
        except CheckpointRefused:
            raise
        except (OSError, EOFError, zipfile.BadZipFile, zlib.error, ValueError, struct.error,
                NotImplementedError) as err:  # fmt: skip
            raise unreadable(p, "an .npz file numpy can read", err) from None
    return out


def _npz_entry(zf: zipfile.ZipFile, info: zipfile.ZipInfo, budget: Budget, out: Tensors) -> None:
    name = info.filename.removesuffix(".npy")
    shown = printable(name)
    with zf.open(info) as e:
        prefix = e.read(12)
    if not prefix.startswith(_NPY_MAGIC) or len(prefix) < 12:
        out.skipped.append(name)  # not an array: numpy.load would give its bytes
        return
    major = prefix[6]
    if major not in (1, 2, 3):
        raise ValueError(f"entry {shown!r} has .npy format version {major}")
    if major == 1:
        header_end = 10 + struct.unpack("<H", prefix[8:10])[0]
    else:
        header_end = 12 + struct.unpack("<I", prefix[8:12])[0]
    if header_end > 65_536:
        budget.reject(f"entry {shown!r} has a .npy header of {size_text(header_end)}")
    with zf.open(info) as e:
        np.lib.format.read_magic(e)
        read_header = np.lib.format.read_array_header_1_0
        if major > 1:
            read_header = np.lib.format.read_array_header_2_0
        shape, _, dtype = read_header(e)
    if dtype.hasobject:
        raise UnsafeCheckpoint(
            f"{budget.where} holds pickled Python objects (object arrays), which could run "
            "code when loaded: adamwkit does not load them"
        )
    if dtype.kind not in "fiub":  # strings, bytes, records: not weights
        out.skipped.append(name)
        return
    nbytes = _shape_bytes(shape, dtype.itemsize)
    if nbytes > info.file_size - header_end:
        budget.reject(
            f"entry {shown!r} declares {'x'.join(map(str, shape))} {dtype} "
            f"({size_text(nbytes)}) but holds {size_text(max(0, info.file_size - header_end))}"
        )
    budget.charge(nbytes, f"array {shown!r}")
    with zf.open(info) as e:
        out.add(name, np.lib.format.read_array(e, allow_pickle=False))


# -------------------------------------------------------------------------------- h5

# HDF5's own filters and h5py's lzf: any other is a plugin library HDF5 would load.
_H5_FILTERS = {1, 2, 3, 4, 5, 6, 32000}


def read_h5(p: Path, budget: Budget) -> Tensors:
    """Every numeric dataset of an HDF5 file (Keras ``.weights.h5``), named by its path
    with dots. Before any data is read, every link is listed: external links, soft links
    that pass through another link, datasets kept in other files (external storage),
    virtual datasets and plugin filters are refused; the datasets' sizes are charged."""
    try:
        import h5py
    except ImportError as err:
        raise CheckpointRefused(
            f"reading {printable(p.name)} (Keras) needs h5py: pip install 'adamwkit[checkpoints]'"
        ) from err
    open_regular(p).close()  # a FIFO or a device is refused before HDF5 opens it
    out = Tensors()
    try:
        with h5py.File(p, "r") as f:
            plan = _h5_plan(f, budget, out)
            for name, ds in plan:
                out.add(name.replace("/", "."), np.asarray(ds[()]))
    except CheckpointRefused:
        raise
    except (OSError, KeyError, ValueError, TypeError, RuntimeError) as err:
        raise unreadable(p, "an HDF5 file h5py can read", err) from None
    return out


def _h5_plan(f: Any, budget: Budget, out: Tensors) -> list[tuple[str, Any]]:
    """The datasets to read, after every link and dataset of the file is checked."""
    import h5py

    links = _h5_links(f, budget)
    plan = []
    for raw, kind in links:
        name = raw.decode("utf-8", "surrogateescape")
        shown = printable(raw.decode("utf-8", "backslashreplace"))
        if kind == h5py.h5l.TYPE_EXTERNAL:
            budget.reject(f"{shown!r} is an external link to another file; adamwkit reads "
                          "only the file it is given")  # fmt: skip
        if kind == h5py.h5l.TYPE_SOFT:
            out.notes.append(_h5_soft_link(f, raw, shown, budget))
            continue
        if kind != h5py.h5l.TYPE_HARD:
            budget.reject(f"{shown!r} is a user-defined link (type {kind})")
        if f.get(raw, getclass=True) is h5py.Dataset:
            ds = f[raw]
            if _h5_dataset_ok(ds, shown, budget, out, name):
                plan.append((name, ds))
    return plan


def _h5_links(f: Any, budget: Budget) -> list[tuple[bytes, int]]:
    """Every link in the file, ``(path, link type)``, groups depth first and each once (a
    hard link back to a group holding it is listed, not entered), walked without recursion
    (HDF5's own recursive visit overflows the C stack on deeply nested groups) to
    :data:`MAX_DEPTH` levels and :data:`MAX_ENTRIES` links. Only hard links are entered."""
    import h5py

    out: list[tuple[bytes, int]] = []
    seen = {hash(f.id)}
    stack = [(b"", 0)]
    while stack:
        prefix, depth = stack.pop()
        group = h5py.h5o.open(f.id, prefix or b".")
        subgroups = []
        for name, kind in _h5_group_links(group, MAX_ENTRIES - len(out)):
            path = prefix + b"/" + name if prefix else name
            out.append((path, kind))
            if len(out) > MAX_ENTRIES:
                budget.reject(f"it holds more than {MAX_ENTRIES:,} links")
            if kind != h5py.h5l.TYPE_HARD:
                continue
            child = h5py.h5o.open(group, name)
            if h5py.h5i.get_type(child) == h5py.h5i.GROUP and hash(child) not in seen:
                if depth + 1 > MAX_DEPTH:
                    budget.reject(f"its groups nest more than {MAX_DEPTH} levels deep")
                seen.add(hash(child))
                subgroups.append((path, depth + 1))
        stack.extend(reversed(subgroups))
    return out


def _h5_group_links(group: Any, limit: int) -> list[tuple[bytes, int]]:
    """The links of one group, ``(name, link type)``, stopping after ``limit + 1``."""
    found: list[tuple[bytes, int]] = []

    def add(name: bytes, info: Any) -> bool | None:
        found.append((name, info.type))
        return True if len(found) > limit else None  # True stops the iteration

    group.links.iterate(add, info=True)
    return found


def _h5_soft_link(f: Any, raw: bytes, shown: str, budget: Budget) -> str:
    """A note for a soft link, which is not followed; refused if its path passes through
    any link other than a hard one (an external link would open another file)."""
    import h5py

    target = f.get(raw, getlink=True).path
    base = "" if target.startswith("/") else raw.decode("utf-8", "surrogateescape")
    base = base.rsplit("/", 1)[0] if "/" in base else ""
    parts = [x for x in f"{base}/{target}".split("/") if x not in ("", ".")]
    if len(parts) > MAX_DEPTH:  # deeper than any group read: no need to look
        return f"soft link {shown!r} -> {printable(target)!r} leads nowhere, not read"
    path = ""
    for part in parts:
        path += "/" + part
        link = f.get(path, getlink=True)
        if link is None:
            return f"soft link {shown!r} -> {printable(target)!r} leads nowhere, not read"
        if not isinstance(link, h5py.HardLink):
            budget.reject(
                f"soft link {shown!r} -> {printable(target)!r} passes through another link; "
                "adamwkit reads only the file it is given"
            )
    return f"soft link {shown!r} -> {printable(target)!r} not followed (read under its own name)"


def _h5_dataset_ok(ds: Any, shown: str, budget: Budget, out: Tensors, name: str) -> bool:
    """Whether to read a dataset (its size charged); refused if its data is elsewhere."""
    dcpl = ds.id.get_create_plist()
    if dcpl.get_external_count():
        budget.reject(f"dataset {shown!r} keeps its data in another file (HDF5 external "
                      "storage); adamwkit reads only the file it is given")  # fmt: skip
    if ds.is_virtual:
        budget.reject(f"dataset {shown!r} is virtual: its data is read from other datasets "
                      "or files")  # fmt: skip
    for i in range(dcpl.get_nfilters()):
        code = dcpl.get_filter(i)[0]
        if code not in _H5_FILTERS:
            budget.reject(f"dataset {shown!r} needs HDF5 filter {code}, a plugin library")
    try:
        kind, shape = ds.dtype.kind, ds.shape
    except (TypeError, ValueError):  # a datatype h5py cannot map
        kind, shape = "?", None
    if kind not in "fiub" or shape is None:
        out.skipped.append(name.replace("/", "."))
        return False
    budget.charge(_shape_bytes(shape, ds.dtype.itemsize), f"dataset {shown!r}")
    return True


# ----------------------------------------------------------------------- safetensors

_ST_ITEMSIZE = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2,
                "I8": 1, "U64": 8, "U32": 4, "U16": 2, "U8": 1, "BOOL": 1, "C64": 8,
                "F8_E4M3": 1, "F8_E5M2": 1}  # fmt: skip


def read_safetensors(p: Path, budget: Budget) -> dict[str, Tensor]:
    """The tensors of a ``.safetensors`` file, their sizes (from the header, which the
    library checks against the file) charged before any is read."""
    try:
        from safetensors import safe_open
    except ImportError as err:
        raise CheckpointRefused(
            f"reading {printable(p.name)} needs safetensors: pip install 'adamwkit[checkpoints]'"
        ) from err
    open_regular(p).close()  # a FIFO or a device is refused before it is opened
    try:
        with safe_open(str(p), framework="pt", device="cpu") as f:
            keys = list(f.keys())
            total = 0
            for k in keys:
                sl = f.get_slice(k)
                total += _shape_bytes(tuple(sl.get_shape()), _ST_ITEMSIZE.get(sl.get_dtype(), 8))
            budget.charge(total, "its tensors")
            return {k: f.get_tensor(k) for k in keys}
    except CheckpointRefused:
        raise
    except Exception as err:  # safetensors raises its own error type for bad headers
        raise unreadable(p, "a safetensors file", err) from None
