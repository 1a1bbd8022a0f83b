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


@dataclass(frozen=True, eq=False)
class LowRank(FrozenValue):
    """``U ≈ a @ b``: a (N, r), b (r, N), sigma (r,) descending (the truncated singular values)."""

    a: np.ndarray
    b: np.ndarray
    sigma: np.ndarray

    def __post_init__(self):
        object.__setattr__(self, "a", frozen_array("LowRank.a", self.a, np.float64, 2))
        object.__setattr__(self, "b", frozen_array("LowRank.b", self.b, np.float64, 2))
        object.__setattr__(self, "sigma", frozen_array("LowRank.sigma", self.sigma, np.float64, 1))
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
    return frozen_array(name, m, np.float64, 2)


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
        object.__setattr__(self, "w", frozen_array("rnn.w", self.w, np.float64, 2))
        object.__setattr__(self, "u", _as_matrix("rnn.u", self.u))
        object.__setattr__(self, "b", frozen_array("rnn.b", self.b, np.float64, 1))
        n, i = self.w.shape
        _check_shape("rnn.u", self.u, (n, n))
        _check_shape("rnn.b", self.b, (n,))

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
            object.__setattr__(self, name, frozen_array(f"mgu.{name}", getattr(self, name), np.float64, 2))
        for name in ("b_f", "b_h"):
            object.__setattr__(self, name, frozen_array(f"mgu.{name}", getattr(self, name), np.float64, 1))
        for name in ("u_f", "u_h"):
            object.__setattr__(self, name, _as_matrix(f"mgu.{name}", getattr(self, name)))
        n, i = self.w_f.shape
        _check_shape("mgu.w_h", self.w_h, (n, i))
        for name in ("u_f", "u_h"):
            _check_shape(f"mgu.{name}", getattr(self, name), (n, n))
        for name in ("b_f", "b_h"):
            _check_shape(f"mgu.{name}", getattr(self, name), (n,))

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


@dataclass(frozen=True, eq=False)
class Readout(FrozenValue):
    """y = act(w h + b), per step or at the final step."""

    w: np.ndarray
    b: np.ndarray
    mode: str = "per_step"
    activation: str = "linear"

    def __post_init__(self):
        object.__setattr__(self, "w", frozen_array("readout.w", self.w, np.float64, 2))
        object.__setattr__(self, "b", frozen_array("readout.b", self.b, np.float64, 1))
        _check_shape("readout.b", self.b, (self.w.shape[0],))
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
        if self.readout.w.shape[1] != self.cell.hidden_size:
            raise UserError(
                f"readout.w: expected {self.cell.hidden_size} columns (hidden size), got {self.readout.w.shape[1]}"
            )

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
        meta, arrays = read_versioned(
            folder,
            "graph",
            "stapes.FloatGraph",
            FORMAT_VERSION,
            "not a stapes model folder (graph.json and graph.npz expected)",
        )
        meta_path, npz_path = Path(folder) / "graph.json", Path(folder) / "graph.npz"
        kind = meta["cell"]["kind"]
        if kind not in CELL_TYPES:
            raise UserError(f"{meta_path}: unknown cell kind {kind!r}")
        try:
            kwargs = {}
            for name, m in meta["cell"]["matrices"].items():
                if m["lowrank"]:
                    kwargs[name] = LowRank(*(arrays[f"cell.{name}.{p}"] for p in ("a", "b", "sigma")))
                else:
                    kwargs[name] = arrays[f"cell.{name}"]
            cell = CELL_TYPES[kind](**kwargs)
            readout = Readout(
                arrays["readout.w"], arrays["readout.b"], meta["readout"]["mode"], meta["readout"]["activation"]
            )
        except KeyError as e:
            raise UserError(f"{npz_path}: missing array {e}") from None
        return cls(cell, readout, meta.get("task"), meta.get("provenance", {}))


def is_model_folder(folder: str | Path) -> bool:
    folder = Path(folder)
    return (folder / "graph.json").is_file() and (folder / "graph.npz").is_file()
