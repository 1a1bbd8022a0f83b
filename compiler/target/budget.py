"""What a model costs on a board, before any build: flash, RAM, MACs, instructions, cycles.

The estimate follows the C runtime's structure (runtime_c/src): one `stp_model_step` per frame
runs the cell (one gate for the RNN, two for the MGU; each gate does W x, then U h dense or
B h -> z -> A z low-rank, one combine + table look-up per row) and then the readout. From a
`ModelShape` it counts dot-product calls, MACs, rows and look-ups exactly; the board profile
turns those counts into instructions (coefficients fitted to qemu counts of the same runtime by
stapes.target.calibrate, `[insn_model]` in board.toml) and cycles (the `[cost]` table: qemu counts no cycles, so cycles
stay an estimate). Flash and RAM are exact sums of the arrays the emitter writes plus the
measured code size of the runtime (`[code_model]`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from stapes.errors import UserError
from stapes.ir.contract import LUT_SIZE, scratch_elements
from stapes.ir.float_graph import LowRank
from stapes.ir.qgraph import QGraph
from stapes.target.profile import Board, load_board

LUT_BYTES = LUT_SIZE * 2  # STP_LUT_SIZE int16 entries (stp_fixed.h)
PTR = 4  # 32-bit targets
MAT_STRUCT = 4 * PTR  # stp_mat_t: w8, w16, rows, cols
GATE_STRUCT = 4 * MAT_STRUCT + 5 * PTR  # stp_gate_t
READOUT_STRUCT = MAT_STRUCT + 4 * PTR  # stp_readout_t
MODEL_STRUCT = 5 * 4 + 2 * GATE_STRUCT + READOUT_STRUCT


@dataclass(frozen=True)
class ModelShape:
    """The sizes that decide a model's cost. ranks: recurrent matrix -> rank, None = dense."""

    cell: str  # "rnn" | "mgu"
    input_size: int
    hidden_size: int
    output_size: int
    ranks: dict = field(default_factory=dict)  # {"u": r} or {"u_f": r, "u_h": r}
    weight_bits: int = 16
    readout_mode: str = "per_step"
    readout_activation: str = "linear"

    def __post_init__(self):
        if self.cell not in ("rnn", "mgu"):
            raise UserError(f"cell must be rnn or mgu, got {self.cell!r}")
        if self.weight_bits not in (8, 16):
            raise UserError(f"weight bits must be 8 or 16, got {self.weight_bits}")
        for name, r in self.ranks.items():
            if r is not None and not 1 <= r <= self.hidden_size:
                raise UserError(f"rank of {name} must be in 1..{self.hidden_size}, got {r}")

    @property
    def matrices(self) -> list[str]:
        return ["u"] if self.cell == "rnn" else ["u_f", "u_h"]

    def rank(self, name: str) -> int | None:
        return self.ranks.get(name)

    @property
    def rank_max(self) -> int:
        return max([r for r in (self.rank(m) for m in self.matrices) if r is not None], default=0)


def shape_of_graph(graph, weight_bits: int = 16) -> ModelShape:
    """The ModelShape of a FloatGraph (dense or LowRank recurrent matrices)."""
    ranks = {k: (m.rank if isinstance(m, LowRank) else None) for k, m in graph.cell.recurrent().items()}
    cell = "rnn" if set(ranks) == {"u"} else "mgu"
    return ModelShape(
        cell,
        graph.input_size,
        graph.hidden_size,
        graph.output_size,
        ranks,
        weight_bits,
        graph.readout.mode,
        graph.readout.activation,
    )


def shape_of_qgraph(q) -> ModelShape:
    """The ModelShape of a QGraph (stapes.ir.qgraph)."""
    names = {"f": "u_f", "h": "u_h"} if q.kind == "mgu" else {"h": "u"}
    ranks = {names[k]: (g.rank if g.lowrank else None) for k, g in q.gates.items()}
    return ModelShape(
        q.kind, q.input_size, q.hidden_size, q.output_size, ranks, q.weight_bits, q.readout.mode, q.readout.activation
    )


# ----------------------------------------------------------------------------- counts


def step_counts(s: ModelShape) -> dict:
    """Exact per-frame work of `stp_model_step` for this shape (the cell, then the readout)."""
    n, i, o = s.hidden_size, s.input_size, s.output_size
    c = {
        "dot_calls": 0,
        "macs_dense": 0,
        "macs_lowrank": 0,
        "macs_input": 0,
        "macs_readout": 0,
        "gate_rows": 0,
        "z_rows": 0,
        "luts": 0,
        "mgu_rows": 0,
        "readout_rows": o,
    }
    for name in s.matrices:
        r = s.rank(name)
        c["dot_calls"] += n  # W x, one dot per row
        c["macs_input"] += n * i
        c["gate_rows"] += n
        c["luts"] += n
        if r is None:
            c["dot_calls"] += n
            c["macs_dense"] += n * n
        else:
            c["dot_calls"] += r + n  # B h (r rows of N), A z (N rows of r)
            c["macs_lowrank"] += 2 * n * r
            c["z_rows"] += r
    if s.cell == "mgu":
        c["mgu_rows"] = n
    c["dot_calls"] += o
    c["macs_readout"] = o * n
    c["luts"] += o if s.readout_activation == "sigmoid" else 0
    c["macs"] = c["macs_dense"] + c["macs_lowrank"] + c["macs_input"] + c["macs_readout"]
    c["macs_recurrent"] = c["macs_dense"] + c["macs_lowrank"]
    return c


def weight_bytes(s: ModelShape) -> dict:
    """Bytes of every const array the emitter writes (weights, shifts, biases, tables, structs)."""
    n, i, o = s.hidden_size, s.input_size, s.output_size
    wb = s.weight_bits // 8
    weights = n * i * len(s.matrices) + o * n
    shifts = o
    biases = 4 * (n * len(s.matrices) + o)
    for name in s.matrices:
        r = s.rank(name)
        weights += n * n if r is None else 2 * n * r
        shifts += 2 * n + (r or 0)
    tables = {"tanh"}
    if s.cell == "mgu":
        tables.add("sigmoid")
    if s.readout_activation == "sigmoid":
        tables.add("sigmoid")
    return {
        "weights": weights * wb,
        "shifts": shifts,
        "biases": biases,
        "tables": LUT_BYTES * len(tables),
        "structs": MODEL_STRUCT,
    }


def ram_bytes(s: ModelShape) -> dict:
    """Caller-owned int16 buffers, in bytes: state, scratch (stp_model_scratch_size), input and
    output (the arrays themselves; a linker may add up to 3 bytes of alignment after each)."""
    n = s.hidden_size
    scratch = scratch_elements(s.cell, n, s.rank_max)
    return {"state": 2 * n, "scratch": 2 * scratch, "input": 2 * s.input_size, "output": 2 * s.output_size}


# ----------------------------------------------------------------------------- estimates

INSN_FEATURES = (
    "const",
    "row_calls8",
    "row_calls16",
    "dual_calls",
    "dual_blocks",
    "dual_pairs_c",
    "mac16_dual",
    "mac16_dual_tail",
    "mac16_dual_odd",
    "mac16_fast",
    "mac16_pair",
    "mac16_scalar",
    "mac8_fast",
    "mac8_scalar",
    "gate_rows",
    "z_rows",
    "luts",
    "mgu_rows",
    "readout_rows",
)


def dot_split(bits: int, n: int, w_aligned: bool, x_aligned: bool, dsp: bool) -> dict:
    """How stp_dot_s16_s{8,16} spends n MACs (mirrors its DSP branch in stp_matvec.c):
    `fast` in the LDM loop, `pair` in SMLAD pair steps, `scalar` one at a time."""
    if not dsp:
        return {"fast": 0, "pair": 0, "scalar": n}
    if bits == 8:
        fast = n & ~7 if (w_aligned and x_aligned and n >= 8) else 0
        return {"fast": fast, "pair": 0, "scalar": n - fast}
    scalar, rest = 0, n
    if n > 0 and not w_aligned and not x_aligned:
        scalar, rest, w_aligned, x_aligned = 1, n - 1, True, True
    fast = rest & ~7 if (w_aligned and x_aligned and rest >= 8) else 0
    rest -= fast
    return {"fast": fast, "pair": rest - rest % 2, "scalar": scalar + rest % 2}


def _add_dot(acc: dict, bits: int, n: int, w_aligned: bool, x_aligned: bool, dsp: bool) -> None:
    """One stp_dot_s16_s{bits} call: its MAC split and one kernel call."""
    for k, v in dot_split(bits, n, w_aligned, x_aligned, dsp).items():
        acc[f"mac{bits}_{k}"] = acc.get(f"mac{bits}_{k}", 0) + v
    acc["kernel_calls"] = acc.get("kernel_calls", 0) + 1


DSP_BLOCK = 16  # rows per stp_dsp_dot2_s16 call in the gates (STP_DSP_BLOCK in stp_matvec.c)


def _matrix_macs(
    bits: int, rows: int, cols: int, x_aligned: bool, dsp: bool, acc: dict, n: int | None = None, paired: bool = False
) -> None:
    """Add the work of a row-major (rows, cols) matrix times an int16 vector (first n columns).

    Arrays start word aligned (gcc aligns arrays on ARM); row i starts i * cols elements in.
    With `paired` (the gates' DSP branch for int16 weights, mirroring stp_matvec.c) rows go in
    blocks of up to DSP_BLOCK rows (`dual_blocks`, one stp_dsp_dot2_s16 call each) of row pairs
    (`dual_calls`): aligned pairs run its LDM loop (`mac16_dual`, 8 columns at a time) -- the whole
    block in assembly when n is a multiple of 8, else a C loop per pair (`dual_pairs_c`) with SMLAD
    pairs (`mac16_dual_tail`) and one last column (`mac16_dual_odd`); unaligned pairs fall back to
    two single dots."""
    n = cols if n is None else n
    esize = bits // 8
    if not (paired and dsp and bits == 16):
        for i in range(rows):
            _add_dot(acc, bits, n, (i * cols * esize) % 4 == 0, x_aligned, dsp)
            acc["row_calls"] = acc.get("row_calls", 0) + 1
        return
    paired_rows = rows - rows % 2
    acc["dual_blocks"] = acc.get("dual_blocks", 0) + -(-paired_rows // DSP_BLOCK)
    for i in range(0, rows - 1, 2):
        acc["dual_calls"] = acc.get("dual_calls", 0) + 1
        aligned = (i * cols * esize) % 4 == 0 and (cols * esize) % 4 == 0 and x_aligned
        if aligned and (n % 8 != 0 or n == 0):
            acc["dual_pairs_c"] = acc.get("dual_pairs_c", 0) + 1
        if aligned:
            acc["mac16_dual"] = acc.get("mac16_dual", 0) + 2 * (n & ~7)
            acc["mac16_dual_tail"] = acc.get("mac16_dual_tail", 0) + 2 * (n % 8 - n % 2)
            acc["mac16_dual_odd"] = acc.get("mac16_dual_odd", 0) + 2 * (n % 2)
        else:
            _add_dot(acc, bits, n, (i * cols * esize) % 4 == 0, x_aligned, dsp)
            _add_dot(acc, bits, n, ((i + 1) * cols * esize) % 4 == 0, x_aligned, dsp)
    if rows % 2:
        _add_dot(acc, bits, n, ((rows - 1) * cols * esize) % 4 == 0, x_aligned, dsp)
        acc["row_calls"] = acc.get("row_calls", 0) + 1


def insn_features(s: ModelShape, dsp: bool = False) -> dict:
    """The quantities the instruction model is linear in (per frame)."""
    c = step_counts(s)
    n, i, bits = s.hidden_size, s.input_size, s.weight_bits
    even = n % 2 == 0  # scratch buffers f*h (scratch + N) and z (scratch + N or 3N)
    acc: dict = {}
    for name in s.matrices:
        r = s.rank(name)
        x_rec_aligned = even if name == "u_h" else True  # the MGU candidate multiplies f*h
        _matrix_macs(bits, n, i, True, dsp, acc, paired=True)
        if r is None:
            _matrix_macs(bits, n, n, x_rec_aligned, dsp, acc, paired=True)
        else:
            _matrix_macs(bits, r, n, x_rec_aligned, dsp, acc, paired=True)
            _matrix_macs(bits, n, r, even, dsp, acc, paired=True)
    _matrix_macs(bits, s.output_size, n, True, dsp, acc)  # the readout: single rows
    f = {k: 0 for k in INSN_FEATURES}
    f.update({k: v for k, v in acc.items() if k in f})
    f["mac16_pair"] //= 2  # one SMLAD step per pair
    # row_calls: the per-row call path around the kernel (row_dot, loop), which differs by width
    rows = acc.get("row_calls", 0)
    f.update(
        const=1,
        dot_calls=c["dot_calls"],
        kernel_calls=acc.get("kernel_calls", 0),
        row_calls8=rows if bits == 8 else 0,
        row_calls16=rows if bits == 16 else 0,
        gate_rows=c["gate_rows"],
        z_rows=c["z_rows"],
        luts=c["luts"],
        mgu_rows=c["mgu_rows"],
        readout_rows=c["readout_rows"],
    )
    return f


def estimate_instructions(s: ModelShape, board: Board) -> float | None:
    """Instructions per frame from the board's fitted model; None when the board has none."""
    model = board.insn_model
    if not model:
        return None
    f = insn_features(s, board.has_dsp)
    kernel_calls = model.get(f"dot_call{s.weight_bits}", 0.0) * f["kernel_calls"]
    return float(sum(model.get(k, 0.0) * f[k] for k in INSN_FEATURES) + kernel_calls)


MAC_FEATURES = ("mac16_fast", "mac16_pair", "mac16_scalar", "mac8_fast", "mac8_scalar")
DUAL_MAC_FEATURES = ("mac16_dual", "mac16_dual_tail", "mac16_dual_odd")
MACS_PER_FEATURE_UNIT = {"mac16_pair": 2}  # mac16_pair counts SMLAD steps, two MACs each


def _instruction_source(board: Board) -> Board | None:
    """The board whose fitted instruction model describes `board`'s code: itself, or for an
    estimate-only profile the qemu board named by its `insn_model_from` (same compiled C)."""
    if board.insn_model:
        return board
    src = board.cost.get("insn_model_from")
    if src:
        return load_board(src)
    return None


def estimate_cycles(s: ModelShape, board: Board) -> float:
    """Cycles per frame (an estimate on every board: qemu counts no cycles).

    With an instruction model (the board's, or the qemu board its profile names): the MACs cost
    `mac_cycles` each (DSP or portable loop: its loads and loop overhead included; a path with
    more instructions per MAC costs those instructions) and every other instruction `other_cycles` (the core's average cycles per instruction: at least 1 on a
    single-issue core such as the M0+, M3 and M4, so cycles never fall below instructions there;
    below 1 on the dual-issue M7). Without one, a count-based estimate: MACs, table look-ups,
    calls and per-row loads at their `[cost]` prices plus ~20 other instructions a row."""
    cost = board.cost
    c = step_counts(s)
    mac = cost["mac_cycles"] if board.has_dsp else cost.get("mac_cycles_portable", cost["mac_cycles"])
    src = _instruction_source(board)
    insns = estimate_instructions(s, src) if src is not None else None
    if insns is None:
        rows = c["gate_rows"] + c["z_rows"] + c["readout_rows"]
        return (
            c["macs"] * mac
            + c["luts"] * cost["lut_cycles"]
            + c["dot_calls"] * cost["call_cycles"]
            + rows * (3 * cost["load_cycles"] + 20 * cost["other_cycles"])
        )
    f, m, other = insn_features(s, src.has_dsp), src.insn_model, cost["other_cycles"]
    mac_insns = mac_cycles = 0.0
    for k in (*MAC_FEATURES, *DUAL_MAC_FEATURES):
        mac_insns += m.get(k, 0.0) * f[k]
        # a loop path costs `mac` cycles per MAC, or its instructions' cycles when it has more
        # instructions per MAC than the fast path the cost table prices (scalar tails, unpacking)
        macs = f[k] * MACS_PER_FEATURE_UNIT.get(k, 1)
        mac_cycles += max(macs * mac, m.get(k, 0.0) * f[k] * other)
    rest = max(insns - mac_insns, 0.0) * cost.get("overhead_scale", 1.0)
    return mac_cycles + rest * other


@dataclass(frozen=True)
class Budget:
    board: str
    board_kind: str
    shape: dict
    frame_ms: float
    clock_hz: int
    flash: dict  # parts + total
    ram: dict  # parts + total (stack listed, also in the total)
    counts: dict
    instructions: float | None
    instructions_source: str
    cycles: float
    core_share: float  # cycles per frame / cycles available per frame
    fits: dict
    notes: list

    def to_json(self) -> dict:
        return asdict(self)

    def format(self) -> str:
        """The human table `stapes budget` prints."""
        return format_budget(self)


def budget(s: ModelShape, board: Board, frame_ms: float, clock_hz: int | None = None) -> Budget:
    """Flash, RAM, MACs, instructions and cycles per frame of `s` on `board`."""
    if frame_ms <= 0:
        raise UserError(f"--frame-ms must be positive, got {frame_ms}")
    clock = int(clock_hz or board.clock_hz)
    flash = weight_bytes(s)
    code = board.code_model
    flash["code"] = int(code.get("runtime_code", 0) + code.get("board_code", 0))
    flash["total"] = sum(flash.values())
    ram = ram_bytes(s)
    ram["stack"] = int(code.get("stack", 0))
    ram["total"] = sum(ram.values())
    counts = step_counts(s)
    insns = estimate_instructions(s, board)
    cycles = estimate_cycles(s, board)
    share = cycles / (clock * frame_ms / 1000.0)
    notes = []
    if not board.runs:
        notes.append(f"{board.name} is an estimate-only profile: every figure is an estimate")
    if insns is None:
        notes.append("no qemu-calibrated instruction model for this board")
    if not code:
        notes.append("code size unknown for this board (no [code_model]); flash counts data only")
    notes.append(
        "cycles are an estimate (qemu counts instructions, not cycles): MACs at the board's cycles per "
        "MAC, every other instruction at its average cycles per instruction"
    )
    return Budget(
        board=board.name,
        board_kind=board.kind,
        shape=asdict(s),
        frame_ms=frame_ms,
        clock_hz=clock,
        flash=flash,
        ram=ram,
        counts=counts,
        instructions=insns,
        instructions_source="qemu-fitted model" if insns is not None else "none",
        cycles=cycles,
        core_share=share,
        fits={
            "flash": flash["total"] <= board.flash_bytes,
            "ram": ram["total"] <= board.ram_bytes,
            "time": share <= 1.0,
        },
        notes=notes,
    )


def budget_for(
    model, board: str | Board, frame_ms: float, *, weights: str = "int16", clock_hz: int | None = None
) -> Budget:
    """:func:`budget` of a QGraph (its own weight width) or a FloatGraph (at `weights` bits) on
    `board` (a profile or its name): the one path of `stapes budget` and :func:`stapes.budget`."""
    if weights not in ("int8", "int16"):
        raise UserError(f"weights must be int8 or int16, got {weights!r}")
    if clock_hz is not None and clock_hz <= 0:
        raise UserError(f"the clock must be positive, got {clock_hz} Hz")
    shape = shape_of_qgraph(model) if isinstance(model, QGraph) else shape_of_graph(model, int(weights[3:]))
    return budget(shape, load_board(board) if isinstance(board, str) else board, frame_ms, clock_hz)


def format_budget(b: Budget) -> str:
    """The human table `stapes budget` prints."""
    s = b.shape
    ranks = ", ".join(f"{k}={'dense' if v is None else v}" for k, v in s["ranks"].items())
    lines = [
        f"board {b.board} ({b.board_kind}), {b.clock_hz / 1e6:g} MHz, frame {b.frame_ms:g} ms",
        f"model {s['cell']} I={s['input_size']} N={s['hidden_size']} O={s['output_size']} "
        f"int{s['weight_bits']} weights, {ranks}",
        "",
        f"{'flash':<10}{'bytes':>10}",
    ]
    lines += [f"  {k:<8}{v:>10}" for k, v in b.flash.items() if k != "total"]
    lines += [f"  {'total':<8}{b.flash['total']:>10}", "", f"{'RAM':<10}{'bytes':>10}"]
    lines += [f"  {k:<8}{v:>10}" for k, v in b.ram.items() if k != "total"]
    lines += [
        f"  {'total':<8}{b.ram['total']:>10}  (buffers exact; stack: the largest peak measured on this board)",
        "",
    ]
    c = b.counts
    lines.append(
        f"MACs/frame {c['macs']} (recurrent {c['macs_recurrent']}: dense {c['macs_dense']}, "
        f"low-rank {c['macs_lowrank']}; input {c['macs_input']}; readout {c['macs_readout']})"
    )
    lines.append(f"table look-ups/frame {c['luts']}, dot calls/frame {c['dot_calls']}")
    if b.instructions is not None:
        lines.append(f"instructions/frame ~{b.instructions:,.0f} ({b.instructions / max(c['macs'], 1):.2f}/MAC)")
    lines.append(
        f"cycles/frame ~{b.cycles:,.0f} (estimate) -> {100 * b.core_share:.2f} % of the core "
        f"at {b.clock_hz / 1e6:g} MHz for one frame every {b.frame_ms:g} ms"
    )
    verdict = ", ".join(f"{k} {'ok' if v else 'DOES NOT FIT'}" for k, v in b.fits.items())
    lines.append(f"fits: {verdict}")
    lines += [f"note: {n}" for n in b.notes]
    return "\n".join(lines)
