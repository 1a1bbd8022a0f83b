"""Broken inputs (issue 13): every one is a one-line error with exit code 2, no traceback.

A table of bad inputs, each run through the CLI entry point (``stapes.cli.main`` in this process;
a few through a real subprocess): damaged, empty or foreign model folders, QModel folders,
calibration files, ONNX files and training checkpoints, and bad command arguments. The
corruptions are generated deterministically from the valid fixtures (seeded byte truncations
and bit flips, wrong types, missing keys, extreme values), plus hypothesis-drawn mutations of
``graph.json`` / ``qgraph.json`` (derandomized). Every case must exit 2 with exactly one line on
stderr, write nothing (the --out target is absent afterwards) and leave its inputs unchanged.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import shutil
import subprocess
import sys
import warnings
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

BOARD = "mps2-an386"
MEM_TASK = {"name": "memorization", "length": 2, "symbols": 2, "delay": 3, "hold": 1}


# ---- valid fixtures, built once ------------------------------------------------------------------
@pytest.fixture(scope="module")
def base(tmp_path_factory) -> dict[str, Path]:
    """Valid inputs (cheap: random weights, no training): model folders (dense RNN, low-rank MGU,
    one with a task), QModel folders, a calibration file, an ONNX file and a torch checkpoint."""
    import dataclasses

    import onnx

    from stapes.frontend.models import RecurrentModel
    from stapes.frontend.onnx_export import export_onnx, save_onnx
    from stapes.frontend.train import load_checkpoint, model_config_for, save_checkpoint
    from stapes.host.random_models import random_graph
    from stapes.ir.qgraph import QGraph
    from stapes.studies.deploy import quantize_folder
    from stapes.tasks import make_task

    root = tmp_path_factory.mktemp("valid")
    graphs = {
        "model": random_graph(0, kind="rnn", hidden=6, inputs=3, outputs=2),
        "lowrank": random_graph(1, kind="mgu", hidden=6, inputs=3, outputs=2, rank=3, readout_mode="final"),
        "taskmodel": dataclasses.replace(random_graph(2, kind="rnn", hidden=5, inputs=4, outputs=2), task=MEM_TASK),
    }
    paths = {}
    for name, g in graphs.items():
        (root / name).mkdir()
        g.save(root / name)
        paths[name] = root / name
    quantize_folder(paths["model"], root / "qmodel")
    quantize_folder(paths["lowrank"], root / "qlowrank", weights="int8")
    paths["qmodel"], paths["qlowrank"] = root / "qmodel", root / "qlowrank"
    np.save(root / "calib.npy", np.random.default_rng(0).normal(size=(4, 8, 3)))
    paths["calib"] = root / "calib.npy"
    save_onnx(export_onnx(graphs["model"]), root / "model.onnx")
    paths["onnx"] = root / "model.onnx"
    (root / "onnx_ext").mkdir()
    onnx.save_model(
        export_onnx(graphs["model"]),
        root / "onnx_ext" / "model.onnx",
        save_as_external_data=True,
        location="weights.bin",
        size_threshold=0,
    )
    paths["onnx_ext"] = root / "onnx_ext"
    task = make_task(**{k: v for k, v in MEM_TASK.items()})
    save_checkpoint(root / "ckpt", RecurrentModel(model_config_for(task, "rnn", 4), seed=0), None, task, None, {})
    paths["ckpt"] = root / "ckpt"
    # The fixtures are valid: each case below breaks exactly what it says.
    for name in ("model", "lowrank", "taskmodel"):
        assert run_cli(["quantize", paths[name], "--out", root / f"check_{name}"])[0] == 0
    QGraph.load(paths["qlowrank"])
    assert run_cli(["emit", paths["qmodel"], "--out", root / "check_emit"])[0] == 0
    assert run_cli(["quantize", paths["model"], "--calibration", paths["calib"], "--out", root / "check_c"])[0] == 0
    load_checkpoint(paths["ckpt"])
    assert run_cli(["import-onnx", paths["onnx_ext"] / "model.onnx", "--out", root / "check_onnx"])[0] == 0
    return paths


# ---- running a case ---------------------------------------------------------------------------------
def run_cli(args) -> tuple[int, str, list]:
    """`stapes ARGS` in this process: (exit code, stderr, warnings raised)."""
    from stapes.cli import main

    err = io.StringIO()
    with (
        contextlib.redirect_stderr(err),
        contextlib.redirect_stdout(io.StringIO()),
        warnings.catch_warnings(record=True) as caught,
    ):
        warnings.simplefilter("always")
        try:
            code = main([str(a) for a in args])
        except SystemExit as e:  # argparse errors exit through SystemExit
            code = e.code
    return code, err.getvalue(), [str(w.message) for w in caught]


def tree_hash(paths) -> str:
    h = hashlib.sha256()
    for p in paths:
        p = Path(p)
        files = sorted(q for q in p.rglob("*") if q.is_file()) if p.is_dir() else [p] if p.exists() else []
        for f in files:
            h.update(f"{f}:".encode())
            h.update(f.read_bytes())
    return h.hexdigest()


def assert_rejected(args, inputs, out):
    before = tree_hash(inputs)
    code, stderr, caught = run_cli(args)
    lines = stderr.strip().splitlines()
    assert code == 2, stderr
    assert len(lines) == 1, stderr
    assert "Traceback" not in stderr and ": error: " in lines[0], stderr
    assert not caught, caught
    if out is not None:
        assert not Path(out).exists()
        assert not any(p.name.startswith(f".{Path(out).name}.tmp") for p in Path(out).parent.iterdir())
    assert tree_hash(inputs) == before, "the command changed its input"
    return lines[0]


@dataclass(frozen=True)
class Case:
    """`make(base, work)` writes the broken input under `work` and returns (args, inputs, out)."""

    id: str
    make: Callable


CASES: list[Case] = []


def case(id_: str):
    def register(make):
        CASES.append(Case(id_, make))
        return make

    return register


# ---- corrupting copies of the fixtures ---------------------------------------------------------------
def copy(base, name: str, work: Path) -> Path:
    src = base[name]
    dst = work / "in" / src.name
    dst.parent.mkdir(parents=True, exist_ok=True)
    (shutil.copytree if src.is_dir() else shutil.copy)(src, dst)
    return dst


def rewrite_npz(path: Path, edit) -> None:
    with np.load(path) as z:
        arrays = {k: z[k] for k in z.files}
    edit(arrays)
    with open(path, "wb") as f:
        np.savez(f, **arrays)


def rewrite_json(path: Path, edit) -> None:
    meta = json.loads(path.read_text())
    edit(meta)
    path.write_text(json.dumps(meta))


def member_data_ranges(path: Path) -> list[tuple[int, int]]:
    """(start, end) byte offsets of each member's data in a zip archive (a bit flip there breaks the CRC)."""
    ranges = []
    with zipfile.ZipFile(path) as zf:
        raw = path.read_bytes()
        for info in zf.infolist():
            off = info.header_offset
            name_len = int.from_bytes(raw[off + 26 : off + 28], "little")
            extra_len = int.from_bytes(raw[off + 28 : off + 30], "little")
            start = off + 30 + name_len + extra_len
            ranges.append((start, start + info.compress_size))
    return ranges


def model_cmd(kind: str, folder: Path, work: Path) -> tuple[list, Path | None]:
    """A command that reads the model folder `folder` first."""
    out = work / "out"
    if kind == "quantize":
        return ["quantize", folder, "--out", out], out
    if kind == "compress":
        return ["compress", folder, "--rank", "2", "--out", out], out
    if kind == "export":
        return ["export-onnx", folder, "--out", work / "out.onnx"], work / "out.onnx"
    if kind == "budget":
        return ["budget", folder, "--board", BOARD], None
    return ["plan", folder, "--board", BOARD], None


def qmodel_cmd(kind: str, folder: Path, work: Path) -> tuple[list, Path | None]:
    out = work / "out"
    if kind == "emit":
        return ["emit", folder, "--out", out], out
    if kind == "budget":
        return ["budget", folder, "--board", BOARD], None
    return ["verify", folder, "--sequences", "2"], None


MODEL_CMDS = ("quantize", "compress", "export", "budget", "plan")
QMODEL_CMDS = ("emit", "budget", "verify")


def model_case(id_: str, fixture: str, file: str, corrupt, cmd: str = "quantize"):
    """A case that corrupts `file` of a copy of the model folder `fixture`, read by command `cmd`."""

    def make(base, work):
        folder = copy(base, fixture, work)
        corrupt(folder / file)
        args, out = (qmodel_cmd if fixture.startswith("q") else model_cmd)(cmd, folder, work)
        return args, [folder], out

    CASES.append(Case(id_, make))


def json_cases(prefix: str, fixture: str, file: str, table: dict, cmds: tuple = ("quantize",)):
    """One case per (key path, wrong value) of `table`: that value written into `file`."""
    for path, values in table.items():
        for i, v in enumerate(values):
            model_case(
                f"{prefix}{'.'.join(path)}={json.dumps(v)[:40]}",
                fixture,
                file,
                json_edit(set_path(path, v)),
                cmds[i % len(cmds)],
            )


def truncate_to(n: int):
    return lambda p: p.write_bytes(p.read_bytes()[:n])


def truncate_frac(frac: float, keep_end: int = 0):
    def corrupt(p):
        data = p.read_bytes()
        limit = len(data) - keep_end
        p.write_bytes(data[: min(int(frac * limit), limit - 1)])

    return corrupt


def flip_in_members(seed: int):
    """Flip one bit inside a member's data (seeded): every such flip fails the member's CRC."""

    def corrupt(p):
        rng = np.random.default_rng(seed)
        ranges = [r for r in member_data_ranges(p) if r[1] > r[0]]
        start, end = ranges[rng.integers(len(ranges))]
        pos = int(rng.integers(start, end))
        data = bytearray(p.read_bytes())
        data[pos] ^= 1 << int(rng.integers(8))
        p.write_bytes(bytes(data))

    return corrupt


def json_edit(edit):
    return lambda p: rewrite_json(p, edit)


def npz_edit(edit):
    return lambda p: rewrite_npz(p, edit)


def setitem(key, value):
    def edit(a):
        a[key] = value

    return edit


def delitem(key):
    def edit(a):
        del a[key]

    return edit


def set_path(path: tuple, value):
    def edit(meta):
        d = meta
        for k in path[:-1]:
            d = d[k]
        d[path[-1]] = value

    return edit


def del_path(path: tuple):
    def edit(meta):
        d = meta
        for k in path[:-1]:
            d = d[k]
        del d[path[-1]]

    return edit


# ---- model folders: the files themselves ------------------------------------------------------------
for fixture in ("model", "lowrank"):
    for file in ("graph.json", "graph.npz"):
        model_case(f"{fixture}-{file}-empty", fixture, file, truncate_to(0))
        model_case(f"{fixture}-{file}-garbage", fixture, file, lambda p: p.write_bytes(b"\x00\xffnot this\x13" * 7))
        model_case(f"{fixture}-{file}-missing", fixture, file, lambda p: p.unlink(), cmd="compress")
        model_case(f"{fixture}-{file}-a-folder", fixture, file, lambda p: (p.unlink(), p.mkdir()), cmd="budget")
    for i, frac in enumerate((0.0, 0.02, 0.1, 0.33, 0.5, 0.77, 0.9, 0.999)):
        model_case(
            f"{fixture}-graph.npz-truncated-{frac}", fixture, "graph.npz", truncate_frac(frac), MODEL_CMDS[i % 5]
        )
    for frac in (0.1, 0.5, 0.95):
        model_case(f"{fixture}-graph.json-truncated-{frac}", fixture, "graph.json", truncate_frac(frac, keep_end=2))
    for seed in range(8):
        model_case(
            f"{fixture}-graph.npz-bitflip-{seed}", fixture, "graph.npz", flip_in_members(seed), MODEL_CMDS[seed % 5]
        )

model_case(
    "graph.json-not-utf8", "model", "graph.json", lambda p: p.write_bytes(p.read_bytes().replace(b"rnn", b"r\xffn"))
)
model_case("graph.json-utf16", "model", "graph.json", lambda p: p.write_bytes(p.read_text().encode("utf-16")))
model_case("graph.json-a-list", "model", "graph.json", lambda p: p.write_text("[1, 2, 3]"))
model_case("graph.json-a-number", "model", "graph.json", lambda p: p.write_text("7"))
model_case("graph.json-null", "model", "graph.json", lambda p: p.write_text("null"))
model_case("graph.json-nested-100000", "model", "graph.json", lambda p: p.write_text("[" * 100000 + "]" * 100000))
model_case(
    "graph.json-provenance-nested-200",
    "model",
    "graph.json",
    json_edit(set_path(("provenance",), json.loads('{"a":' * 200 + "1" + "}" * 200))),
)
model_case(
    "graph.json-too-large", "model", "graph.json", json_edit(set_path(("provenance",), {"pad": "x" * (17 << 20)}))
)

# ---- model folders: graph.json keys ------------------------------------------------------------------
JSON_BAD = {
    ("format",): ["stapes.QGraph", 1, None],
    ("version",): [2, "1", 1.0, True, None],
    ("cell",): [[], "rnn", None],
    ("readout",): [[], 3],
    ("task",): [5, "memorization", [1], {"delay": 2}, {"name": 3}],
    ("provenance",): [[1, 2], "x", 3],
}
json_cases("graph.json-", "model", "graph.json", JSON_BAD)
for key in ("format", "version", "cell", "readout"):
    model_case(f"graph.json-no-{key}", "model", "graph.json", json_edit(del_path((key,))), cmd="export")

CELL_BAD = {
    ("cell", "kind"): ["lstm", 3, None, ["rnn"], {"a": 1}],
    ("cell", "hidden_size"): [7, "6", 6.0, -1, True],
    ("cell", "input_size"): [2, None, 1e300],
    ("cell", "matrices"): [[], {}, {"w": {"lowrank": False}}],
    ("cell", "matrices", "u"): [None, True, {"lowrank": True, "rank": 2}],
    ("cell", "matrices", "u", "lowrank"): ["no", 0, None],
    ("cell", "matrices", "w", "lowrank"): [True],
    ("readout", "mode"): ["sometimes", 1, None],
    ("readout", "activation"): ["relu", ["linear"]],
    ("readout", "output_size"): [3, "2", 0],
}
json_cases("graph.json-", "model", "graph.json", CELL_BAD, ("compress",))
for path in [
    ("cell", "kind"),
    ("cell", "matrices"),
    ("cell", "hidden_size"),
    ("readout", "mode"),
    ("cell", "matrices", "b"),
]:
    model_case(f"graph.json-no-{'.'.join(path)}", "model", "graph.json", json_edit(del_path(path)), "budget")
LOWRANK_BAD = {
    ("cell", "matrices", "u_f", "rank"): [2, 4, "3", None, 3.0],
    ("cell", "matrices", "u_h"): [{"lowrank": True}, {"lowrank": False}],
}
json_cases("lowrank-graph.json-", "lowrank", "graph.json", LOWRANK_BAD)

# ---- model folders: graph.npz arrays ------------------------------------------------------------------
W = np.random.default_rng(3).normal(size=(6, 3))
NPZ_BAD = {
    "complex": W + 1j,
    "complex-zero-imaginary": W.astype(np.complex128),
    "int": np.ones((6, 3), dtype=np.int64),
    "bool": np.ones((6, 3), dtype=bool),
    "strings": np.full((6, 3), "x"),
    "bytes": np.full((6, 3), b"x"),
    "nan": np.where(np.eye(6, 3) > 0, np.nan, W),
    "inf": np.where(np.eye(6, 3) > 0, np.inf, W),
    "wrong-shape": W[:, :2],
    "transposed": W.T,
    "1-d": W.reshape(-1),
    "3-d": W[None],
    "0-d": np.array(1.0),
    "empty": np.zeros((0, 3)),
    "records": np.zeros((6, 3), dtype=[("a", "f8")]),
    "float16-nan": np.full((6, 3), np.nan, dtype=np.float16),
}
for name, value in NPZ_BAD.items():
    model_case(f"graph.npz-rnn.w-{name}", "model", "graph.npz", npz_edit(setitem("cell.w", value)))
model_case(
    "graph.npz-object-array", "model", "graph.npz", npz_edit(setitem("cell.w", np.array([W, "x"], dtype=object)))
)
for key in ("cell.w", "cell.u", "cell.b", "readout.w", "readout.b"):
    model_case(f"graph.npz-no-{key}", "model", "graph.npz", npz_edit(delitem(key)), "export")
model_case("graph.npz-extra-array", "model", "graph.npz", npz_edit(setitem("cell.v", W)))
model_case("graph.npz-readout.b-huge", "model", "graph.npz", npz_edit(setitem("readout.b", np.full(2, 1e308))))
model_case("graph.npz-rnn.b-1e300", "model", "graph.npz", npz_edit(setitem("cell.b", np.full(6, 1e300))))
model_case("graph.npz-readout.w-1e200", "model", "graph.npz", npz_edit(setitem("readout.w", np.full((2, 6), 1e200))))
model_case(
    "graph.npz-rnn.u-1e300", "model", "graph.npz", npz_edit(setitem("cell.u", np.full((6, 6), 1e300))), "quantize"
)
model_case(
    "lowrank-sigma-ascending", "lowrank", "graph.npz", npz_edit(setitem("cell.u_f.sigma", np.array([1.0, 2.0, 3.0])))
)
model_case(
    "lowrank-sigma-negative", "lowrank", "graph.npz", npz_edit(setitem("cell.u_f.sigma", np.array([3.0, 2.0, -1.0])))
)
model_case("lowrank-a-wrong-rank", "lowrank", "graph.npz", npz_edit(setitem("cell.u_h.a", np.ones((6, 2)))))
model_case("lowrank-no-b", "lowrank", "graph.npz", npz_edit(delitem("cell.u_h.b")))


def _lowrank_huge_hidden(a):
    """A low-rank graph of hidden size 5000 in a few hundred kB (its dense U would need 200 MB)."""
    n = 5000
    rng = np.random.default_rng(0)
    a["cell.w"], a["cell.b"], a["readout.w"] = rng.normal(size=(n, 3)), np.zeros(n), np.ones((2, n))
    a["cell.u.a"], a["cell.u.b"], a["cell.u.sigma"] = np.ones((n, 1)), np.ones((1, n)), np.ones(1)
    del a["cell.u"]


def _huge_hidden_meta(meta):
    meta["cell"].update(hidden_size=5000, matrices={**meta["cell"]["matrices"], "u": {"lowrank": True, "rank": 1}})


@case("graph-hidden-5000")
def _(base, work):
    folder = copy(base, "model", work)
    rewrite_npz(folder / "graph.npz", _lowrank_huge_hidden)
    rewrite_json(folder / "graph.json", _huge_hidden_meta)
    return ["quantize", folder, "--out", work / "out"], [folder], work / "out"


def with_npy_shape(raw: bytes, shape: tuple) -> bytes:
    """The bytes of a .npy file with its header declaring `shape` (the data stays as it is)."""
    header_len = int.from_bytes(raw[8:10], "little")
    header = raw[10 : 10 + header_len].decode("latin1")
    start, end = header.index("'shape': ") + 9, header.index("), ") + 1
    new = (header[:start] + repr(tuple(shape)) + header[end:]).rstrip()
    new += " " * (-(10 + len(new) + 1) % 64) + "\n"
    return raw[:8] + len(new).to_bytes(2, "little") + new.encode("latin1") + raw[10 + header_len :]


def _npz_member_header(path: Path, key: str, shape: tuple):
    """Rewrite the .npy header of one member to declare `shape`."""
    with zipfile.ZipFile(path) as zf:
        members = {i.filename: zf.read(i) for i in zf.infolist()}
    members[f"{key}.npy"] = with_npy_shape(members[f"{key}.npy"], shape)
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)


for shape in [(10**6, 10**6), (6, 2), (2**62, 2), (6, -3)]:
    model_case(
        f"graph.npz-header-claims-{'x'.join(map(str, shape))}",
        "model",
        "graph.npz",
        lambda p, s=shape: _npz_member_header(p, "cell.u", s),
    )


def _zip_bomb(path: Path):
    """A deflated member that claims (and would inflate to) 1.1 GiB, in about 1 MB."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        info = zipfile.ZipInfo("cell.w.npy")
        info.compress_type = zipfile.ZIP_DEFLATED
        info.file_size = 0
        zf.writestr(info, b"")
    data = bytearray(path.read_bytes())
    # patch the uncompressed size in both headers to 1.1 GiB (the reader must refuse before inflating)
    size = int(1.1 * (1 << 30)).to_bytes(4, "little")
    local, central = data.find(b"PK\x03\x04"), data.find(b"PK\x01\x02")
    data[local + 22 : local + 26] = size
    data[central + 24 : central + 28] = size
    path.write_bytes(bytes(data))


model_case("graph.npz-claims-1.1GiB", "model", "graph.npz", _zip_bomb)
model_case(
    "graph.npz-not-npy-member", "model", "graph.npz", lambda p: zipfile.ZipFile(p, "a").writestr("notes.txt", "hi")
)
model_case("graph.npz-a-pickle", "model", "graph.npz", lambda p: p.write_bytes(b"\x80\x04\x95" + b"\x00" * 40))
model_case("graph.npz-a-plain-npy", "model", "graph.npz", lambda p: np.save(open(p, "wb"), W))


# A compressed model's compress.json (quantize reads the dense metric it recorded).
for _id, _text in (
    ("garbage", b"{not json"),
    ("not-an-object", b"[1, 2]"),
    ("metric-a-string", b'{"metric_dense": "high", "metric_name": "accuracy"}'),
    ("metric-nan", b'{"metric_dense": NaN, "metric_name": "accuracy"}'),
    ("name-missing", b'{"metric_dense": 0.5}'),
):
    model_case(f"compress.json-{_id}", "lowrank", "compress.json", lambda p, t=_text: p.write_bytes(t))


@case("model-folder-is-a-file")
def _(base, work):
    f = work / "in" / "file"
    f.parent.mkdir(parents=True)
    f.write_text("hello")
    return ["quantize", f, "--out", work / "out"], [f], work / "out"


@case("model-folder-missing")
def _(base, work):
    return ["compress", work / "nope", "--rank", "1", "--out", work / "out"], [], work / "out"


@case("model-folder-is-a-qmodel")
def _(base, work):
    folder = copy(base, "qmodel", work)
    shutil.rmtree(folder / "float")
    return ["quantize", folder, "--out", work / "out"], [folder], work / "out"


@case("qmodel-folder-is-a-model")
def _(base, work):
    folder = copy(base, "model", work)
    return ["emit", folder, "--out", work / "out"], [folder], work / "out"


# ---- QModel folders -----------------------------------------------------------------------------------
for fixture in ("qmodel", "qlowrank"):
    for file in ("qgraph.json", "qgraph.npz"):
        model_case(f"{fixture}-{file}-empty", fixture, file, truncate_to(0), "emit")
        model_case(f"{fixture}-{file}-garbage", fixture, file, lambda p: p.write_bytes(bytes(range(256)) * 3), "budget")
        model_case(f"{fixture}-{file}-missing", fixture, file, lambda p: p.unlink(), "verify")
    for i, frac in enumerate((0.0, 0.05, 0.3, 0.6, 0.98)):
        model_case(
            f"{fixture}-qgraph.npz-truncated-{frac}", fixture, "qgraph.npz", truncate_frac(frac), QMODEL_CMDS[i % 3]
        )
    for frac in (0.2, 0.7):
        model_case(
            f"{fixture}-qgraph.json-truncated-{frac}", fixture, "qgraph.json", truncate_frac(frac, keep_end=2), "emit"
        )
    for seed in range(6):
        model_case(
            f"{fixture}-qgraph.npz-bitflip-{seed}", fixture, "qgraph.npz", flip_in_members(seed), QMODEL_CMDS[seed % 3]
        )

Q_JSON_BAD = {
    ("kind",): ["lstm", 1, ["rnn"], None],
    ("input_fmt",): [None, [16, 14], {"bits": 16}, {"bits": 16, "frac": 14, "x": 1}],
    ("input_fmt", "bits"): [12, "16", 16.0, True],
    ("input_fmt", "frac"): [99, 14.5, "14", [14, 14], None],
    ("gates",): [[], {}, {"h": {}, "f": {}}],
    ("gates", "h"): ["h", None],
    ("gates", "h", "activation"): ["relu", 1, "sigmoid"],
    ("gates", "h", "lowrank"): [1, True, "false"],
    ("tensors",): [{}, []],
    ("tensors", "h.w"): [{"name": "h.w"}, None, {"name": 1, "fmt": {"bits": 16, "frac": 1}}],
    ("tensors", "h.w", "fmt", "frac"): [3, [1], "x", [1.5] * 6],
    ("tensors", "h.w", "fmt", "bits"): [8, 32, 4],
    ("tensors", "h.bias", "fmt", "frac"): [11],
    ("readout",): [None, {"mode": "final"}],
    ("readout", "mode"): ["final", 0],
    ("readout", "out_fmt"): [{"bits": 8, "frac": 3}, {"bits": 16, "frac": [1, 2]}],
    ("hash",): ["0" * 64, 5, ["x"]],
    ("task",): [3, {"name": None}],
}
json_cases("qgraph.json-", "qmodel", "qgraph.json", Q_JSON_BAD, QMODEL_CMDS[:2])
Q_PROVENANCE_BAD = {  # read by verify
    ("provenance",): [[], "p"],
    ("provenance", "ranges"): [[1], "x"],
    ("provenance", "ranges", "input_max"): ["1", None, -1.0, 1e309],
    ("provenance", "metric_dense"): [{"name": "accuracy", "value": "high"}, 3, {"name": 1, "value": 0.5}],
}
json_cases("qgraph.json-", "qmodel", "qgraph.json", Q_PROVENANCE_BAD, ("verify",))
for path in [
    ("kind",),
    ("gates",),
    ("tensors",),
    ("readout",),
    ("input_fmt",),
    ("tensors", "h.u"),
    ("gates", "h", "lowrank"),
]:
    model_case(f"qgraph.json-no-{'.'.join(path)}", "qmodel", "qgraph.json", json_edit(del_path(path)), "emit")
QL_JSON_BAD = {
    ("gates", "f", "z_fmt"): [None, {"bits": 8, "frac": 12}, {"bits": 16, "frac": 70}],
    ("gates", "h", "lowrank"): [False],
}
json_cases("qlowrank-qgraph.json-", "qlowrank", "qgraph.json", QL_JSON_BAD, ("emit",))

QI = np.ones((6, 3), dtype=np.int16)
Q_NPZ_BAD = {
    ("h.w", "float"): QI.astype(np.float64),
    ("h.w", "complex"): QI.astype(np.complex64),
    ("h.w", "bool"): QI.astype(bool),
    ("h.w", "wrong-shape"): QI[:, :2],
    ("h.w", "int64-out-of-range"): QI.astype(np.int64) * 70000,
    ("h.w", "1-d"): QI.reshape(-1),
    ("h.w", "0-d"): np.array(3, dtype=np.int16),
    ("h.u", "overflow"): np.full((6, 6), -32768, dtype=np.int16),
    ("h.bias", "strings"): np.full(6, "1"),
    ("h.x_shift", "too-far"): np.full(6, 100, dtype=np.int8),
    ("h.x_shift", "float"): np.zeros(6),
    ("h.h_shift", "wrong"): np.zeros(6, dtype=np.int8),
    ("readout.shift", "2-d"): np.zeros((2, 1), dtype=np.int8),
    ("readout.w", "empty"): np.zeros((0, 6), dtype=np.int16),
}
for (key, what), value in Q_NPZ_BAD.items():
    model_case(f"qgraph.npz-{key}-{what}", "qmodel", "qgraph.npz", npz_edit(setitem(key, value)), "emit")
for key in ("h.w", "h.u", "readout.shift"):
    model_case(f"qgraph.npz-no-{key}", "qmodel", "qgraph.npz", npz_edit(delitem(key)), "budget")
model_case("qgraph.npz-extra", "qmodel", "qgraph.npz", npz_edit(setitem("h.v", QI)), "emit")
QL_NPZ_BAD = {
    ("f.u.sigma", "complex"): np.array([3, 2, 1], dtype=np.complex128),
    ("f.u.sigma", "ascending"): np.array([1.0, 2.0, 3.0]),
    ("f.u.sigma", "negative"): np.array([3.0, 2.0, -1.0]),
    ("f.u.sigma", "nan"): np.array([3.0, np.nan, 1.0]),
    ("f.u.z_shift", "wrong"): np.zeros(3, dtype=np.int8),
    ("h.u.a", "wrong-rank"): np.ones((6, 2), dtype=np.int8),
}
for (key, what), value in QL_NPZ_BAD.items():
    model_case(f"qlowrank-qgraph.npz-{key}-{what}", "qlowrank", "qgraph.npz", npz_edit(setitem(key, value)), "emit")


@case("qmodel-hash-changed-with-data")
def _(base, work):
    """A consistent edit of one weight (shapes and formats fine): only the content hash notices."""
    folder = copy(base, "qmodel", work)
    rewrite_npz(folder / "qgraph.npz", lambda a: a.__setitem__("h.w", a["h.w"] // 2))
    return ["emit", folder, "--out", work / "out"], [folder], work / "out"


@case("qmodel-float-folder-broken")
def _(base, work):
    folder = copy(base, "qmodel", work)
    truncate_frac(0.5)(folder / "float" / "graph.npz")
    return ["verify", folder, "--sequences", "2"], [folder], None


# ---- calibration files --------------------------------------------------------------------------------
X = np.random.default_rng(1).normal(size=(4, 8, 3))
CALIB_BAD = {
    "all-zero": np.zeros((4, 8, 3)),
    "nan": np.where(X > 1.5, np.nan, X),
    "inf": np.where(X > 1.5, -np.inf, X),
    "complex": X + 0.5j,
    "strings": np.full((4, 8, 3), "1.0"),
    "bool": X > 0,
    "2-d": X[0],
    "4-d": X[None],
    "wrong-inputs": X[:, :, :2],
    "empty-batch": X[:0],
    "empty-time": X[:, :0],
    "0-d": np.array(1.0),
    "records": np.zeros((4, 8, 3), dtype=[("a", "f8")]),
}


def calib_case(id_: str, write, extra=()):
    def make(base, work):
        model = copy(base, "model", work)
        path = work / "in" / "calib.npy"
        write(path)
        return ["quantize", model, "--calibration", path, *extra, "--out", work / "out"], [model, path], work / "out"

    CASES.append(Case(id_, make))


for name, value in CALIB_BAD.items():
    calib_case(f"calibration-{name}", lambda p, v=value: np.save(p, v, allow_pickle=False))
calib_case("calibration-object", lambda p: np.save(p, np.array([X, 1], dtype=object), allow_pickle=True))
calib_case("calibration-empty-file", lambda p: p.write_bytes(b""))
calib_case("calibration-garbage", lambda p: p.write_bytes(b"\x93NUMPY garbage" * 5))
calib_case("calibration-pickle", lambda p: p.write_bytes(b"\x80\x04\x95\x05\x00" + b"\x00" * 20))
calib_case("calibration-npz", lambda p: np.savez(open(p, "wb"), x=X))
calib_case("calibration-text", lambda p: p.write_text("1 2 3\n4 5 6\n"))
calib_case("calibration-a-folder", lambda p: p.mkdir())
calib_case("calibration-missing", lambda p: None)
calib_case("calibration-and-input-range", lambda p: np.save(p, X), extra=("--input-range", "2"))
for frac in (0.0, 0.1, 0.4, 0.7, 0.9, 0.999):
    calib_case(f"calibration-truncated-{frac}", lambda p, f=frac: (np.save(p, X), truncate_frac(f)(p)))
calib_case("calibration-trailing-bytes", lambda p: (np.save(p, X), p.write_bytes(p.read_bytes() + b"\x00" * 8)))


calib_case(
    "calibration-header-claims-huge",
    lambda p: (np.save(p, X), p.write_bytes(with_npy_shape(p.read_bytes(), (10**9, 10**6, 3)))),
)


# ---- ONNX files ---------------------------------------------------------------------------------------
def onnx_case(id_: str, corrupt):
    def make(base, work):
        path = copy(base, "onnx", work)
        corrupt(path)
        return ["import-onnx", path, "--out", work / "out"], [path], work / "out"

    CASES.append(Case(id_, make))


def _onnx_truncate(frac: float):
    """Truncate before the trailing metadata (dropping only metadata would leave a valid model)."""

    def corrupt(p):
        import onnx

        m = onnx.load_model_from_string(p.read_bytes())
        del m.metadata_props[:]
        limit = len(m.SerializeToString())
        p.write_bytes(p.read_bytes()[: int(frac * limit)])

    return corrupt


for frac in (0.0, 0.01, 0.1, 0.25, 0.5, 0.75, 0.9, 0.99):
    onnx_case(f"onnx-truncated-{frac}", _onnx_truncate(frac))
onnx_case("onnx-garbage", lambda p: p.write_bytes(b"\xff" * 100))
onnx_case("onnx-text", lambda p: p.write_text("this is not a model\n"))
onnx_case("onnx-a-folder", lambda p: (p.unlink(), p.mkdir()))
onnx_case("onnx-missing", lambda p: p.unlink())


def _onnx_edit(edit):
    def corrupt(p):
        import onnx

        m = onnx.load_model_from_string(p.read_bytes())
        edit(m)
        p.write_bytes(m.SerializeToString())

    return corrupt


def _onnx_weights(transform):
    def edit(m):
        from onnx import numpy_helper

        init = next(t for t in m.graph.initializer if t.name.endswith("W") or "W" in t.name)
        init.CopyFrom(numpy_helper.from_array(transform(numpy_helper.to_array(init)), init.name))

    return edit


onnx_case("onnx-weights-nan", _onnx_edit(_onnx_weights(lambda a: np.full_like(a, np.nan))))
onnx_case("onnx-weights-inf", _onnx_edit(_onnx_weights(lambda a: np.full_like(a, np.inf))))
onnx_case("onnx-weights-complex", _onnx_edit(_onnx_weights(lambda a: a.astype(np.complex64))))
onnx_case("onnx-weights-int", _onnx_edit(_onnx_weights(lambda a: a.astype(np.int32))))
onnx_case("onnx-weights-wrong-shape", _onnx_edit(_onnx_weights(lambda a: a[..., :1])))


def _external_location(value: str):
    def edit(m):
        t = next(t for t in m.graph.initializer if t.external_data)
        next(kv for kv in t.external_data if kv.key == "location").value = value

    return edit


def onnx_ext_case(id_: str, corrupt):
    """A case on the model whose weights are in weights.bin beside it."""

    def make(base, work):
        import onnx

        folder = copy(base, "onnx_ext", work)
        model = folder / "model.onnx"
        corrupt(folder, lambda edit: _edit_onnx_file(model, edit, onnx))
        return ["import-onnx", model, "--out", work / "out"], [folder], work / "out"

    CASES.append(Case(id_, make))


def _edit_onnx_file(path, edit, onnx):
    m = onnx.load_model(path, load_external_data=False)
    edit(m)
    onnx.save_model(m, path)


onnx_ext_case("onnx-external-missing", lambda folder, edit: (folder / "weights.bin").unlink())
onnx_ext_case("onnx-external-truncated", lambda folder, edit: truncate_frac(0.5)(folder / "weights.bin"))
onnx_ext_case("onnx-external-absolute", lambda folder, edit: edit(_external_location("/etc/passwd")))
onnx_ext_case("onnx-external-outside", lambda folder, edit: edit(_external_location("../../weights.bin")))
onnx_ext_case(
    "onnx-external-a-folder", lambda folder, edit: ((folder / "sub").mkdir(), edit(_external_location("sub")))
)
onnx_case("onnx-no-opset", _onnx_edit(lambda m: m.opset_import.__delitem__(slice(None))))
onnx_case("onnx-no-outputs", _onnx_edit(lambda m: m.graph.output.__delitem__(slice(None))))


# ---- command arguments --------------------------------------------------------------------------------
def arg_case(id_: str, args_of):
    """`args_of(base, work)` -> the argument list (the inputs are the fixtures, never changed)."""

    def make(base, work):
        args = args_of(base, work)
        return args, [base["model"], base["qmodel"], base["taskmodel"]], work / "out"

    CASES.append(Case(id_, make))


NUMBERS_BAD = ["nan", "inf", "-inf", "-1", "1e400", "abc", ""]
TRAIN_ARGS = {
    "--hidden": ["100000", "0", "-5", "1.5", "nan", "4097"],
    "--steps": ["0", "10000000", "1e3"],
    "--batch": ["0", "100000"],
    "--lr": ["nan", "inf", "0", "-1"],
    "--clip": ["nan", "inf", "-1"],
    "--target": ["nan", "inf"],
    "--spectral-radius": ["0", "nan", "1e9"],
    "--threads": ["0", "1000"],
    "--seed": ["-1", "99999999999999999999", "x"],
    "--delay": ["-3", "1000000000"],
    "--rank": ["0", "-2"],
    "--eval-every": ["0"],
}
for flag, values in TRAIN_ARGS.items():
    for v in values:
        arg_case(
            f"train {flag} {v}", lambda b, w, f=flag, v=v: ["train", "--task", "memorization", f, v, "--out", w / "out"]
        )
arg_case(
    "train --param delay=1e9", lambda b, w: ["train", "--param", "delay=1000000000", "--quiet", "--out", w / "out"]
)
arg_case(
    "train batch x sequence too large",
    lambda b, w: ["train", "--hidden", "4096", "--batch", "4096", "--delay", "90000", "--quiet", "--out", w / "out"],
)
arg_case("train unknown task", lambda b, w: ["train", "--task", "nope", "--out", w / "out"])
arg_case(
    "demo --hidden 100000", lambda b, w: ["demo", "--task", "memorization", "--hidden", "100000", "--out", w / "out"]
)
arg_case("demo --seed -1", lambda b, w: ["demo", "--seed", "-1", "--out", w / "out"])
for v in NUMBERS_BAD:
    arg_case(
        f"quantize --input-range {v!r}",
        lambda b, w, v=v: ["quantize", b["model"], "--input-range", v, "--out", w / "out"],
    )
arg_case("quantize --input-range 0", lambda b, w: ["quantize", b["model"], "--input-range", "0", "--out", w / "out"])
arg_case(
    "quantize --input-range 1e300", lambda b, w: ["quantize", b["model"], "--input-range", "1e300", "--out", w / "out"]
)
arg_case(
    "quantize --calib-sequences 0",
    lambda b, w: ["quantize", b["taskmodel"], "--calib-sequences", "0", "--out", w / "out"],
)
arg_case(
    "quantize --calib-sequences 10**9",
    lambda b, w: ["quantize", b["taskmodel"], "--calib-sequences", "1000000000", "--out", w / "out"],
)
arg_case("quantize --weights int4", lambda b, w: ["quantize", b["model"], "--weights", "int4", "--out", w / "out"])
arg_case("quantize --seed nan", lambda b, w: ["quantize", b["taskmodel"], "--seed", "nan", "--out", w / "out"])
for p in [
    "_",
    "_x",
    "__model",
    "Model",
    "_Model",
    "9lives",
    "int",
    "for",
    "a-b",
    "a b",
    "",
    "stp",
    "stp_x",
    "x__y",
    "x_",
    "é",
    "a" * 41,
    "model.h",
]:
    arg_case(f"emit --prefix {p!r}", lambda b, w, p=p: ["emit", b["qmodel"], "--prefix", p, "--out", w / "out"])
for flag, values in {
    "--rank": ["0", "-1", "7", "nan"],
    "--energy": ["0", "1.5", "nan", "inf", "-0.1"],
    "--max-error": ["nan", "-1", "inf"],
    "--max-drop": ["nan", "-0.5"],
    "--finetune": ["-1", "100000000"],
}.items():
    for v in values:
        arg_case(f"compress {flag} {v}", lambda b, w, f=flag, v=v: ["compress", b["model"], f, v, "--out", w / "out"])
for flag, values in {"--ranks": ["0", "-1", "1,nan", ",", "99999"], "--finetune": ["-1"], "--seed": ["-1"]}.items():
    for v in values:
        arg_case(f"sweep {flag} {v}", lambda b, w, f=flag, v=v: ["sweep", b["taskmodel"], f, v, "--out", w / "out"])
for flag, values in {
    "--bits": ["1", "64", "0"],
    "--ranks": ["0"],
    "--sequences": ["0", "10000000"],
    "--kinds": ["svd,foo"],
}.items():
    for v in values:
        arg_case(f"perturb {flag} {v}", lambda b, w, f=flag, v=v: ["perturb", b["taskmodel"], f, v, "--out", w / "out"])
for flag, values in {
    "--sequences": ["0", "-1", "100000000"],
    "--steps": ["0", "1e9"],
    "--rank": ["-1", "5000"],
    "--seed": ["-3"],
}.items():
    for v in values:
        arg_case(f"verify {flag} {v}", lambda b, w, f=flag, v=v: ["verify", b["qmodel"], f, v])
for board in ["nope", "../../etc", "/etc/passwd", "", ".hidden", "a/b", "x" * 200]:
    arg_case(f"budget --board {board[:20]!r}", lambda b, w, x=board: ["budget", b["model"], "--board", x])
arg_case("plan --board nope", lambda b, w: ["plan", b["model"], "--board", "nope"])
for flag, values in {
    "--frame-ms": ["0", "nan", "inf", "-8"],
    "--clock-mhz": ["0", "nan", "inf", "-1"],
    "--max-core": ["0", "101", "nan"],
    "--max-flash": ["inf", "nan", "-1k", "lots", "0"],
    "--max-ram": ["1e400", "-5"],
}.items():
    for v in values:
        arg_case(f"plan {flag} {v}", lambda b, w, f=flag, v=v: ["plan", b["model"], "--board", BOARD, f, v])
for flag, values in {"--frame-ms": ["nan", "0"], "--clock-mhz": ["inf"]}.items():
    for v in values:
        arg_case(f"budget {flag} {v}", lambda b, w, f=flag, v=v: ["budget", b["qmodel"], "--board", BOARD, f, v])
for flag, values in {
    "--frames": ["0", "1000000000"],
    "--timeout": ["0", "nan", "inf"],
    "--seed": ["-1"],
    "--rank": ["-1"],
}.items():
    for v in values:
        arg_case(f"board run {flag} {v}", lambda b, w, f=flag, v=v: ["board", "run", b["qmodel"], f, v])
arg_case("board run --board ../x", lambda b, w: ["board", "run", b["qmodel"], "--board", "../x"])
arg_case("export-onnx --opset 3", lambda b, w: ["export-onnx", b["model"], "--opset", "3", "--out", w / "out"])
arg_case("export-onnx --opset 1000", lambda b, w: ["export-onnx", b["model"], "--opset", "1000", "--out", w / "out"])
arg_case(
    "export-onnx --lowrank maybe", lambda b, w: ["export-onnx", b["model"], "--lowrank", "maybe", "--out", w / "out"]
)
arg_case("paper --workers 0", lambda b, w: ["paper", "--workers", "0", "--out", w / "out"])
arg_case("paper --seeds -1", lambda b, w: ["paper", "--seeds", "-1", "--out", w / "out"])
arg_case("paper --workers nan", lambda b, w: ["paper", "--workers", "nan", "--out", w / "out"])
arg_case("quantize path with NUL", lambda b, w: ["quantize", "a\0b", "--out", w / "out"])
arg_case("quantize empty path", lambda b, w: ["quantize", "", "--out", w / "out"])
arg_case("import-onnx path with NUL", lambda b, w: ["import-onnx", "x\0.onnx", "--out", w / "out"])
arg_case("emit path with NUL", lambda b, w: ["emit", "q\0", "--out", w / "out"])


# ---- the table ------------------------------------------------------------------------------------------
def test_the_table_is_large():
    print(f"\n{len(CASES)} bad-input cases in the table (+ hypothesis mutations and checkpoint cases)")
    assert len(CASES) >= 150
    assert len({c.id for c in CASES}) == len(CASES), "case ids must be unique"


@pytest.mark.parametrize("c", CASES, ids=[c.id for c in CASES])
def test_bad_input_is_one_line_exit_2(base, tmp_path, c):
    args, inputs, out = c.make(base, tmp_path)
    assert_rejected(args, inputs, out)


# ---- hypothesis: mutations of graph.json and qgraph.json --------------------------------------------------
def _paths(obj, prefix=()):
    """Every key path of a JSON object (the load-bearing ones: provenance and task content is free-form)."""
    if isinstance(obj, dict):
        for k, v in obj.items():
            if prefix == () and k in ("provenance", "task"):
                continue
            yield (*prefix, k)
            yield from _paths(v, (*prefix, k))


WRONG_VALUES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=5),
    st.lists(st.integers(0, 3), max_size=3),
    st.just({}),
    st.just({"x": 1}),
)


def _mutation_test(fixture: str, file: str, cmd: str):
    @settings(
        max_examples=40,
        derandomize=True,
        deadline=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    )
    @given(data=st.data())
    def test(base, tmp_path_factory, data):
        meta = json.loads((base[fixture] / file).read_text())
        paths = sorted(_paths(meta))
        path = data.draw(st.sampled_from(paths), label="key")
        d = meta
        for k in path[:-1]:
            d = d[k]
        if path not in OPTIONAL and data.draw(st.booleans(), label="delete"):
            del d[path[-1]]
        else:
            old = d[path[-1]]
            new = data.draw(WRONG_VALUES.filter(lambda v: v != old or type(v) is not type(old)), label="value")
            d[path[-1]] = new
        work = tmp_path_factory.mktemp("mut")
        folder = copy(base, fixture, work)
        (folder / file).write_text(json.dumps(meta))
        args, out = (qmodel_cmd if fixture.startswith("q") else model_cmd)(cmd, folder, work)
        assert_rejected(args, [folder], out)
        MUTATIONS[fixture] = MUTATIONS.get(fixture, 0) + 1

    return test


MUTATIONS: dict[str, int] = {}
OPTIONAL = {("hash",)}  # a QGraph without a content hash is read (older files); a wrong one is not
test_graph_json_mutations = _mutation_test("model", "graph.json", "quantize")
test_lowrank_graph_json_mutations = _mutation_test("lowrank", "graph.json", "compress")
test_qgraph_json_mutations = _mutation_test("qmodel", "qgraph.json", "emit")
test_qlowrank_qgraph_json_mutations = _mutation_test("qlowrank", "qgraph.json", "budget")


@settings(
    max_examples=30,
    derandomize=True,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    fixture=st.sampled_from(["model", "lowrank", "qmodel", "qlowrank"]),
    cut=st.floats(0, 1, exclude_max=True),
    flips=st.lists(st.tuples(st.integers(0, 2**31), st.integers(0, 7)), min_size=0, max_size=3),
)
def test_npz_truncations_and_bit_flips(base, tmp_path_factory, fixture, cut, flips):
    """Hypothesis-drawn damage to the arrays: a truncation anywhere, or bit flips in member data."""
    work = tmp_path_factory.mktemp("npz")
    folder = copy(base, fixture, work)
    path = folder / ("qgraph.npz" if fixture.startswith("q") else "graph.npz")
    data = bytearray(path.read_bytes())
    if flips:
        ranges = [r for r in member_data_ranges(path) if r[1] > r[0]]
        for where, bit in flips:
            start, end = ranges[where % len(ranges)]
            data[start + where % (end - start)] ^= 1 << bit
        if bytes(data) == path.read_bytes():  # two flips of the same bit cancel: truncate instead
            flips = []
    if not flips:
        data = data[: int(cut * (len(data) - 1))]
    path.write_bytes(bytes(data))
    args, out = (qmodel_cmd if fixture.startswith("q") else model_cmd)(
        QMODEL_CMDS[len(data) % 3] if fixture.startswith("q") else MODEL_CMDS[len(data) % 5], folder, work
    )
    assert_rejected(args, [folder], out)
    MUTATIONS["npz"] = MUTATIONS.get("npz", 0) + 1


def test_mutation_count():
    total = sum(MUTATIONS.values())
    print(f"\nhypothesis mutations run: {MUTATIONS} = {total}; with the table: {len(CASES) + total} bad inputs")


# ---- torch checkpoints (no command reads them: through load_checkpoint) -------------------------------------
def _ckpt_state(edit):
    def corrupt(folder):
        import torch

        state = torch.load(folder / "model.pt", weights_only=True)
        state = edit(state)
        torch.save(state, folder / "model.pt")

    return corrupt


def config_edit(edit):
    return lambda folder: rewrite_json(folder / "config.json", edit)


CKPT_CASES = {
    "model.pt-empty": lambda f: (f / "model.pt").write_bytes(b""),
    "model.pt-garbage": lambda f: (f / "model.pt").write_bytes(b"\x80\x02garbage" * 9),
    "model.pt-truncated-10": lambda f: truncate_frac(0.1)(f / "model.pt"),
    "model.pt-truncated-50": lambda f: truncate_frac(0.5)(f / "model.pt"),
    "model.pt-truncated-99": lambda f: truncate_frac(0.99)(f / "model.pt"),
    "model.pt-missing": lambda f: (f / "model.pt").unlink(),
    "model.pt-a-list": _ckpt_state(lambda s: list(s.values())),
    "model.pt-nan": _ckpt_state(lambda s: {k: v * float("nan") for k, v in s.items()}),
    "model.pt-complex": _ckpt_state(lambda s: {k: v.to(__import__("torch").complex64) for k, v in s.items()}),
    "model.pt-int": _ckpt_state(lambda s: {k: v.to(__import__("torch").int32) for k, v in s.items()}),
    "model.pt-not-tensors": _ckpt_state(lambda s: {k: 1.0 for k in s}),
    "model.pt-missing-key": _ckpt_state(lambda s: dict(list(s.items())[1:])),
    "model.pt-wrong-shape": _ckpt_state(lambda s: {k: v[..., :1] for k, v in s.items()}),
    "config.json-empty": lambda f: (f / "config.json").write_text(""),
    "config.json-not-utf8": lambda f: (f / "config.json").write_bytes(b'{"format": "\xff"}'),
    "config.json-nested": lambda f: (f / "config.json").write_text("[" * 50000 + "]" * 50000),
    "config.json-version": config_edit(set_path(("version",), 9)),
    "config.json-model-list": config_edit(set_path(("model",), [1])),
    "config.json-hidden-100000": config_edit(set_path(("model", "hidden_size"), 100000)),
    "config.json-hidden-str": config_edit(set_path(("model", "hidden_size"), "4")),
    "config.json-unknown-key": config_edit(set_path(("model", "colour"), "red")),
    "config.json-cell": config_edit(set_path(("model", "cell"), ["rnn"])),
    "config.json-ranks": config_edit(set_path(("model", "ranks"), [1, 2])),
    "config.json-spectral-radius-inf": lambda f: (f / "config.json").write_text(
        (f / "config.json").read_text().replace('"spectral_radius": 1.0', '"spectral_radius": Infinity')
    ),
    "config.json-gate-bias-str": config_edit(set_path(("model", "gate_bias"), "x")),
}


@pytest.mark.parametrize("name", sorted(CKPT_CASES))
def test_bad_checkpoint_is_one_line_user_error(base, tmp_path, name):
    from stapes.errors import UserError
    from stapes.frontend.train import load_checkpoint

    folder = copy(base, "ckpt", tmp_path)
    CKPT_CASES[name](folder)
    before = tree_hash([folder])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(UserError) as e:
            load_checkpoint(folder)
    assert "\n" not in str(e.value) and str(folder) in str(e.value), str(e.value)
    assert not caught, [str(w.message) for w in caught]
    assert tree_hash([folder]) == before


# ---- a few through a real process: no traceback, exit 2 ------------------------------------------------------
SUBPROCESS_CASES = [
    "graph.npz-rnn.w-complex",
    "qmodel-qgraph.npz-truncated-0.3",
    "calibration-all-zero",
    "emit --prefix '_'",
]


def test_real_processes_exit_2_without_traceback(base, tmp_path):
    by_id = {c.id: c for c in CASES}
    procs = []
    for i, name in enumerate(SUBPROCESS_CASES):
        work = tmp_path / str(i)
        work.mkdir()
        args, inputs, out = by_id[name].make(base, work)
        procs.append(
            (
                name,
                out,
                subprocess.Popen(
                    [sys.executable, "-m", "stapes", *map(str, args)],
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    text=True,
                ),
            )
        )
    for name, out, p in procs:
        _, stderr = p.communicate(timeout=300)
        assert p.returncode == 2, (name, stderr)
        assert "Traceback" not in stderr and len(stderr.strip().splitlines()) == 1, (name, stderr)
        assert out is None or not out.exists()


# ---- what is not a bad input: accepted as before ------------------------------------------------------------
def test_tiny_weights_quantize(base, tmp_path):
    """Weights below 1e-304 (once an OverflowError in frac_to_fit) are valid and quantize to zero."""
    folder = copy(base, "model", tmp_path)
    rewrite_npz(folder / "graph.npz", lambda a: a.__setitem__("cell.u", np.full((6, 6), 1e-310)))
    code, stderr, caught = run_cli(["quantize", folder, "--out", tmp_path / "out"])
    assert code == 0 and not caught, stderr
    from stapes.ir.qgraph import QGraph

    assert not QGraph.load(tmp_path / "out").gates["h"].u.data.any()


def test_cli_limits_agree_with_the_stages():
    from stapes.cli import argtypes
    from stapes.frontend import train
    from stapes.ir import float_graph

    assert argtypes.MAX_HIDDEN == float_graph.MAX_HIDDEN
    for name in ("MAX_TRAIN_STEPS", "MAX_BATCH", "MAX_SEQUENCE_STEPS", "MAX_THREADS", "MAX_BATCH_VALUES"):
        assert getattr(argtypes, name) == getattr(train, name), name


def test_help_documents_the_limits(capsys):
    from stapes.cli import main

    with pytest.raises(SystemExit):
        main(["train", "--help"])
    text = capsys.readouterr().out
    assert "hidden size N, 1..4096" in text and "training steps, 1..1000000" in text and "batch size, 1..4096" in text
