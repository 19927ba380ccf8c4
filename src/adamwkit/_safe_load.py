"""Guards for reading checkpoint files that may be hostile: a byte budget, regular files
only, zip archives checked before anything is inflated, and a pickle read opcode by opcode
before ``torch.load`` sees it.

Every refusal is a :class:`CheckpointRefused` (a ``ValueError``) whose message is one line
naming the file and the reason, with the file's own strings escaped by :func:`printable`.
This module imports the standard library only, so the command line can parse
``--max-bytes`` without importing torch.
"""

from __future__ import annotations

import io
import os
import re
import struct
import tarfile
import zipfile
from _compat_pickle import IMPORT_MAPPING, NAME_MAPPING
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, BinaryIO, NoReturn

from . import _io

__all__ = [
    "Budget",
    "CheckpointRefused",
    "PickleScan",
    "UnsafeCheckpoint",
    "check_torch_file",
    "check_zip_entries",
    "default_max_bytes",
    "file_size",
    "open_regular",
    "parse_byte_count",
    "printable",
    "resolve_max_bytes",
    "size_text",
]

MAX_DEPTH = 100  # nested containers in a checkpoint's dict of weights
MAX_ENTRIES = 1_000_000  # items walked in it (shared containers count each time reached)
MAX_NAME = 10_000  # characters in one tensor name


class CheckpointRefused(ValueError):
    """A checkpoint file adamwkit does not read: over the byte or depth budget, data kept
    in another file, not a regular file, a kind of tensor whose size cannot be checked
    before it is built. The message is one line naming the file and the reason."""


class UnsafeCheckpoint(CheckpointRefused):
    """A pickle that ``weights_only`` loading refuses: it names Python objects to import,
    which could run code. It is not loaded."""


# ------------------------------------------------------------------------------ text


def printable(text: str, limit: int = 200) -> str:
    """``text`` safe for a terminal: cut to ``limit`` characters, and every character that
    is not printable (control characters, ANSI escapes, bidirectional overrides) written as
    its Python escape (``\\x1b``, ``\\u202e``)."""
    s = text if isinstance(text, str) else str(text)
    cut = f"...({len(s) - limit:,} more characters)" if len(s) > limit else ""
    s = s[:limit]
    if s.isprintable():
        return s + cut
    escaped = (c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in s)
    return "".join(escaped) + cut


def size_text(n: float) -> str:
    """A byte count as people read it: ``512 bytes``, ``1.5 MiB``, ``80 GiB``."""
    if n < 1024:
        return f"{int(n):,} bytes"
    for unit in ("KiB", "MiB", "GiB", "TiB", "PiB"):
        n /= 1024
        if n < 1024 or unit == "PiB":
            return f"{n:,.3g} {unit}" if n < 1e6 else f"{n:.3g} {unit}"
    raise AssertionError("unreachable")


_UNITS = {"": 1, "b": 1, "k": 10**3, "kb": 10**3, "m": 10**6, "mb": 10**6, "g": 10**9,
          "gb": 10**9, "t": 10**12, "tb": 10**12, "kib": 2**10, "mib": 2**20, "gib": 2**30,
          "tib": 2**40}  # fmt: skip
_BYTES = re.compile(r"\s*(\d+(?:\.\d*)?(?:e\d+)?)\s*([a-z]*)\s*")


def parse_byte_count(text: str) -> int:
    """``"4GiB"``, ``"500MB"``, ``"1e9"`` or ``"1073741824"`` as a number of bytes (>= 1);
    kB/MB/GB/TB are powers of 1000, KiB/MiB/GiB/TiB powers of 1024."""
    m = _BYTES.fullmatch(text.replace(",", "").replace("_", "").lower())
    if m is None or m.group(2) not in _UNITS:
        raise ValueError(f"{text!r} is not a byte count such as 4GiB, 500MB or 1e9")
    n = int(float(m.group(1)) * _UNITS[m.group(2)])
    if n < 1:
        raise ValueError(f"{text!r} is not a byte count >= 1")
    return n


parse_byte_count.__name__ = "byte count"  # argparse: "invalid byte count value: 'x'"


# ---------------------------------------------------------------------------- budget


def default_max_bytes() -> int:
    """Half of the memory this process may use: the smallest of the physical memory, its
    cgroup's memory limit and its address-space limit (``ulimit -v``) less what it already
    maps. 4 GiB where none of these can be read."""
    limits = [_physical_memory(), _cgroup_limit(), _address_space_left()]
    known = [x for x in limits if x is not None]
    return max(1, min(known) // 2) if known else 2**32


def _physical_memory() -> int | None:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):
        return None


def _cgroup_limit() -> int | None:
    for name in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            text = Path(name).read_text(encoding="ascii").strip()
        except (OSError, ValueError):
            continue
        if text.isdigit() and int(text) < 2**60:
            return int(text)
    return None


def _address_space_left() -> int | None:
    try:
        import resource
    except ImportError:  # Windows
        return None
    soft, _ = resource.getrlimit(resource.RLIMIT_AS)
    if soft == resource.RLIM_INFINITY:
        return None
    try:
        mapped = int(Path("/proc/self/statm").read_text().split()[0]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError, AttributeError):
        mapped = 0
    return max(0, soft - mapped)


def resolve_max_bytes(max_bytes: Any) -> int:
    """``max_bytes`` checked (a whole number >= 1), or the default for None."""
    if max_bytes is None:
        return default_max_bytes()
    ok = isinstance(max_bytes, (int, float)) and not isinstance(max_bytes, bool)
    if ok and max_bytes >= 1 and float(max_bytes).is_integer():
        return int(max_bytes)
    raise ValueError(
        f"max_bytes={max_bytes!r} is invalid: expected a whole number of bytes >= 1, or None "
        "for the default (half of the memory this process may use)"
    )


class Budget:
    """What reading one checkpoint may allocate: ``charge`` each allocation before it is
    made; past ``limit`` bytes in all it raises :class:`CheckpointRefused`."""

    def __init__(self, where: str | Path, limit: int) -> None:
        self.where = printable(str(where))
        self.limit = limit
        self.used = 0

    def charge(self, nbytes: int, what: str) -> None:
        """Count ``nbytes`` more, for ``what`` (a phrase: "its tensor data")."""
        self.used += nbytes
        if self.used > self.limit:
            total = f" ({size_text(self.used)} with what came before)" if self.used > nbytes else ""
            self.refuse(f"{what} would take {size_text(nbytes)}{total}")

    def refuse(self, why: str) -> NoReturn:
        """Raise the one-line refusal of a file over the budget."""
        raise CheckpointRefused(
            f"{self.where} is refused: {why}, over the byte budget of {size_text(self.limit)} "
            "(max_bytes, --max-bytes on the command line; default: half of the memory this "
            "process may use); raise it only for a file you trust"
        )

    def reject(self, why: str) -> NoReturn:
        """Raise a one-line refusal for another reason (``why`` already escaped)."""
        raise CheckpointRefused(f"{self.where} is refused: {why}")


# ----------------------------------------------------------------------------- files


def open_regular(path: Path) -> BinaryIO:
    """``path`` opened for reading, refused in one line unless it is a regular file (a
    FIFO, a device or a socket could block or never end): :func:`adamwkit._io.open_regular`
    with the refusals as :class:`CheckpointRefused`."""
    where = printable(str(path))
    try:
        return _io.open_regular(path)
    except _io.NotARegularFile as err:
        raise CheckpointRefused(f"{where} is {err.kind}, not a regular file: not read") from None
    except (OSError, ValueError) as err:
        raise CheckpointRefused(f"{where} cannot be read ({_error_text(err)})") from None


def _error_text(err: BaseException) -> str:
    text = err.strerror if isinstance(err, OSError) and err.strerror else str(err)
    return f"{type(err).__name__}: {printable(' '.join(text.split()) or 'no detail')}"


def file_size(f: BinaryIO) -> int:
    """The size of an open file, from the file itself."""
    return os.fstat(f.fileno()).st_size


# ------------------------------------------------------------------------------ zips

_METHODS = {zipfile.ZIP_STORED: "stored", zipfile.ZIP_DEFLATED: "deflate",
            zipfile.ZIP_BZIP2: "bzip2", zipfile.ZIP_LZMA: "lzma"}  # fmt: skip


def check_zip_entries(
    zf: zipfile.ZipFile, size: int, budget: Budget, methods: tuple[int, ...], made_by: str
) -> list[zipfile.ZipInfo]:
    """The entries of a zip archive, refused in one line when two share a name (readers
    would differ on which is meant), one is compressed with a method ``made_by`` never
    uses, or a stored one reaches past the end of the file. Nothing is inflated."""
    infos = zf.infolist()
    seen: set[str] = set()
    for info in infos:
        name = printable(info.filename)
        if info.filename in seen:
            budget.reject(f"two entries are named {name!r}")
        seen.add(info.filename)
        if info.compress_type not in methods:
            method = _METHODS.get(info.compress_type, f"method {info.compress_type}")
            budget.reject(
                f"entry {name!r} is compressed ({method}), which {made_by} never writes; "
                "adamwkit does not inflate it"
            )
        stored = info.compress_type == zipfile.ZIP_STORED
        if (stored and info.compress_size != info.file_size) or (
            info.header_offset + info.compress_size > size
        ):
            raise CheckpointRefused(
                f"{budget.where} is damaged: entry {name!r} claims more bytes than the file holds"
            )
    return infos


# --------------------------------------------------------------------------- pickles


class _Source:
    """A binary stream read with a known number of bytes left: no read asks for more."""

    def __init__(self, f: BinaryIO, left: int) -> None:
        self.f, self.left, self.pos = f, left, 0

    def read(self, n: int) -> bytes:
        if n > self.left:
            raise EOFError(f"Ran out of input (byte {self.pos} asks for {n:,} of {self.left:,})")
        data = self.f.read(n)
        if len(data) < n:
            raise EOFError("Ran out of input")
        self.left -= n
        self.pos += n
        return data

    def line(self, limit: int = 1024) -> str:
        """A newline-terminated line (a GLOBAL's module or name), without the newline."""
        out = bytearray()
        while (c := self.read(1)) != b"\n":
            out += c
            if len(out) > limit:
                raise _unpickling(f"a GLOBAL name longer than {limit} bytes at byte {self.pos}")
        return out.decode("utf-8")


def _unpickling(message: str) -> Exception:
    import pickle

    return pickle.UnpicklingError(message)


@dataclass
class _Box:
    """A value the scan does not model (a list, a dict, a tensor): how many items a copy of
    it would hold."""

    items: int = 0


@dataclass(frozen=True)
class _Global:
    """What a GLOBAL opcode names: ``"module name"``."""

    name: str


_ITEMSIZE = {"Double": 8, "Float": 4, "Half": 2, "BFloat16": 2, "Long": 8, "Int": 4,
             "Short": 2, "Char": 1, "Byte": 1, "Bool": 1, "ComplexDouble": 16,
             "ComplexFloat": 8, "QUInt8": 1, "QInt8": 1, "QInt32": 4, "QUInt4x2": 1,
             "QUInt2x4": 1, "Untyped": 1}  # fmt: skip
_STORAGE_ITEMSIZE = {f"torch {k}Storage": v for k, v in _ITEMSIZE.items()}
_STORAGE_ITEMSIZE["torch.storage UntypedStorage"] = 1  # uint16, float8, ...: sized in bytes
# What each function a checkpoint may call costs: "copy" copies its arguments' items,
# "bytes" makes that many bytes, "tensor" wraps a storage already counted.
_CALLS = {
    "collections OrderedDict": "copy", "collections Counter": "copy", "builtins set": "copy",
    "torch Size": "copy", "_codecs encode": "copy", "builtins bytearray": "bytes",
    "builtins complex": "small", "torch device": "small", "torch.serialization _get_layout":
    "small", "torch._utils _rebuild_tensor": "tensor", "torch._utils _rebuild_tensor_v2":
    "tensor", "torch._utils _rebuild_tensor_v3": "tensor", "torch._utils _rebuild_parameter":
    "tensor", "torch._utils _rebuild_meta_tensor_no_storage": "tensor",
    "torch.nn.parameter Parameter": "tensor",
    "torch._utils _rebuild_parameter_with_state": "tensor_state",
    "torch._tensor _rebuild_from_type_v2": "from_type",
}  # fmt: skip
# Functions torch's weights-only loading allows that build a tensor of a size the scan
# cannot check before it is allocated (or convert one while loading).
_REFUSED = {
    "torch._utils _rebuild_sparse_tensor": "a sparse tensor",
    "torch._utils _rebuild_qtensor": "a quantized tensor",
    "torch._utils _rebuild_nested_tensor": "a nested tensor",
    "torch._utils _rebuild_wrapper_subclass": "a tensor subclass",
    "torch._utils _rebuild_device_tensor_from_cpu_tensor": "a tensor converted as it loads",
    "torch._utils _rebuild_device_tensor_from_numpy": "a tensor made from a NumPy array",
}
_SLOT = 64  # bytes per item added to a container (a dict's or set's slot, a pointer)
_OBJECT = 256  # bytes per object made (the largest empty container: a set)


@lru_cache(maxsize=1)
def _torch_values() -> frozenset[str]:
    """The torch names a checkpoint may hold as values (never call): dtypes (``torch
    float32``), qschemes, ``torch.Tensor`` and the legacy tensor types (``torch
    FloatTensor``), as a tensor's type or a group's dtype."""
    import torch

    kinds = (torch.dtype, torch.qscheme)
    names = {f"torch {k}" for k, v in vars(torch).items() if isinstance(v, kinds)}
    classes = (torch.Tensor, torch.nn.Parameter, *getattr(torch, "_tensor_classes", ()))
    return frozenset(names | {f"{c.__module__} {c.__name__}" for c in classes})


class PickleScan:
    """Reads a pickle opcode by opcode, as torch's weights-only unpickler would run it,
    without building anything: charges the budget for what running it would allocate
    (containers, strings, copies made by the functions it calls), refuses the functions
    that build a tensor of an unchecked size, and records the storages it declares
    (``storages``: key -> bytes). Only the opcodes that unpickler runs are accepted."""

    def __init__(self, budget: Budget) -> None:
        self.budget = budget
        self.stack: list[Any] = []
        self.meta: list[list[Any]] = []
        self.memo: dict[int, Any] = {}
        self.storages: dict[str, int] = {}

    def run(self, src: _Source) -> None:
        """Scan one pickle, up to and including its STOP opcode."""
        while True:
            pos = src.pos
            code = src.read(1)[0]
            try:
                if self._step(code, src):
                    return
            except IndexError:
                raise _unpickling(f"stack underflow at byte {pos} (opcode {code})") from None

    def _charge(self, nbytes: int, what: str = "the objects its pickle builds") -> None:
        self.budget.charge(nbytes, what)

    def _step(self, code: int, src: _Source) -> bool:
        """Run one opcode; True at STOP."""
        s = self.stack
        if code == 0x2E:  # STOP
            s.pop()
            return True
        if code == 0x80:  # PROTO
            src.read(1)
        elif code in _CONSTANTS:
            s.append(_CONSTANTS[code])
        elif code in _NUMBERS:
            fmt = _NUMBERS[code]
            s.append(struct.unpack(fmt, src.read(struct.calcsize(fmt)))[0])
        elif code == 0x8A:  # LONG1
            s.append(int.from_bytes(src.read(src.read(1)[0]), "little", signed=True))
        elif code in (0x58, 0x55):  # BINUNICODE, SHORT_BINSTRING
            n = struct.unpack("<I", src.read(4))[0] if code == 0x58 else src.read(1)[0]
            data = src.read(n)  # at most what the file holds
            self._charge(4 * n + _SLOT)
            s.append(data.decode("utf-8", "surrogatepass" if code == 0x58 else "strict"))
        elif code == 0x63:  # GLOBAL
            s.append(self._global(src.line(), src.line()))
        elif code == 0x28:  # MARK
            self.meta.append(s)
            self.stack = []
        elif code in _EMPTY:
            self._charge(_OBJECT)
            s.append(() if code == 0x29 else _Box())
        else:
            return self._step_structure(code, src)
        return False

    def _step_structure(self, code: int, src: _Source) -> bool:
        s = self.stack
        if code == 0x74:  # TUPLE
            items = self._pop_mark()
            self._charge(_OBJECT + _SLOT * len(items))
            self.stack.append(tuple(items))
        elif code in _TUPLES:
            n = _TUPLES[code]
            if len(s) < n:
                raise IndexError
            top = tuple(s[-n:])
            del s[-n:]
            self._charge(_OBJECT)
            s.append(top)
        elif code in (0x61, 0x73):  # APPEND, SETITEM
            del s[-(1 if code == 0x61 else 2) :]
            self._grow(s[-1], 1)
        elif code in (0x65, 0x75):  # APPENDS, SETITEMS
            items = self._pop_mark()
            self._grow(self.stack[-1], len(items) // (1 if code == 0x65 else 2))
        elif code in _GETS:
            fmt = _GETS[code]
            key = struct.unpack(fmt, src.read(struct.calcsize(fmt)))[0]
            if key not in self.memo:
                raise _unpickling(f"memo key {key} missing at byte {src.pos}")
            s.append(self.memo[key])
        elif code in _PUTS:
            fmt = _PUTS[code]
            self.memo[struct.unpack(fmt, src.read(struct.calcsize(fmt)))[0]] = s[-1]
            self._charge(_SLOT)
        elif code == 0x52:  # REDUCE
            args = s.pop()
            s[-1] = self._call(s[-1], args)
        elif code == 0x81:  # NEWOBJ
            args = s.pop()
            s.append(self._call(s.pop(), args))
        elif code == 0x62:  # BUILD
            self._charge(_OBJECT + _SLOT * _size(s.pop()))
            if not s:  # nothing to build
                raise IndexError
        elif code == 0x51:  # BINPERSID
            s.append(self._persistent(s.pop()))
        else:
            raise _unpickling(f"Unsupported operand {code} at byte {src.pos - 1}")
        return False

    def _pop_mark(self) -> list[Any]:
        items = self.stack
        self.stack = self.meta.pop()
        return items

    def _grow(self, target: Any, n: int) -> None:
        if not isinstance(target, _Box):
            raise _unpickling("items added to something that is not a list, dict or set")
        target.items += n
        self._charge(_SLOT * n)

    def _global(self, module: str, name: str) -> _Global:
        # protocol 2 names Python 2's modules (__builtin__.set); read them as unpickling does
        if (module, name) in NAME_MAPPING:
            module, name = NAME_MAPPING[(module, name)]
        else:
            module = IMPORT_MAPPING.get(module, module)
        full = f"{module} {name}"
        shown = printable(f"{module}.{name}")
        if full in _REFUSED:
            self.budget.reject(
                f"it holds {_REFUSED[full]} ({shown}), and adamwkit reads plain dense tensors "
                "only, whose size it checks before anything is allocated"
            )
        if full not in _CALLS and full not in _STORAGE_ITEMSIZE and full not in _torch_values():
            raise UnsafeCheckpoint(
                f"{self.budget.where} is a pickle that names Python objects to import "
                f"(GLOBAL {shown}, not a tensor, container or number): loading it could run "
                "code, so adamwkit does not. If you trust its source, load it with "
                "torch.load(path, weights_only=False) and save model.state_dict(), or convert "
                "it to .safetensors"
            )
        self._charge(_SLOT)
        return _Global(full)

    def _call(self, func: Any, args: Any) -> Any:
        """What calling ``func(*args)`` makes, charged before torch would make it."""
        kind = _CALLS.get(func.name) if isinstance(func, _Global) else None
        if kind is None:
            what = printable(func.name.replace(" ", ".")) if isinstance(func, _Global) else None
            self.budget.reject(
                f"its pickle calls {what or 'an object that is not a function'}, which a "
                "saved checkpoint never does (it could allocate before any size is checked)"
            )
        items = args if isinstance(args, tuple) else (args,)
        if kind == "copy":
            n = sum(_size(a) for a in items)
            self._charge(_OBJECT + _SLOT * n, f"a copy of {n:,} items its pickle makes")
            return _Box(n)
        if kind == "bytes":
            first = items[0] if items else 0
            n = first if type(first) is int else _size(first)
            self._charge(_OBJECT + max(0, n), "a bytearray its pickle makes")
            return _Box(max(0, n))
        if kind == "from_type":  # _rebuild_from_type_v2(func, new_type, args, state)
            if len(items) != 4:
                raise _unpickling("_rebuild_from_type_v2 takes 4 arguments")
            made = self._call(items[0], items[2])
            self._charge(_SLOT * _size(items[3]))
            return made
        state = items[3] if kind == "tensor_state" and len(items) > 3 else ()
        self._charge(4 * _OBJECT + _SLOT * _size(state))
        return _Box()

    def _persistent(self, pid: Any) -> _Box:
        """A storage the pickle refers to: ('storage', type, key, location, numel[, view])."""
        ok = isinstance(pid, tuple) and len(pid) in (5, 6) and _text(pid[0]) == "storage"
        if ok:
            stype, key, numel = pid[1], pid[2], pid[4]
            size = _STORAGE_ITEMSIZE.get(stype.name) if isinstance(stype, _Global) else None
            if size is not None and isinstance(key, str) and type(numel) is int and numel >= 0:
                self.storages.setdefault(key, numel * size)
                self._charge(_OBJECT)
                return _Box()
        raise _unpickling("a persistent id that is not a storage of a known type and size")


def _text(x: Any) -> Any:
    return x.decode("ascii", "replace") if isinstance(x, bytes) else x


def _size(x: Any) -> int:
    """How many items a shallow copy of ``x`` holds."""
    if isinstance(x, _Box):
        return x.items
    if isinstance(x, (tuple, str, bytes)):
        return len(x)
    return 0


_CONSTANTS = {0x4E: None, 0x88: True, 0x89: False}  # NONE, NEWTRUE, NEWFALSE
_NUMBERS = {0x4A: "<i", 0x4B: "<B", 0x4D: "<H", 0x47: ">d"}  # BININT, BININT1/2, BINFLOAT
_EMPTY = (0x29, 0x5D, 0x7D, 0x8F)  # EMPTY_TUPLE, EMPTY_LIST, EMPTY_DICT, EMPTY_SET
_TUPLES = {0x85: 1, 0x86: 2, 0x87: 3}
_GETS = {0x68: "<B", 0x6A: "<I"}  # BINGET, LONG_BINGET
_PUTS = {0x71: "<B", 0x72: "<I"}  # BINPUT, LONG_BINPUT


# ---------------------------------------------------------------------- torch files


def check_torch_file(f: BinaryIO, budget: Budget) -> None:
    """Check a file for ``torch.load`` before it is loaded (``f`` is left at its start):
    the zip format's entries (stored, sizes within the file and the budget) and its
    ``data.pkl``; the legacy format's pickles and the storage sizes they declare."""
    size = file_size(f)
    head = f.read(512)
    f.seek(0)
    if head[:4] == b"PK\x03\x04":  # how torch.load tells the zip format
        _check_torch_zip(f, size, budget)
    else:
        _check_torch_legacy(f, size, head, budget)
    f.seek(0)


def _check_torch_zip(f: BinaryIO, size: int, budget: Budget) -> None:
    zf = zipfile.ZipFile(f)
    infos = check_zip_entries(zf, size, budget, (zipfile.ZIP_STORED,), "torch.save")
    if not infos or "/" not in infos[0].filename:
        raise _unpickling("a zip archive without torch.save's layout (archive/data.pkl)")
    prefix = infos[0].filename.split("/", 1)[0]  # the archive's name, as torch reads it
    records = {i.filename: i for i in infos}
    if f"{prefix}/constants.pkl" in records:
        budget.reject("it is a TorchScript archive (torch.jit.save), which runs code to load")
    budget.charge(sum(i.file_size for i in infos), "its entries")
    pkl = records.get(f"{prefix}/data.pkl")
    if pkl is None:
        raise _unpickling(f"no {prefix}/data.pkl in the archive")
    scan = PickleScan(budget)
    scan.run(_Source(io.BytesIO(zf.read(pkl)), pkl.file_size))
    for key, nbytes in scan.storages.items():
        record = records.get(f"{prefix}/data/{key}")
        if record is None or record.file_size != nbytes:
            budget.reject(
                f"storage {printable(key)!r} declares {size_text(nbytes)} but its record "
                f"holds {'nothing' if record is None else size_text(record.file_size)}"
            )


def _check_torch_legacy(f: BinaryIO, size: int, head: bytes, budget: Budget) -> None:
    if _is_tar(head):
        budget.reject("it is the tar format of torch < 0.4, which weights-only loading refuses")
    src = _Source(f, size)
    for _ in range(3):  # magic number, protocol version, system info
        PickleScan(budget).run(src)
    main = PickleScan(budget)
    main.run(src)
    PickleScan(budget).run(src)  # the storages' keys
    declared = sum(main.storages.values())
    if declared + 8 * len(main.storages) > src.left:
        budget.reject(
            f"its pickle declares {size_text(declared)} of tensor data, and the file holds "
            f"{size_text(src.left)} after it"
        )
    budget.charge(declared, "its tensor data")


def _is_tar(head: bytes) -> bool:
    """Whether ``tarfile`` (which torch.load tries first) would read a header here."""
    if len(head) < 512:
        return False
    try:
        tarfile.TarInfo.frombuf(head, "utf-8", "surrogateescape")
    except tarfile.HeaderError:
        return False
    return True
