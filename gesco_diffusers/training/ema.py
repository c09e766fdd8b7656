"""Exponential moving average of the U-Net weights (paper Sec. IV-A: "decay equal to 0.9999").

diffusers' ``EMAModel`` never uses a constant decay: with ``use_ema_warmup=False`` its decay is still
``min(decay, (1 + n) / (10 + n))`` and the first update copies the weights (decay 0). The paper and the authors' code
(reference doc 5) update ``ema <- d * ema + (1 - d) * param`` with the same ``d = 0.9999`` after every optimizer step
from the first one, starting from the initial weights. :class:`ConstantDecayEMAModel` is diffusers' ``EMAModel`` with
exactly that rule; the other schedules stay available through :func:`build_ema`.
"""

from __future__ import annotations

from typing import Iterable, Optional

import torch
from diffusers.training_utils import EMAModel

__all__ = ["EMA_SCHEDULES", "ConstantDecayEMAModel", "build_ema"]

#: ``constant``: the paper's rule; ``diffusers``: ``min(decay, (1+n)/(10+n))``;
#: ``warmup``: ``1 - (1 + n/inv_gamma)^-power``.
EMA_SCHEDULES = ("constant", "diffusers", "warmup")


class ConstantDecayEMAModel(EMAModel):
    """``EMAModel`` whose decay is ``decay`` at every update after ``update_after_step`` updates (copies before)."""

    def get_decay(self, optimization_step: int) -> float:
        return 0.0 if optimization_step <= self.update_after_step else float(self.decay)


def build_ema(
    parameters: Iterable[torch.nn.Parameter],
    decay: float = 0.9999,
    schedule: str = "constant",
    inv_gamma: float = 1.0,
    power: float = 2 / 3,
    model_cls: Optional[type] = None,
    model_config: Optional[dict] = None,
) -> EMAModel:
    """An EMA of ``parameters`` with the given decay ``schedule`` (see :data:`EMA_SCHEDULES`)."""
    if not 0.0 <= decay <= 1.0:
        raise ValueError(f"decay must lie in [0, 1], got {decay}")
    if schedule not in EMA_SCHEDULES:
        raise ValueError(f"unknown EMA schedule {schedule!r}; choose from {EMA_SCHEDULES}")
    cls = ConstantDecayEMAModel if schedule == "constant" else EMAModel
    return cls(parameters, decay=decay, use_ema_warmup=schedule == "warmup", inv_gamma=inv_gamma, power=power,
               model_cls=model_cls, model_config=model_config)
