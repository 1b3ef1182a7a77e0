"""``bbox_crop`` boxes that follow the network where SLEAP gives none.

A network trained on crops around the animal needs a box in every frame and camera. SLEAP's
2D predictions give them, but a new recording may have SLEAP's keypoints in a few frames
only (a labelled first frame, say). :class:`FollowingBoxes` boxes a frame with SLEAP's
keypoints where it has them (per camera) and elsewhere with the network's own keypoints of
the previous frame, in that camera's source pixels: the animal moves little between
frames against the box margin (15 % of the box a side by default), so the crop keeps it.
One animal: the boxes follow one prediction per frame.
"""
from __future__ import annotations

from typing import Any, Mapping, Optional, Sequence

import numpy as np

from ...datasets.ingest_images import apply_affine
from .common import InferenceError


class FollowingBoxes:
    """Boxes from ``sleap`` (a :class:`~.sources.SleapBoxes` or
    :class:`~.sources.RigBoxes`), completed by the previous frame's prediction.

    ``points(frame)`` returns what ``sleap.points`` does ((I, C, K, 2) for a rig, (I, K, 2)
    for one view; source pixels, NaN missing) until a frame has been predicted; then
    (1, C, K, 2), every camera SLEAP leaves empty boxed around the keypoints
    :meth:`observe` was last given. Call :meth:`observe` with each
    frame's predictions before asking for the next frame's points.

    Raises:
        InferenceError: SLEAP holds more than one animal in a frame.
    """

    #: The inference loop predicts frame by frame and calls :meth:`observe`.
    follows_predictions = True

    def __init__(self, sleap: Any) -> None:
        self.sleap = sleap
        self.num_views = int(getattr(sleap, 'num_views', 1))
        self.last: Optional[np.ndarray] = None     # (C, K, 2) source pixels

    def points(self, frame: int) -> np.ndarray:
        found = np.asarray(self.sleap.points(frame), dtype=np.float64)
        if len(found) > 1:
            raise InferenceError(f'frame {frame}: SLEAP holds {len(found)} animals; boxes '
                                 'that follow the network follow one')
        if self.last is None:
            return found
        mine = found[0] if len(found) else None
        if mine is not None and found.ndim == 3:
            mine = mine[None]                       # (1, K, 2): one camera
        C = self.last.shape[0]
        K = max(self.last.shape[1], 0 if mine is None else mine.shape[1])
        out = np.full((C, K, 2), np.nan)
        for c in range(C):
            seen = mine is not None and np.isfinite(mine[c]).all(-1).any()
            src = mine[c] if seen else self.last[c]
            out[c, :src.shape[0]] = src
        return out[None]                            # (1, C, K, 2)

    def observe(self, predictions: Sequence[Mapping[str, Any]]) -> None:
        """The frame's predictions (:func:`~.samples.predict_samples`' dicts, one per
        instance): the next frame's empty cameras are boxed around their keypoints."""
        if len(predictions) != 1:
            return          # nothing, or several animals: nothing to follow
        p = predictions[0]
        crop_to_source = np.linalg.inv(np.asarray(p['crop'], dtype=np.float64))
        uv = apply_affine(crop_to_source, p['pred_keypoints_2d'].double().numpy())
        self.last = uv.reshape(-1, *uv.shape[-2:])  # (C, K, 2)

    def resume(self, keypoints_2d: np.ndarray) -> None:
        """Continue after a finished chunk: its last item's keypoints (C, K, 2) or
        (K, 2), source pixels (a resumed run follows as the first did)."""
        kp = np.asarray(keypoints_2d, dtype=np.float64)
        self.last = kp.reshape(-1, *kp.shape[-2:])


__all__ = ['FollowingBoxes']
