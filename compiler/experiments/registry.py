"""The suite: the paper's claims R1-R7 and the on-the-fly rank (OTF), in the report's order.

Each experiment is a module constant of its `exp_*` module; to add one, define it there and list
it here.
"""

from __future__ import annotations

from stapes.experiments.exp_cost import R7
from stapes.experiments.exp_memory import R3, R4, R5
from stapes.experiments.exp_onthefly import OTF
from stapes.experiments.exp_perturb import R6
from stapes.experiments.exp_rank import R1, R2
from stapes.experiments.experiment import Experiment

EXPERIMENTS: tuple[Experiment, ...] = (R1, R2, R3, R4, R5, R6, R7, OTF)
