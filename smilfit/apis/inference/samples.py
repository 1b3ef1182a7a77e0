"""Samples and model calls: :func:`make_sample` crops the views of a frame into a model
sample (crop affines source -> sample pixels); :func:`predict_samples` runs the test
pipeline and the model on a batch of them."""
from __future__ import annotations

from typing import Any, Dict, List, Mapping, Optional, Sequence

import numpy as np
import torch

from .common import InferenceError
from smilfit.datasets.ingest_images import BBOX_MARGIN, box_affine, crop_box, crop_frame


def make_sample(images: Sequence[np.ndarray], cameras: Mapping[str, np.ndarray],
                crop_mode: str = 'default', points: Optional[np.ndarray] = None,
                target_size: Optional[int] = None, bbox_margin: float = BBOX_MARGIN,
                num_keypoints: int = 1) -> Dict[str, Any]:
    """One model sample from the views of a frame (before the test pipeline).

    Args:
        images: C (H, W, 3) uint8 RGB frames.
        cameras: ``K`` (C, 3, 3), ``R``, ``t``, ``dist`` in source pixels; optional
            ``valid`` (C,).
        crop_mode: ``default``, ``centred`` or ``bbox_crop``.
        points: ``bbox_crop``: (C, K, 2) keypoints per view to box (NaN missing; a view
            without any is not valid).
        target_size: crops are resized to ``target_size`` squared (None: crop size).
        num_keypoints: N of the (all missing) ``keypoints_2d`` placeholders the
            transforms expect (the model's keypoint count).

    Returns:
        A sample dict as the HDF5 datasets give (``images``, cameras, ``image_size``,
        ``crop`` (C, 3, 3) source -> sample pixels, ``view_valid``, ``single_view``).
    """
    C = len(images)
    if crop_mode == 'bbox_crop' and points is None:
        raise InferenceError("crop_mode 'bbox_crop' needs keypoints to box (a SLEAP file: "
                             '--bbox-slp)')
    out_imgs, crops, Ks = [], [], []
    for c, img in enumerate(images):
        h, w = img.shape[:2]
        box = crop_box(crop_mode, (w, h), None if points is None else points[c], bbox_margin)
        size = (box[2], box[3]) if target_size is None else (int(target_size),) * 2
        A = box_affine(box, size)
        out_imgs.append(img if (box == (0, 0, w, h) and size == (w, h))
                        else crop_frame(img, box, size))
        crops.append(A)
        Ks.append(A @ np.asarray(cameras['K'][c], np.float64))
    sizes = np.array([[im.shape[1], im.shape[0]] for im in out_imgs], np.int64)
    valid = np.asarray(cameras.get('valid', np.ones(C, bool)), bool)
    if crop_mode == 'bbox_crop':   # a camera without the instance's keypoints sees nothing
        valid = valid & np.isfinite(np.asarray(points, np.float64)).all(-1).any(-1)
    sample = dict(images=np.stack(out_imgs) if all(
        im.shape == out_imgs[0].shape for im in out_imgs) else out_imgs,
        K=np.stack(Ks), R=np.asarray(cameras['R'], np.float64),
        t=np.asarray(cameras['t'], np.float64), dist=np.asarray(cameras['dist'], np.float64),
        image_size=sizes, crop=np.stack(crops), view_valid=valid, single_view=C == 1,
        # No observations at inference; the transforms carry keypoints along.
        keypoints_2d=np.full((C, int(num_keypoints), 2), np.nan, np.float32),
        visible=np.zeros((C, int(num_keypoints)), bool),
        confidence=np.zeros((C, int(num_keypoints)), np.float32))
    return sample


def predict_samples(model, samples: Sequence[Mapping[str, Any]], pipeline: Sequence[Any]
                    ) -> List[Dict[str, Any]]:
    """Run ``model`` (eval mode, no gradients) on prepared samples.

    Returns:
        The model's prediction dicts, each with ``crop`` (C, 3, 3): source pixels ->
        model-input pixels (the sample's crop composed with the pipeline's resize).
    """
    from mmengine.dataset import default_collate
    packed = []
    for s in samples:
        x = dict(s)
        for t in pipeline:
            x = t(x)
        packed.append(x)
    batch = default_collate(packed)
    with torch.no_grad():
        data = model.data_preprocessor(batch, False)
        preds = model(data['inputs'], data['data_samples'], mode='predict')
    crops = batch['data_samples']['crop']
    crops = crops[:, None] if crops.ndim == 3 else crops
    for p, c in zip(preds, crops):
        p['crop'] = c.double().numpy()
    return preds
