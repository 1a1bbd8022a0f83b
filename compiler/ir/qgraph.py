"""QGraph: the fixed-point IR between quantize and the reference / emitter / boards.

Frozen dataclasses validated on construction, so an invalid QGraph cannot exist; they are values
(read-only arrays and gate mapping, ``==`` and ``hash`` by content, see :mod:`stapes.ir.arrays`).
Validation includes the overflow proof of the arithmetic contract: for every mat-vec row, ``Σ_j |w_ij| · 32768`` fits
int32, so no int32 accumulation can overflow for any int16 input, in any summation order; the
32-bit requantisation rule (prove_combine32): per gate and readout row, the bounds of the shifted
accumulations plus |bias| fit int32, so the rows combine in 32-bit arithmetic; and every shift
equals the one the formats imply and lies in what the runtime accepts.

Conventions (the reference, reference.py, is the executable spec):
* activations and state int16; the state is Q0.15; weights int8 or int16 with a per-row frac;
  biases int32 in the gate's pre-activation format (the activation table's input format);
* a gate computes ``pre = sat16(shift(W x, x_shift) + shift(R h, h_shift) + bias)`` where the
  recurrent product R h is dense (``U h``) or low-rank (``z = sat16(shift(B h, z_shift))``,
  ``A z``), then ``table(pre)``;
* saved as ``qgraph.json`` (versioned) + ``qgraph.npz``.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from stapes.errors import UserError
from stapes.fsutil import read_versioned
from stapes.ir import contract as fx
from stapes.ir.arrays import FrozenValue, frozen_array, frozen_mapping
from stapes.ir.float_graph import (
    MAX_HIDDEN,
    MAX_INPUTS,
    MAX_OUTPUTS,
    check_array_keys,
    check_size,
    json_field,
    real_array,
)

FORMAT_VERSION = 1
STATE_FRAC = 15
WEIGHT_BITS = (8, 16)
ACTIVATIONS = ("tanh", "sigmoid")
GATE_NAMES = {"rnn": ("h",), "mgu": ("f", "h")}
GATE_ACTIVATION = {"f": "sigmoid", "h": "tanh"}
READOUT_MODES = ("per_step", "final")
READOUT_ACTIVATIONS = ("linear", "sigmoid")
_DTYPES = {8: np.int8, 16: np.int16, 32: np.int32}


@dataclass(frozen=True)
class QFormat:
    """A signed fixed-point format: `bits` wide, value = integer / 2^frac. `frac` is one int (per
    tensor) or a tuple (per output row)."""

    bits: int
    frac: int | tuple

    def __post_init__(self):
        if not _is_int(self.bits) or self.bits not in _DTYPES:
            raise UserError(f"QFormat: bits must be 8, 16 or 32, got {self.bits!r:.40}")
        frac = self.frac
        if isinstance(frac, (list, tuple, np.ndarray)):
            if not all(_is_int(f) for f in frac):
                raise UserError(f"QFormat: per-row fracs must be integers, got {frac!r:.60}")
            frac = tuple(int(f) for f in frac)
            if not frac:
                raise UserError("QFormat: empty per-row frac")
        elif _is_int(frac):
            frac = int(frac)
        else:
            raise UserError(f"QFormat: frac must be an integer or a list of them, got {frac!r:.60}")
        object.__setattr__(self, "bits", int(self.bits))
        for f in frac if isinstance(frac, tuple) else (frac,):
            if not -32 <= f <= 64:
                raise UserError(f"QFormat: frac {f} outside -32..64")
        object.__setattr__(self, "frac", frac)

    @property
    def per_row(self) -> bool:
        return isinstance(self.frac, tuple)

    def row_fracs(self, rows: int) -> np.ndarray:
        """The frac of each of `rows` rows as an int64 array."""
        if self.per_row:
            if len(self.frac) != rows:
                raise UserError(f"QFormat: {len(self.frac)} row fracs for {rows} rows")
            return np.asarray(self.frac, dtype=np.int64)
        return np.full(rows, self.frac, dtype=np.int64)

    def describe(self) -> str:
        fracs = sorted(set(self.frac)) if self.per_row else [self.frac]
        span = f"{fracs[0]}" if len(fracs) == 1 else f"{fracs[0]}..{fracs[-1]}"
        return f"int{self.bits} frac {span}" + (" (per row)" if self.per_row else "")

    def to_json(self):
        return {"bits": self.bits, "frac": list(self.frac) if self.per_row else self.frac}

    @classmethod
    def from_json(cls, d) -> QFormat:
        if not isinstance(d, dict) or sorted(d) != ["bits", "frac"]:
            raise UserError(f"QFormat: expected an object with bits and frac, got {d!r:.60}")
        return cls(d["bits"], tuple(d["frac"]) if isinstance(d["frac"], list) else d["frac"])


def _is_int(v) -> bool:
    return isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_))


@dataclass(frozen=True, eq=False)
class QTensor(FrozenValue):
    name: str
    data: np.ndarray
    fmt: QFormat

    def __post_init__(self):
        if not isinstance(self.name, str):
            raise UserError(f"QTensor: name must be a string, got {self.name!r:.40}")
        if not isinstance(self.fmt, QFormat):
            raise UserError(f"{self.name}: fmt must be a QFormat, got {type(self.fmt).__name__}")
        try:
            ndim = np.asarray(self.data).ndim
        except (ValueError, TypeError) as e:
            raise UserError(f"{self.name}: not a numeric array ({e})") from None
        if ndim not in (1, 2):
            raise UserError(f"{self.name}: expected a vector or a matrix, got a {ndim}-d array")
        object.__setattr__(self, "data", frozen_array(self.name, self.data, _DTYPES[self.fmt.bits], ndim))
        if self.fmt.per_row:
            self.fmt.row_fracs(self.data.shape[0])

    @property
    def shape(self):
        return self.data.shape

    def row_fracs(self) -> np.ndarray:
        return self.fmt.row_fracs(self.data.shape[0])

    def dequantize(self) -> np.ndarray:
        fr = self.row_fracs()
        scale = np.exp2(-fr.astype(np.float64))
        return self.data * (scale[:, None] if self.data.ndim == 2 else scale)


def _shifts(name: str, values, n: int) -> np.ndarray:
    arr = np.asarray(values).reshape(-1)
    if arr.shape != (n,):
        raise UserError(f"{name}: expected {n} shifts, got {arr.shape}")
    wide = frozen_array(name, arr, np.int64, 1)
    if wide.size and (wide.min() < fx.SHIFT_MIN or wide.max() > fx.SHIFT_MAX):
        raise UserError(f"{name}: shift outside {fx.SHIFT_MIN}..{fx.SHIFT_MAX} (formats too far apart)")
    return frozen_array(name, wide, np.int8, 1)


def prove_no_overflow(t: QTensor, input_max: int = 1 << 15) -> None:
    """Every row's Σ|w|·max|x| fits int32, so every partial sum does too, in any order."""
    if t.data.ndim != 2 or t.data.shape[1] == 0:
        return
    bound = np.abs(t.data.astype(np.int64)).sum(axis=1) * input_max
    worst = int(np.argmax(bound))
    if bound[worst] > fx.INT32_MAX:
        raise UserError(
            f"{t.name}: row {worst} can overflow the int32 accumulator "
            f"(Σ|w|·{input_max} = {int(bound[worst])} > 2^31 - 1)"
        )


def shifted_bound(t: QTensor, shifts, input_max: int = 1 << 15) -> np.ndarray:
    """Per row, the largest |shift_round(acc, s)| for any accumulation |acc| <= Σ|w|·input_max
    (shift_round is monotone, so the extremes ±bound give it; s <= 0 is the exact left shift)."""
    bound = (
        np.abs(t.data.astype(np.int64)).sum(axis=1) * input_max if t.data.shape[1] else np.zeros(t.shape[0], np.int64)
    )
    s = np.asarray(shifts, dtype=np.int64)
    right = (bound + (np.int64(1) << np.maximum(s - 1, 0))) >> np.maximum(s, 0)
    return np.where(s > 0, right, bound << np.maximum(-s, 0))


def prove_combine32(name: str, terms: list, bias: QTensor) -> None:
    """The 32-bit requantisation rule: per row, the shifted bounds of the terms (tensor, shifts)
    plus |bias| fit int32, so ``sat16(shift(acc_1, s_1) + shift(acc_2, s_2) + bias)`` never
    overflows int32 (the C rows and the host lanes compute it in 32 bits; the reference in int64
    gets the same bits)."""
    total = np.abs(bias.data.astype(np.int64)).copy()
    for t, shifts in terms:
        total = total + shifted_bound(t, shifts)
    if total.size and int(total.max()) > fx.INT32_MAX:
        worst = int(np.argmax(total))
        raise UserError(
            f"{name}: row {worst} can overflow the 32-bit requantisation (shifted |acc| bounds + |bias| = "
            f"{int(total[worst])} > 2^31 - 1): its pre-activation range is too large for the formats"
        )


def _check_weight(t: QTensor, shape: tuple) -> None:
    if t.fmt.bits not in WEIGHT_BITS:
        raise UserError(f"{t.name}: weights must be int8 or int16, got int{t.fmt.bits}")
    if t.shape != tuple(shape):
        raise UserError(f"{t.name}: expected shape {tuple(shape)}, got {t.shape}")
    prove_no_overflow(t)


@dataclass(frozen=True, eq=False)
class QLowRank(FrozenValue):
    """R ≈ A B: b (r, N), a (N, r), z = sat16(shift(B h, z_shift)) in format z_fmt (int16);
    sigma (r,) descending, kept so a smaller rank is a prefix."""

    b: QTensor
    a: QTensor
    z_fmt: QFormat
    z_shift: np.ndarray
    sigma: np.ndarray

    def __post_init__(self):
        if self.a.data.ndim != 2 or self.b.data.ndim != 2:
            raise UserError(f"{self.b.name}: low-rank factors must be matrices, got a {self.a.shape}, b {self.b.shape}")
        r = self.b.shape[0]
        sigma = real_array(f"{self.b.name}.sigma", self.sigma, 1)
        if r < 1 or sigma.shape != (r,) or self.a.shape[1] != r:
            raise UserError(f"{self.b.name}: inconsistent low-rank shapes a {self.a.shape}, b {self.b.shape}")
        if np.any(np.diff(sigma) > 0) or np.any(sigma < 0):
            raise UserError(f"{self.b.name}: sigma must be non-negative and descending")
        if self.z_fmt.bits != 16 or self.z_fmt.per_row:
            raise UserError(f"{self.b.name}: z must be one int16 format")
        object.__setattr__(self, "sigma", sigma)
        expect = self.b.row_fracs() + STATE_FRAC - self.z_fmt.frac
        object.__setattr__(self, "z_shift", _shifts(f"{self.b.name}.z_shift", self.z_shift, r))
        if not np.array_equal(self.z_shift, expect):
            raise UserError(f"{self.b.name}: z_shift does not match the formats")

    @property
    def rank(self) -> int:
        return self.b.shape[0]


@dataclass(frozen=True, eq=False)
class QGate(FrozenValue):
    """pre = sat16(shift(W x, x_shift) + shift(R h, h_shift) + bias); out = table[activation](pre)."""

    name: str
    w: QTensor
    u: QTensor | QLowRank
    bias: QTensor
    x_shift: np.ndarray
    h_shift: np.ndarray
    activation: str

    def __post_init__(self):
        if not isinstance(self.activation, str) or self.activation not in ACTIVATIONS:
            raise UserError(f"gate {self.name}: unknown activation {self.activation!r}")
        if self.w.data.ndim != 2:
            raise UserError(f"gate {self.name}: w must be a matrix, got shape {self.w.shape}")
        n, i = self.w.shape
        _check_weight(self.w, (n, i))
        if isinstance(self.u, QLowRank):
            _check_weight(self.u.b, (self.u.rank, n))
            _check_weight(self.u.a, (n, self.u.rank))
        else:
            _check_weight(self.u, (n, n))
        if self.bias.fmt.bits != 32 or self.bias.fmt.per_row or self.bias.shape != (n,):
            raise UserError(f"gate {self.name}: bias must be int32 ({n},) in one format")
        if self.bias.fmt.frac != fx.TABLE_INPUT_FRAC[self.activation]:
            raise UserError(f"gate {self.name}: bias frac must be the {self.activation} table's input frac")
        object.__setattr__(self, "x_shift", _shifts(f"gate {self.name}.x_shift", self.x_shift, n))
        object.__setattr__(self, "h_shift", _shifts(f"gate {self.name}.h_shift", self.h_shift, n))
        if not np.array_equal(self.h_shift, self.recurrent_frac() - self.pre_frac):
            raise UserError(f"gate {self.name}: h_shift does not match the formats")
        rec = self.u.a if isinstance(self.u, QLowRank) else self.u
        prove_combine32(f"gate {self.name}", [(self.w, self.x_shift), (rec, self.h_shift)], self.bias)

    @property
    def pre_frac(self) -> int:
        return fx.TABLE_INPUT_FRAC[self.activation]

    @property
    def lowrank(self) -> bool:
        return isinstance(self.u, QLowRank)

    @property
    def rank(self) -> int:
        return self.u.rank if self.lowrank else 0

    def recurrent_frac(self) -> np.ndarray:
        """Per row frac of the recurrent int32 product (U h or A z)."""
        if self.lowrank:
            return self.u.a.row_fracs() + self.u.z_fmt.frac
        return self.u.row_fracs() + STATE_FRAC

    def tensors(self) -> list[QTensor]:
        rec = [self.u.b, self.u.a] if self.lowrank else [self.u]
        return [self.w, *rec, self.bias]


@dataclass(frozen=True, eq=False)
class QReadout(FrozenValue):
    """y = act(sat16(shift(V h, shift) + bias)); linear: y in out_fmt; sigmoid: pre in the
    sigmoid table's input format and y in Q0.15."""

    w: QTensor
    bias: QTensor
    shift: np.ndarray
    mode: str
    activation: str
    out_fmt: QFormat

    def __post_init__(self):
        if not (isinstance(self.mode, str) and isinstance(self.activation, str)) or (
            self.mode not in READOUT_MODES or self.activation not in READOUT_ACTIVATIONS
        ):
            raise UserError(f"readout: bad mode/activation {self.mode!r}/{self.activation!r}")
        if self.w.data.ndim != 2:
            raise UserError(f"readout: w must be a matrix, got shape {self.w.shape}")
        if not isinstance(self.out_fmt, QFormat):
            raise UserError("readout: out_fmt must be a QFormat")
        o, n = self.w.shape
        _check_weight(self.w, (o, n))
        if self.out_fmt.bits != 16 or self.out_fmt.per_row:
            raise UserError("readout: output must be one int16 format")
        if self.activation == "sigmoid" and self.out_fmt.frac != STATE_FRAC:
            raise UserError("readout: a sigmoid output is Q0.15")
        if self.bias.fmt.bits != 32 or self.bias.shape != (o,) or self.bias.fmt.frac != self.pre_frac:
            raise UserError("readout: bias must be int32 (O,) in the pre-activation format")
        object.__setattr__(self, "shift", _shifts("readout.shift", self.shift, o))
        if not np.array_equal(self.shift, self.w.row_fracs() + STATE_FRAC - self.pre_frac):
            raise UserError("readout: shift does not match the formats")
        prove_combine32("readout", [(self.w, self.shift)], self.bias)

    @property
    def pre_frac(self) -> int:
        return fx.TABLE_INPUT_FRAC["sigmoid"] if self.activation == "sigmoid" else int(self.out_fmt.frac)


@dataclass(frozen=True, eq=False)
class QGraph(FrozenValue):
    kind: str
    input_fmt: QFormat
    gates: Mapping[str, QGate]  # read-only after construction: gate name -> QGate
    readout: QReadout
    task: dict | None = field(default=None, hash=False)
    provenance: dict = field(default_factory=dict, hash=False)

    def __post_init__(self):
        object.__setattr__(self, "gates", frozen_mapping(self.gates))
        if not isinstance(self.kind, str) or self.kind not in GATE_NAMES:
            raise UserError(f"QGraph: unknown cell kind {self.kind!r}")
        if sorted(map(str, self.gates)) != sorted(GATE_NAMES[self.kind]):
            raise UserError(f"QGraph: a {self.kind} has gates {GATE_NAMES[self.kind]}, got {tuple(self.gates)}")
        if not all(isinstance(g, QGate) for g in self.gates.values()) or not isinstance(self.readout, QReadout):
            raise UserError("QGraph: gates must be QGates and the readout a QReadout")
        if not isinstance(self.input_fmt, QFormat) or self.input_fmt.bits != 16 or self.input_fmt.per_row:
            raise UserError("QGraph: the input is one int16 format")
        if self.task is not None and not isinstance(self.task, dict):
            raise UserError(f"QGraph.task must be a dict or None, got {type(self.task).__name__}")
        if not isinstance(self.provenance, dict):
            raise UserError(f"QGraph.provenance must be a dict, got {type(self.provenance).__name__}")
        n, i = self.gates["h"].w.shape
        check_size("QGraph: hidden size", n, MAX_HIDDEN)
        check_size("QGraph: input size", i, MAX_INPUTS)
        check_size("QGraph: output size", self.readout.w.shape[0], MAX_OUTPUTS)
        bits = {t.fmt.bits for g in self.gates.values() for t in g.tensors() if t.fmt.bits != 32}
        bits.add(self.readout.w.fmt.bits)
        if len(bits) != 1:
            raise UserError(f"QGraph: all weights must share one width, got {sorted(bits)}")
        for name, g in self.gates.items():
            if g.name != name or g.activation != GATE_ACTIVATION[name]:
                raise UserError(f"QGraph: gate {name!r} is mislabelled")
            if g.w.shape != (n, i):
                raise UserError(f"gate {name}: w shape {g.w.shape}, expected {(n, i)}")
            expect = g.w.row_fracs() + self.input_fmt.frac - g.pre_frac
            if not np.array_equal(g.x_shift, expect):
                raise UserError(f"gate {name}: x_shift does not match the formats")
        if self.readout.w.shape[1] != n:
            raise UserError(f"readout: expected {n} columns, got {self.readout.w.shape[1]}")

    # ---- shape --------------------------------------------------------------------------
    @property
    def input_size(self) -> int:
        return self.gates["h"].w.shape[1]

    @property
    def hidden_size(self) -> int:
        return self.gates["h"].w.shape[0]

    @property
    def output_size(self) -> int:
        return self.readout.w.shape[0]

    @property
    def weight_bits(self) -> int:
        return self.readout.w.fmt.bits

    @property
    def lowrank(self) -> bool:
        return any(g.lowrank for g in self.gates.values())

    @property
    def rank(self) -> int:
        """The largest stored rank (0 when every recurrent matrix is dense). A run-time rank r
        uses min(r, stored rank) factors of each low-rank matrix."""
        return max(g.rank for g in self.gates.values())

    def gate_list(self) -> list[QGate]:
        return [self.gates[name] for name in GATE_NAMES[self.kind]]

    def check_rank(self, rank: int | None) -> int:
        """The rank to run at (None: the stored one); UserError when impossible."""
        if rank is None or rank == 0:
            return self.rank
        if not self.lowrank:
            raise UserError("this QGraph has dense recurrent matrices: a run-time rank needs a low-rank model")
        if not 1 <= rank <= self.rank:
            raise UserError(f"rank {rank} is outside 1..{self.rank}")
        return int(rank)

    # ---- persistence --------------------------------------------------------------------
    def _arrays_and_meta(self) -> tuple[dict, dict]:
        arrays: dict[str, np.ndarray] = {}
        tensors: dict[str, dict] = {}

        def put(key: str, t: QTensor):
            arrays[key] = t.data
            tensors[key] = {"name": t.name, "fmt": t.fmt.to_json()}

        gates = {}
        for name, g in self.gates.items():
            put(f"{name}.w", g.w)
            put(f"{name}.bias", g.bias)
            arrays[f"{name}.x_shift"] = g.x_shift
            arrays[f"{name}.h_shift"] = g.h_shift
            if g.lowrank:
                put(f"{name}.u.a", g.u.a)
                put(f"{name}.u.b", g.u.b)
                arrays[f"{name}.u.z_shift"] = g.u.z_shift
                arrays[f"{name}.u.sigma"] = g.u.sigma
                gates[name] = {"activation": g.activation, "lowrank": True, "z_fmt": g.u.z_fmt.to_json()}
            else:
                put(f"{name}.u", g.u)
                gates[name] = {"activation": g.activation, "lowrank": False}
        put("readout.w", self.readout.w)
        put("readout.bias", self.readout.bias)
        arrays["readout.shift"] = self.readout.shift
        meta = {
            "format": "stapes.QGraph",
            "version": FORMAT_VERSION,
            "kind": self.kind,
            "input_fmt": self.input_fmt.to_json(),
            "gates": gates,
            "tensors": tensors,
            "readout": {
                "mode": self.readout.mode,
                "activation": self.readout.activation,
                "out_fmt": self.readout.out_fmt.to_json(),
            },
            "task": self.task,
            "provenance": self.provenance,
        }
        return arrays, meta

    def content_hash(self) -> str:
        """sha256 of the numerics (arrays, formats, structure; not provenance): the model hash."""
        arrays, meta = self._arrays_and_meta()
        meta = {k: v for k, v in meta.items() if k not in ("provenance", "task")}
        h = hashlib.sha256(json.dumps(meta, sort_keys=True).encode())
        for key in sorted(arrays):
            a = np.ascontiguousarray(arrays[key])
            h.update(f"{key}:{a.dtype.str}:{a.shape}".encode())
            h.update(a.tobytes())
        return h.hexdigest()

    def save(self, folder: str | Path) -> None:
        """Write qgraph.json + qgraph.npz into an existing folder (callers use atomic_dir)."""
        folder = Path(folder)
        arrays, meta = self._arrays_and_meta()
        meta["hash"] = self.content_hash()
        np.savez(folder / "qgraph.npz", **arrays)
        (folder / "qgraph.json").write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")

    @classmethod
    def load(cls, folder: str | Path) -> QGraph:
        """Read a QModel folder; every problem (unreadable or damaged files, missing or wrong-typed
        keys, arrays of the wrong dtype or shape, formats and shifts that disagree, a content hash
        that does not match) is a one-line UserError naming the file."""
        meta, arrays = read_versioned(
            folder,
            "qgraph",
            "stapes.QGraph",
            FORMAT_VERSION,
            "not a QModel folder (qgraph.json and qgraph.npz expected; make one with `stapes quantize`)",
        )
        meta_path, npz_path = Path(folder) / "qgraph.json", Path(folder) / "qgraph.npz"

        def fmt(d: dict, key: str, where: str) -> QFormat:
            value = json_field(meta_path, d, key, dict, where)
            try:
                return QFormat.from_json(value)
            except UserError as e:
                raise UserError(f"{meta_path}: {where + '.' if where else ''}{key}: {e}") from None

        kind = json_field(meta_path, meta, "kind", str)
        if kind not in GATE_NAMES:
            raise UserError(f"{meta_path}: unknown cell kind {kind!r} (expected one of {sorted(GATE_NAMES)})")
        gates_meta = json_field(meta_path, meta, "gates", dict)
        if sorted(gates_meta) != sorted(GATE_NAMES[kind]):
            raise UserError(f"{meta_path}: gates {sorted(gates_meta)}; a {kind} has {sorted(GATE_NAMES[kind])}")
        tensors_meta = json_field(meta_path, meta, "tensors", dict)
        tensor_keys, other_keys, lowrank, z_fmts = [], [], {}, {}
        for name in GATE_NAMES[kind]:
            g = json_field(meta_path, gates_meta, name, dict, "gates")
            json_field(meta_path, g, "activation", str, f"gates.{name}")
            lowrank[name] = json_field(meta_path, g, "lowrank", bool, f"gates.{name}")
            rec = [f"{name}.u.b", f"{name}.u.a"] if lowrank[name] else [f"{name}.u"]
            tensor_keys += [f"{name}.w", *rec, f"{name}.bias"]
            other_keys += [f"{name}.x_shift", f"{name}.h_shift"]
            if lowrank[name]:
                z_fmts[name] = fmt(g, "z_fmt", f"gates.{name}")
                other_keys += [f"{name}.u.z_shift", f"{name}.u.sigma"]
        tensor_keys += ["readout.w", "readout.bias"]
        other_keys.append("readout.shift")
        if sorted(tensors_meta) != sorted(tensor_keys):
            raise UserError(f"{meta_path}: tensors lists {sorted(tensors_meta)}; expected {sorted(tensor_keys)}")
        formats = {}
        for key in tensor_keys:
            t = json_field(meta_path, tensors_meta, key, dict, "tensors")
            json_field(meta_path, t, "name", str, f"tensors.{key}")
            formats[key] = fmt(t, "fmt", f"tensors.{key}")
        r = json_field(meta_path, meta, "readout", dict)
        mode = json_field(meta_path, r, "mode", str, "readout")
        activation = json_field(meta_path, r, "activation", str, "readout")
        out_fmt = fmt(r, "out_fmt", "readout")
        input_fmt = fmt(meta, "input_fmt", "")
        stored_hash = meta.get("hash")
        if stored_hash is not None and not isinstance(stored_hash, str):
            raise UserError(f"{meta_path}: hash must be a string, got {stored_hash!r:.60}")
        task = meta.get("task")
        if task is not None and not (isinstance(task, dict) and isinstance(task.get("name"), str)):
            raise UserError(f"{meta_path}: task must be null or an object with a string name, got {task!r:.80}")
        provenance = meta.get("provenance", {})
        _check_provenance(meta_path, provenance)
        check_array_keys(npz_path, arrays, tensor_keys + other_keys)
        for key, a in arrays.items():
            want = "f" if key.endswith(".sigma") else "iu"
            if a.dtype.kind not in want:
                raise UserError(
                    f"{npz_path}: array {key!r} has dtype {a.dtype}; {'real floats' if want == 'f' else 'integers'} expected"
                )
        try:

            def get(key):
                return QTensor(tensors_meta[key]["name"], arrays[key], formats[key])

            gates = {}
            for name in GATE_NAMES[kind]:
                if lowrank[name]:
                    u = QLowRank(
                        get(f"{name}.u.b"),
                        get(f"{name}.u.a"),
                        z_fmts[name],
                        arrays[f"{name}.u.z_shift"],
                        arrays[f"{name}.u.sigma"],
                    )
                else:
                    u = get(f"{name}.u")
                gates[name] = QGate(
                    name,
                    get(f"{name}.w"),
                    u,
                    get(f"{name}.bias"),
                    arrays[f"{name}.x_shift"],
                    arrays[f"{name}.h_shift"],
                    gates_meta[name]["activation"],
                )
            readout = QReadout(
                get("readout.w"), get("readout.bias"), arrays["readout.shift"], mode, activation, out_fmt
            )
            graph = cls(kind, input_fmt, gates, readout, task, provenance)
        except UserError as e:
            raise UserError(f"{npz_path}: {e}") from None
        if stored_hash not in (None, graph.content_hash()):
            raise UserError(f"{meta_path}: content hash mismatch (qgraph.npz and qgraph.json disagree)")
        return graph


def _check_provenance(path: Path, provenance) -> None:
    """The provenance entries later stages read: calibrated ranges and the dense metric."""
    if not isinstance(provenance, dict):
        raise UserError(f"{path}: provenance must be an object, got {type(provenance).__name__}")
    ranges = provenance.get("ranges")
    if ranges is not None:
        if not isinstance(ranges, dict):
            raise UserError(f"{path}: provenance.ranges must be an object, got {ranges!r:.60}")
        bound = ranges.get("input_max", 1.0)
        if not _is_number(bound) or not 0 <= bound < float("inf"):
            raise UserError(f"{path}: provenance.ranges.input_max must be a finite number >= 0, got {bound!r:.60}")
    dense = provenance.get("metric_dense")
    if dense is not None and not (
        isinstance(dense, dict) and isinstance(dense.get("name"), (str, type(None))) and _is_number(dense.get("value"))
    ):
        raise UserError(f"{path}: provenance.metric_dense must be an object with a name and a number value")


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def is_qmodel_folder(folder: str | Path) -> bool:
    folder = Path(folder)
    return (folder / "qgraph.json").is_file() and (folder / "qgraph.npz").is_file()
