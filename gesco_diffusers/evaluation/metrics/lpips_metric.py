"""LPIPS (Zhang et al. 2018), the perceptual distance of Tables I, IV, VI-VIII and Fig. 7.

Two uses:

* :func:`lpips_distance`: LPIPS between each generated image and its original (the paper's fidelity score);
* :func:`lpips_diversity`: mean LPIPS over all unordered pairs of images generated *from the same map*, the
  diversity score SDM reports ("LPIPS diversity"; higher = more varied samples).

The ``lpips`` package ships its calibrated linear heads, but its backbone (AlexNet/VGG16/SqueezeNet 1.1 ImageNet
weights) comes from torchvision's model zoo, which cannot be downloaded at evaluation time. :class:`LPIPSMetric`
therefore builds the package's network with a random trunk and loads the torchvision weights itself from a local
file: by default the torch hub cache (``<torch hub dir>/checkpoints/alexnet-owt-7be5be79.pth`` for AlexNet), where
torchvision would have put them. ``pretrained_backbone=False`` keeps the random trunk (tests only: the values are
then not LPIPS).
"""

from __future__ import annotations

import os
import re
import warnings
from functools import lru_cache
from itertools import combinations
from pathlib import Path
from typing import Optional, Union

import torch

from ._inputs import ImageInput, as_image_batch, same_size_pairs
from ._pretrained import prepare_model, resolve_device


def _torchvision_weights_url(net: str) -> str:
    from torchvision import models

    enums = {
        "alex": models.AlexNet_Weights,
        "vgg": models.VGG16_Weights,
        "squeeze": models.SqueezeNet1_1_Weights,
    }
    return enums[net].IMAGENET1K_V1.url


def default_backbone_weights_path(net: str = "alex") -> Path:
    """Where torchvision caches the ImageNet weights of the LPIPS backbone ``net``."""
    return Path(torch.hub.get_dir()) / "checkpoints" / _torchvision_weights_url(net).rsplit("/", 1)[-1]


class LPIPSMetric(torch.nn.Module):
    """The LPIPS network (v0.1 linear heads) with a backbone loaded from a local file.

    Args:
        net: ``"alex"`` (the default of LPIPS and of the paper's tables), ``"vgg"`` or ``"squeeze"``.
        pretrained_backbone: load the ImageNet backbone; ``False`` leaves it random (tests only).
        backbone_weights: path of the torchvision state dict (default :func:`default_backbone_weights_path`).
        device: where the network runs (default CPU).
    """

    def __init__(
        self,
        net: str = "alex",
        *,
        pretrained_backbone: bool = True,
        backbone_weights: Optional[Union[str, os.PathLike]] = None,
        device: Optional[Union[str, torch.device]] = None,
    ):
        super().__init__()
        try:
            import lpips
        except ImportError as error:
            raise ModuleNotFoundError("LPIPS needs the lpips package: pip install gesco-diffusers[metrics]") from error
        if net not in ("alex", "vgg", "squeeze"):
            raise ValueError(f"net must be 'alex', 'vgg' or 'squeeze', got {net!r}")
        path = None
        if pretrained_backbone:
            path = Path(backbone_weights) if backbone_weights is not None else default_backbone_weights_path(net)
            if not path.is_file():
                raise FileNotFoundError(
                    f"LPIPS backbone weights not found at {path}. Nothing can be downloaded at evaluation time: fetch "
                    f"{_torchvision_weights_url(net)} on a machine with internet and put it at "
                    f"{default_backbone_weights_path(net)} (or pass backbone_weights=PATH)."
                )
        with warnings.catch_warnings():  # lpips still passes torchvision's deprecated `pretrained=` argument
            warnings.simplefilter("ignore", UserWarning)
            # pnet_rand=True: never let torchvision try to download; pretrained=True: the shipped linear heads.
            model = lpips.LPIPS(net=net, pretrained=True, pnet_rand=True, verbose=False)
        if path is not None:
            self._load_backbone(model, path)
        self.net_name = net
        self.model = prepare_model(model, resolve_device(device))

    @staticmethod
    def _load_backbone(model: torch.nn.Module, path: Path) -> None:
        """Copy torchvision's ``features.<i>.*`` tensors into lpips' ``slice<k>.<i>.*`` (same layer indices)."""
        source = torch.load(path, map_location="cpu", weights_only=True)
        target = model.net.state_dict()
        mapped = {}
        for key in target:
            match = re.fullmatch(r"slice\d+\.(\d+\..+)", key)
            source_key = f"features.{match.group(1)}" if match else key
            if source_key not in source:
                raise ValueError(f"{path} is not a torchvision state dict of this backbone (missing {source_key})")
            mapped[key] = source[source_key]
        model.net.load_state_dict(mapped)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @torch.no_grad()
    def forward(self, images: ImageInput, references: ImageInput) -> torch.Tensor:
        """LPIPS of each pair: ``(B,)`` for images and references of shape ``(B, 3, H, W)`` in ``[0, 1]``."""
        x = as_image_batch(images, "images")
        y = as_image_batch(references, "references")
        same_size_pairs(x, y, ("images", "references"))
        # normalize=True: the network expects [-1, 1]; it maps [0, 1] inputs with 2x - 1.
        return self.model(x.to(self.device), y.to(self.device), normalize=True).flatten().cpu()


@lru_cache(maxsize=1)
def _default_metric() -> LPIPSMetric:
    return LPIPSMetric("alex")


def lpips_distance(images: ImageInput, references: ImageInput, metric: Optional[LPIPSMetric] = None) -> torch.Tensor:
    """LPIPS between each image and its reference, ``(B,)`` (default metric: AlexNet, weights from the hub cache)."""
    return (metric or _default_metric())(images, references)


def lpips_diversity(samples: ImageInput, metric: Optional[LPIPSMetric] = None, batch_size: int = 32) -> float:
    """LPIPS diversity: mean LPIPS over all ``n (n - 1) / 2`` unordered pairs of ``n >= 2`` samples of one map."""
    x = as_image_batch(samples, "samples")
    if x.shape[0] < 2:
        raise ValueError(f"lpips_diversity needs at least 2 samples, got {x.shape[0]}")
    metric = metric or _default_metric()
    pairs = torch.tensor(list(combinations(range(x.shape[0]), 2)))
    distances = [
        metric(x[chunk[:, 0]], x[chunk[:, 1]]) for chunk in torch.split(pairs, batch_size)
    ]
    return torch.cat(distances).mean().item()
