"""Decoding a regressor's head outputs into body-model parameters, cameras and the body.

The head predicts a body vector (B, P_b) and camera vectors (B, C, P_c) (see
:mod:`smilfit.models.param_codec`). :func:`decode_prediction` turns them into OpenCV
cameras ``K, R, t, dist`` per view and body-model parameters, poses the body model and, with
calibrated cameras (``camera=dict(init='calibrated')``), maps body and parameters from the
frame of view slot 0's calibrated camera (where the body vector lives) to the world:
``X_world = R0^T (X - t0)``. Lengths are in model units, pixels ``(u, v)`` OpenCV's.

Also here: building the codecs (:func:`build_camera_codec`, :func:`build_body_codec`), the
per-view tensors of a batch (:func:`view_tensor`, :func:`calibration`), what handlers read
(:func:`handler_params`) and the predicted keypoints in the data's order
(:func:`project_keypoints`). These are functions of the regressor's parts (codecs, body
model, keypoint match), not modules: the regressor holds the parts, so its state dict is
theirs.
"""
from __future__ import annotations

import math
from dataclasses import replace
from typing import Any, Dict, Mapping, Optional, Sequence

import torch
from torch import nn

from smilfit.body_models.keypoint_naming import rotate_offsets
from smilfit.body_models.rotations import axis_angle_to_matrix
from smilfit.cameras.projection import project_points

from ..param_codec import BodyParamCodec, CameraCodec, upright_orientation

#: Calibration entries of a batch and their event dimensions (per view).
CALIBRATION_KEYS = (('K', 2), ('R', 2), ('t', 1), ('dist', 1))


def rest_body_length(body_model: nn.Module) -> float:
    """Largest extent of the rest-pose mesh (model units); joints when there are no
    vertices."""
    with torch.no_grad():
        out = body_model(return_vertices=True)
    pts = out.vertices if out.vertices is not None and out.vertices.shape[1] else out.joints
    ext = pts[0].max(0).values - pts[0].min(0).values
    return float(ext.max())


def build_camera_codec(cfg: Optional[Mapping[str, Any]], body_length: float) -> CameraCodec:
    """A :class:`~smilfit.models.CameraCodec` from the regressor's ``camera`` options.

    ``fill`` (default 0.6, popped) is the fraction of the image the body spans at the
    default camera distance: ``distance`` defaults to ``body_length / (2 tan(fov / 2)
    fill)`` (model units) with ``fov_deg`` (default 40 degrees).
    """
    cam_cfg = dict(cfg or {})
    fill = float(cam_cfg.pop('fill', 0.6))
    fov = float(cam_cfg.get('fov_deg', 40.0))
    cam_cfg.setdefault('distance', body_length / (2.0 * math.tan(math.radians(fov) / 2)
                                                  * fill))
    return CameraCodec(**cam_cfg)


def build_body_codec(body_model: nn.Module, camera_codec: CameraCodec,
                     cfg: Optional[Mapping[str, Any]] = None) -> BodyParamCodec:
    """A :class:`~smilfit.models.BodyParamCodec` for ``body_model``.

    ``cfg``: the codec's options; ``init_global_orient`` is (3,) axis-angle or
    ``'upright'`` (default: the model's up axis to image up). Unless given, the per-joint
    PCA sizes are the model's, the initial body is centred on the optical axis at the
    camera distance (calibrated cameras: the body's frame is the reference camera's) or at
    the origin (default cameras), and ``length_scale`` is the camera distance.
    """
    cfg = dict(cfg or {})
    calibrated = camera_codec.uses_calibration
    go = cfg.pop('init_global_orient', 'upright')
    if isinstance(go, str):
        if go != 'upright':
            raise ValueError(f"init_global_orient must be 'upright' or (3,) axis-angle, "
                             f'got {go!r}')
        go = upright_orientation(getattr(body_model.data, 'up_axis', 'y'))
    go = torch.as_tensor(go, dtype=torch.float64).reshape(3)
    scaledirs = getattr(body_model, 'scaledirs', None)
    transdirs = getattr(body_model, 'transdirs', None)
    cfg.setdefault('num_scale_weights', 0 if scaledirs is None else scaledirs.shape[0])
    cfg.setdefault('num_trans_weights', 0 if transdirs is None else transdirs.shape[0])
    with torch.no_grad():
        out = body_model(global_orient=axis_angle_to_matrix(go)[None].to(body_model.dtype),
                         return_vertices=True)
    pts = out.vertices if out.vertices is not None else out.joints
    centre = pts[0].mean(0).double()
    target = torch.tensor([0.0, 0.0, camera_codec.distance if calibrated else 0.0],
                          dtype=torch.float64)
    cfg.setdefault('init_transl', (target - centre).tolist())
    cfg.setdefault('length_scale', camera_codec.distance)
    return BodyParamCodec(body_model.num_joints, body_model.num_betas, init_global_orient=go,
                          **cfg)


def view_tensor(data_samples: Optional[Mapping[str, Any]], key: str, B: int, C: int,
                event_ndim: int) -> Optional[torch.Tensor]:
    """``data_samples[key]`` with its view axis, (B, C, *event) (a squeezed single view
    (B, *event) gets it back), or None where absent. ``B`` and ``C`` are for the reader:
    the tensor is not checked against them."""
    x = data_samples.get(key) if data_samples else None
    if x is None:
        return None
    if x.ndim == 1 + event_ndim:       # (B, ...) squeezed single view
        x = x[:, None]
    return x


def calibration(data_samples: Mapping[str, Any], B: int, C: int
                ) -> Optional[Dict[str, torch.Tensor]]:
    """The batch's cameras ``K`` (B, C, 3, 3), ``R`` (B, C, 3, 3), ``t`` (B, C, 3) (model
    units) and, if present, ``dist`` (B, C, 5); None without all of ``K``, ``R``, ``t``."""
    cal = {}
    for key, ev in CALIBRATION_KEYS:
        x = view_tensor(data_samples, key, B, C, ev)
        if x is not None:
            cal[key] = x
    if not all(k in cal for k in ('K', 'R', 't')):
        return None
    return cal


#: Reduced-precision float types that autocast (``--amp``) computes in.
LOW_PRECISION = (torch.float16, torch.bfloat16)


def full_precision(device: torch.device):
    """A context without autocast on ``device``'s type, for the geometry after the
    networks: decoding, posing the body model, projecting and scoring. bf16 keeps 8
    significant bits, a step of 0.4-0.8 % of a value: on the shared session, points 7.5
    model units from the camera step by 0.03 units (1.7 mm) and pixel coordinates in the
    hundreds by 1-4 px, about the error the network is trained to reach. Only the
    networks run in mixed precision."""
    return torch.autocast(torch.device(device).type, enabled=False)


def upcast(x: Optional[torch.Tensor]) -> Optional[torch.Tensor]:
    """``x`` in float32 where autocast left it in bf16 or fp16; otherwise as it is."""
    return x.float() if x is not None and x.dtype in LOW_PRECISION else x


def image_size(image_hw: Sequence[int], device) -> torch.Tensor:
    """(2,) ``(W, H)`` pixels from ``(H, W)``."""
    H, W = int(image_hw[0]), int(image_hw[1])
    return torch.tensor([W, H], device=device)


def decode_prediction(pred: Mapping[str, Optional[torch.Tensor]],
                      data_samples: Optional[Mapping[str, Any]], image_hw: Sequence[int],
                      body_codec: BodyParamCodec, camera_codec: CameraCodec,
                      body_model: nn.Module, num_views: int,
                      return_vertices: bool = False,
                      depth_offset: Optional[float] = None,
                      keypoint_offsets: Optional[tuple] = None) -> Dict[str, Any]:
    """Body and camera vectors -> parameters, cameras and the posed body (world frame).

    Args:
        pred: ``body`` (B, P_b) and ``cameras`` (B, C, P_c) or None (fixed cameras).
        data_samples: the batch (calibration ``K``, ``R``, ``t``, ``dist`` per view, needed
            by ``init='calibrated'``).
        image_hw: ``(H, W)`` of the input images (pixels).
        body_codec, camera_codec: the regressor's codecs.
        body_model: the body model (posed with the decoded parameters).
        num_views: C, the view slots.
        return_vertices: pose the vertices too (silhouettes, surface terms).
        depth_offset: with calibrated cameras, model units added to the body's depth in
            the reference camera's frame (the rig's typical depth of the animal less the
            codec's default distance: :meth:`~.base.BodyRegressor.set_rig_units`).
        keypoint_offsets: optional ``(offsets (N, 3), carriers (N,))``: per model
            keypoint, an offset in its carrying joint's frame (model units) added to the
            posed keypoints (:func:`~smilfit.body_models.keypoint_naming.rotate_offsets`).

    Returns:
        ``params`` (world frame; rotations as (B, J', 3, 3) matrices, ``transl`` (B, 3)),
        ``cameras`` (``K`` (B, C, 3, 3), ``R`` (B, C, 3, 3), ``t`` (B, C, 3), ``dist``
        (B, C, 5)), ``output`` (:class:`~smilfit.body_models.BodyModelOutput`, world frame)
        and ``body`` (the body vector).

    Raises:
        KeyError: calibrated cameras and no calibration in ``data_samples``.
    """
    body_vec = upcast(pred['body'])
    pred = dict(pred, body=body_vec, cameras=upcast(pred.get('cameras')))
    B, C = body_vec.shape[0], num_views
    cal = calibration(data_samples, B, C) if data_samples else None
    if camera_codec.uses_calibration and cal is None:
        raise KeyError("camera init='calibrated' needs K, R and t in data_samples")
    size = image_size(image_hw, body_vec.device)
    cams = camera_codec.decode(pred.get('cameras'), size, cal, (B, C))
    params = body_codec.decode(body_vec)
    if depth_offset is not None and camera_codec.uses_calibration:
        shift = params['transl'].new_tensor([0.0, 0.0, float(depth_offset)])
        params = dict(params, transl=params['transl'] + shift)
    model_params = {k: (v.to(body_model.dtype)) for k, v in params.items()}
    out = body_model(**model_params, return_vertices=return_vertices)
    if keypoint_offsets is not None and out.keypoints is not None:
        offsets, carriers = keypoint_offsets
        moved = rotate_offsets(offsets[None], out.joint_transforms, carriers)
        out = replace(out, keypoints=out.keypoints + moved.to(out.keypoints))
    if camera_codec.uses_calibration:
        # Body frame = calibrated reference camera: X_world = R0^T (X - t0).
        R0 = cal['R'][:, 0].to(out.joints.dtype)
        t0 = cal['t'][:, 0].to(out.joints.dtype)

        def to_world(p):
            return None if p is None else (p - t0[:, None]) @ R0

        root = out.joint_transforms[:, 0, :3, 3]
        params = dict(params)
        params['global_orient'] = R0.transpose(-1, -2) @ params['global_orient']
        params['transl'] = ((root + params['transl'] - t0)[:, None] @ R0)[:, 0] - root
        out = replace(out, joints=to_world(out.joints), joints_kin=to_world(out.joints_kin),
                      keypoints=to_world(out.keypoints), vertices=to_world(out.vertices))
    return dict(params=params, cameras=cams, output=out, body=body_vec)


def handler_params(decoded: Mapping[str, Any]) -> Dict[str, torch.Tensor]:
    """What handlers read from ``params``: the decoded body parameters and the predicted
    cameras as ``camera_K``, ``camera_R``, ``camera_t``, ``camera_dist`` (B, C, ...) (these
    take precedence over the observed cameras)."""
    params = dict(decoded['params'])
    cams = decoded['cameras']
    params.update(camera_K=cams['K'], camera_R=cams['R'], camera_t=cams['t'],
                  camera_dist=cams['dist'])
    return params


def project_keypoints(decoded: Mapping[str, Any], match, num_keypoints: int
                      ) -> Dict[str, torch.Tensor]:
    """Predicted keypoints in the data's order (NaN where no model keypoint matches).

    Args:
        decoded: a :func:`decode_prediction` result.
        match: the model-to-data keypoint match (``model_index``, ``data_index``; see
            :func:`smilfit.body_models.keypoint_naming.match_keypoints`).
        num_keypoints: N, the data's keypoint count.

    Returns:
        ``keypoints_3d`` (B, N, 3) world (model units) and ``keypoints_2d`` (B, C, N, 2)
        pixels through the decoded cameras.
    """
    out = decoded['output']
    B, N = out.keypoints.shape[0], int(num_keypoints)
    kp3d = out.keypoints.new_full((B, N, 3), float('nan'))
    kp3d[:, match.data_index.to(kp3d.device)] = out.keypoints[:, match.model_index.to(
        kp3d.device)]
    cams = decoded['cameras']
    kp2d = project_points(torch.nan_to_num(kp3d)[:, None], cams['K'], cams['R'],
                          cams['t'], cams['dist'])
    kp2d = torch.where(torch.isfinite(kp3d)[:, None, :, :2], kp2d,
                       torch.full_like(kp2d, float('nan')))
    return dict(keypoints_3d=kp3d, keypoints_2d=kp2d)


__all__ = ['CALIBRATION_KEYS', 'rest_body_length', 'build_camera_codec', 'build_body_codec',
           'view_tensor', 'calibration', 'image_size', 'decode_prediction', 'handler_params',
           'project_keypoints']
