"""Every C helper of stp_fixed.h equals its numpy twin (compiler/fixedpoint.py)."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from stapes.fixed import fixedpoint as fx
from stapes.host import Helpers

ALL_INT16 = np.arange(-32768, 32768, dtype=np.int64)
INT16 = st.integers(-32768, 32767)
EXTREME_INT16 = st.sampled_from([-32768, -32767, -1, 0, 1, 32766, 32767])


@pytest.fixture(scope="module")
def c():
    return Helpers()


def test_sat16_all_int16_and_wide_values(c):
    wide = np.concatenate([ALL_INT16, ALL_INT16 * 65536, [-(1 << 47), (1 << 47), 32768, -32769]])
    np.testing.assert_array_equal(c.sat16(wide), fx.sat16(wide))
    assert fx.sat16([40000, -40000]).tolist() == [32767, -32768]


@pytest.mark.parametrize("name", ["tanh", "sigmoid"])
def test_lut_all_int16(c, name):
    table = fx.make_table(name)
    assert table.shape == (fx.LUT_SIZE,)
    np.testing.assert_array_equal(c.lut_q15(ALL_INT16, table), fx.lut_q15(ALL_INT16, table))


@pytest.mark.parametrize("name", ["tanh", "sigmoid"])
def test_lut_error_within_goal(name):
    assert fx.table_error_lsb(name) <= 4.0


def test_shift_round_all_int16_every_shift(c):
    for s in range(fx.SHIFT_MIN, fx.SHIFT_MAX + 1):
        np.testing.assert_array_equal(c.shift_round(ALL_INT16, s), fx.shift_round(ALL_INT16, s))


def test_shift_round_is_round_half_up():
    assert fx.shift_round([3, 5, -3, -5, -4, 7], 1).tolist() == [2, 3, -1, -2, -2, 4]
    assert fx.shift_round([1, -1], -3).tolist() == [8, -8]


@given(
    st.lists(st.integers(-(1 << 31), (1 << 31) - 1), min_size=1, max_size=50), st.integers(fx.SHIFT_MIN, fx.SHIFT_MAX)
)
def test_shift_round_int32_range(c, values, s):
    np.testing.assert_array_equal(c.shift_round(values, s), fx.shift_round(values, s))


def test_mul_q15_all_int16_against_extremes(c):
    for b in (-32768, -32767, -1, 0, 1, 16384, 32767):
        np.testing.assert_array_equal(c.mul_q15(ALL_INT16, b), fx.mul_q15(ALL_INT16, b))
    assert fx.mul_q15(-32768, -32768) == 32767


@given(st.lists(st.tuples(INT16 | EXTREME_INT16, INT16 | EXTREME_INT16), min_size=1, max_size=64))
def test_mul_q15_pairs(c, pairs):
    a, b = np.array(pairs).T
    np.testing.assert_array_equal(c.mul_q15(a, b), fx.mul_q15(a, b))


def test_blend_q15_all_int16_against_extremes(c):
    for h, f in [(-32768, 32767), (32767, 32767), (0, 16384), (-32768, -32768), (32767, -32768)]:
        np.testing.assert_array_equal(c.blend_q15(h, ALL_INT16, f), fx.blend_q15(h, ALL_INT16, f))


@given(
    st.lists(st.tuples(INT16 | EXTREME_INT16, INT16 | EXTREME_INT16, INT16 | EXTREME_INT16), min_size=1, max_size=64)
)
def test_blend_q15_triples(c, triples):
    h, cc, f = np.array(triples).T
    np.testing.assert_array_equal(c.blend_q15(h, cc, f), fx.blend_q15(h, cc, f))


def test_quantize_array_names_the_tensor():
    with pytest.raises(ValueError, match="gate.w"):
        fx.quantize_array("gate.w", [1.0, 300.0], 0, 8)
    assert fx.quantize_array("t", [0.5, -0.375, 0.125], 2, 8).tolist() == [2, -1, 1]


def test_frac_to_fit_is_finest():
    for m in (0.001, 0.3, 1.0, 1.5, 127.0, 1000.0):
        f = int(fx.frac_to_fit(m, 8)[0])
        assert np.floor(m * 2.0**f + 0.5) <= 127 < np.floor(m * 2.0 ** (f + 1) + 0.5)
