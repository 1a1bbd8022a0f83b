"""The C twins of stapes.fixed.fixedpoint on numpy arrays: the helpers of stp_fixed.h, scalar and AVX2.

``Helpers()`` compiles (once, cached) ``c/stp_host_helpers.c`` (the scalar helpers over arrays)
and the test-only ``c/stp_test_vector.c`` (the AVX2 forms, compiled nowhere else) into one cffi
module; each method takes and returns numpy arrays. Without AVX2 the vector methods raise
CheckFailed and ``vector_skip_reason`` says why.
"""

from __future__ import annotations

import numpy as np

from stapes.errors import CheckFailed
from stapes.fixed.fixedpoint import LUT_SIZE
from stapes.host.cbuild import OPT_FLAGS, WARNING_FLAGS, compile_module, header_cdef, host_c

NO_AVX2_REASON = "host CPU has no AVX2; the vector helpers are not compiled"


class Helpers:
    """numpy-in, numpy-out access to the C helpers (the twins of stapes.fixed.fixedpoint)."""

    def __init__(self):
        headers = [host_c("stp_host_helpers.h"), host_c("stp_test_vector.h")]
        self.mod = compile_module(
            "helpers",
            "".join(header_cdef(h.read_text()) for h in headers),
            "".join(f'#include "{h.name}"\n' for h in headers),
            [*WARNING_FLAGS, *OPT_FLAGS],
            sources=[host_c("stp_host_helpers.c"), host_c("stp_test_vector.c")],
        )
        # Why the AVX2 forms cannot be tested here (None: they can).
        self.vector_skip_reason = None if self.mod.lib.stp_test_vector_compiled() else NO_AVX2_REASON

    def _buf(self, a: np.ndarray, ctype: str | None = None):
        ctype = (
            ctype
            or {
                np.dtype(np.int16): "int16_t[]",
                np.dtype(np.int64): "int64_t[]",
                np.dtype(np.intc): "int[]",
                np.dtype(np.int8): "int8_t[]",
            }[a.dtype]
        )
        return self.mod.ffi.from_buffer(ctype, a)

    def _call(self, fn, out_dtype, *arrays):
        arrays = [np.ascontiguousarray(a) for a in arrays]
        out = np.empty(arrays[0].shape, dtype=out_dtype)
        fn(*(self._buf(a) for a in arrays), self._buf(out), out.size)
        return out

    def sat16(self, v):
        return self._call(self.mod.lib.stp_host_sat16, np.int16, np.asarray(v, dtype=np.int64))

    def shift_round(self, v, s):
        v, s = np.broadcast_arrays(np.asarray(v, dtype=np.int64), np.asarray(s, dtype=np.intc))
        return self._call(self.mod.lib.stp_host_shift_round, np.int64, v, s)

    def mul_q15(self, a, b):
        a, b = np.broadcast_arrays(np.asarray(a, dtype=np.int16), np.asarray(b, dtype=np.int16))
        return self._call(self.mod.lib.stp_host_mul_q15, np.int16, a, b)

    def blend_q15(self, h, c, f):
        h, c, f = np.broadcast_arrays(*(np.asarray(a, dtype=np.int16) for a in (h, c, f)))
        return self._call(self.mod.lib.stp_host_blend_q15, np.int16, h, c, f)

    def lut_q15(self, v, table):
        v = np.ascontiguousarray(np.asarray(v, dtype=np.int16))
        table = np.ascontiguousarray(np.asarray(table, dtype=np.int16))
        out = np.empty(v.shape, dtype=np.int16)
        self.mod.lib.stp_host_lut_q15(self._buf(v), self._buf(table), self._buf(out), v.size)
        return out

    # ---- the AVX2 forms (stp_test_vector.c): same arguments and results as the scalar ones ----
    def _vector(self, fname: str, out_dtype, *arrays):
        if self.vector_skip_reason is not None:
            raise CheckFailed(self.vector_skip_reason)
        arrays = [np.ascontiguousarray(a) for a in arrays]
        out = np.empty(arrays[0].shape, dtype=out_dtype)
        # int32 arrays are passed as int32_t (cffi tells int32_t from int, numpy does not)
        bufs = [self._buf(a, "int32_t[]" if a.dtype == np.int32 else None) for a in [*arrays, out]]
        rc = getattr(self.mod.lib, fname)(*bufs, out.size)
        if rc != 0:
            raise CheckFailed(f"{fname} returned {rc}")
        return out

    @staticmethod
    def _shifts(s, lo: int, hi: int) -> np.ndarray:
        s = np.asarray(s)
        if s.size and (s.min() < lo or s.max() > hi):
            raise ValueError(f"shifts must lie in [{lo}, {hi}] for this helper")
        return s.astype(np.int8)

    def sat16_s64x4(self, v):
        """stp_sat16_s64x4 (4 int64 lanes, stored with stp_store_s16x4): twin of sat16."""
        return self._vector("stp_test_sat16_s64x4", np.int16, np.asarray(v, dtype=np.int64))

    def shift_round_s64x4(self, v, s):
        """stp_shift_round_s64x4 (int8 shifts through stp_load_s8x4): twin of shift_round."""
        v, s = np.broadcast_arrays(np.asarray(v, dtype=np.int64), self._shifts(s, -16, 31))
        return self._vector("stp_test_shift_round_s64x4", np.int64, v, s)

    def shift_round_s32x8(self, v, s):
        """stp_shift_round_s32x8 (int32 lanes, shifts 1..31 only): twin of shift_round."""
        v64 = np.asarray(v, dtype=np.int64)
        if v64.size and (v64.min() < -(1 << 31) or v64.max() >= (1 << 31)):
            raise ValueError("stp_shift_round_s32x8 takes int32 values")
        v, s = np.broadcast_arrays(v64.astype(np.int32), self._shifts(s, 1, 31))
        return self._vector("stp_test_shift_round_s32x8", np.int32, v, s)

    def mul_q15_x8(self, a, b):
        a, b = np.broadcast_arrays(np.asarray(a, dtype=np.int16), np.asarray(b, dtype=np.int16))
        return self._vector("stp_test_mul_q15_x8", np.int16, a, b)

    def blend_q15_x8(self, h, c, f):
        h, c, f = np.broadcast_arrays(*(np.asarray(a, dtype=np.int16) for a in (h, c, f)))
        return self._vector("stp_test_blend_q15_x8", np.int16, h, c, f)

    def lut_q15_x8(self, v, table):
        table = np.ascontiguousarray(np.asarray(table, dtype=np.int16))
        if table.shape != (LUT_SIZE,):
            raise ValueError(f"a table has {LUT_SIZE} entries (the gather reads up to entry {LUT_SIZE - 1})")
        v = np.ascontiguousarray(np.asarray(v, dtype=np.int16))
        out = np.empty(v.shape, dtype=np.int16)
        if self.vector_skip_reason is not None:
            raise CheckFailed(self.vector_skip_reason)
        rc = self.mod.lib.stp_test_lut_q15_x8(self._buf(v), self._buf(table), self._buf(out), v.size)
        if rc != 0:
            raise CheckFailed(f"stp_test_lut_q15_x8 returned {rc}")
        return out

    def mul_q15_x8_rows(self, a) -> tuple[int, tuple | None]:
        """stp_mul_q15_x8 against the scalar stp_mul_q15 in C, each value of `a` with every int16 b
        (all 2^32 pairs for a = every int16): (mismatch count, first (a, b, vector, scalar) or None)."""
        if self.vector_skip_reason is not None:
            raise CheckFailed(self.vector_skip_reason)
        a = np.ascontiguousarray(np.asarray(a, dtype=np.int16))
        first = self.mod.ffi.new("int16_t[4]")
        bad = int(self.mod.lib.stp_test_mul_q15_x8_rows(self._buf(a), a.size, first))
        return bad, (tuple(int(x) for x in first) if bad else None)
