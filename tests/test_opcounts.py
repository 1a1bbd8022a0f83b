"""Op counts: the analytic formula = the reference's counts = the C counters (STP_COUNT_OPS)."""

import pytest

from stapes.fixed.reference import OP_KINDS, analytic_ops, cell_ops, frame_ops, run_reference
from stapes.host import build, run_c, run_runtime
from stapes.host.random_models import random_inputs, random_qgraph

MODELS = [
    dict(kind="rnn", hidden=9, inputs=3, outputs=2),
    dict(kind="rnn", hidden=9, inputs=3, outputs=2, rank=3, readout_mode="final"),
    dict(kind="mgu", hidden=6, inputs=2, outputs=1, readout_activation="sigmoid", weights="int8"),
    dict(kind="mgu", hidden=6, inputs=2, outputs=3, rank=4),
]


@pytest.mark.parametrize("spec", MODELS)
def test_three_counts_equal(spec):
    q = random_qgraph(1, **spec)
    x = random_inputs(1, q, batch=3, steps=20)
    for rank in [None, 1, q.rank] if q.lowrank else [None]:
        ref = run_reference(q, x, rank=rank)
        _, _, c_ops = run_runtime(q, x, rank=rank, count_ops=True)
        assert ref.ops == c_ops == analytic_ops(q, 20, 3, rank)


def test_generated_code_counts_and_frame_formula():
    q = random_qgraph(2, kind="mgu", hidden=5, inputs=2, outputs=2, rank=2)
    x = random_inputs(2, q, batch=2, steps=15)
    module = build(q, prefix="cnt", count_ops=True)
    _, _, ops = run_c(q, x, prefix="cnt", module=module)
    assert ops == analytic_ops(q, 15, 2)
    _, _, ops_frames = run_c(q, x, per_frame=True, prefix="cnt", module=module)
    assert ops_frames == {k: 2 * 15 * frame_ops(q)[k] for k in OP_KINDS}


def test_formula_by_hand():
    """RNN, dense, N=4, I=2, O=1: W x 8 + U h 16 MACs; 2 shift + 2 add + 1 sat + 1 lut per row."""
    q = random_qgraph(3, kind="rnn", hidden=4, inputs=2, outputs=1)
    assert cell_ops(q) == {"mac": 24, "add": 8, "shift": 8, "sat": 4, "lut": 4, "mul": 0}
    assert frame_ops(q) == {"mac": 28, "add": 9, "shift": 9, "sat": 5, "lut": 4, "mul": 0}
    lr = random_qgraph(3, kind="rnn", hidden=4, inputs=2, outputs=1, rank=1)
    assert cell_ops(lr)["mac"] == 8 + 2 * 4 * 1
