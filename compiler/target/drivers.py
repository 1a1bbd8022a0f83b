"""The C programs that board runs build: golden-input drivers, random models, dot-kernel probes.

The fixed C lives in template files under boards/common/ (`*.c.in`, `${name}` placeholders), so it
reads, greps and formats as C; this module only fills in sizes, data and calls.
"""

from __future__ import annotations

from string import Template

import numpy as np

from stapes.emit import model_desc as desc
from stapes.emit.cwriter import c_array
from stapes.emit.model_c import c_definition
from stapes.errors import CheckFailed
from stapes.ir.contract import LUT_SIZE
from stapes.target.profile import common_dir


def _fill(template: str, **values) -> str:
    return Template((common_dir() / template).read_text()).substitute(values)


def driver_c(
    step_call: str,
    model_header: str,
    inputs,
    input_size: int,
    hidden_size: int,
    output_size: int,
    scratch_elems: int,
    print_state: bool = True,
) -> str:
    """A driver that runs `inputs` (T, I) frame by frame through `step_call` (a C expression
    returning 0 on success, over the buffers x, state, y, scratch) and prints, per frame, the
    outputs and (optionally) the state as hex int16: the same text on the host and on the target.
    Each step sits between the instruction-count frame markers. The exit status is 0, or 3 when
    the step reports an error."""
    x = np.asarray(inputs, dtype=np.int64).reshape(-1, input_size)
    return _fill(
        "stp_driver.c.in",
        model_header=model_header,
        input_size=input_size,
        hidden_size=hidden_size,
        output_size=output_size,
        steps=x.shape[0],
        scratch=max(scratch_elems, 1),
        print_state=int(print_state),
        inputs=c_array("int16_t", "inputs", x),
        step_call=step_call,
    )


def parse_driver_output(text: bytes, output_size: int, hidden_size: int) -> tuple[np.ndarray, np.ndarray]:
    """(outputs (T, O), states (T, N); (0, N) when the driver printed none) as int16 arrays from
    the driver's printout."""
    ys, hs = [], []
    for line in text.decode("ascii").splitlines():
        parts = line.split()
        if not parts or parts[0] != "y":
            raise CheckFailed(f"unexpected driver output line: {line[:80]!r}")
        vals = [int(v, 16) for v in parts[1:] if v != "h"]
        ys.append(vals[:output_size])
        if "h" in parts:
            hs.append(vals[output_size : output_size + hidden_size])
    y = np.array(ys, dtype=np.uint16).view(np.int16).reshape(-1, output_size)
    h = np.array(hs, dtype=np.uint16).view(np.int16).reshape(-1, hidden_size)
    return y, h


def synthetic_model_c(shape, seed: int = 0, name: str = "stp_synth_model") -> str:
    """A random model of `shape` (a budget ModelShape) as C: const arrays + one `const stp_model_t`,
    for calibrating the instruction and size models without the quantizer. Weights respect the
    runtime's proof obligation (sum_j |w_ij| * 32768 < 2^31 per row), so every run is well defined.
    The struct is built with the stapes.emit.model_desc builders and printed by the emitter."""
    rng = np.random.default_rng(seed)
    n, i_size, o = shape.hidden_size, shape.input_size, shape.output_size
    arrays: list[desc.CArray] = []

    def add(tag: str, values, dtype) -> desc.CArray:
        arrays.append(desc.CArray(tag, np.asarray(values).astype(dtype)))
        return arrays[-1]

    def weights(tag: str, rows: int, cols: int) -> desc.CArray:
        top = 127 if shape.weight_bits == 8 else max(1, min(32767, 65535 // max(cols, 1) - 1))
        values = rng.integers(-top, top + 1, rows * cols).reshape(rows, cols)
        return add(tag, values, np.int8 if shape.weight_bits == 8 else np.int16)

    def shifts(tag: str, count: int, lo: int, hi: int) -> desc.CArray:
        return add(tag, rng.integers(lo, hi, count), np.int8)

    def table(tag: str) -> desc.CArray:
        return add(tag, np.sort(rng.integers(-32768, 32768, LUT_SIZE)), np.int16)

    lut_a = table("lut_a")
    lut_b = table("lut_b") if shape.cell == "mgu" or shape.readout_activation == "sigmoid" else None

    def gate(tag: str, mat: str, lut: desc.CArray) -> desc.Struct:
        r = shape.rank(mat)
        w = weights(tag + "_w", n, i_size)
        if r is None:
            rec = {"u": weights(tag + "_u", n, n)}
        else:
            rec = {
                "b": weights(tag + "_b", r, n),
                "a": weights(tag + "_a", n, r),
                "z_shift": shifts(tag + "_zs", r, 2, 12),
            }
        x_shift, h_shift = shifts(tag + "_xs", n, 4, 14), shifts(tag + "_hs", n, 4, 14)
        bias = add(tag + "_bias", rng.integers(-4096, 4096, n), np.int32)
        return desc.gate(w, x_shift, h_shift, bias, lut, **rec)

    if shape.cell == "mgu":
        gates = {"f": gate("gf", "u_f", lut_b), "h": gate("gh", "u_h", lut_a)}
    else:
        gates = {"h": gate("gh", "u", lut_a)}
    ro_w, ro_s = weights("ro_w", o, n), shifts("ro_s", o, 4, 14)
    ro_bias = add("ro_bias", rng.integers(-4096, 4096, o), np.int32)
    ro = desc.readout(ro_w, ro_s, ro_bias, shape.readout_mode, lut_b if shape.readout_activation == "sigmoid" else None)
    m = desc.model(shape.cell, i_size, n, o, shape.rank_max, gates, ro)
    return (
        '#include "stp_model.h"\n\n'
        + c_definition(desc.ModelDesc(tuple(arrays), m), name, f"const stp_model_t {name}")
        + "\n"
    )


def synthetic_model_h(name: str = "stp_synth_model") -> str:
    """The header declaring the model of :func:`synthetic_model_c`."""
    return f'#include "stp_model.h"\nextern const stp_model_t {name};\n'


def dot_kernel_program(cases: list[tuple[int, int, int, int]]) -> str:
    """C that calls stp_dot_s16_s{bits} once per case (bits, n, w offset, x offset in elements)
    between the frame markers, on word-aligned buffers: the kernels' own instruction costs."""
    calls = [
        "    stp_board_frame_begin();\n"
        f"    sink = stp_dot_s16_s{bits}(w{bits} + {wo}, x16 + {xo}, {n});\n"
        "    stp_board_frame_end();"
        for bits, n, wo, xo in cases
    ]
    return _fill("stp_dot_kernels.c.in", calls="\n".join(calls))
