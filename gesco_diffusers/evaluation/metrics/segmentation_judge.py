"""The segmentation "judge" of the mIoU protocol (Sec. IV-A): a pretrained segmenter applied to generated images.

The paper computes Eq. 16 "on the segmentation maps of the generated images obtained through a pretrained model"
(DRN-D-105 on Cityscapes, MaskFormer on COCO-Stuff) and compares them with "the map extracted from the original
image". Both references are supported:

* ``reference="labels"``: the ground-truth label map (mapped into the judge's id space with ``label_id_map``);
* ``reference="judge_on_original"``: the judge's own prediction on the original photo.

Any ``transformers`` semantic-segmentation model works (SegFormer, the CamVid judge shipped with this package, any
``AutoModelForSemanticSegmentation``): logits are upsampled bilinearly to the input size, so maps come out at the
generation resolution.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Iterator, Literal, Optional, Sequence, Union

import torch
import torch.nn.functional as F

from ._inputs import ImageInput, LabelInput, as_image_batch, as_label_tensor, check_batch_size
from ._pretrained import PathOrId, load_pretrained, prepare_model, read_json, resolve_device
from .miou import ConfusionMatrix, MIoUResult

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

#: Ignore value of the Cityscapes train-id space.
CITYSCAPES_IGNORE_TRAIN_ID = 255
#: Cityscapes label id (0..33, plus 34 = "license plate", the 35 ids of the ``cityscapes`` preset) -> the 19 train
#: ids that Cityscapes segmenters predict (road 0, sidewalk 1, building 2, wall 3, fence 4, pole 5, traffic light 6,
#: traffic sign 7, vegetation 8, terrain 9, sky 10, person 11, rider 12, car 13, truck 14, bus 15, train 16,
#: motorcycle 17, bicycle 18); every other id -> 255 (ignored), as in cityscapesScripts' ``labels.py``.
CITYSCAPES_LABEL_ID_TO_TRAIN_ID: tuple[int, ...] = (
    255, 255, 255, 255, 255, 255, 255, 0, 1, 255, 255, 2, 3, 4, 255, 255, 255, 5, 255, 6, 7, 8, 9, 10, 11, 12, 13,
    14, 15, 255, 255, 16, 17, 18, 255,
)

ReferenceMode = Literal["labels", "judge_on_original"]


def default_camvid_judge_path(check_exists: bool = True) -> Path:
    """Folder of the CamVid SegFormer judge shipped in ``gesco_diffusers/assets/judge/camvid-segformer``."""
    path = Path(str(resources.files("gesco_diffusers").joinpath("assets/judge/camvid-segformer")))
    if check_exists and not (path / "config.json").is_file():
        raise FileNotFoundError(
            f"the CamVid judge is not installed at {path}; train it with `python training/train_judge.py`"
        )
    return path


class JudgeFeatureExtractor(torch.nn.Module):
    """Images in ``[0, 1]`` -> pooled encoder features of a :class:`SegmentationJudge`, as the feature network of
    :class:`~gesco_diffusers.evaluation.metrics.FIDMetric`.

    The Frechet distance of these features between generated and real images ("judge FD") is a realism figure that a
    blurry layout cannot game the way judge mIoU can. It is **not comparable to FID**: other network, other features
    (FID needs the Inception weights, which cannot be downloaded here).
    """

    def __init__(self, judge: "SegmentationJudge"):
        super().__init__()
        self.judge = judge
        self.judge_model = judge.model  # registered, so FIDMetric can move and freeze it

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.judge.pooled_features(images)


class SegmentationJudge:
    """Segments images with a pretrained semantic-segmentation network and scores them with mIoU (Eq. 16).

    Args:
        model: a ``transformers`` semantic-segmentation model whose output has ``.logits`` of shape
            ``(B, K, h, w)`` (any ``h, w``; they are upsampled to the input or requested size).
        image_mean, image_std: per-channel normalisation applied to ``[0, 1]`` RGB inputs.
        ignore_index: the id of unevaluated pixels in the judge's id space (reference labels after
            ``label_id_map``); ``None`` if every pixel is evaluated.
        label_id_map: optional lookup table from dataset label ids to judge ids (index = dataset id), e.g.
            :data:`CITYSCAPES_LABEL_ID_TO_TRAIN_ID`; applied to reference label maps only.
        processing_size: optional ``(H, W)`` the images are resized to before the network (for judges trained at a
            fixed resolution); predictions are still returned at the input (or requested) size.
        batch_size: images per forward pass.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        *,
        image_mean: Sequence[float] = IMAGENET_MEAN,
        image_std: Sequence[float] = IMAGENET_STD,
        ignore_index: Optional[int] = 255,
        label_id_map: Optional[Sequence[int]] = None,
        processing_size: Optional[tuple[int, int]] = None,
        batch_size: int = 16,
    ):
        num_labels = getattr(getattr(model, "config", None), "num_labels", None)
        if not isinstance(num_labels, int) or num_labels < 1:
            raise TypeError("model must be a transformers segmentation model with config.num_labels")
        if len(image_mean) != 3 or len(image_std) != 3 or min(image_std) <= 0:
            raise ValueError("image_mean and image_std need 3 values each, std > 0")
        if ignore_index is not None and 0 <= ignore_index < num_labels:
            raise ValueError(f"ignore_index {ignore_index} collides with a predicted class id (0..{num_labels - 1})")
        self.model = model
        self.num_classes = num_labels
        self.ignore_index = ignore_index
        self.image_mean = torch.tensor(image_mean, dtype=torch.float32).view(1, 3, 1, 1)
        self.image_std = torch.tensor(image_std, dtype=torch.float32).view(1, 3, 1, 1)
        self.processing_size = tuple(processing_size) if processing_size is not None else None
        self.batch_size = check_batch_size(batch_size)
        self.label_id_map = None
        if label_id_map is not None:
            table = torch.as_tensor(list(label_id_map), dtype=torch.long)
            valid = (table >= 0) & (table < num_labels)
            if ignore_index is not None:
                valid |= table == ignore_index
            if table.ndim != 1 or not bool(valid.all()):
                raise ValueError(f"label_id_map values must be judge ids 0..{num_labels - 1} or ignore_index")
            self.label_id_map = table

    @classmethod
    def from_pretrained(
        cls,
        path_or_id: PathOrId,
        *,
        ignore_index: Optional[int] = None,
        label_id_map: Optional[Sequence[int]] = None,
        processing_size: Optional[tuple[int, int]] = None,
        batch_size: int = 16,
        device: Optional[Union[str, torch.device]] = None,
        dtype: torch.dtype = torch.float32,
    ) -> "SegmentationJudge":
        """Load a judge from a ``save_pretrained`` folder (or a Hub id when online).

        Normalisation comes from ``preprocessor_config.json`` (``image_mean``/``image_std``; ImageNet statistics when
        absent). ``judge_config.json`` (written by ``training/train_judge.py``) supplies ``ignore_index``,
        ``label_id_map`` and ``processing_size`` unless they are passed here; without it ``ignore_index`` is 255.
        """
        from transformers import AutoModelForSemanticSegmentation

        model = load_pretrained(AutoModelForSemanticSegmentation.from_pretrained, path_or_id, "segmentation judge")
        preprocessor = read_json(path_or_id, "preprocessor_config.json") or {}
        extras = read_json(path_or_id, "judge_config.json") or {}
        normalize = preprocessor.get("do_normalize", True)
        return cls(
            prepare_model(model, resolve_device(device), dtype),
            image_mean=preprocessor.get("image_mean", IMAGENET_MEAN) if normalize else (0.0, 0.0, 0.0),
            image_std=preprocessor.get("image_std", IMAGENET_STD) if normalize else (1.0, 1.0, 1.0),
            ignore_index=ignore_index if ignore_index is not None else extras.get("ignore_index", 255),
            label_id_map=label_id_map if label_id_map is not None else extras.get("label_id_map"),
            processing_size=processing_size if processing_size is not None else extras.get("processing_size"),
            batch_size=batch_size,
        )

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def class_names(self) -> list[str]:
        id2label = getattr(self.model.config, "id2label", None) or {}
        return [str(id2label.get(i, id2label.get(str(i), f"class_{i}"))) for i in range(self.num_classes)]

    def _network_inputs(self, images: torch.Tensor) -> Iterator[torch.Tensor]:
        """``[0, 1]`` images in batches of ``batch_size``, resized to ``processing_size`` (if any) and normalised: what
        the network is fed."""
        dtype = next(self.model.parameters()).dtype
        for start in range(0, images.shape[0], self.batch_size):
            chunk = images[start : start + self.batch_size]
            if self.processing_size is not None:
                chunk = F.interpolate(chunk, size=self.processing_size, mode="bilinear", align_corners=False,
                                      antialias=True)
            yield ((chunk - self.image_mean) / self.image_std).to(self.device, dtype)

    @torch.no_grad()
    def logits(self, images: ImageInput, output_size: Optional[tuple[int, int]] = None) -> torch.Tensor:
        """Class scores ``(B, K, H, W)`` at ``output_size`` (default: the input size), bilinear upsampling."""
        x = as_image_batch(images)
        size = tuple(output_size) if output_size is not None else tuple(x.shape[-2:])
        return torch.cat([
            F.interpolate(self.model(pixel_values=chunk).logits.float(), size=size, mode="bilinear",
                          align_corners=False).cpu()
            for chunk in self._network_inputs(x)
        ])

    @torch.no_grad()
    def pooled_features(self, images: ImageInput) -> torch.Tensor:
        """``(B, D)`` features of the judge's encoder: its last hidden state averaged over positions.

        The realism feature of :class:`JudgeFeatureExtractor`: it describes what the judge sees in an image (texture
        and parts as well as classes), so a blurry image that keeps the layout moves it although the mIoU stays.
        """
        chunks = []
        for chunk in self._network_inputs(as_image_batch(images)):
            hidden = self.model(pixel_values=chunk, output_hidden_states=True).hidden_states
            if not hidden:
                raise ValueError("the judge model returns no hidden states: no features for a Frechet distance")
            last = hidden[-1].float()
            # (B, C, h, w) feature maps (SegFormer) or (B, N, C) token sequences (ViT-like encoders).
            chunks.append((last.mean(dim=(2, 3)) if last.ndim == 4 else last.mean(dim=1)).cpu())
        return torch.cat(chunks)

    def predict(self, images: ImageInput, output_size: Optional[tuple[int, int]] = None) -> torch.Tensor:
        """Label maps ``(B, H, W)`` int64 with ids ``0 .. K-1`` (arg-max of :meth:`logits`)."""
        return self.logits(images, output_size).argmax(dim=1)

    def map_labels(self, labels: LabelInput) -> torch.Tensor:
        """Dataset label ids -> judge ids through ``label_id_map`` (identity without one), shape kept."""
        labels = as_label_tensor(labels, "reference_labels")
        if self.label_id_map is None:
            return labels
        if bool((labels < 0).any()) or bool((labels >= len(self.label_id_map)).any()):
            raise ValueError(f"reference_labels contain ids outside the label_id_map (0..{len(self.label_id_map) - 1})")
        return self.label_id_map[labels]

    def reference_maps(
        self,
        reference: ReferenceMode = "labels",
        *,
        reference_labels: Optional[LabelInput] = None,
        original_images: Optional[ImageInput] = None,
        output_size: Optional[tuple[int, int]] = None,
    ) -> torch.Tensor:
        """The maps generated images are compared with, in the judge's id space, shape ``(B, H, W)``."""
        if reference == "labels":
            if reference_labels is None:
                raise ValueError('reference="labels" needs reference_labels')
            maps = self.map_labels(reference_labels)
            return maps[None] if maps.ndim == 2 else maps
        if reference == "judge_on_original":
            if original_images is None:
                raise ValueError('reference="judge_on_original" needs original_images')
            return self.predict(original_images, output_size)
        raise ValueError(f'reference must be "labels" or "judge_on_original", got {reference!r}')

    def new_confusion_matrix(self) -> ConfusionMatrix:
        """An empty matrix over the judge's classes (what :meth:`update` accumulates into)."""
        ignore = () if self.ignore_index is None else (self.ignore_index,)
        return ConfusionMatrix(self.num_classes, ignore)

    def update(
        self,
        matrix: ConfusionMatrix,
        generated: ImageInput,
        *,
        reference: ReferenceMode = "labels",
        reference_labels: Optional[LabelInput] = None,
        original_images: Optional[ImageInput] = None,
    ) -> ConfusionMatrix:
        """Segment one batch of generated images and add it to ``matrix`` (for batched evaluation loops).

        Label references must already have the generated images' size (no silent resizing of labels); a
        judge-on-original reference is predicted at that size.
        """
        prediction = self.predict(generated)
        target = self.reference_maps(
            reference, reference_labels=reference_labels, original_images=original_images,
            output_size=tuple(prediction.shape[-2:]),
        )
        if target.shape != prediction.shape:
            raise ValueError(
                f"reference maps {tuple(target.shape)} do not match the generated batch {tuple(prediction.shape)}; "
                "resize the labels (nearest) to the generation resolution first"
            )
        return matrix.update(prediction, target)

    def judge_miou(
        self,
        generated: ImageInput,
        reference_labels: Optional[LabelInput] = None,
        *,
        reference: ReferenceMode = "labels",
        original_images: Optional[ImageInput] = None,
    ) -> MIoUResult:
        """mIoU (Eq. 16) between the judge's maps of ``generated`` and the chosen reference, over the whole batch."""
        matrix = self.new_confusion_matrix()
        self.update(matrix, generated, reference=reference, reference_labels=reference_labels,
                    original_images=original_images)
        return matrix.compute()
