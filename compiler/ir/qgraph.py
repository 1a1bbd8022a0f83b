"""QGraph: the fixed-point IR between quantize and the reference / emitter / boards.

Frozen dataclasses validated on construction, so an invalid QGraph cannot exist; they are values
(read-only arrays and gate mapping, ``==`` and ``hash`` by content, see :mod:`stapes.ir.arrays`).
Validation includes the overflow proof of the arithmetic contract: for every mat-vec row, ``Σ_j |w_ij| · 32768`` fits
int32, so no int32 accumulation can overflow for any int16 input, in any summation order; and
every shift equals the one the formats imply and lies in what the runtime accepts.

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
        if self.bits not in _DTYPES:
            raise UserError(f"QFormat: bits must be 8, 16 or 32, got {self.bits}")
        frac = self.frac
        if isinstance(frac, (list, tuple, np.ndarray)):
            frac = tuple(int(f) for f in frac)
            if not frac:
                raise UserError("QFormat: empty per-row frac")
        else:
            frac = int(frac)
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
        return cls(d["bits"], tuple(d["frac"]) if isinstance(d["frac"], list) else d["frac"])


@dataclass(frozen=True, eq=False)
class QTensor(FrozenValue):
    name: str
    data: np.ndarray
    fmt: QFormat

    def __post_init__(self):
        ndim = np.asarray(self.data).ndim
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
        r = self.b.shape[0]
        sigma = frozen_array(f"{self.b.name}.sigma", self.sigma, np.float64, 1)
        if r < 1 or sigma.shape != (r,) or self.a.shape[1] != r:
            raise UserError(f"{self.b.name}: inconsistent low-rank shapes a {self.a.shape}, b {self.b.shape}")
        if np.any(np.diff(sigma) > 0):
            raise UserError(f"{self.b.name}: sigma must be descending")
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
        if self.activation not in ACTIVATIONS:
            raise UserError(f"gate {self.name}: unknown activation {self.activation!r}")
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
        if self.mode not in READOUT_MODES or self.activation not in READOUT_ACTIVATIONS:
            raise UserError(f"readout: bad mode/activation {self.mode!r}/{self.activation!r}")
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
        if self.kind not in GATE_NAMES:
            raise UserError(f"QGraph: unknown cell kind {self.kind!r}")
        if tuple(sorted(self.gates)) != tuple(sorted(GATE_NAMES[self.kind])):
            raise UserError(f"QGraph: a {self.kind} has gates {GATE_NAMES[self.kind]}, got {tuple(self.gates)}")
        if self.input_fmt.bits != 16 or self.input_fmt.per_row:
            raise UserError("QGraph: the input is one int16 format")
        n, i = self.gates["h"].w.shape
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
        meta, arrays = read_versioned(
            folder,
            "qgraph",
            "stapes.QGraph",
            FORMAT_VERSION,
            "not a QModel folder (qgraph.json and qgraph.npz expected; make one with `stapes quantize`)",
        )
        try:

            def get(key):
                t = meta["tensors"][key]
                return QTensor(t["name"], arrays[key], QFormat.from_json(t["fmt"]))

            gates = {}
            for name, g in meta["gates"].items():
                if g["lowrank"]:
                    u = QLowRank(
                        get(f"{name}.u.b"),
                        get(f"{name}.u.a"),
                        QFormat.from_json(g["z_fmt"]),
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
                    g["activation"],
                )
            r = meta["readout"]
            readout = QReadout(
                get("readout.w"),
                get("readout.bias"),
                arrays["readout.shift"],
                r["mode"],
                r["activation"],
                QFormat.from_json(r["out_fmt"]),
            )
            graph = cls(
                meta["kind"],
                QFormat.from_json(meta["input_fmt"]),
                gates,
                readout,
                meta.get("task"),
                meta.get("provenance", {}),
            )
        except KeyError as e:
            raise UserError(f"{folder}: QGraph is missing {e}") from None
        if meta.get("hash") not in (None, graph.content_hash()):
            raise UserError(
                f"{Path(folder) / 'qgraph.json'}: content hash mismatch (qgraph.npz and qgraph.json disagree)"
            )
        return graph


def is_qmodel_folder(folder: str | Path) -> bool:
    folder = Path(folder)
    return (folder / "qgraph.json").is_file() and (folder / "qgraph.npz").is_file()
