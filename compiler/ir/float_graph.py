"""FloatGraph: the float IR between training and quantization (numpy only, no torch).

A graph is one recurrent cell plus a dense readout:

* Elman RNN: ``h_t = tanh(W x_t + U h_{t-1} + b)``
* MGU:       ``f_t = sigmoid(W_f x_t + U_f h_{t-1} + b_f)``
             ``c_t = tanh(W_h x_t + U_h (f_t * h_{t-1}) + b_h)``
             ``h_t = (1 - f_t) * h_{t-1} + f_t * c_t``
* readout:   ``y_t = act(V h_t + c)`` on every step (``mode="per_step"``) or only the
  last one (``mode="final"``); ``act`` is ``linear`` (logits / regression) or ``sigmoid``.

A recurrent matrix is either a dense ``(N, N)`` array or a :class:`LowRank` ``A @ B`` with
singular values in descending order, so a smaller rank is a prefix of the factors.
Graphs validate on construction (an invalid graph cannot exist), are values (read-only
arrays, ``==`` and ``hash`` by content, see :mod:`stapes.ir.arrays`) and save as
``graph.json`` (versioned, human-readable) + ``graph.npz`` (arrays).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from stapes.errors import UserError
from stapes.fsutil import read_versioned
from stapes.ir.arrays import FrozenValue, frozen_array

FORMAT_VERSION = 1
READOUT_MODES = ("per_step", "final")
READOUT_ACTIVATIONS = ("linear", "sigmoid")
# Size limits of the IR (a graph beyond them cannot exist, so no later stage allocates for one):
# far above what a microcontroller runs, far below what would exhaust a workstation.
MAX_HIDDEN = 4096
MAX_INPUTS = 4096
MAX_OUTPUTS = 4096


def as_real(name: str, a) -> np.ndarray:
    """`a` as an array of real numbers (floats or integers): complex values (whose imaginary part
    a cast would drop), booleans, strings, objects and ragged nesting are a UserError naming `name`."""
    try:
        arr = np.asarray(a)
    except (ValueError, TypeError) as e:
        raise UserError(f"{name}: not a numeric array ({e})") from None
    if arr.dtype.kind not in "fiu":
        what = "complex values" if arr.dtype.kind == "c" else f"dtype {arr.dtype}"
        raise UserError(f"{name}: expected real numbers, got {what}")
    return arr


def real_array(name: str, a, ndim: int) -> np.ndarray:
    """:func:`frozen_array` as float64 of :func:`as_real`."""
    return frozen_array(name, as_real(name, a), np.float64, ndim)


def check_size(name: str, value: int, limit: int) -> None:
    """1 <= value <= limit, or a UserError naming the size."""
    if not 1 <= value <= limit:
        raise UserError(f"{name} {value} is outside 1..{limit}")


@dataclass(frozen=True, eq=False)
class LowRank(FrozenValue):
    """``U ≈ a @ b``: a (N, r), b (r, N), sigma (r,) descending (the truncated singular values)."""

    a: np.ndarray
    b: np.ndarray
    sigma: np.ndarray

    def __post_init__(self):
        object.__setattr__(self, "a", real_array("LowRank.a", self.a, 2))
        object.__setattr__(self, "b", real_array("LowRank.b", self.b, 2))
        object.__setattr__(self, "sigma", real_array("LowRank.sigma", self.sigma, 1))
        r = self.sigma.shape[0]
        if r < 1 or self.a.shape[1] != r or self.b.shape[0] != r:
            raise UserError(f"LowRank: inconsistent rank: a {self.a.shape}, b {self.b.shape}, sigma {self.sigma.shape}")
        if np.any(np.diff(self.sigma) > 0) or np.any(self.sigma < 0):
            raise UserError("LowRank.sigma must be non-negative and in descending order")

    @property
    def rank(self) -> int:
        return int(self.sigma.shape[0])

    @property
    def shape(self) -> tuple[int, int]:
        return (self.a.shape[0], self.b.shape[1])

    def dense(self) -> np.ndarray:
        return self.a @ self.b

    def truncate(self, rank: int) -> LowRank:
        """The first `rank` factors (the largest singular values)."""
        if not 1 <= rank <= self.rank:
            raise UserError(f"rank {rank} is outside 1..{self.rank}")
        return LowRank(self.a[:, :rank], self.b[:rank, :], self.sigma[:rank])


Matrix = np.ndarray | LowRank


def dense(m: Matrix) -> np.ndarray:
    """The dense (N, N) value of a recurrent matrix, whatever its representation."""
    return m.dense() if isinstance(m, LowRank) else m


def matvec(m: Matrix, h: np.ndarray) -> np.ndarray:
    """``m @ h`` for a batch of row vectors h (B, N): two thin products for a LowRank."""
    if isinstance(m, LowRank):
        return (h @ m.b.T) @ m.a.T
    return h @ m.T


def _as_matrix(name: str, m) -> Matrix:
    if isinstance(m, LowRank):
        return m
    return real_array(name, m, 2)


def _check_cell_sizes(kind: str, n: int, i: int, recurrent: dict) -> None:
    check_size(f"{kind}: hidden size", n, MAX_HIDDEN)
    check_size(f"{kind}: input size", i, MAX_INPUTS)
    for name, m in recurrent.items():
        if isinstance(m, LowRank) and m.rank > n:
            raise UserError(f"{kind}.{name}: rank {m.rank} is larger than the hidden size {n}")


def _check_shape(name: str, arr, shape):
    got = arr.shape
    if tuple(got) != tuple(shape):
        raise UserError(f"{name}: expected shape {tuple(shape)}, got {tuple(got)}")


@dataclass(frozen=True, eq=False)
class RNNCell(FrozenValue):
    """Elman RNN: h = tanh(w x + u h + b)."""

    w: np.ndarray
    u: Matrix
    b: np.ndarray
    kind = "rnn"

    def __post_init__(self):
        object.__setattr__(self, "w", real_array("rnn.w", self.w, 2))
        object.__setattr__(self, "u", _as_matrix("rnn.u", self.u))
        object.__setattr__(self, "b", real_array("rnn.b", self.b, 1))
        n, i = self.w.shape
        _check_shape("rnn.u", self.u, (n, n))
        _check_shape("rnn.b", self.b, (n,))
        _check_cell_sizes("rnn", n, i, self.recurrent())

    @property
    def hidden_size(self) -> int:
        return self.w.shape[0]

    @property
    def input_size(self) -> int:
        return self.w.shape[1]

    def recurrent(self) -> dict[str, Matrix]:
        return {"u": self.u}

    def step(self, x: np.ndarray, h: np.ndarray) -> np.ndarray:
        return np.tanh(x @ self.w.T + matvec(self.u, h) + self.b)


@dataclass(frozen=True, eq=False)
class MGUCell(FrozenValue):
    """Minimal gated unit (Zhou et al. 2016), see the module docstring."""

    w_f: np.ndarray
    u_f: Matrix
    b_f: np.ndarray
    w_h: np.ndarray
    u_h: Matrix
    b_h: np.ndarray
    kind = "mgu"

    def __post_init__(self):
        for name in ("w_f", "w_h"):
            object.__setattr__(self, name, real_array(f"mgu.{name}", getattr(self, name), 2))
        for name in ("b_f", "b_h"):
            object.__setattr__(self, name, real_array(f"mgu.{name}", getattr(self, name), 1))
        for name in ("u_f", "u_h"):
            object.__setattr__(self, name, _as_matrix(f"mgu.{name}", getattr(self, name)))
        n, i = self.w_f.shape
        _check_shape("mgu.w_h", self.w_h, (n, i))
        for name in ("u_f", "u_h"):
            _check_shape(f"mgu.{name}", getattr(self, name), (n, n))
        for name in ("b_f", "b_h"):
            _check_shape(f"mgu.{name}", getattr(self, name), (n,))
        _check_cell_sizes("mgu", n, i, self.recurrent())

    @property
    def hidden_size(self) -> int:
        return self.w_f.shape[0]

    @property
    def input_size(self) -> int:
        return self.w_f.shape[1]

    def recurrent(self) -> dict[str, Matrix]:
        return {"u_f": self.u_f, "u_h": self.u_h}

    def step(self, x: np.ndarray, h: np.ndarray) -> np.ndarray:
        f = 1.0 / (1.0 + np.exp(-(x @ self.w_f.T + matvec(self.u_f, h) + self.b_f)))
        c = np.tanh(x @ self.w_h.T + matvec(self.u_h, f * h) + self.b_h)
        return h + f * (c - h)


Cell = RNNCell | MGUCell
CELL_TYPES = {"rnn": RNNCell, "mgu": MGUCell}
RECURRENT_FIELDS = {"rnn": ("u",), "mgu": ("u_f", "u_h")}  # the fields that may be LowRank


@dataclass(frozen=True, eq=False)
class Readout(FrozenValue):
    """y = act(w h + b), per step or at the final step."""

    w: np.ndarray
    b: np.ndarray
    mode: str = "per_step"
    activation: str = "linear"

    def __post_init__(self):
        object.__setattr__(self, "w", real_array("readout.w", self.w, 2))
        object.__setattr__(self, "b", real_array("readout.b", self.b, 1))
        _check_shape("readout.b", self.b, (self.w.shape[0],))
        check_size("readout: output size", self.w.shape[0], MAX_OUTPUTS)
        if self.mode not in READOUT_MODES:
            raise UserError(f"readout.mode {self.mode!r} is not one of {READOUT_MODES}")
        if self.activation not in READOUT_ACTIVATIONS:
            raise UserError(f"readout.activation {self.activation!r} is not one of {READOUT_ACTIVATIONS}")

    def apply(self, h: np.ndarray) -> np.ndarray:
        y = h @ self.w.T + self.b
        return 1.0 / (1.0 + np.exp(-y)) if self.activation == "sigmoid" else y


@dataclass(frozen=True, eq=False)
class FloatGraph(FrozenValue):
    """One cell + readout, with the task it was trained on (None for imports) and provenance."""

    cell: Cell
    readout: Readout
    task: dict | None = None  # tasks.make_task(**task) rebuilds the task and its metric
    provenance: dict = field(default_factory=dict)

    def __post_init__(self):
        if not isinstance(self.cell, (RNNCell, MGUCell)):
            raise UserError(f"FloatGraph.cell must be an RNNCell or MGUCell, got {type(self.cell).__name__}")
        if not isinstance(self.readout, Readout):
            raise UserError(f"FloatGraph.readout must be a Readout, got {type(self.readout).__name__}")
        if self.readout.w.shape[1] != self.cell.hidden_size:
            raise UserError(
                f"readout.w: expected {self.cell.hidden_size} columns (hidden size), got {self.readout.w.shape[1]}"
            )
        if self.task is not None and not isinstance(self.task, dict):
            raise UserError(f"FloatGraph.task must be a dict or None, got {type(self.task).__name__}")
        if not isinstance(self.provenance, dict):
            raise UserError(f"FloatGraph.provenance must be a dict, got {type(self.provenance).__name__}")

    # ---- shape ------------------------------------------------------------------------
    @property
    def kind(self) -> str:
        return self.cell.kind

    @property
    def input_size(self) -> int:
        return self.cell.input_size

    @property
    def hidden_size(self) -> int:
        return self.cell.hidden_size

    @property
    def output_size(self) -> int:
        return self.readout.w.shape[0]

    def replace_cell(self, cell: Cell, **provenance) -> FloatGraph:
        return dataclasses.replace(self, cell=cell, provenance={**self.provenance, **provenance})

    # ---- float evaluation (numpy, float64) ------------------------------------------------
    def run(self, x: np.ndarray, h0: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """x (B, T, I) -> (outputs, states): outputs (B, T, O) per step or (B, O) for a final
        readout; states (B, T, N), every step's hidden state."""
        x = np.asarray(x, dtype=np.float64)
        if x.ndim != 3 or x.shape[2] != self.input_size:
            raise UserError(f"inputs: expected shape (batch, time, {self.input_size}), got {x.shape}")
        bsz, steps, _ = x.shape
        h = np.zeros((bsz, self.hidden_size)) if h0 is None else np.asarray(h0, dtype=np.float64)
        states = np.empty((bsz, steps, self.hidden_size))
        for t in range(steps):
            h = self.cell.step(x[:, t], h)
            states[:, t] = h
        if self.readout.mode == "final":
            return self.readout.apply(states[:, -1]), states
        return self.readout.apply(states), states

    # ---- persistence -------------------------------------------------------------------
    def save(self, folder: str | Path) -> None:
        """Write graph.json + graph.npz into an existing folder (callers wrap it in atomic_dir)."""
        folder = Path(folder)
        arrays: dict[str, np.ndarray] = {}
        cell_meta = {}
        for f in dataclasses.fields(self.cell):
            value = getattr(self.cell, f.name)
            if isinstance(value, LowRank):
                cell_meta[f.name] = {"lowrank": True, "rank": value.rank}
                for part in ("a", "b", "sigma"):
                    arrays[f"cell.{f.name}.{part}"] = getattr(value, part)
            else:
                cell_meta[f.name] = {"lowrank": False}
                arrays[f"cell.{f.name}"] = value
        arrays["readout.w"] = self.readout.w
        arrays["readout.b"] = self.readout.b
        meta = {
            "format": "stapes.FloatGraph",
            "version": FORMAT_VERSION,
            "cell": {
                "kind": self.kind,
                "input_size": self.input_size,
                "hidden_size": self.hidden_size,
                "matrices": cell_meta,
            },
            "readout": {
                "mode": self.readout.mode,
                "activation": self.readout.activation,
                "output_size": self.output_size,
            },
            "task": self.task,
            "provenance": self.provenance,
        }
        np.savez(folder / "graph.npz", **arrays)
        (folder / "graph.json").write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")

    @classmethod
    def load(cls, folder: str | Path) -> FloatGraph:
        """Read a model folder; every problem (unreadable or damaged files, missing or wrong-typed
        keys, arrays of the wrong dtype or shape, sizes that disagree, values the IR rejects) is a
        one-line UserError naming the file."""
        meta, arrays = read_versioned(
            folder,
            "graph",
            "stapes.FloatGraph",
            FORMAT_VERSION,
            "not a stapes model folder (graph.json and graph.npz expected)",
        )
        meta_path, npz_path = Path(folder) / "graph.json", Path(folder) / "graph.npz"
        cell_meta = json_field(meta_path, meta, "cell", dict)
        kind = json_field(meta_path, cell_meta, "kind", str, "cell")
        if kind not in CELL_TYPES:
            raise UserError(f"{meta_path}: unknown cell kind {kind!r} (expected one of {sorted(CELL_TYPES)})")
        matrices = json_field(meta_path, cell_meta, "matrices", dict, "cell")
        names = [f.name for f in dataclasses.fields(CELL_TYPES[kind])]
        if sorted(matrices) != sorted(names):
            raise UserError(f"{meta_path}: cell.matrices lists {sorted(matrices)}; a {kind} cell has {sorted(names)}")
        parts, ranks = {}, {}
        for name in names:
            m = json_field(meta_path, matrices, name, dict, "cell.matrices")
            if json_field(meta_path, m, "lowrank", bool, f"cell.matrices.{name}"):
                if name not in RECURRENT_FIELDS[kind]:
                    raise UserError(
                        f"{meta_path}: cell.matrices.{name} cannot be low rank (only {RECURRENT_FIELDS[kind]})"
                    )
                ranks[name] = json_field(meta_path, m, "rank", int, f"cell.matrices.{name}")
                parts[name] = tuple(f"cell.{name}.{p}" for p in ("a", "b", "sigma"))
            else:
                parts[name] = (f"cell.{name}",)
        readout_meta = json_field(meta_path, meta, "readout", dict)
        mode = json_field(meta_path, readout_meta, "mode", str, "readout")
        activation = json_field(meta_path, readout_meta, "activation", str, "readout")
        if mode not in READOUT_MODES or activation not in READOUT_ACTIVATIONS:
            raise UserError(
                f"{meta_path}: readout mode/activation {mode!r}/{activation!r} not among {READOUT_MODES}/{READOUT_ACTIVATIONS}"
            )
        task = meta.get("task")
        if task is not None and not (isinstance(task, dict) and isinstance(task.get("name"), str)):
            raise UserError(f"{meta_path}: task must be null or an object with a string name, got {task!r:.80}")
        provenance = meta.get("provenance", {})
        if not isinstance(provenance, dict):
            raise UserError(f"{meta_path}: provenance must be an object, got {type(provenance).__name__}")
        check_array_keys(npz_path, arrays, [k for ks in parts.values() for k in ks] + ["readout.w", "readout.b"])
        for key, a in arrays.items():
            if a.dtype.kind != "f":
                raise UserError(f"{npz_path}: array {key!r} has dtype {a.dtype}; real floats expected")
        try:
            kwargs = {
                name: LowRank(*(arrays[k] for k in keys)) if name in ranks else arrays[keys[0]]
                for name, keys in parts.items()
            }
            cell = CELL_TYPES[kind](**kwargs)
            readout = Readout(arrays["readout.w"], arrays["readout.b"], mode, activation)
            graph = cls(cell, readout, task, provenance)
        except UserError as e:
            raise UserError(f"{npz_path}: {e}") from None
        sizes = {
            "cell.input_size": (cell_meta, "input_size", graph.input_size),
            "cell.hidden_size": (cell_meta, "hidden_size", graph.hidden_size),
            "readout.output_size": (readout_meta, "output_size", graph.output_size),
            **{f"cell.matrices.{k}.rank": (matrices[k], "rank", getattr(cell, k).rank) for k in ranks},
        }
        for where, (d, key, actual) in sizes.items():
            declared = json_field(meta_path, d, key, int, where.rpartition(".")[0])
            if declared != actual:
                raise UserError(f"{meta_path}: {where} is {declared} but graph.npz holds {actual}")
        return graph


def json_field(path: Path, d: dict, key: str, kind: type | tuple, where: str = ""):
    """``d[key]`` of the JSON file `path`, checked to be of type `kind` (a bool is no int);
    a missing key or a value of another type is a UserError naming the file and the key."""
    full = f"{where}.{key}" if where else key
    if key not in d:
        raise UserError(f"{path}: missing key {full!r}")
    value = d[key]
    kinds = kind if isinstance(kind, tuple) else (kind,)
    if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):
        names = " or ".join(_JSON_TYPE_NAMES.get(k, k.__name__) for k in kinds)
        raise UserError(f"{path}: {full} must be {names}, got {value!r:.60}")
    return value


_JSON_TYPE_NAMES = {dict: "an object", list: "a list", str: "a string", int: "an integer", bool: "true or false"}


def check_array_keys(path: Path, arrays: dict, expected) -> None:
    """The archive `path` holds exactly the arrays `expected`, or a UserError names the difference."""
    missing = [k for k in expected if k not in arrays]
    if missing:
        raise UserError(f"{path}: missing array {missing[0]!r}")
    extra = sorted(set(arrays) - set(expected))
    if extra:
        raise UserError(f"{path}: unexpected array {extra[0]!r} (the .json file does not describe it)")


def is_model_folder(folder: str | Path) -> bool:
    folder = Path(folder)
    return (folder / "graph.json").is_file() and (folder / "graph.npz").is_file()
