"""Running compiled C in-process: the generated model (``run_c``) or the runtime alone (``run_runtime``).

``run_c`` runs a batch of sequences through a module of :func:`stapes.host.cbuild.build` in one C
call (or one call per frame); ``run_runtime`` fills the runtime's ``stp_model_t`` from
``stapes.emit.model_desc.describe`` at run time, so random models need no compilation (tests,
soak). Both return (outputs, states, op counts or None).
"""

from __future__ import annotations

import numpy as np

from stapes.emit.model_desc import CArray, assign, describe
from stapes.errors import CheckFailed, UserError
from stapes.fixed.reference import OP_KINDS, check_input
from stapes.host.cbuild import build, build_runtime
from stapes.ir.contract import scratch_elements
from stapes.ir.qgraph import QGraph


def _read_ops(lib) -> dict:
    return {k: int(getattr(lib.stp_ops, k)) for k in OP_KINDS}


def _zero_ops(lib) -> None:
    for k in OP_KINDS:
        setattr(lib.stp_ops, k, 0)


def out_shape(q: QGraph, bsz: int, steps: int) -> tuple:
    """The shape of the outputs of `bsz` sequences of `steps` frames."""
    return (bsz, q.output_size) if q.readout.mode == "final" else (bsz, steps, q.output_size)


def _ptr(ffi, ctype: str, arr: np.ndarray):
    return ffi.cast(ctype, ffi.from_buffer(arr))


def _check_rc(lib, rc: int, rank) -> None:
    if rc == lib.STP_ERR_RANK:
        raise UserError(f"rank {rank} rejected by the C runtime")
    if rc != lib.STP_OK:
        raise CheckFailed(f"C runtime returned status {rc}")


def run_c(
    qgraph: QGraph,
    x_q: np.ndarray,
    per_frame: bool = False,
    rank: int | None = None,
    prefix: str = "model",
    module=None,
):
    """Run the generated C on x_q int16 (B, T, I) -> (outputs, states, ops).

    One C call for the whole batch, or with per_frame one `<prefix>_step_rank` call per frame
    (the streaming API; its readout then runs every frame, also for a final readout, whose output
    is the last frame's). `ops` is the counters' total (None unless `module` was built with
    count_ops)."""
    x_q = np.ascontiguousarray(check_input(qgraph, x_q))
    r = qgraph.check_rank(rank)
    rank_arg = 0 if rank is None else r
    mod = module if module is not None else build(qgraph, prefix)
    ffi, lib = mod.ffi, mod.lib
    counting = hasattr(lib, "stp_ops")
    if counting:
        _zero_ops(lib)
    bsz, steps, _ = x_q.shape
    n, o = qgraph.hidden_size, qgraph.output_size
    states = np.zeros((bsz, steps, n), dtype=np.int16)
    if not per_frame:
        y = np.zeros(out_shape(qgraph, bsz, steps), dtype=np.int16)
        rc = lib.stp_host_run_batch(
            _ptr(ffi, "int16_t *", x_q), bsz, steps, _ptr(ffi, "int16_t *", y), _ptr(ffi, "int16_t *", states), rank_arg
        )
        _check_rc(lib, rc, rank)
        return y, states, (_read_ops(lib) if counting else None)
    ys = np.zeros((bsz, steps, o), dtype=np.int16)
    state = np.zeros(n, dtype=np.int16)
    scratch = ffi.new("int16_t[]", scratch_elements(qgraph.kind, n, qgraph.rank))
    step = getattr(lib, f"{prefix}_step_rank")
    sp = _ptr(ffi, "int16_t *", state)
    for b in range(bsz):
        getattr(lib, f"{prefix}_reset")(sp)
        for t in range(steps):
            yp = _ptr(ffi, "int16_t *", ys[b, t])
            _check_rc(lib, step(_ptr(ffi, "const int16_t *", x_q[b, t]), sp, yp, scratch, rank_arg), rank)
            states[b, t] = state
    y = ys[:, -1] if qgraph.readout.mode == "final" else ys
    return y, states, (_read_ops(lib) if counting else None)


def runtime_model(ffi, q: QGraph) -> tuple[object, list]:
    """A cffi ``stp_model_t *`` filled from ``describe(q)``, and the arrays it points to (keep
    them alive as long as the struct)."""
    keep: list[np.ndarray] = []

    def pointer(a: CArray):
        keep.append(np.ascontiguousarray(a.data))
        return _ptr(ffi, f"const {a.ctype} *", keep[-1])

    m = ffi.new("stp_model_t *")
    assign(describe(q).model, m, pointer)
    return m, keep


def run_runtime(qgraph: QGraph, x_q: np.ndarray, rank: int | None = None, count_ops: bool = False):
    """Run a QGraph through the compiled runtime (no code generation): (outputs, states, ops)."""
    x_q = np.ascontiguousarray(check_input(qgraph, x_q))
    r = qgraph.check_rank(rank)
    mod = build_runtime(count_ops)
    ffi, lib = mod.ffi, mod.lib
    model, _keep = runtime_model(ffi, qgraph)
    if count_ops:
        _zero_ops(lib)
    bsz, steps, _ = x_q.shape
    n = qgraph.hidden_size
    size = scratch_elements(qgraph.kind, n, qgraph.rank)
    if lib.stp_model_scratch_size(model) != size:
        raise CheckFailed(f"stp_model_scratch_size is {lib.stp_model_scratch_size(model)}, the contract says {size}")
    y = np.zeros(out_shape(qgraph, bsz, steps), dtype=np.int16)
    states = np.zeros((bsz, steps, n), dtype=np.int16)
    state = np.zeros(n, dtype=np.int16)
    scratch = ffi.new("int16_t[]", size)
    for b in range(bsz):
        state[:] = 0
        rc = lib.stp_model_run(
            model,
            _ptr(ffi, "int16_t *", x_q[b]),
            steps,
            _ptr(ffi, "int16_t *", state),
            _ptr(ffi, "int16_t *", y[b]),
            _ptr(ffi, "int16_t *", states[b]),
            scratch,
            0 if rank is None else r,
        )
        _check_rc(lib, rc, rank)
    return y, states, (_read_ops(lib) if count_ops else None)
