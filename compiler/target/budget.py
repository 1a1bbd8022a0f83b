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

PORTABLE_FEATURES = (
    "const",
    "row_calls8",
    "row_calls16",
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
# The DSP row-block kernels of stp_matvec.c (stp_dsp_rows and what it dispatches to): calls,
# row pairs (or rows) and MACs of each path.
DSP_FEATURES = (
    "gate_calls",
    "dsp_calls16",
    "dsp_calls8",
    "repack_groups",
    "pairs16_b16",
    "pairs16_b8",
    "pairs16_c",
    "rows16_short",
    "pairs8_block",
    "pairs8_c",
    "rows8_short",
    "mac16_b16",
    "mac16_b8",
    "mac16_dual",
    "mac16_dual_tail",
    "mac16_dual_odd",
    "mac16_short",
    "mac8_block",
    "mac8_pair",
    "mac8_pair_u",
    "mac8_tail",
    "mac8_short",
)
INSN_FEATURES = (*PORTABLE_FEATURES, *DSP_FEATURES)


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


def _bump(acc: dict, **counts) -> None:
    for k, v in counts.items():
        acc[k] = acc.get(k, 0) + v


def _row_dot(acc: dict, bits: int, row: int, cols: int, n: int, x_aligned: bool, dsp: bool) -> None:
    """One row through row_dot: a stp_dot_s16_s{bits} call (its MAC split) and the call path."""
    w_aligned = (row * cols * bits // 8) % 4 == 0  # arrays start word aligned (gcc on ARM)
    for k, v in dot_split(bits, n, w_aligned, x_aligned, dsp).items():
        _bump(acc, **{f"mac{bits}_{k}": v})
    _bump(acc, kernel_calls=1, **{f"row_calls{bits}": 1})


DSP_BLOCK = 16  # rows per stp_dsp_rows call (STP_DSP_BLOCK, STP_READOUT_BLOCK in stp_matvec.c)
S8_READY_CAP = {"x": 64, "h": 256}  # columns stp_dsp_prepare_s8 repacks once (STP_DSP_S8_X, _H)


def _dsp_rows(acc: dict, bits: int, rows: int, cols: int, n: int, x_aligned: bool, ready: bool) -> None:
    """One stp_dsp_rows call: `rows` (even) rows of a (., cols) matrix times the first n columns
    (mirrors stp_dsp_dot2_s16, stp_dsp_rows_unaligned_s16, stp_dsp_rows_s8, stp_dsp_dot2_s8)."""
    pairs = rows // 2
    if bits == 16:
        _bump(acc, dsp_calls16=1)
        if not (x_aligned and cols % 2 == 0):  # the unaligned kernel: LDR takes any address
            if n <= 8:
                _bump(acc, rows16_short=rows, mac16_short=rows * n)
            else:
                _bump(acc, pairs16_c=pairs, mac16_dual_tail=rows * (n - n % 2), mac16_dual_odd=rows * (n % 2))
        elif n > 0 and n % 16 == 0:
            _bump(acc, pairs16_b16=pairs, mac16_b16=rows * n)
        elif n > 0 and n % 8 == 0:
            _bump(acc, pairs16_b8=pairs, mac16_b8=rows * n)
        else:
            n8 = n & ~7
            _bump(
                acc,
                pairs16_c=pairs,
                mac16_dual=rows * n8,
                mac16_dual_tail=rows * (n % 8 - n % 2),
                mac16_dual_odd=rows * (n % 2),
            )
        return
    _bump(acc, dsp_calls8=1)
    if n < 8:
        _bump(acc, rows8_short=rows, mac8_short=rows * n)
        return
    n8, aligned = n & ~7, cols % 4 == 0
    if not ready:
        _bump(acc, repack_groups=n8 // 4)  # repacked inside, in chunks
    if ready and aligned and n8 == n:
        _bump(acc, pairs8_block=pairs, mac8_block=rows * n)
        return
    _bump(acc, pairs8_c=pairs, mac8_tail=rows * (n - n8), **{"mac8_pair" if aligned else "mac8_pair_u": rows * n8})


def _prepare(acc: dict, bits: int, n: int, cap: int) -> bool:
    """stp_dsp_prepare_s8: int8 rows of >= 8 columns get x's pairs repacked once; True if ready."""
    if bits != 8 or n < 8 or (n & ~7) > cap:
        return False
    _bump(acc, repack_groups=(n & ~7) // 4)
    return True


def _dsp_gate(acc: dict, bits: int, n: int, i: int, rec: tuple, x_rec_aligned: bool, z_aligned: bool) -> None:
    """One gate call on a DSP build (stp_gate_dense_s16 / stp_gate_lowrank_s16): rec is ("dense",)
    or ("lowrank", r)."""
    _bump(acc, gate_calls=1)
    x_ready = _prepare(acc, bits, i, S8_READY_CAP["x"])
    if rec[0] == "dense":
        h_ready = _prepare(acc, bits, n, S8_READY_CAP["h"])
        rec_cols, rec_n, rec_aligned = n, n, x_rec_aligned
    else:
        r = rec[1]
        b_ready = _prepare(acc, bits, n, S8_READY_CAP["h"])
        for k in range(0, r - 1, DSP_BLOCK):
            _dsp_rows(acc, bits, min(DSP_BLOCK, (r - k) & ~1), n, n, x_rec_aligned, b_ready)
        if r % 2:
            _row_dot(acc, bits, r - 1, n, n, x_rec_aligned, True)
        h_ready = _prepare(acc, bits, r, S8_READY_CAP["h"])
        rec_cols, rec_n, rec_aligned = r, r, z_aligned
    for k in range(0, n - 1, DSP_BLOCK):
        count = min(DSP_BLOCK, (n - k) & ~1)
        _dsp_rows(acc, bits, count, i, i, True, x_ready)
        _dsp_rows(acc, bits, count, rec_cols, rec_n, rec_aligned, h_ready)
    if n % 2:
        _row_dot(acc, bits, n - 1, i, i, True, True)
        _row_dot(acc, bits, n - 1, rec_cols, rec_n, rec_aligned, True)


def _dsp_readout(acc: dict, bits: int, o: int, n: int) -> None:
    """stp_readout_pre_s16 on a DSP build: blocks of row pairs, a last odd row alone."""
    ready = _prepare(acc, bits, n, S8_READY_CAP["h"])
    k = 0
    while k < o:
        count = min(DSP_BLOCK, o - k)
        if count > 1:
            count &= ~1
            _dsp_rows(acc, bits, count, n, n, True, ready)
        else:
            _row_dot(acc, bits, k, n, n, True, True)
        k += count


def insn_features(s: ModelShape, dsp: bool = False) -> dict:
    """The quantities the instruction model is linear in (per frame): the portable build's row
    calls and dot-product MACs, or the DSP build's row blocks, then the per-row work."""
    c = step_counts(s)
    n, i, o, bits = s.hidden_size, s.input_size, s.output_size, s.weight_bits
    even = n % 2 == 0  # scratch buffers f*h (scratch + N) and z (scratch + N or 3N)
    acc: dict = {}
    for name in s.matrices:
        r = s.rank(name)
        x_rec_aligned = even if name == "u_h" else True  # the MGU candidate multiplies f*h
        if dsp:
            _dsp_gate(acc, bits, n, i, ("dense",) if r is None else ("lowrank", r), x_rec_aligned, even)
            continue
        for row in range(n):
            _row_dot(acc, bits, row, i, i, True, False)
            if r is None:
                _row_dot(acc, bits, row, n, n, x_rec_aligned, False)
            else:
                _row_dot(acc, bits, row, r, r, even, False)
        for row in range(r or 0):
            _row_dot(acc, bits, row, n, n, x_rec_aligned, False)
    if dsp:
        _dsp_readout(acc, bits, o, n)
    else:
        for row in range(o):
            _row_dot(acc, bits, row, n, n, True, False)
    f = {k: 0 for k in INSN_FEATURES}
    f.update({k: v for k, v in acc.items() if k in f})
    f["mac16_pair"] //= 2  # one SMLAD step per pair
    f.update(
        const=1,
        dot_calls=c["dot_calls"],
        kernel_calls=acc.get("kernel_calls", 0),
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
DSP_MAC_FEATURES = tuple(f for f in DSP_FEATURES if f.startswith("mac"))
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
    for k in (*MAC_FEATURES, *DSP_MAC_FEATURES):
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
