"""What the sender spends: bits per pixel of the coded map or photo of each run (Fig. 7), and complex channel uses per
pixel (Fig. 10's bandwidth): the coded bits carried by QPSK symbols without channel coding (2 bits per use), or a
DeepJSCC network's ``3 k/n``."""

from __future__ import annotations

from typing import Callable, Optional

import numpy as np

from .data import EvaluationData, EvaluationItem
from .distributed import Processes, SingleProcess
from .protocol import ChannelCondition, Method
from .sources import FullImages

__all__ = ["SenderRates"]


class SenderRates:
    """Mean BPP of what the sender codes (Fig. 7): the clean one-hot map (lossless ``map_codec``; every ``ours``
    and ``semantic_map`` run sends it) or the photo at a ``full_image`` run's codec and quality."""

    def __init__(self, data: EvaluationData, preset, map_codec: str, batch_size: int,
                 processes: Optional[Processes] = None, baselines: Optional[dict] = None):
        from ..sender.encoding import SemanticEncoder

        self.data, self.map_codec, self.batch_size = data, map_codec, batch_size
        self.processes = processes or SingleProcess()
        self.encoder = SemanticEncoder.from_preset(preset)
        self.baselines = dict(baselines or {})
        self._photo: dict[tuple[str, int], float] = {}
        self._map: Optional[float] = None

    def _mean(self, value: Callable[[EvaluationItem], float]) -> float:
        """The mean of ``value`` over every item; each process codes its share, the values are gathered exactly and
        averaged in item order."""
        mine = [(i, value(self.data.item(i))) for i in self.processes.shard(range(len(self.data)))]
        return float(np.mean([v for _, v in sorted(self.processes.gather(mine))]))

    def map_bpp(self, item: EvaluationItem) -> float:
        from ..sender.codecs import encode_semantic_map

        instances = None if item.instances is None else item.instances[None]
        planes = self.encoder.encode(item.labels[None], instances).one_hot[0]
        return encode_semantic_map(planes.numpy(), self.map_codec, "one_hot").bpp

    def channel_uses(self, method: Method) -> float:
        """Complex channel uses per pixel of the method's transmission."""
        from ..channel.digital import BITS_PER_QPSK_SYMBOL

        if method.kind == "deepjscc":
            return self.baselines[method.baseline].channel_uses_per_pixel
        return self(method) / BITS_PER_QPSK_SYMBOL

    def __call__(self, method: Method) -> Optional[float]:
        """Bits per pixel; ``None`` for DeepJSCC, which sends analog symbols, not bits."""
        if method.kind == "deepjscc":
            return None
        if method.kind != "full_image":
            if self._map is None:
                self._map = self._mean(self.map_bpp)
            return self._map
        key = (method.codec, method.quality)
        if key not in self._photo:
            coder = FullImages(method.codec, method.quality, ChannelCondition(), seed=0)  # no channel: no seed used
            self._photo[key] = self._mean(lambda item: coder.decoded(item).bpp)
        return self._photo[key]
