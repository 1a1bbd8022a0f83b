"""Fit a board's instruction and code-size models (`[insn_model]`, `[code_model]` in board.toml)
to qemu counts of the runtime: `python -m stapes.target.calibrate BOARD` prints the TOML to paste;
with `--write` it replaces the board.toml's calibration in place.

Re-run it after changing the runtime or the compiler: the budget mirrors the kernels' branches,
and only a fresh fit keeps its coefficients true.
"""

from __future__ import annotations

import re
import sys
import tempfile
from pathlib import Path

import numpy as np
from scipy.optimize import nnls

from stapes.errors import CheckFailed
from stapes.fsutil import atomic_write_text
from stapes.target.budget import (
    INSN_FEATURES,
    MAC_FEATURES,
    ModelShape,
    dot_split,
    insn_features,
    weight_bytes,
)
from stapes.target.profile import Board, load_board
from stapes.target.run import measure_dot_kernels, measure_synthetic


def calibration_shapes() -> list[ModelShape]:
    """Shapes spanning the instruction model's features: both cells, dense and low-rank,
    odd and even sizes, int8 and int16 weights, linear and sigmoid readouts."""
    out = []
    for bits in (8, 16):
        out += [
            ModelShape("rnn", 3, 16, 2, {"u": None}, bits),
            ModelShape("rnn", 5, 24, 3, {"u": 4}, bits, readout_activation="sigmoid"),
            ModelShape("rnn", 2, 40, 1, {"u": None}, bits),
            ModelShape("mgu", 4, 32, 3, {"u_f": 8, "u_h": 8}, bits),
            ModelShape("mgu", 1, 48, 2, {"u_f": None, "u_h": None}, bits),
            ModelShape("mgu", 6, 64, 4, {"u_f": 16, "u_h": 16}, bits, readout_activation="sigmoid"),
            ModelShape("mgu", 3, 17, 5, {"u_f": 5, "u_h": 5}, bits),
            ModelShape("rnn", 7, 33, 2, {"u": 3}, bits),
            ModelShape("mgu", 2, 8, 1, {"u_f": None, "u_h": None}, bits),
            ModelShape("rnn", 8, 64, 4, {"u": 16}, bits),
            ModelShape("mgu", 3, 21, 2, {"u_f": 7, "u_h": 7}, bits, readout_mode="final"),
            ModelShape("rnn", 1, 96, 1, {"u": None}, bits),
        ]
    return out + random_shapes(48, seed=7)


def random_shapes(count: int, seed: int) -> list[ModelShape]:
    """Seeded random shapes: the DSP row-block kernels take a different path by column count
    (multiples of 16 or 8, odd, short rows) and alignment, which a few hand-picked sizes miss."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(count):
        cell = str(rng.choice(["rnn", "mgu"]))
        n = int(rng.choice([int(rng.integers(6, 100)), int(rng.choice([16, 32, 48, 64, 96]))]))
        rank = None if rng.random() < 0.4 else int(rng.integers(1, max(2, n // 2)))
        ranks = {k: rank for k in (("u_f", "u_h") if cell == "mgu" else ("u",))}
        out.append(
            ModelShape(
                cell,
                int(rng.integers(1, 20)),
                n,
                int(rng.integers(1, 6)),
                ranks,
                int(rng.choice([8, 16])),
                readout_mode=str(rng.choice(["per_step", "final"])),
                readout_activation=str(rng.choice(["linear", "sigmoid"])),
            )
        )
    return out


def dot_cases() -> list[tuple[int, int, int, int]]:
    """(bits, n, w offset, x offset) calls covering every branch of the dot kernels."""
    out = []
    for bits in (8, 16):
        for n in (0, 1, 2, 3, 7, 8, 9, 15, 16, 17, 24, 31, 32, 48, 64, 65, 100, 128):
            for wo, xo in ((0, 0), (1, 1), (1, 0), (0, 1), (2, 0)):
                out.append((bits, n, wo, xo))
    return out


def fit_dot_costs(board: Board, work) -> dict:
    """Instructions per MAC kind in the dot kernels, fitted to qemu counts of single calls:
    {"mac16_fast": ..., ..., "dot_call16": ..., "dot_call8": ...} (call = fixed cost per call)."""
    cases = dot_cases()
    counts = measure_dot_kernels(board, Path(work) / "dots", cases)
    out = {}
    for bits in (8, 16):
        rows, y = [], []
        for (b, n, wo, xo), cnt in zip(cases, counts):
            if b != bits:
                continue
            w_al = (wo * bits // 8) % 4 == 0
            part = dot_split(bits, n, w_al, xo % 2 == 0, board.has_dsp)
            rows.append([1.0, part["fast"], part["pair"] / 2, part["scalar"]])
            y.append(cnt)
        coef, _ = nnls(np.array(rows), np.array(y, dtype=float))
        out[f"dot_call{bits}"] = float(coef[0])
        for k, c in zip(("fast", "pair", "scalar"), coef[1:]):
            if bits == 16 or k != "pair":
                out[f"mac{bits}_{k}"] = float(c)
    return out


def calibrate(board: Board, work, shapes: list[ModelShape] | None = None) -> dict:
    """Fit the instruction model of `board` to qemu counts: the dot kernels' per-MAC costs from
    single calls, then the rest (calls, rows, look-ups, MGU update, readout) from random models.
    Returns {"insn_model", "code_model", "max_rel_error" (worst fit error over the models)}."""
    dots = fit_dot_costs(board, work)
    mac_coef = {k: v for k, v in dots.items() if k in MAC_FEATURES}
    rest = [f for f in INSN_FEATURES if f not in MAC_FEATURES]
    shapes = shapes or calibration_shapes()
    rows, target, runs = [], [], []
    for k, s in enumerate(shapes):
        m = measure_synthetic(board, s, Path(work) / f"cal{k}", seed=k)
        feats = insn_features(s, board.has_dsp)
        mac_part = (
            sum(mac_coef.get(f, 0.0) * feats[f] for f in MAC_FEATURES)
            + dots[f"dot_call{s.weight_bits}"] * feats["kernel_calls"]
        )
        rows.append([feats[f] for f in rest])
        target.append(float(np.mean(m.frame_insns)) - mac_part)
        runs.append((s, m, mac_part))
    a, y = np.array(rows, dtype=float), np.array(target)
    coef, _ = nnls(a, y)
    model = {f: round(float(c), 4) for f, c in zip(rest, coef)}
    model.update({f: round(v, 4) for f, v in mac_coef.items()})
    model["dot_call16"], model["dot_call8"] = round(dots["dot_call16"], 4), round(dots["dot_call8"], 4)
    fit = a @ coef + np.array([mp for _, _, mp in runs])
    measured = y + np.array([mp for _, _, mp in runs])
    code = [m.sizes["flash_model"] - sum(weight_bytes(s).values()) for s, m, _ in runs]
    errors = (fit - measured) / measured
    return {
        "insn_model": {f: model[f] for f in (*INSN_FEATURES, "dot_call16", "dot_call8") if model.get(f)},
        "errors": {
            f"{s.cell} N={s.hidden_size} r={s.ranks} int{s.weight_bits}": round(float(e), 4)
            for (s, _, _), e in zip(runs, errors)
        },
        "code_model": {
            "runtime_code": int(np.max(code)),
            "board_code": 0,
            "stack": int(max(m.stack for _, m, _ in runs)),
        },
        "max_rel_error": float(np.max(np.abs(fit - measured) / measured)),
        "dot_costs": {k: round(v, 3) for k, v in dots.items()},
    }


def calibration_toml(result: dict) -> str:
    lines = ["[insn_model]        # instructions per frame, fitted to qemu counts (stapes.target.calibrate)"]
    lines += [f"{k} = {v}" for k, v in result["insn_model"].items()]
    lines += ["", "[code_model]        # bytes: runtime + board code; largest painted-stack peak (measured)"]
    lines += [f"{k} = {v}" for k, v in result["code_model"].items()]
    lines += [
        "",
        "# dot kernels alone (instructions): " + ", ".join(f"{k} {v}" for k, v in result["dot_costs"].items()),
    ]
    return "\n".join(lines) + "\n"


CALIBRATION_MARK = "# Measured under qemu by `python -m stapes.target.calibrate"


def calibration_block(board: Board, result: dict) -> str:
    """The calibration as it stands at the end of a board.toml: how it was made, then the TOML."""
    return (
        f"{CALIBRATION_MARK} {board.name}` (random models + single dot-kernel\n"
        "# calls; re-run it after changing the runtime or the compiler). Worst fit error over the\n"
        f"# calibration models: {100 * result['max_rel_error']:.2f} %.\n" + calibration_toml(result)
    )


def write_calibration(board: Board, result: dict) -> Path:
    """Replace the calibration at the end of the board's board.toml (from its comment, or from
    [insn_model], to the end; appended when there is none) by `result`, atomically."""
    path = board.folder / "board.toml"
    text = path.read_text()
    cut = text.find(CALIBRATION_MARK)
    if cut < 0:
        m = re.search(r"(?m)^\[insn_model\]", text)
        cut = m.start() if m else len(text)
    others = set(re.findall(r"(?m)^\[([^\]]+)\]", text[cut:])) - {"insn_model", "code_model"}
    if others:
        raise CheckFailed(f"{path}: [{'], ['.join(sorted(others))}] follow the calibration; move them above it")
    atomic_write_text(path, text[:cut].rstrip("\n") + "\n\n" + calibration_block(board, result))
    return path


def main(argv: list[str] | None = None) -> int:
    """`python -m stapes.target.calibrate BOARD [--write]`: print a calibration to paste into
    board.toml, or with --write put it there."""
    args = sys.argv[1:] if argv is None else argv
    write = "--write" in args
    args = [a for a in args if a != "--write"]
    if len(args) != 1:
        print("usage: python -m stapes.target.calibrate BOARD [--write]", file=sys.stderr)
        return 2
    board = load_board(args[0])
    with tempfile.TemporaryDirectory(prefix="stapes-calibrate-") as tmp:
        res = calibrate(board, tmp)
    print(calibration_toml(res), end="")
    if write:
        print(f"# written to {write_calibration(board, res)}")
    print(f"# worst relative fit error: {100 * res['max_rel_error']:.2f} %")
    for name, err in res["errors"].items():
        print(f"#   {name}: {100 * err:+.2f} %")
    return 0


if __name__ == "__main__":
    sys.exit(main())
