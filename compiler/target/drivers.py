"""The C programs that board runs build: golden-input drivers, random models, dot-kernel probes.

The fixed C lives in template files under boards/common/ (`*.c.in`, `${name}` placeholders), so it
reads, greps and formats as C; this module only fills in sizes, data and calls.
"""

from __future__ import annotations

from string import Template

import numpy as np

from stapes.emit.cwriter import c_array
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
    runtime's proof obligation (sum_j |w_ij| * 32768 < 2^31 per row), so every run is well defined."""
    rng = np.random.default_rng(seed)
    wt = "int8_t" if shape.weight_bits == 8 else "int16_t"
    out: list[str] = ['#include "stp_model.h"']
    n, i_size, o = shape.hidden_size, shape.input_size, shape.output_size

    def weights(tag: str, rows: int, cols: int) -> str:
        top = 127 if shape.weight_bits == 8 else max(1, min(32767, 65535 // max(cols, 1) - 1))
        out.append(c_array(wt, tag, rng.integers(-top, top + 1, rows * cols)))
        field_ = "w8" if shape.weight_bits == 8 else "w16"
        return f"{{.{field_} = {tag}, .rows = {rows}, .cols = {cols}}}"

    def shifts(tag: str, count: int, lo: int, hi: int) -> str:
        out.append(c_array("int8_t", tag, rng.integers(lo, hi, count)))
        return tag

    out.append(c_array("int16_t", "lut_a", np.sort(rng.integers(-32768, 32768, LUT_SIZE))))
    if shape.cell == "mgu" or shape.readout_activation == "sigmoid":
        out.append(c_array("int16_t", "lut_b", np.sort(rng.integers(-32768, 32768, LUT_SIZE))))

    def gate(tag: str, mat: str, lut: str) -> str:
        r = shape.rank(mat)
        fields = [f".w = {weights(tag + '_w', n, i_size)}"]
        if r is None:
            fields.append(f".u = {weights(tag + '_u', n, n)}")
        else:
            fields.append(f".b = {weights(tag + '_b', r, n)}")
            fields.append(f".a = {weights(tag + '_a', n, r)}")
            fields.append(f".z_shift = {shifts(tag + '_zs', r, 2, 12)}")
        fields.append(f".x_shift = {shifts(tag + '_xs', n, 4, 14)}")
        fields.append(f".h_shift = {shifts(tag + '_hs', n, 4, 14)}")
        out.append(c_array("int32_t", tag + "_bias", rng.integers(-4096, 4096, n)))
        fields += [f".bias = {tag}_bias", f".table = {lut}"]
        return "{" + ", ".join(fields) + "}"

    if shape.cell == "mgu":
        gf, gh = gate("gf", "u_f", "lut_b"), gate("gh", "u_h", "lut_a")
    else:
        gf, gh = None, gate("gh", "u", "lut_a")
    ro_w = weights("ro_w", o, n)
    ro_s = shifts("ro_s", o, 4, 14)
    out.append(c_array("int32_t", "ro_bias", rng.integers(-4096, 4096, o)))
    ro_table = "lut_b" if shape.readout_activation == "sigmoid" else "0"
    mode = "STP_READOUT_FINAL" if shape.readout_mode == "final" else "STP_READOUT_PER_STEP"
    cell = "STP_CELL_MGU" if shape.cell == "mgu" else "STP_CELL_RNN"
    out.append(
        f"const stp_model_t {name} = {{\n    .cell = {cell}, .input_size = {i_size}, "
        f".hidden_size = {n}, .output_size = {o}, .rank_max = {shape.rank_max},\n"
        + (f"    .gate_f = {gf},\n" if gf else "")
        + f"    .gate_h = {gh},\n"
        f"    .readout = {{.w = {ro_w}, .shift = {ro_s}, .bias = ro_bias, .table = {ro_table}, "
        f".mode = {mode}}}\n}};\n"
    )
    return "\n\n".join(out)


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
