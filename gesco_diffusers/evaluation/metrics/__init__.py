"""Image-quality and task metrics of the paper's evaluation (Sec. IV): mIoU with a segmentation judge (Eq. 16),
FID, LPIPS (distance and diversity), DETR detection mAP and DPT depth RMSE (Table V).

Every network is loaded from a local folder/file (or a Hub id when online); nothing is downloaded implicitly.
Each metric has an accumulator (``update`` per batch, ``compute`` at the end) for batched evaluation loops.
"""

from .average_precision import (
    COCO_IOU_THRESHOLDS,
    DetectionAPResult,
    DetectionMAP,
    box_iou,
    mean_average_precision,
)
from .depth import DepthEstimator
from .depth_error import DepthRMSE, align_scale_shift, depth_rmse
from .detection import DetrDetector
from .fid import (
    FID_INCEPTION_WEIGHTS_URL,
    FeatureStatistics,
    FIDMetric,
    default_fid_weights_path,
    frechet_distance,
    load_fid_inception,
    sqrtm_psd,
)
from .lpips_metric import LPIPSMetric, default_backbone_weights_path, lpips_distance, lpips_diversity
from .miou import ConfusionMatrix, MIoUResult, compute_miou
from .segmentation_judge import (
    CITYSCAPES_IGNORE_TRAIN_ID,
    CITYSCAPES_LABEL_ID_TO_TRAIN_ID,
    JudgeFeatureExtractor,
    SegmentationJudge,
    default_camvid_judge_path,
)

__all__ = [
    "COCO_IOU_THRESHOLDS",
    "CITYSCAPES_IGNORE_TRAIN_ID",
    "CITYSCAPES_LABEL_ID_TO_TRAIN_ID",
    "ConfusionMatrix",
    "DepthEstimator",
    "DepthRMSE",
    "DetectionAPResult",
    "DetectionMAP",
    "DetrDetector",
    "FID_INCEPTION_WEIGHTS_URL",
    "FIDMetric",
    "FeatureStatistics",
    "JudgeFeatureExtractor",
    "LPIPSMetric",
    "MIoUResult",
    "SegmentationJudge",
    "align_scale_shift",
    "box_iou",
    "compute_miou",
    "default_backbone_weights_path",
    "default_camvid_judge_path",
    "default_fid_weights_path",
    "depth_rmse",
    "frechet_distance",
    "load_fid_inception",
    "lpips_distance",
    "lpips_diversity",
    "mean_average_precision",
    "sqrtm_psd",
]
