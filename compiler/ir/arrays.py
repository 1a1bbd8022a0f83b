"""Value semantics shared by both IRs: read-only arrays and frozen dataclasses compared as values.

* :func:`frozen_array` is the one way an IR object stores an array: a validated copy whose
  memory is an immutable ``bytes`` object, so neither item assignment nor
  ``setflags(write=True)`` can change it.
* :class:`FrozenValue` is the base of every IR dataclass that holds arrays (declared with
  ``eq=False`` so the dataclass machinery does not generate an element-wise ``__eq__``):
  ``==`` compares every field exactly (arrays by dtype, shape and every value), ``hash`` agrees
  with ``==``, and pickling / ``copy`` rebuild the object through its constructor, so a copy is
  validated and frozen like the original (``dataclasses.replace`` already goes through it).

numpy only.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from types import MappingProxyType

import numpy as np

from stapes.errors import UserError


def frozen_array(name: str, a, dtype, ndim: int) -> np.ndarray:
    """A read-only copy of `a` as `dtype` with exactly `ndim` dimensions, or a UserError naming `name`.

    Integer dtypes take integers only, each within the dtype's range (nothing wraps); float
    dtypes take finite values only.
    """
    arr = np.asarray(a)
    if arr.ndim != ndim:
        raise UserError(f"{name}: expected a {ndim}-d array, got shape {arr.shape}")
    dtype = np.dtype(dtype)
    if dtype.kind in "iu":
        if arr.size and not np.issubdtype(arr.dtype, np.integer):
            raise UserError(f"{name}: expected integers, got {arr.dtype}")
        info = np.iinfo(dtype)
        wide = arr.astype(np.int64)
        if wide.size and (wide.min() < info.min or wide.max() > info.max):
            raise UserError(f"{name}: values outside {dtype.name}")
        out = wide.astype(dtype)
    else:
        out = arr.astype(dtype)
        if not np.all(np.isfinite(out)):
            raise UserError(f"{name}: contains NaN or Inf")
    return np.frombuffer(np.ascontiguousarray(out).tobytes(), dtype=dtype).reshape(out.shape)


def frozen_mapping(items: Mapping) -> Mapping:
    """A read-only view of a copy of `items` (insertion order kept)."""
    return MappingProxyType(dict(items))


def values_equal(a, b) -> bool:
    """Exact equality of IR field values.

    Arrays are equal when dtype, shape and every value are; mappings compare key by key (in any
    order); lists and tuples element by element (a tuple equals the list a JSON round trip makes
    of it); anything else with ``==``.
    """
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        return (
            isinstance(a, np.ndarray)
            and isinstance(b, np.ndarray)
            and a.dtype == b.dtype
            and a.shape == b.shape
            and bool(np.array_equal(a, b))
        )
    if isinstance(a, Mapping) and isinstance(b, Mapping):
        return a.keys() == b.keys() and all(values_equal(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(values_equal(x, y) for x, y in zip(a, b))
    return bool(a == b)


def value_hash(v) -> int:
    """A hash that agrees with :func:`values_equal` (equal values hash equal)."""
    if isinstance(v, np.ndarray):
        canonical = v + 0.0 if v.dtype.kind == "f" else v  # -0.0 == 0.0, so hash them alike
        return hash((v.dtype.str, v.shape, np.ascontiguousarray(canonical).tobytes()))
    if isinstance(v, Mapping):
        return hash(frozenset((k, value_hash(x)) for k, x in v.items()))
    if isinstance(v, (list, tuple)):
        return hash(tuple(value_hash(x) for x in v))
    return hash(v)


def _plain(v):
    """A field value as the constructor takes it (pickle cannot store a mappingproxy)."""
    return dict(v) if isinstance(v, MappingProxyType) else v


class FrozenValue:
    """Base of the IR's frozen dataclasses: equality, hashing and pickling as values (see the module)."""

    __slots__ = ()

    def __eq__(self, other):
        if type(other) is not type(self):
            return NotImplemented
        return all(values_equal(getattr(self, f.name), getattr(other, f.name)) for f in dataclasses.fields(self))

    def __hash__(self):
        return hash(
            (
                type(self).__qualname__,
                *(value_hash(getattr(self, f.name)) for f in dataclasses.fields(self) if f.hash is not False),
            )
        )

    def __reduce__(self):
        return type(self), tuple(_plain(getattr(self, f.name)) for f in dataclasses.fields(self))
