"""QGraph -> a plain, ordered description of its ``stp_model_t``: the one owner of what goes in which field.

Everything that fills the runtime's model struct reads it from here instead of walking the QGraph:
the C emitter (:mod:`stapes.emit.model_c`), and whatever builds the struct at run time (through
cffi, or from a text stream read by a C driver). The description is data, not C text:

* :class:`CArray`: one const array the struct points to (symbol stem, the integers, a comment);
* :class:`Enum`: a named constant of ``stp_model.h`` (``STP_CELL_MGU`` …) with its value;
* :class:`Struct`: one C struct value, its fields in declaration order. A field that is not
  listed is zero (a NULL pointer), e.g. ``gate_f`` of an RNN or ``u`` of a low-rank gate.

:data:`STRUCTS` mirrors the struct declarations of ``runtime_c/include/stp_model.h`` (the tests
parse the header and compare). :func:`describe` builds a :class:`ModelDesc` from a QGraph; the
builders :func:`mat`, :func:`gate`, :func:`readout` and :func:`model` build the same from plain
arrays, for a model that is not a QGraph (a synthetic one). :func:`assign` fills any object
with one attribute per C field (a cffi ``stp_model_t *``); :func:`leaves` walks every field in
declaration order (for a serialiser).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np

from stapes.emit.cwriter import c_type
from stapes.fixed import fixedpoint as fx
from stapes.fixed.reference import activation_tables
from stapes.ir.qgraph import QGraph, QTensor

# Field name -> C type of every struct the generated model fills, in declaration order (stp_model.h).
STRUCTS: dict[str, tuple[tuple[str, str], ...]] = {
    "stp_mat_t": (("w8", "const int8_t *"), ("w16", "const int16_t *"), ("rows", "int"), ("cols", "int")),
    "stp_gate_t": (
        ("w", "stp_mat_t"),
        ("u", "stp_mat_t"),
        ("b", "stp_mat_t"),
        ("a", "stp_mat_t"),
        ("z_shift", "const int8_t *"),
        ("x_shift", "const int8_t *"),
        ("h_shift", "const int8_t *"),
        ("bias", "const int32_t *"),
        ("table", "const int16_t *"),
    ),
    "stp_readout_t": (
        ("w", "stp_mat_t"),
        ("shift", "const int8_t *"),
        ("bias", "const int32_t *"),
        ("table", "const int16_t *"),
        ("mode", "int"),
    ),
    "stp_model_t": (
        ("cell", "int"),
        ("input_size", "int"),
        ("hidden_size", "int"),
        ("output_size", "int"),
        ("rank_max", "int"),
        ("gate_f", "stp_gate_t"),
        ("gate_h", "stp_gate_t"),
        ("readout", "stp_readout_t"),
    ),
}


@dataclass(frozen=True)
class Enum:
    """A named integer constant of stp_model.h."""

    name: str
    value: int


CELL = {"rnn": Enum("STP_CELL_RNN", 0), "mgu": Enum("STP_CELL_MGU", 1)}
READOUT_MODE = {"per_step": Enum("STP_READOUT_PER_STEP", 0), "final": Enum("STP_READOUT_FINAL", 1)}
GATE_FIELD = {"f": "gate_f", "h": "gate_h"}  # QGraph gate name -> stp_model_t field


@dataclass(frozen=True, eq=False)
class CArray:
    """A const array: `name` is its symbol stem (generated C calls it ``<prefix>_<name>``), `data`
    its integers (row-major), `comment` what they are."""

    name: str
    data: np.ndarray
    comment: str = ""

    @property
    def ctype(self) -> str:
        return c_type(self.data.dtype)


@dataclass(frozen=True)
class Struct:
    """A value of C struct `ctype`: the fields given, in declaration order; the others are zero."""

    ctype: str
    fields: tuple[tuple[str, int | Enum | CArray | Struct], ...]

    def __post_init__(self):
        declared = STRUCTS[self.ctype]
        order = [name for name, _ in declared]
        types = dict(declared)
        names = [name for name, _ in self.fields]
        at = [order.index(name) if name in types else -1 for name in names]
        if -1 in at or at != sorted(set(at)):
            raise ValueError(f"{self.ctype}: fields {names} are not a subsequence of {order}")
        for name, value in self.fields:
            want = types[name]
            if isinstance(value, Struct):
                got = value.ctype
            elif isinstance(value, CArray):
                got = f"const {value.ctype} *"
            else:
                got = "int" if isinstance(value, (int, np.integer, Enum)) else type(value).__name__
            if got != want:
                raise ValueError(f"{self.ctype}.{name} is {want}, given a {got}")

    def __getitem__(self, name: str):
        """The value of field `name` (None when it is zero / NULL)."""
        return dict(self.fields).get(name)


@dataclass(frozen=True)
class ModelDesc:
    """A whole model: the arrays (each once, in the order to define them) and the stp_model_t."""

    arrays: tuple[CArray, ...]
    model: Struct


# ---- builders ----------------------------------------------------------------------------------


def mat(w: CArray) -> Struct:
    """The stp_mat_t of a row-major (rows, cols) int8 or int16 matrix."""
    rows, cols = w.data.shape
    return Struct("stp_mat_t", (("w8" if w.data.dtype == np.int8 else "w16", w), ("rows", rows), ("cols", cols)))


def gate(
    w: CArray,
    x_shift: CArray,
    h_shift: CArray,
    bias: CArray,
    table: CArray,
    *,
    u: CArray | None = None,
    b: CArray | None = None,
    a: CArray | None = None,
    z_shift: CArray | None = None,
) -> Struct:
    """An stp_gate_t: dense (`u`) or low-rank (`b`, `a`, `z_shift`) recurrent matrix."""
    if (u is None) == (b is None) or (b is None) != (a is None) or (b is None) != (z_shift is None):
        raise ValueError("a gate has either u, or b, a and z_shift")
    fields = [("w", mat(w))]
    fields += [("u", mat(u))] if u is not None else [("b", mat(b)), ("a", mat(a)), ("z_shift", z_shift)]
    fields += [("x_shift", x_shift), ("h_shift", h_shift), ("bias", bias), ("table", table)]
    return Struct("stp_gate_t", tuple(fields))


def readout(w: CArray, shift: CArray, bias: CArray, mode: str, table: CArray | None = None) -> Struct:
    """An stp_readout_t (`table`: the sigmoid table, None for a linear output)."""
    fields = [("w", mat(w)), ("shift", shift), ("bias", bias)] + ([("table", table)] if table is not None else [])
    return Struct("stp_readout_t", (*fields, ("mode", READOUT_MODE[mode])))


def model(
    cell: str,
    input_size: int,
    hidden_size: int,
    output_size: int,
    rank_max: int,
    gates: dict[str, Struct],
    readout_: Struct,
) -> Struct:
    """The stp_model_t; `gates` maps "h" (and "f" for an MGU) to their stp_gate_t."""
    fields = [
        ("cell", CELL[cell]),
        ("input_size", input_size),
        ("hidden_size", hidden_size),
        ("output_size", output_size),
        ("rank_max", rank_max),
    ]
    fields += [(GATE_FIELD[name], gates[name]) for name in ("f", "h") if name in gates]
    return Struct("stp_model_t", (*fields, ("readout", readout_)))


# ---- from a QGraph -----------------------------------------------------------------------------


def _tensor(name: str, t: QTensor) -> CArray:
    shape = " x ".join(str(s) for s in t.shape)
    return CArray(name, t.data, f"{t.name}: ({shape}) {t.fmt.describe()}")


def describe(q: QGraph) -> ModelDesc:
    """The stp_model_t of `q` and the arrays it points to: the activation tables, then per gate its
    weights, shifts and bias, then the readout's."""
    arrays: list[CArray] = []

    def add(a: CArray) -> CArray:
        arrays.append(a)
        return a

    tables = {
        name: add(
            CArray(
                f"{name}_table",
                table,
                f"{name} table: {fx.LUT_SIZE} int16 Q0.15 values at inputs (j * {1 << fx.LUT_STEP_BITS} - "
                f"32768) / 2^{fx.TABLE_INPUT_FRAC[name]}, j = 0..{fx.LUT_SIZE - 1}",
            )
        )
        for name, table in activation_tables(q).items()
    }
    n = q.hidden_size
    gates = {}
    for g in q.gate_list():
        w = add(_tensor(f"{g.name}_w", g.w))
        if g.lowrank:
            rec = {
                "b": add(_tensor(f"{g.name}_ub", g.u.b)),
                "a": add(_tensor(f"{g.name}_ua", g.u.a)),
                "z_shift": add(
                    CArray(
                        f"{g.name}_z_shift",
                        g.u.z_shift,
                        f"({g.rank},) B h -> z int16 frac {g.u.z_fmt.frac}, sigma descending",
                    )
                ),
            }
        else:
            rec = {"u": add(_tensor(f"{g.name}_u", g.u))}
        x_shift = add(CArray(f"{g.name}_x_shift", g.x_shift, f"({n},) W x -> pre-activation frac {g.pre_frac}"))
        h_shift = add(CArray(f"{g.name}_h_shift", g.h_shift, f"({n},) recurrent -> pre-activation frac {g.pre_frac}"))
        bias = add(_tensor(f"{g.name}_bias", g.bias))
        gates[g.name] = gate(w, x_shift, h_shift, bias, tables[g.activation], **rec)
    r = q.readout
    ro = readout(
        add(_tensor("readout_w", r.w)),
        add(CArray("readout_shift", r.shift, f"({q.output_size},) V h -> pre frac {r.pre_frac}")),
        add(_tensor("readout_bias", r.bias)),
        r.mode,
        tables["sigmoid"] if r.activation == "sigmoid" else None,
    )
    return ModelDesc(tuple(arrays), model(q.kind, q.input_size, n, q.output_size, q.rank, gates, ro))


# ---- consumers ---------------------------------------------------------------------------------


def assign(struct: Struct, target, pointer: Callable[[CArray], object]) -> None:
    """Set every given field of `struct` on `target` (one attribute per C field, e.g. a cffi
    ``stp_model_t``), recursing into nested structs: arrays become ``pointer(array)``, enums their value.
    Fields not given are left as they are (zero in a fresh ``ffi.new``)."""
    for name, value in struct.fields:
        if isinstance(value, Struct):
            assign(value, getattr(target, name), pointer)
        else:
            setattr(
                target,
                name,
                pointer(value) if isinstance(value, CArray) else value.value if isinstance(value, Enum) else value,
            )


def leaves(struct: Struct | None, ctype: str | None = None, path: tuple = ()) -> Iterator[tuple[tuple, str, object]]:
    """Every scalar and pointer field of `struct`, declared ones included, in declaration order:
    ``(path, C type, value)`` with value an int, an Enum, a CArray or None (zero / NULL)."""
    ctype = struct.ctype if struct is not None else ctype
    for name, field_type in STRUCTS[ctype]:
        value = struct[name] if struct is not None else None
        if field_type in STRUCTS:
            yield from leaves(value, field_type, (*path, name))
        else:
            yield (*path, name), field_type, value
