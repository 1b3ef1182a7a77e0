"""A session's samples as the arrays the writer stores (everything but the images): the
keypoint map of the joint lookup, frame selection, crops, cameras in stored pixels,
visibility, 3D points and betas; the skeleton's pairs as stored keypoint indices."""
from __future__ import annotations

from typing import List, Optional, Tuple

import numpy as np

from ..ingest_images import apply_affine, box_affine, crop_box, undistort_points
from .options import IngestOptions, _fail
from .records import _Prepared, _Session


def _keypoint_map(node_names: List[str], opts: IngestOptions,
                  lookup: Optional[List[Tuple[str, str]]]) -> Tuple[List[str], np.ndarray]:
    if lookup is None:
        return list(node_names), np.arange(len(node_names))
    missing = [d for _, d in lookup if d and d not in node_names]
    if missing:
        raise _fail(opts.joint_lookup, f'data keypoints {missing} are not in the skeleton '
                                       f'(nodes: {node_names})')
    return [m for m, _ in lookup], np.array([node_names.index(d) if d else -1
                                             for _, d in lookup])


def _prepare(session: _Session, opts: IngestOptions, num_views: int,
             kp_index: np.ndarray) -> Optional[_Prepared]:
    frames = sorted({o.frame for o in session.obs})[::opts.frame_skip]
    if opts.max_frames:
        frames = frames[:opts.max_frames]
    keep_frames = set(frames)
    obs = [o for o in session.obs if o.frame in keep_frames]
    n, c, k = len(obs), num_views, len(kp_index)
    if n == 0:
        return None
    mapped = kp_index >= 0
    kp = np.full((n, c, k, 2), np.nan)
    conf = np.zeros((n, c, k))
    for i, o in enumerate(obs):
        for j, v in enumerate(o.views):
            if v is not None:
                kp[i, j, mapped] = v[0][kp_index[mapped]]
                conf[i, j, mapped] = v[1][kp_index[mapped]]
    K = np.broadcast_to(np.eye(3), (n, c, 3, 3)).copy()
    dist = np.zeros((n, c, 5))
    R = np.broadcast_to(np.eye(3), (n, c, 3, 3)).copy()
    t = np.zeros((n, c, 3))
    crop = np.broadcast_to(np.eye(3), (n, c, 3, 3)).copy()
    calibrated = np.zeros((n, c), bool)
    boxes = np.zeros((n, c, 4), np.int64)
    out_sizes = np.zeros((n, c, 2), np.int32)
    for j, view in enumerate(session.views):
        cam = view.camera
        src = kp[:, j]                       # (n, k, 2) original-image pixels
        if opts.undistort and cam.calibrated and np.any(cam.dist != 0):
            if not np.allclose(view.pre_affine, np.eye(3)):
                raise _fail(view.source, 'undistorting a cropped video is not supported')
            src = undistort_points(src, cam.K, cam.dist)   # same K, no distortion
        else:
            dist[:, j] = cam.dist
        decoded = apply_affine(view.pre_affine, src)         # pixels of decoded frames
        frame_size = view.frame_size or cam.size
        for i in range(n):
            box = crop_box(opts.crop_mode, frame_size, decoded[i], opts.bbox_margin)
            size = (opts.target_size, opts.target_size) if opts.target_size else box[2:]
            boxes[i, j] = box
            out_sizes[i, j] = size
            crop[i, j] = box_affine(box, size) @ view.pre_affine
        kp[:, j] = np.einsum('nab,nkb->nka', crop[:, j, :2, :2], src) + crop[:, j, None, :2, 2]
        K[:, j] = crop[:, j] @ cam.K
        R[:, j] = cam.R
        t[:, j] = cam.t
        calibrated[:, j] = cam.calibrated
    finite = np.isfinite(kp).all(-1)
    conf = np.where(finite, conf, 0.0)
    visible = finite & (conf >= opts.confidence_threshold)
    valid = visible.any(-1)
    valid[:, len(session.views):] = False
    keep = valid.sum(-1) >= opts.min_views
    if not keep.any():
        return None
    kp3d = None
    if opts.include_3d and any(o.kp3d is not None for o in obs):
        kp3d = np.full((n, k, 3), np.nan)
        for i, o in enumerate(obs):
            if o.kp3d is not None:
                kp3d[i, mapped] = o.kp3d[kp_index[mapped]]
    idx = np.flatnonzero(keep)
    arrays = {
        'frame': np.array([obs[i].frame for i in idx], np.int64),
        'instance': np.array([obs[i].instance for i in idx], np.int32),
        'track': np.array([obs[i].track for i in idx], dtype=object),
        'valid': valid[idx], 'calibrated': calibrated[idx],
        'keypoints_2d': kp[idx].astype(np.float32), 'confidence': conf[idx].astype(np.float32),
        'visible': visible[idx], 'K': K[idx], 'dist': dist[idx], 'R': R[idx], 't': t[idx],
        'image_size': out_sizes[idx], 'crop': crop[idx],
    }
    if kp3d is not None:
        arrays['keypoints_3d'] = kp3d[idx].astype(np.float32)
    if session.betas is not None:
        arrays['betas'] = np.broadcast_to(session.betas, (len(idx),) + session.betas.shape)
    return _Prepared(session, arrays, boxes[idx], out_sizes[idx], arrays['frame'])


def _stored_pairs(session: _Session, node_names: List[str], kp_index: np.ndarray
                  ) -> Tuple[List[Tuple[int, int]], List[Tuple[int, int]]]:
    """The skeleton's edges and symmetries as pairs of stored keypoint indices (through
    the joint lookup: pairs with a node that is not stored are dropped)."""
    def stored(pairs):
        out = []
        for a, b in pairs:
            ia = np.flatnonzero(kp_index == node_names.index(a)) if a in node_names else []
            ib = np.flatnonzero(kp_index == node_names.index(b)) if b in node_names else []
            if len(ia) and len(ib):
                out.append((int(ia[0]), int(ib[0])))
        return out
    return stored(session.edges), stored(session.symmetries)
