"""Instructions per frame of an MGU on the Cortex-M4 under qemu: DSP path vs portable C.

For N = 64 and 128, recurrent ranks N (dense), N/4 and N/8, int8 and int16 weights: qemu-counted
instructions per frame of the step function, per MAC, with the M4's DSP kernels and with the
portable loop (the same M4 build with __ARM_FEATURE_DSP undefined), flash and RAM from
arm-none-eabi-size, the budget's prediction, and the dot kernels alone.

    python benchmarks/bench_target.py [--quick] [--json FILE]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import tempfile
from pathlib import Path

import numpy as np


def portable_variant(board):
    """The same board compiled without the DSP extension's kernels."""
    return dataclasses.replace(
        board, cflags=(*board.cflags, "-U__ARM_FEATURE_DSP"), isa={**board.isa, "dsp": False}, insn_model={}
    )


def random_mgu(n: int, rank: int | None, bits: int, inputs: int = 4, outputs: int = 2, seed: int = 0):
    from stapes.fixed.quantize import quantize_graph
    from stapes.ir.float_graph import FloatGraph, MGUCell, Readout
    from stapes.ir.lowrank import svd_factors

    rng = np.random.default_rng(seed)

    def u():
        m = rng.standard_normal((n, n)) * (1.5 / np.sqrt(n))
        return m if rank is None else svd_factors(m, rank)

    cell = MGUCell(
        rng.standard_normal((n, inputs)),
        u(),
        0.1 * rng.standard_normal(n),
        rng.standard_normal((n, inputs)),
        u(),
        0.1 * rng.standard_normal(n),
    )
    ro = Readout(rng.standard_normal((outputs, n)) / np.sqrt(n), np.zeros(outputs))
    return quantize_graph(FloatGraph(cell, ro), weights=f"int{bits}")


def dot_table(board, work: Path) -> list[dict]:
    from stapes.target import run

    cases = [(bits, n, 0, 0) for bits in (16, 8) for n in (64, 128)]
    counts = run.measure_dot_kernels(board, work, cases)
    base = run.measure_dot_kernels(board, work / "empty", [(16, 0, 0, 0)])[0]  # call sequence only
    return [
        {"bits": b, "n": n, "insns": c, "per_mac": c / n, "per_mac_without_call": (c - base) / n}
        for (b, n, _, _), c in zip(cases, counts)
    ]


GATE_PROGRAM = r"""
#include <stdint.h>
#include "stp_board_io.h"
#include "stp_model.h"
#define N {n}
#define R {r}
static {wt} wu[N * N], wa[N * R], wb[R * N], ww[N];
static int8_t zs[N], xs[N], hs[N];
static int32_t bias[N];
static int16_t table[STP_LUT_SIZE];
int16_t x[2], h[N], z[N], pre[N];   /* external: the unused ones stay warning-free */
/* W (N, 1): the smallest input projection; U dense (N, N), U (N, 1), or U = A (N, R) B (R, N) */
extern const stp_gate_t dense, tiny, low;
const stp_gate_t dense = {{{{{p}ww{q}, N, 1}}, {{{p}wu{q}, N, N}}, {{0, 0, 0, 0}}, {{0, 0, 0, 0}}, 0, xs, hs, bias, table}};
const stp_gate_t tiny = {{{{{p}ww{q}, N, 1}}, {{{p}wu{q}, N, 1}}, {{0, 0, 0, 0}}, {{0, 0, 0, 0}}, 0, xs, hs, bias, table}};
const stp_gate_t low = {{{{{p}ww{q}, N, 1}}, {{0, 0, 0, 0}}, {{{p}wb{q}, R, N}}, {{{p}wa{q}, N, R}}, zs, xs, hs, bias, table}};
int main(void)
{{
    int k;
    for (k = 0; k < N * N; k++) wu[k] = ({wt})(k % 9 - 4);
    for (k = 0; k < N * R; k++) {{ wa[k] = ({wt})(k % 7 - 3); wb[k] = ({wt})(k % 5 - 2); }}
    for (k = 0; k < N; k++) {{ ww[k] = 1; zs[k] = 8; xs[k] = 4; hs[k] = 4; bias[k] = 0; h[k] = (int16_t)(k * 77); }}
    x[0] = 100;
    stp_board_frame_begin();
    {call};
    stp_board_frame_end();
    return (int)(pre[0] & 1) * 0;
}}
"""
GATE_CALLS = {
    "dense": "stp_gate_dense_s16(&dense, x, h, pre)",
    "tiny": "stp_gate_dense_s16(&tiny, x, h, pre)",
    "low": "stp_gate_lowrank_s16(&low, x, h, R, z, pre)",
}


def recurrent_matvec(board, work: Path, n: int, r: int, bits: int = 16) -> dict:
    """Instructions of the recurrent mat-vec alone, inside the mat-vec kernels: a gate with a
    1-column input projection and U (N, N) [or A (N, r) B (r, N)], minus half of the same gate
    with a 1-column U (that half is the input projection's share), call overhead included."""
    from stapes.target import qemu, run, toolchain

    work.mkdir(parents=True, exist_ok=True)
    runs = {}
    for name, call in GATE_CALLS.items():
        src = work / f"gate_{name}.c"
        # stp_mat_t {w8, w16, rows, cols}: the array in the slot of its width, NULL in the other
        weights = {"wt": "int8_t", "p": "", "q": ", 0"} if bits == 8 else {"wt": "int16_t", "p": "0, ", "q": ""}
        src.write_text(GATE_PROGRAM.format(n=n, r=r, call=call, **weights))
        elf = toolchain.cross_build(
            board,
            [src, *toolchain.runtime_c_sources()],
            work,
            name=f"gate_{name}",
            include_dirs=[toolchain.runtime_dir() / "include"],
        ).elf
        runs[name] = qemu.run_qemu(board, elf, count=True, count_functions=run.MATVEC_KERNELS).range_insns
    return {
        "N": n,
        "rank": r,
        "bits": bits,
        "dense_per_mac": (runs["dense"] - runs["tiny"] / 2) / (n * n),
        "lowrank_per_mac": (runs["low"] - runs["tiny"] / 2) / (2 * n * r),
    }


# The Cortex-M4 whole-step cases of the device-speed issue: (N, rank or None, bits, inputs, outputs).
DONE_WHEN = [
    (128, None, 16, 7, 5),
    (128, None, 8, 7, 5),
    (128, 32, 16, 7, 5),
    (128, None, 16, 16, 5),
    (128, 16, 16, 16, 5),
]


def done_when_rows(board, work: Path) -> list[dict]:
    """Whole-step instructions per MAC (readout included) of the issue's M4 cases, bit-exact."""
    from stapes.target import run

    rows = []
    for n, rank, bits, inputs, outputs in DONE_WHEN:
        q = random_mgu(n, rank, bits, inputs=inputs, outputs=outputs)
        res = run.run_qgraph(q, board, work / f"done_n{n}_r{rank}_b{bits}_i{inputs}", frames=4)
        if not res.same_as_reference:
            raise SystemExit(f"MISMATCH N={n} rank={rank} int{bits}: {res.first_mismatch}")
        insns = float(np.mean(res.frame_insns))
        rows.append(
            {
                "N": n,
                "rank": rank or n,
                "bits": bits,
                "inputs": inputs,
                "outputs": outputs,
                "macs": res.macs_per_frame,
                "insns": insns,
                "per_mac": insns / res.macs_per_frame,
            }
        )
    return rows


def main(argv=None) -> int:
    from stapes.target import profile, run, toolchain
    from stapes.target.budget import budget, shape_of_qgraph

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="N = 64 only")
    ap.add_argument("--json", default=None, help="also write the rows as JSON")
    ap.add_argument("--frames", type=int, default=4)
    ap.add_argument("--done-when", action="store_true", help="only the issue's whole-step M4 cases")
    args = ap.parse_args(argv)
    if toolchain.toolchain_missing():
        print(f"bench_target: {toolchain.toolchain_missing()}", file=sys.stderr)
        return 2
    m4 = profile.load_board("mps2-an386")
    if args.done_when:
        with tempfile.TemporaryDirectory(prefix="stapes-bench-") as tmp:
            done = done_when_rows(m4, Path(tmp))
        for r in done:
            print(
                f"N={r['N']} rank={r['rank']:<4} int{r['bits']:<3} I={r['inputs']:<3} O={r['outputs']} "
                f"{r['macs']:>6} MACs {r['insns']:>8.0f} insns {r['per_mac']:.3f}/MAC"
            )
        dense, low = done[3]["insns"], done[4]["insns"]
        print(
            f"rank 16 / dense step instructions (I=16): {low / dense:.3f} (MACs: {done[4]['macs'] / done[3]['macs']:.3f})"
        )
        return 0
    plain = portable_variant(m4)
    rows = []
    with tempfile.TemporaryDirectory(prefix="stapes-bench-") as tmp:
        work = Path(tmp)
        for n in (64,) if args.quick else (64, 128):
            for rank in (None, n // 4, n // 8):
                for bits in (16, 8):
                    q = random_mgu(n, rank, bits)
                    tag = f"n{n}_r{rank}_b{bits}"
                    dsp = run.run_qgraph(q, m4, work / f"{tag}_dsp", frames=args.frames)
                    por = run.run_qgraph(q, plain, work / f"{tag}_plain", frames=args.frames)
                    if not (dsp.same_as_reference and por.same_as_reference):
                        print(f"MISMATCH {tag}: {dsp.first_mismatch or por.first_mismatch}", file=sys.stderr)
                        return 1
                    est = budget(shape_of_qgraph(q), m4, 8.0)
                    d, p = float(np.mean(dsp.frame_insns)), float(np.mean(por.frame_insns))
                    rows.append(
                        {
                            "N": n,
                            "rank": rank or n,
                            "bits": bits,
                            "macs": dsp.macs_per_frame,
                            "insns_dsp": d,
                            "insns_portable": p,
                            "per_mac_dsp": d / dsp.macs_per_frame,
                            "per_mac_portable": p / por.macs_per_frame,
                            "speedup": p / d,
                            "kernel_per_mac_dsp": dsp.kernel_insns / dsp.macs_per_frame,
                            "flash": dsp.sizes["flash_model"],
                            "ram": dsp.sizes["ram"],
                            "stack": dsp.stack,
                            "budget_insns": est.instructions,
                            "budget_flash": est.flash["total"],
                        }
                    )
        dots = {"dsp": dot_table(m4, work / "dots_dsp"), "portable": dot_table(plain, work / "dots_plain")}
        recurrent = [
            recurrent_matvec(m4, work / f"rec{n}_{bits}", n, n // 4, bits)
            for n in ((64,) if args.quick else (64, 128))
            for bits in (16, 8)
        ]
    print("MGU on mps2-an386 (Cortex-M4F), qemu instruction counts per frame (step function)")
    print(
        "(/MAC: whole step; kern/MAC: instructions inside the DSP mat-vec kernels, all mat-vecs of the\n"
        " step including the 4-column input projections, whose per-call overhead dominates them)"
    )
    print(
        f"{'N':>4} {'rank':>5} {'w':>5} {'MACs':>7} {'DSP':>9} {'/MAC':>6} {'kern/MAC':>8} {'portable':>9} "
        f"{'/MAC':>6} {'x':>5} {'flash':>7} {'RAM':>5} {'budget':>9}"
    )
    for r in rows:
        print(
            f"{r['N']:>4} {r['rank']:>5} {'int' + str(r['bits']):>5} {r['macs']:>7} {r['insns_dsp']:>9.0f} "
            f"{r['per_mac_dsp']:>6.2f} {r['kernel_per_mac_dsp']:>8.3f} {r['insns_portable']:>9.0f} "
            f"{r['per_mac_portable']:>6.2f} {r['speedup']:>5.2f} "
            f"{r['flash']:>7} {r['ram']:>5} {r['budget_insns']:>9.0f}"
        )
    print("\ndot kernels alone (one call of stp_dot_s16_s16 / _s8, word-aligned rows):")
    for kind, table in dots.items():
        for r in table:
            print(
                f"  {kind:<8} int{r['bits']:<3} n={r['n']:<4} {r['insns']:>5} insns, {r['per_mac']:.3f}/MAC "
                f"({r['per_mac_without_call']:.3f}/MAC without the call sequence)"
            )
    print("\nrecurrent mat-vec alone, DSP path (instructions inside the kernels per MAC, call overhead included):")
    for r in recurrent:
        print(
            f"  N={r['N']:<4} int{r['bits']:<3} dense U h: {r['dense_per_mac']:.3f}/MAC; "
            f"low-rank A (B h), rank {r['rank']}: {r['lowrank_per_mac']:.3f}/MAC"
        )
    if args.json:
        Path(args.json).write_text(json.dumps({"rows": rows, "dots": dots, "recurrent": recurrent}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
