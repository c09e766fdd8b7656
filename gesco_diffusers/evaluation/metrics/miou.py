"""Mean intersection over union (paper Eq. 16) from a confusion matrix accumulated over batches.

Definitions. With ``K = num_classes`` and the confusion matrix ``M[t, p]`` = number of evaluated pixels whose
reference id is ``t`` and predicted id is ``p``:

* ``IoU_c = M[c, c] / (sum_p M[c, p] + sum_t M[t, c] - M[c, c])`` = TP / (TP + FP + FN), i.e.
  ``|s_c ∩ s'_c| / |s_c ∪ s'_c|`` of Eq. 16 with ``s_c``/``s'_c`` the pixels of class ``c`` in the reference and in
  the prediction;
* ``mIoU`` = mean of ``IoU_c`` over the classes that are evaluated, i.e. not in ``ignore_ids`` and with a non-empty
  union (they appear in the reference or in the prediction). Classes with an empty union have an undefined IoU
  (0/0): they are NaN in ``per_class_iou`` and excluded from the mean (a NaN-mean), the convention of the
  Cityscapes/MMSegmentation evaluators when the matrix is accumulated over a whole split;
* ``pixel_accuracy = trace(M) / sum(M)`` over the evaluated pixels.

Pixels whose *reference* id is in ``ignore_ids`` are not evaluated at all. A *prediction* of an ignored id on an
evaluated pixel (e.g. a label map used as a prediction) is a miss: it counts as a false negative of the reference
class. Ignore ids may lie outside ``0..K-1`` (e.g. 255).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Optional

import torch

from ._inputs import LabelInput, as_label_tensor


@dataclass(frozen=True)
class MIoUResult:
    """Scores derived from one confusion matrix.

    Attributes:
        miou: NaN-mean of ``per_class_iou`` (NaN if no class could be evaluated).
        per_class_iou: ``(K,)`` float64; NaN for ignored classes and classes with an empty union.
        pixel_accuracy: fraction of evaluated pixels predicted correctly (NaN if none was evaluated).
        confusion_matrix: ``(K, K)`` int64, rows = reference id, columns = predicted id (predictions of ignored ids
            beyond ``K - 1`` are not shown; they only enter the row sums).
        num_pixels: number of evaluated pixels.
    """

    miou: float
    per_class_iou: torch.Tensor
    pixel_accuracy: float
    confusion_matrix: torch.Tensor
    num_pixels: int


class ConfusionMatrix:
    """Accumulates the confusion matrix of integer label maps over any number of batches.

    Args:
        num_classes: ``K``; valid ids are ``0 .. K-1``.
        ignore_ids: ids whose reference pixels are skipped and whose IoU is not part of the mean.
        device: where the counts live (default: CPU; updates move the inputs there).

    Example::

        matrix = ConfusionMatrix(num_classes=12, ignore_ids=(11,))
        for pred, target in batches:
            matrix.update(pred, target)
        result = matrix.compute()  # result.miou, result.per_class_iou, result.pixel_accuracy
    """

    def __init__(self, num_classes: int, ignore_ids: Iterable[int] = (), device: Optional[torch.device] = None):
        if not isinstance(num_classes, int) or num_classes < 1:
            raise ValueError(f"num_classes must be a positive int, got {num_classes!r}")
        self.num_classes = num_classes
        self.ignore_ids = tuple(sorted({int(i) for i in ignore_ids}))
        if any(i < 0 for i in self.ignore_ids):
            raise ValueError(f"ignore_ids must be non-negative, got {self.ignore_ids}")
        self.device = torch.device(device) if device is not None else torch.device("cpu")
        # One extra "void" column collects predictions of ignored ids >= K (they are wrong on an evaluated pixel).
        self._counts = torch.zeros(num_classes, num_classes + 1, dtype=torch.int64, device=self.device)

    def reset(self) -> None:
        self._counts.zero_()

    def _check_ids(self, ids: torch.Tensor, name: str) -> None:
        allowed = (ids >= 0) & (ids < self.num_classes)
        for i in self.ignore_ids:
            allowed |= ids == i
        if not bool(allowed.all()):
            bad = torch.unique(ids[~allowed])[:10].tolist()
            raise ValueError(
                f"{name} contains ids {bad} outside 0..{self.num_classes - 1} that are not in ignore_ids "
                f"{self.ignore_ids}"
            )

    def update(self, pred: LabelInput, target: LabelInput) -> "ConfusionMatrix":
        """Add one batch. ``pred`` and ``target`` are integer id maps of the same shape (any shape)."""
        pred = as_label_tensor(pred, "pred").to(self.device)
        target = as_label_tensor(target, "target").to(self.device)
        if pred.shape != target.shape:
            raise ValueError(f"pred and target must have the same shape, got {tuple(pred.shape)} and {tuple(target.shape)}")
        self._check_ids(pred, "pred")
        self._check_ids(target, "target")
        evaluated = torch.ones_like(target, dtype=torch.bool)
        is_ignored_pred = torch.zeros_like(pred, dtype=torch.bool)
        for i in self.ignore_ids:
            evaluated &= target != i
            if i >= self.num_classes:
                is_ignored_pred |= pred == i
        column = torch.where(is_ignored_pred, torch.full_like(pred, self.num_classes), pred)
        k1 = self.num_classes + 1
        flat = target[evaluated] * k1 + column[evaluated]
        self._counts += torch.bincount(flat, minlength=self.num_classes * k1).view(self.num_classes, k1)
        return self

    def merge(self, other: "ConfusionMatrix") -> "ConfusionMatrix":
        """Add the counts of another matrix with the same classes (e.g. from another worker)."""
        if other.num_classes != self.num_classes or other.ignore_ids != self.ignore_ids:
            raise ValueError("can only merge confusion matrices with the same num_classes and ignore_ids")
        self._counts += other._counts.to(self.device)
        return self

    @property
    def matrix(self) -> torch.Tensor:
        """``(K, K)`` counts, rows = reference id, columns = predicted id."""
        return self._counts[:, : self.num_classes].clone()

    def compute(self) -> MIoUResult:
        counts = self._counts.double()
        tp = counts.diagonal()
        reference_total = counts.sum(dim=1)  # TP + FN (void predictions included)
        predicted_total = counts[:, : self.num_classes].sum(dim=0)  # TP + FP
        union = reference_total + predicted_total - tp
        iou = torch.where(union > 0, tp / union.clamp_min(1), torch.full_like(tp, float("nan")))
        for i in self.ignore_ids:
            if i < self.num_classes:
                iou[i] = float("nan")
        evaluated = ~torch.isnan(iou)
        miou = iou[evaluated].mean().item() if bool(evaluated.any()) else float("nan")
        total = counts.sum().item()
        accuracy = tp.sum().item() / total if total > 0 else float("nan")
        return MIoUResult(
            miou=miou, per_class_iou=iou.cpu(), pixel_accuracy=accuracy, confusion_matrix=self.matrix.cpu(),
            num_pixels=int(total),
        )


def compute_miou(pred: LabelInput, target: LabelInput, num_classes: int, ignore_ids: Iterable[int] = ()) -> MIoUResult:
    """mIoU (Eq. 16), per-class IoU and pixel accuracy of one set of maps; see :class:`ConfusionMatrix`."""
    return ConfusionMatrix(num_classes, ignore_ids).update(pred, target).compute()
