"""Object detection with DETR (Table V, Figs. 5, 6 and 10) for the detection mAP of regenerated images.

Protocol (GESCO, Sec. IV-B): DETR's detections on the *original* image, kept above ``reference_threshold``, are the
reference boxes; DETR's detections on the regenerated image, with their scores, are the predictions; the score is
the box mAP of :mod:`.average_precision`. Boxes of both are expressed at the generated image's resolution.
"""

from __future__ import annotations

from typing import Optional, Sequence

import torch

from ._inputs import ImageInput, as_image_batch
from ._pretrained import PretrainedVisionModel
from .average_precision import COCO_IOU_THRESHOLDS, DetectionAPResult, DetectionMAP


class DetrDetector(PretrainedVisionModel):
    """``DetrForObjectDetection`` + ``DetrImageProcessor`` (e.g. a local copy of ``facebook/detr-resnet-50``).

    Args:
        model: a DETR model in eval mode.
        image_processor: its ``DetrImageProcessor`` (resizing, normalisation, ``post_process_object_detection``).
        batch_size: images per forward pass.
        classes: if given, only detections of these class ids are kept (e.g. the traffic classes of Table V).
    """

    model_class = "DetrForObjectDetection"
    default_processor = "DetrImageProcessor"
    what = "DETR detector"

    def __init__(self, model, image_processor, *, batch_size: int = 8, classes: Optional[Sequence[int]] = None):
        super().__init__(model, image_processor, batch_size=batch_size)
        self.classes = None if classes is None else torch.as_tensor(list(classes), dtype=torch.long)

    @torch.no_grad()
    def detect(
        self, images: ImageInput, threshold: float = 0.5, target_size: Optional[tuple[int, int]] = None
    ) -> list[dict[str, torch.Tensor]]:
        """Detections per image: ``boxes`` ``(N, 4)`` absolute ``(x0, y0, x1, y1)`` at ``target_size`` (default:
        the input size), ``scores`` ``(N,)`` and ``labels`` ``(N,)``, keeping scores above ``threshold``."""
        if not 0.0 <= threshold < 1.0:
            raise ValueError(f"threshold must be in [0, 1), got {threshold}")
        x = as_image_batch(images)
        size = tuple(target_size) if target_size is not None else tuple(x.shape[-2:])
        detections = []
        for chunk in self._chunks(x):
            outputs = self.model(**self._model_inputs(chunk))
            outputs.logits, outputs.pred_boxes = outputs.logits.float(), outputs.pred_boxes.float()
            results = self.image_processor.post_process_object_detection(
                outputs, threshold=threshold, target_sizes=[size] * chunk.shape[0]
            )
            for result in results:
                result = {k: result[k].detach().cpu() for k in ("boxes", "scores", "labels")}
                if self.classes is not None:
                    keep = torch.isin(result["labels"], self.classes)
                    result = {k: v[keep] for k, v in result.items()}
                detections.append(result)
        return detections

    def update(
        self,
        metric: DetectionMAP,
        generated: ImageInput,
        originals: ImageInput,
        *,
        reference_threshold: float = 0.7,
        prediction_threshold: float = 0.05,
    ) -> DetectionMAP:
        """Add one batch: detections on ``originals`` (score > ``reference_threshold``) are the references of the
        detections on ``generated`` (score > ``prediction_threshold``)."""
        generated = as_image_batch(generated, "generated")
        originals = as_image_batch(originals, "originals")
        if generated.shape[0] != originals.shape[0]:
            raise ValueError(f"{generated.shape[0]} generated images for {originals.shape[0]} originals")
        size = tuple(generated.shape[-2:])
        references = self.detect(originals, reference_threshold, target_size=size)
        predictions = self.detect(generated, prediction_threshold)
        return metric.update(predictions, references)

    def detection_map(
        self,
        generated: ImageInput,
        originals: ImageInput,
        *,
        reference_threshold: float = 0.7,
        prediction_threshold: float = 0.05,
        iou_thresholds: Sequence[float] = COCO_IOU_THRESHOLDS,
    ) -> DetectionAPResult:
        """mAP (and mAP50) of the detections on ``generated`` against those on ``originals`` (Table V)."""
        metric = DetectionMAP(iou_thresholds)
        self.update(metric, generated, originals, reference_threshold=reference_threshold,
                    prediction_threshold=prediction_threshold)
        return metric.compute()
