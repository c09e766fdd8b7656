"""Monocular depth with DPT (Table V, Figs. 5 and 6): the depth maps compared by :mod:`.depth_error`."""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F

from ._inputs import ImageInput, as_image_batch
from ._pretrained import PretrainedVisionModel
from .depth_error import DepthRMSE


class DepthEstimator(PretrainedVisionModel):
    """``DPTForDepthEstimation`` + ``DPTImageProcessor`` (e.g. a local copy of ``Intel/dpt-large``).

    The processor resizes the images to the network's input size; the predicted (relative) depth is resized back
    bicubically to the input size, as in the transformers depth-estimation examples.
    """

    model_class = "DPTForDepthEstimation"
    default_processor = "DPTImageProcessor"
    what = "DPT depth estimator"

    @torch.no_grad()
    def predict(self, images: ImageInput, output_size: Optional[tuple[int, int]] = None) -> torch.Tensor:
        """Relative depth ``(B, H, W)`` float32 at ``output_size`` (default: the input size)."""
        x = as_image_batch(images)
        size = tuple(output_size) if output_size is not None else tuple(x.shape[-2:])
        maps = []
        for chunk in self._chunks(x):
            depth = self.model(**self._model_inputs(chunk)).predicted_depth.float()
            maps.append(F.interpolate(depth[:, None], size=size, mode="bicubic", align_corners=False)[:, 0].cpu())
        return torch.cat(maps)

    def update(self, metric: DepthRMSE, generated: ImageInput, originals: ImageInput) -> DepthRMSE:
        """Add one batch: depth on ``generated`` vs depth on ``originals`` (the reference), both at the generated
        resolution."""
        generated = as_image_batch(generated, "generated")
        reference = self.predict(originals, output_size=tuple(generated.shape[-2:]))
        if reference.shape[0] != generated.shape[0]:
            raise ValueError(f"{generated.shape[0]} generated images for {reference.shape[0]} originals")
        return metric.update(self.predict(generated), reference)

    def depth_rmse(self, generated: ImageInput, originals: ImageInput, align: bool = True) -> float:
        """Mean aligned depth RMSE of ``generated`` against ``originals`` (Table V)."""
        return self.update(DepthRMSE(align), generated, originals).compute()
