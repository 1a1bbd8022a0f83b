"""Models on a board: build driver + model + runtime, run under qemu, measure, compare with the
reference frame by frame."""

from __future__ import annotations

import dataclasses
import subprocess
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from stapes.emit.model_c import emit, summary
from stapes.errors import CheckFailed
from stapes.fixed.compare import first_mismatch
from stapes.fixed.reference import frame_ops, run_reference
from stapes.ir.contract import scratch_elements
from stapes.target.drivers import (
    dot_kernel_program,
    driver_c,
    parse_driver_output,
    synthetic_model_c,
    synthetic_model_h,
)
from stapes.target.profile import Board
from stapes.target.qemu import DEFAULT_TIMEOUT_S, run_qemu
from stapes.target.toolchain import (
    cross_build,
    elf_sizes,
    elf_symbols,
    host_build,
    require_runnable,
    runtime_c_sources,
    runtime_dir,
)

# The mat-vec kernels: every MAC of a frame runs inside one of these (runtime_c/src/stp_matvec.c).
# The mat-vec kernels: the dot products and the DSP block kernels of stp_matvec.c (whichever a
# build has; the per-row combine and the dispatch around them are not counted).
MATVEC_KERNELS = (
    "stp_dot_s16_s16",
    "stp_dot_s16_s8",
    "stp_dsp_dot2_s16",
    "stp_dsp_dot2_s8",
    "stp_dsp_rows_s8",
    "stp_dsp_rows_unaligned_s16",
)

STACK_CHAIN = ("main", "stp_model_step", "stp_mgu_step_s16", "stp_gate_lowrank_s16", "row_dot", "stp_dot_s16_s16")


def stack_estimate(stack_usage: dict[str, int]) -> int:
    """Deepest call chain of a frame (driver -> step -> MGU -> low-rank gate -> dot), from
    gcc's -fstack-usage frames, plus 8 bytes per call for the return path's register saves."""
    return sum(stack_usage.get(f, 0) + 8 for f in STACK_CHAIN)


# ----------------------------------------------------------------------------- measuring


@dataclass(frozen=True)
class Measured:
    """What one synthetic or emitted model measured on a board."""

    frame_insns: list[int]  # per frame, marker overhead removed
    sizes: dict  # elf_sizes, plus flash_model = flash minus the golden inputs
    stack: int  # bytes: the measured peak, else the -fstack-usage estimate
    stack_measured: bool
    stdout: bytes
    returncode: int
    method: str
    kernel_insns: float | None  # per frame, inside MATVEC_KERNELS (None: not counted)


def measure_model(
    board: Board,
    model_sources: list[Path],
    include_dirs: list[Path],
    driver: str,
    work: Path,
    name: str = "prog",
    timeout: float = DEFAULT_TIMEOUT_S,
) -> Measured:
    """Cross-build driver + model + runtime, run it with instruction counting, read the sizes."""
    work.mkdir(parents=True, exist_ok=True)
    (work / f"{name}_main.c").write_text(driver)
    srcs = [work / f"{name}_main.c", *model_sources, *runtime_c_sources()]
    build = cross_build(board, srcs, work, name=name, include_dirs=[runtime_dir() / "include", *include_dirs])
    run = run_qemu(board, build.elf, count=True, timeout=timeout, count_functions=MATVEC_KERNELS)
    if len(run.frame_insns) < 1:
        raise CheckFailed(f"no frames counted (exit status {run.returncode})")
    overhead, frames = run.frame_insns[0], run.frame_insns[1:]
    sizes = elf_sizes(build.elf)
    inputs = sum(s.size for s in elf_symbols(build.elf) if s.name == "inputs")
    sizes["flash_model"] = sizes["flash"] - inputs
    kernel = run.range_insns / len(frames) if run.range_insns is not None and frames else None
    measured_stack = run.stack_peak is not None
    stack = run.stack_peak if measured_stack else stack_estimate(build.stack_usage)
    return Measured(
        [f - overhead for f in frames], sizes, stack, measured_stack, run.stdout, run.returncode, run.method, kernel
    )


def measure_synthetic(board: Board, shape, work: Path, seed: int = 0, steps: int = 4) -> Measured:
    """Measure a random model of `shape` (see drivers.synthetic_model_c) for `steps` frames."""
    work.mkdir(parents=True, exist_ok=True)
    (work / "synth.c").write_text(synthetic_model_c(shape, seed))
    (work / "synth.h").write_text(synthetic_model_h())
    x = np.random.default_rng(seed + 1).integers(-32768, 32768, (steps, shape.input_size))
    drv = driver_c(
        "stp_model_step(&stp_synth_model, x, state, y, scratch, 0)",
        "synth.h",
        x,
        shape.input_size,
        shape.hidden_size,
        shape.output_size,
        scratch_elements(shape.cell, shape.hidden_size, shape.rank_max),
        print_state=False,
    )
    return measure_model(board, [work / "synth.c"], [work], drv, work)


def measure_dot_kernels(board: Board, work: Path, cases: list[tuple[int, int, int, int]]) -> list[int]:
    """Instructions per dot-kernel call (call sequence included), one per case."""
    work.mkdir(parents=True, exist_ok=True)
    src = work / "dots.c"
    src.write_text(dot_kernel_program(cases))
    build = cross_build(board, [src, *runtime_c_sources()], work, name="dots", include_dirs=[runtime_dir() / "include"])
    run = run_qemu(board, build.elf, count=True)
    if run.returncode != 0 or len(run.frame_insns) != len(cases):
        raise CheckFailed(f"dot-kernel run failed (exit status {run.returncode})")
    return run.frame_insns


# ----------------------------------------------------------------------------- emitted models


def golden_inputs(input_size: int, frames: int, seed: int) -> np.ndarray:
    """Seeded int16 inputs over the whole int16 range (the overflow proof covers every int16
    input, so extremes are fair game), with the two extreme values forced in early frames."""
    x = np.random.default_rng(seed).integers(-32768, 32768, (frames, input_size)).astype(np.int16)
    if frames >= 2:
        x[0, :], x[1, :] = 32767, -32768
    return x


def reference_frames(qgraph, x, rank: int = 0):
    """The reference's per-frame outputs and states for one stream x (T, I): what every call of
    the step function must produce (the step function computes the readout every frame, also
    for a final-readout model, so the reference is asked for per-step readouts)."""
    per_step = qgraph
    if qgraph.readout.mode != "per_step":
        per_step = dataclasses.replace(qgraph, readout=dataclasses.replace(qgraph.readout, mode="per_step"))
    res = run_reference(per_step, x[None].astype("int16"), rank=rank or None)
    return res.outputs[0], res.states[0]


# The driver's caller-owned buffers (boards/common/stp_driver.c.in): the model's RAM besides the stack.
DRIVER_BUFFERS = ("state", "scratch", "x", "y")


@dataclass
class BoardRun:
    """Everything `stapes board run` reports."""

    board: str
    frames: int
    same_as_host: bool
    same_as_reference: bool
    first_mismatch: str | None
    returncode: int
    host_returncode: int
    frame_insns: list
    macs_per_frame: int
    sizes: dict
    model_symbols: list  # (name, bytes, region) of the model and runtime, largest first
    stack: int  # bytes: the measured peak, else the -fstack-usage estimate
    stack_measured: bool
    method: str
    kernel_insns: float | None = None  # per frame, inside the mat-vec kernels
    ram_buffers: int = 0  # bytes of the caller-owned state, scratch, input and output (the ELF's)


def emitted_model_files(qgraph, work: Path, prefix: str = "model") -> list[Path]:
    paths = []
    for name, text in emit(qgraph, prefix).items():
        (work / name).write_text(text)
        paths.append(work / name)
    return paths


def run_qgraph(
    qgraph, board: Board, work: Path, frames: int = 32, seed: int = 0, rank: int = 0, timeout: float = DEFAULT_TIMEOUT_S
) -> BoardRun:
    """Emit `qgraph`, run golden inputs on the host and under qemu, compare both with the
    reference frame by frame (outputs and every state), count instructions, read sizes."""
    require_runnable(board)
    rank = qgraph.check_rank(rank or None) if rank else 0
    work.mkdir(parents=True, exist_ok=True)
    files = emitted_model_files(qgraph, work)
    sources = [f for f in files if f.suffix == ".c"]
    x = golden_inputs(qgraph.input_size, frames, seed)
    drv = driver_c(
        f"model_step_rank(x, state, y, scratch, {rank})",
        "model.h",
        x,
        qgraph.input_size,
        qgraph.hidden_size,
        qgraph.output_size,
        summary(qgraph)["scratch_size"],
    )
    measured = measure_model(board, sources, [work], drv, work, name="target", timeout=timeout)
    host = host_build(
        [work / "target_main.c", *sources, *runtime_c_sources()],
        work,
        include_dirs=[runtime_dir() / "include", work],
    )
    try:
        hp = subprocess.run([str(host)], capture_output=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise CheckFailed(f"the host build timed out after {timeout:g} s") from None
    mismatch = _reference_mismatch(measured, qgraph, x, rank)
    symbols = elf_symbols(work / "target.elf")
    syms = [
        (s.name, s.size, s.region)
        for s in reversed(symbols)
        if s.name.startswith(("model_", "stp_"))
        and not s.name.startswith(("stp_board", "stp_io"))
        or s.name in ("row_dot", "combine", "gate_preact", "cell_step")
    ]
    return BoardRun(
        board.name,
        frames,
        measured.stdout == hp.stdout and measured.returncode == hp.returncode,
        mismatch is None,
        mismatch,
        measured.returncode,
        hp.returncode,
        measured.frame_insns,
        int(frame_ops(qgraph, rank or None)["mac"]),
        measured.sizes,
        syms,
        measured.stack,
        measured.stack_measured,
        measured.method,
        measured.kernel_insns,
        sum(s.size for s in symbols if s.name in DRIVER_BUFFERS),
    )


def _reference_mismatch(measured: Measured, qgraph, x, rank: int) -> str | None:
    """None when the target printed every state and output of the reference, else the first
    difference; states first, since they explain the outputs (one stream: sequence 0, step = frame)."""
    if measured.returncode != 0:
        return f"target exit status {measured.returncode}"
    y_t, h_t = parse_driver_output(measured.stdout, qgraph.output_size, qgraph.hidden_size)
    y_ref, h_ref = reference_frames(qgraph, x, rank)
    return first_mismatch("states", h_t[None], h_ref[None]) or first_mismatch("outputs", y_t[None], y_ref[None])


def stack_text(run: BoardRun) -> str:
    return f"stack {run.stack} B (measured peak)" if run.stack_measured else f"stack ~{run.stack} B (estimate)"


def ram_text(run: BoardRun) -> str:
    """The model's RAM as every report states it: the caller-owned buffers plus the stack."""
    return f"RAM {run.ram_buffers + run.stack} B = buffers {run.ram_buffers} B (state, scratch, input, output) + {stack_text(run)}"
