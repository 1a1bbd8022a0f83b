"""The AVX2 forms of the stp_fixed.h helpers equal their numpy twins (and so the scalar helpers).

The vector helpers (stp_sat16_s64x4, stp_shift_round_s64x4, stp_shift_round_s32x8, stp_mul_q15_x8,
stp_blend_q15_x8, stp_lut_q15_x8, with the load/store helpers) run through the test-only array
entry points of python/c/stp_test_vector.c, compiled only into stapes.host.Helpers. Every check
compares with stapes.fixed.fixedpoint and with the scalar C helper. Without AVX2 the tests skip.
"""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from stapes.fixed import fixedpoint as fx
from stapes.host import Helpers
from stapes.host.cbuild import ARCH_FLAGS
from stapes.host.helpers import NO_AVX2_REASON

ALL_INT16 = np.arange(-32768, 32768, dtype=np.int64)
INT16 = st.integers(-32768, 32767)
EXTREMES16 = [-32768, -32767, -16384, -1, 0, 1, 16384, 32766, 32767]
EXTREME_INT16 = st.sampled_from(EXTREMES16)
I32_MIN, I32_MAX = -(1 << 31), (1 << 31) - 1
INT32 = st.integers(I32_MIN, I32_MAX)
EXTREME_INT32 = st.sampled_from([I32_MIN, I32_MIN + 1, -(1 << 30), -1, 0, 1, 1 << 30, I32_MAX - 1, I32_MAX])
SHIFTS = list(range(fx.SHIFT_MIN, fx.SHIFT_MAX + 1))  # stp_shift_round_s64x4: -16 .. 31
SHIFTS_S32 = list(range(1, fx.SHIFT_MAX + 1))  # stp_shift_round_s32x8: 1 .. 31 only


def wide_int32() -> np.ndarray:
    """int32 values beyond int16: both extremes, +-2^k +-1, every int16 times 2^16 plus the low
    halves 0, 1, 2^15 - 1, 2^15, 2^16 - 1 (every rounding case of a shift by 16), and 65,536
    seeded random int32 (393,412 values in all)."""
    powers = [sign * (1 << k) + d for k in range(32) for sign in (1, -1) for d in (-1, 0, 1)]
    high = ALL_INT16 << 16
    rng = np.random.default_rng(20261128)
    v = np.concatenate(
        [
            [I32_MIN, I32_MIN + 1, I32_MAX - 1, I32_MAX],
            powers,
            *(high + low for low in (0, 1, 0x7FFF, 0x8000, 0xFFFF)),
            rng.integers(I32_MIN, I32_MAX, 65536, endpoint=True),
        ]
    ).astype(np.int64)
    return np.clip(v, I32_MIN, I32_MAX)


@pytest.fixture(scope="module")
def c():
    return Helpers()


@pytest.fixture(scope="module")
def v(c):
    """Helpers, with the AVX2 entry points compiled (else the test skips)."""
    if c.vector_skip_reason is not None:
        pytest.skip(c.vector_skip_reason)
    return c


def test_vector_helpers_are_tested_when_the_host_has_avx2(c):
    """The vector tests skip only on a host without AVX2, never silently on one with it."""
    if "-mavx2" in ARCH_FLAGS:
        assert c.vector_skip_reason is None, c.vector_skip_reason
    else:
        assert c.vector_skip_reason == NO_AVX2_REASON


# ---- stp_sat16_s64x4 -----------------------------------------------------------------------------
def test_sat16_s64x4_all_int16_and_wide_values(v):
    i64 = np.iinfo(np.int64)
    wide = np.concatenate(
        [
            ALL_INT16,
            ALL_INT16 * 65536,
            ALL_INT16 << 47,
            wide_int32(),
            [i64.min, i64.min + 1, i64.max - 1, i64.max, -(1 << 47), 1 << 47, 32767, 32768, -32768, -32769],
        ]
    ).astype(np.int64)
    want = fx.sat16(wide)
    np.testing.assert_array_equal(v.sat16_s64x4(wide), want)
    np.testing.assert_array_equal(v.sat16(wide), want)


# ---- stp_shift_round_s64x4 -----------------------------------------------------------------------
def test_shift_round_s64x4_all_int16_every_shift(v):
    """Every int16 with every shift -16..31; the shift changes from lane to lane (3,145,728 cases)."""
    vals = np.repeat(ALL_INT16, len(SHIFTS))
    s = np.tile(np.array(SHIFTS, dtype=np.int64), len(ALL_INT16))
    want = fx.shift_round(vals, s)
    np.testing.assert_array_equal(v.shift_round_s64x4(vals, s), want)
    np.testing.assert_array_equal(v.shift_round(vals, s), want)


def test_shift_round_s64x4_wide_int32_every_shift(v):
    """The int32 accumulators the kernels pass, extremes included, with every shift -16..31."""
    wide = wide_int32()
    for s in SHIFTS:
        want = fx.shift_round(wide, s)
        np.testing.assert_array_equal(v.shift_round_s64x4(wide, s), want, err_msg=f"shift {s}")
        np.testing.assert_array_equal(v.shift_round(wide, s), want, err_msg=f"shift {s}")


@given(st.lists(st.tuples(INT32 | EXTREME_INT32, st.integers(fx.SHIFT_MIN, fx.SHIFT_MAX)), min_size=1, max_size=64))
def test_shift_round_s64x4_pairs(v, pairs):
    vals, s = np.array(pairs, dtype=np.int64).T
    np.testing.assert_array_equal(v.shift_round_s64x4(vals, s), fx.shift_round(vals, s))


# ---- stp_shift_round_s32x8 -----------------------------------------------------------------------
def test_shift_round_s32x8_all_int16_every_shift(v):
    """Every int16 with every shift 1..31 (its range); the shift changes from lane to lane."""
    vals = np.repeat(ALL_INT16, len(SHIFTS_S32))
    s = np.tile(np.array(SHIFTS_S32, dtype=np.int64), len(ALL_INT16))
    want = fx.shift_round(vals, s)
    np.testing.assert_array_equal(v.shift_round_s32x8(vals, s), want)
    np.testing.assert_array_equal(v.shift_round(vals, s), want)


def test_shift_round_s32x8_wide_int32_every_shift(v):
    wide = wide_int32()
    for s in SHIFTS_S32:
        want = fx.shift_round(wide, s)
        np.testing.assert_array_equal(v.shift_round_s32x8(wide, s), want, err_msg=f"shift {s}")


@given(st.lists(st.tuples(INT32 | EXTREME_INT32, st.integers(1, fx.SHIFT_MAX)), min_size=1, max_size=64))
def test_shift_round_s32x8_pairs(v, pairs):
    vals, s = np.array(pairs, dtype=np.int64).T
    np.testing.assert_array_equal(v.shift_round_s32x8(vals, s), fx.shift_round(vals, s))


# ---- stp_mul_q15_x8 ------------------------------------------------------------------------------
def test_mul_q15_x8_all_int16_against_extremes(v):
    for b in EXTREMES16:
        want = fx.mul_q15(ALL_INT16, b)
        np.testing.assert_array_equal(v.mul_q15_x8(ALL_INT16, b), want, err_msg=f"b = {b}")
        np.testing.assert_array_equal(v.mul_q15_x8(b, ALL_INT16), want, err_msg=f"a = {b}")
        np.testing.assert_array_equal(v.mul_q15(ALL_INT16, b), want, err_msg=f"b = {b}")
    assert v.mul_q15_x8([-32768], [-32768]).tolist() == [32767]


def _mul_rows() -> np.ndarray:
    """1,531 values of a: the extremes, -32768 + 128 k and -32705 + 128 k (512 each, spread over
    the range, low bits all 0 or 0111111), 512 seeded random ones."""
    rng = np.random.default_rng(7)
    return np.unique(
        np.concatenate(
            [EXTREMES16, np.arange(-32768, 32768, 128), np.arange(-32705, 32768, 128), rng.integers(-32768, 32768, 512)]
        )
    )


def test_mul_q15_x8_rows_against_the_scalar_helper(v):
    """Each of 1,531 a with every int16 b (100 million pairs), in C, against stp_mul_q15."""
    rows = _mul_rows()
    assert len(rows) > 1500
    bad, first = v.mul_q15_x8_rows(rows)
    assert bad == 0, f"{bad} mismatching pairs; first (a, b, vector, scalar) = {first}"


@pytest.mark.slow
def test_mul_q15_x8_all_pairs_against_the_scalar_helper(v):
    """All 2^32 int16 pairs in C against stp_mul_q15 (about 6 s: opt-in with -m slow)."""
    bad, first = v.mul_q15_x8_rows(ALL_INT16)
    assert bad == 0, f"{bad} mismatching pairs; first (a, b, vector, scalar) = {first}"


@given(st.lists(st.tuples(INT16 | EXTREME_INT16, INT16 | EXTREME_INT16), min_size=1, max_size=64))
def test_mul_q15_x8_pairs(v, pairs):
    a, b = np.array(pairs).T
    np.testing.assert_array_equal(v.mul_q15_x8(a, b), fx.mul_q15(a, b))


# ---- stp_blend_q15_x8 ----------------------------------------------------------------------------
@pytest.mark.parametrize("varied", ["h", "c", "f"])
def test_blend_q15_x8_all_int16_against_extremes(v, varied):
    """One argument over every int16, the other two over every pair of 9 extremes (81 x 65,536)."""
    for p in EXTREMES16:
        for q in EXTREMES16:
            h, cc, f = {"h": (ALL_INT16, p, q), "c": (p, ALL_INT16, q), "f": (p, q, ALL_INT16)}[varied]
            want = fx.blend_q15(h, cc, f)
            np.testing.assert_array_equal(v.blend_q15_x8(h, cc, f), want, err_msg=f"{varied} varied; {p}, {q}")
            np.testing.assert_array_equal(v.blend_q15(h, cc, f), want, err_msg=f"{varied} varied; {p}, {q}")


@given(
    st.lists(st.tuples(INT16 | EXTREME_INT16, INT16 | EXTREME_INT16, INT16 | EXTREME_INT16), min_size=1, max_size=64)
)
def test_blend_q15_x8_triples(v, triples):
    h, cc, f = np.array(triples).T
    np.testing.assert_array_equal(v.blend_q15_x8(h, cc, f), fx.blend_q15(h, cc, f))


# ---- stp_lut_q15_x8 ------------------------------------------------------------------------------
def _tables() -> dict:
    rng = np.random.default_rng(11)
    alternating = np.where(np.arange(fx.LUT_SIZE) % 2 == 0, -32768, 32767)
    return {
        "tanh": fx.make_table("tanh"),
        "sigmoid": fx.make_table("sigmoid"),
        "alternating extremes": alternating,
        "reversed alternating": -1 - alternating,
        "all -32768": np.full(fx.LUT_SIZE, -32768),
        "all 32767": np.full(fx.LUT_SIZE, 32767),
        "random": rng.integers(-32768, 32768, fx.LUT_SIZE),
    }


@pytest.mark.parametrize("name", list(_tables()))
def test_lut_q15_x8_all_int16(v, name):
    """Every int16 through the table; the table sits inside a larger buffer whose neighbours are
    extremes, so a read outside T[0..1024] would show (the gather's pairs are T[i], T[i + 1])."""
    table = _tables()[name].astype(np.int16)
    for fill in (-32768, 32767):
        buf = np.full(fx.LUT_SIZE + 16, fill, dtype=np.int16)
        buf[8 : 8 + fx.LUT_SIZE] = table
        want = fx.lut_q15(ALL_INT16, table)
        np.testing.assert_array_equal(v.lut_q15_x8(ALL_INT16, buf[8 : 8 + fx.LUT_SIZE]), want)
        np.testing.assert_array_equal(v.lut_q15(ALL_INT16, table), want)


@given(
    st.lists(INT16 | EXTREME_INT16, min_size=1, max_size=64),
    st.integers(0, 2**32 - 1),
    st.lists(st.tuples(st.integers(0, fx.LUT_SIZE - 1), EXTREME_INT16), max_size=16),
)
def test_lut_q15_x8_values_and_tables(v, values, seed, pokes):
    table = np.random.default_rng(seed).integers(-32768, 32768, fx.LUT_SIZE).astype(np.int16)
    for i, x in pokes:
        table[i] = x
    np.testing.assert_array_equal(v.lut_q15_x8(values, table), fx.lut_q15(values, table))


# ---- partial blocks: every length 1..33 (the last block is padded, still the vector helper) -----
def test_every_length_and_lane(v):
    rng = np.random.default_rng(3)
    table = fx.make_table("tanh")
    for n in range(1, 34):
        a, b, f = (rng.integers(-32768, 32768, n) for _ in range(3))
        w = rng.integers(I32_MIN, I32_MAX, n, endpoint=True)
        s = rng.integers(fx.SHIFT_MIN, fx.SHIFT_MAX + 1, n)
        s32 = rng.integers(1, fx.SHIFT_MAX + 1, n)
        np.testing.assert_array_equal(v.sat16_s64x4(w), fx.sat16(w))
        np.testing.assert_array_equal(v.shift_round_s64x4(w, s), fx.shift_round(w, s))
        np.testing.assert_array_equal(v.shift_round_s32x8(w, s32), fx.shift_round(w, s32))
        np.testing.assert_array_equal(v.mul_q15_x8(a, b), fx.mul_q15(a, b))
        np.testing.assert_array_equal(v.blend_q15_x8(a, b, f), fx.blend_q15(a, b, f))
        np.testing.assert_array_equal(v.lut_q15_x8(a, table), fx.lut_q15(a, table))
