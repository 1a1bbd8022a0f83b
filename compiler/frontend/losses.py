"""Training losses (torch), chosen by a task's ``loss_kind``: the tasks themselves stay numpy-only."""

from __future__ import annotations

import torch
from torch.nn import functional as F

from stapes.tasks import Batch, Task


def masked_cross_entropy(outputs, batch: Batch):
    """Mean cross entropy of logits (B, T, K) over the masked steps, or of every step / sequence
    ((B, T, K) or (B, K)) when the batch has no mask."""
    y = torch.as_tensor(batch.y, device=outputs.device)
    if batch.mask is None:
        return F.cross_entropy(outputs.reshape(-1, outputs.shape[-1]), y.reshape(-1))
    mask = torch.as_tensor(batch.mask, device=outputs.device)
    return F.cross_entropy(outputs[mask], y[mask])


def binary_cross_entropy(outputs, batch: Batch):
    """Mean binary cross entropy of probabilities (sigmoid outputs) against 0/1 targets."""
    return F.binary_cross_entropy(outputs, torch.as_tensor(batch.y, device=outputs.device, dtype=outputs.dtype))


def mean_squared_error(outputs, batch: Batch):
    """Mean squared error against the targets (e.g. denoising band gains)."""
    y = torch.as_tensor(batch.y, device=outputs.device, dtype=outputs.dtype)
    return torch.mean((outputs - y) ** 2)


LOSSES = {"ce": masked_cross_entropy, "bce": binary_cross_entropy, "mse": mean_squared_error}


def task_loss(task: Task, outputs, batch: Batch):
    """The training loss of `task` on `outputs` (a torch tensor) for `batch`."""
    return LOSSES[task.loss_kind](outputs, batch)
