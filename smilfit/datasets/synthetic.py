"""Synthetic multi-view datasets rendered from a body model (ground truth for everything).

:func:`generate_synthetic_dataset` samples animals and poses from a body model, places a
ring of cameras around each animal, renders Lambert-shaded images and silhouettes with
smilfit's z-buffer rasteriser (:func:`smilfit.renderers.zbuffer.rasterize`), projects the
model's keypoints with occlusion-aware visibility and writes everything in smilfit's HDF5 format
(:mod:`smilfit.datasets.hdf5_format`): images (JPEG), masks (PNG), 2D keypoints, 3D
keypoints, cameras and the GT body parameters.

Layout: one *session* per animal (one shape, one camera rig), several frames per session,
so session-level splits work as on real data. Everything is deterministic given ``seed``.

Sampling (all in model units and the model's frame; ``up`` is the model's ``up_axis``):

- shape: ``betas ~ N(shape_mean, shape_std_scale^2 shape_cov)`` (``N(0, I)`` when the
  model has no prior); optional per-joint anisotropic ``log_scale ~ N(0, log_scale_std^2)``
  per session;
- pose: every axis-angle component of every non-root joint ``~ N(0, pose_std^2)``, drawn
  anew every frame, or, with ``pose_correlation`` ``rho`` in (0, 1), a video: each
  session's poses, tilts and offsets a first-order autoregression in time with the same
  spreads (each frame ``rho`` times the last plus ``sqrt(1 - rho^2)`` times a new draw),
  its heading a random walk of that step;
- global orientation: a uniform heading about ``up`` (or, with ``heading_range_deg`` <
  360, within that range of the rig's first camera azimuth) times a small tilt
  (``tilt_std`` radians);
- translation: the animal's centre is brought to the origin of the ground plane, plus a
  Gaussian offset of ``transl_std`` body lengths;
- cameras: ``num_views`` on a ring about ``up`` (evenly spaced, with a random offset
  and ``azimuth_jitter_deg``), at elevations drawn from ``elevation_deg`` and
  distance ``distance`` (by default chosen so that the body length spans ``fill`` of the
  image), looking at the animal's mean position, OpenCV convention ``x_cam = R X + t``,
  no distortion, focal length ``focal`` pixels (or from ``fov_deg``).

Keypoint visibility: inside the image, in front of the camera and not occluded: its depth
is at most ``occlusion_tol`` (model units; by default 10 % of the body length, which
covers joints lying inside their own body segment) behind the rendered surface at its
pixel.
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import cv2
import numpy as np
import torch

from ..cameras.projection import project_points_numpy
from ..ops.normals import vertex_normals_np as vertex_normals
from ..renderers.zbuffer import Rasterization, rasterize
from .hdf5_format import DatasetWriter, encode_image, encode_mask
from .provenance import SOURCE_ATTR
from smilfit.body_models import SMILModel
from smilfit.body_models.rotations import matrix_to_axis_angle
from smilfit.registry import BODY_MODELS

__all__ = ['SyntheticOptions', 'generate_synthetic_dataset', 'look_at', 'ring_cameras',
           'render_view', 'shade_lambert', 'keypoint_visibility', 'up_vector',
           'build_body_model']

_UP = {'x': (1, 0, 0), 'y': (0, 1, 0), 'z': (0, 0, 1)}


def up_vector(up_axis: str) -> np.ndarray:
    """Unit vector of an ``up_axis`` string such as ``'z'`` or ``'-y'``."""
    sign = -1.0 if up_axis.startswith('-') else 1.0
    return sign * np.asarray(_UP[up_axis.lstrip('+-')], dtype=np.float64)


def _rotation_about(axis: np.ndarray, angle: float) -> np.ndarray:
    rvec = np.asarray(axis, dtype=np.float64) / np.linalg.norm(axis) * angle
    return cv2.Rodrigues(rvec)[0]


def look_at(center: np.ndarray, target: np.ndarray, up: np.ndarray) -> Tuple[np.ndarray,
                                                                                np.ndarray]:
    """World -> camera ``(R, t)`` of a camera at ``center`` looking at ``target``.

    OpenCV convention: the camera's +z points at the target, +x to the right and +y down
    (towards ``-up`` in the image). Works when looking straight along ``up`` too.
    """
    center = np.asarray(center, dtype=np.float64)
    forward = np.asarray(target, dtype=np.float64) - center
    forward /= np.linalg.norm(forward)
    up = np.asarray(up, dtype=np.float64)
    right = np.cross(forward, up)
    if np.linalg.norm(right) < 1e-8:                  # looking along up: pick any right
        helper = np.eye(3)[np.argmin(np.abs(forward))]
        right = np.cross(forward, helper)
    right /= np.linalg.norm(right)
    down = np.cross(forward, right)
    R = np.stack([right, down, forward])
    return R, -R @ center


def ring_cameras(num_views: int, *, target: np.ndarray, up: np.ndarray, distance: float,
                 elevations_deg: Sequence[float], azimuths_deg: Sequence[float],
                 focal: float, image_size: Sequence[int]) -> Dict[str, np.ndarray]:
    """Cameras on a ring about ``up`` through ``target``, all looking at ``target``.

    Returns:
        dict of ``K`` (C, 3, 3), ``dist`` (C, 5) zeros, ``R`` (C, 3, 3), ``t`` (C, 3),
        ``image_size`` (C, 2) as (W, H).
    """
    up = np.asarray(up, dtype=np.float64)
    target = np.asarray(target, dtype=np.float64)
    # Any direction orthogonal to up as azimuth 0.
    ref = np.eye(3)[np.argmin(np.abs(up))]
    ref = ref - up * (ref @ up)
    ref /= np.linalg.norm(ref)
    W, H = int(image_size[0]), int(image_size[1])
    K = np.array([[focal, 0.0, (W - 1) / 2.0], [0.0, focal, (H - 1) / 2.0], [0.0, 0.0, 1.0]])
    out = {k: [] for k in ('K', 'dist', 'R', 't', 'image_size')}
    for c in range(num_views):
        az, el = math.radians(azimuths_deg[c]), math.radians(elevations_deg[c])
        horiz = _rotation_about(up, az) @ ref
        center = target + distance * (math.cos(el) * horiz + math.sin(el) * up)
        R, t = look_at(center, target, up)
        out['K'].append(K)
        out['dist'].append(np.zeros(5))
        out['R'].append(R)
        out['t'].append(t)
        out['image_size'].append((W, H))
    return {k: np.asarray(v) for k, v in out.items()}


def shade_lambert(raster: Rasterization, faces: np.ndarray, normals_cam: np.ndarray, *,
                  albedo: Sequence[float] = (0.75, 0.7, 0.65),
                  light_dir: Sequence[float] = (0.3, 0.5, 1.0),
                  ambient: float = 0.3, diffuse: float = 0.7,
                  background: Optional[np.ndarray] = None) -> np.ndarray:
    """A Lambert-shaded (H, W, 3) uint8 RGB image of a rasterised mesh (the synthetic look:
    a directional light and a background image; the fit visuals use a headlight instead,
    :func:`smilfit.visualization.render_mesh`).

    Args:
        raster: the output of :func:`smilfit.renderers.zbuffer.rasterize`.
        faces: (F, 3) the faces it was rasterised with.
        normals_cam: (V, 3) vertex normals in camera coordinates (interpolated per pixel
            and turned towards the camera, so the shading is two-sided).
        albedo: RGB surface colour in [0, 1].
        light_dir: direction the light travels *towards*, in camera coordinates (the
            default comes from above-left of the camera and points into the scene).
        ambient, diffuse: Lambert weights.
        background: (H, W, 3) image or an RGB triple in [0, 255] (rounded and clipped to
            uint8; pass a uint8 image to skip that); grey if None.

    Returns:
        (H, W, 3) uint8 RGB image.
    """
    face_index = raster.face_index.cpu().numpy()
    H, W = face_index.shape
    if background is None:
        background = (90, 90, 90)
    bg = np.asarray(background)
    if bg.dtype != np.uint8:
        bg = np.clip(np.rint(bg), 0, 255).astype(np.uint8)
    out = np.array(np.broadcast_to(bg, (H, W, 3)), dtype=np.uint8)
    mask = face_index >= 0
    if mask.any():
        fi = face_index[mask]
        bary = raster.bary.cpu().numpy()[mask]
        n = np.einsum('pk,pkc->pc', bary, np.asarray(normals_cam)[np.asarray(faces)[fi]])
        n /= np.maximum(np.linalg.norm(n, axis=1, keepdims=True), 1e-12)
        # Turn normals towards the camera: the view ray at the pixel points along +z-ish.
        flip = n[:, 2] > 0                     # facing away from a camera looking down +z
        n[flip] *= -1
        light = -np.asarray(light_dir, dtype=np.float64)
        light /= np.linalg.norm(light)
        lam = np.clip(n @ light, 0.0, None)
        colour = np.asarray(albedo, dtype=np.float64)[None] * (ambient + diffuse * lam)[:, None]
        out[mask] = np.clip(np.rint(255.0 * colour), 0, 255).astype(np.uint8)
    return out


def render_view(vertices: np.ndarray, faces: np.ndarray, normals: np.ndarray,
                K: np.ndarray, R: np.ndarray, t: np.ndarray, dist: np.ndarray,
                image_size: Sequence[int], *, albedo: Sequence[float] = (0.75, 0.7, 0.65),
                background: Optional[np.ndarray] = None) -> Dict[str, np.ndarray]:
    """Render one view of a mesh: ``image`` (H, W, 3) uint8 RGB, ``mask`` (H, W) bool,
    ``depth`` (H, W) (inf on the background).

    ``vertices`` are world coordinates, ``K, R, t, dist`` one OpenCV camera and
    ``image_size`` ``(W, H)``; the rasteriser is :func:`smilfit.renderers.zbuffer.rasterize`.
    """
    raster = rasterize(vertices, faces, K, R, t, dist, height=int(image_size[1]),
                       width=int(image_size[0]))
    image = shade_lambert(raster, faces, normals @ np.asarray(R).T, albedo=albedo,
                          background=background)
    return {'image': image, 'mask': raster.mask.cpu().numpy(),
            'depth': raster.depth.cpu().numpy()}


def keypoint_visibility(uv: np.ndarray, depth: np.ndarray, depth_buffer: np.ndarray,
                        tol: float) -> np.ndarray:
    """(N,) bool: inside the image, in front of the camera and at most ``tol`` behind the
    rendered surface at the keypoint's (nearest) pixel."""
    H, W = depth_buffer.shape
    col = np.rint(uv[:, 0])
    row = np.rint(uv[:, 1])
    inside = np.isfinite(uv).all(1) & (col >= 0) & (col < W) & (row >= 0) & (row < H) \
        & (depth > 0)
    vis = np.zeros(len(uv), dtype=bool)
    r, c = row[inside].astype(np.int64), col[inside].astype(np.int64)
    vis[inside] = depth[inside] <= depth_buffer[r, c] + tol
    return vis


def _in_time(draws: np.ndarray, rho: float) -> np.ndarray:
    """(F, ...) independent draws of a stationary spread made a first-order
    autoregression along frames with correlation ``rho`` and the same spread (``rho`` 0:
    returned as they are)."""
    if rho <= 0.0:
        return draws
    out = draws.copy()
    step = math.sqrt(1.0 - rho * rho)
    for f in range(1, len(out)):        # (a recursion in time: one step per frame)
        out[f] = rho * out[f - 1] + step * draws[f]
    return out


def _sample_betas(rng: np.random.Generator, data: Any, num_betas: int,
                  scale: float) -> np.ndarray:
    if num_betas == 0:
        return np.zeros(0)
    mean = np.zeros(num_betas) if data.shape_mean is None else \
        np.asarray(data.shape_mean, dtype=np.float64)[:num_betas]
    if data.shape_cov is None:
        cov = np.eye(num_betas)
    else:
        cov = np.asarray(data.shape_cov, dtype=np.float64)[:num_betas, :num_betas]
    w, V = np.linalg.eigh(0.5 * (cov + cov.T))
    L = V * np.sqrt(np.clip(w, 0.0, None))
    return mean + scale * (L @ rng.standard_normal(num_betas))


def build_body_model(body_model: Any = None):
    """A :class:`~smilfit.body_models.SMILModel` from an instance, a config dict, a model
    file path or None (the embedded demo mouse), in float64."""
    if body_model is None:
        body_model = dict(type='DemoSMILModel')
    if isinstance(body_model, (str, Path)):
        body_model = SMILModel(model_path=str(body_model), dtype=torch.float64)
    elif isinstance(body_model, dict):
        cfg = dict(body_model)
        cfg.setdefault('dtype', torch.float64)
        body_model = BODY_MODELS.build(cfg)
    return body_model.to(torch.float64)


class SyntheticOptions(dict):
    """Generator options with their defaults (a dict; see :func:`generate_synthetic_dataset`)."""

    DEFAULTS: Dict[str, Any] = dict(
        num_sessions=4, frames_per_session=8, num_views=4, image_size=(256, 256),
        focal=None, fov_deg=40.0, distance=None, fill=0.6, elevation_deg=(15.0, 45.0),
        azimuth_jitter_deg=10.0, heading_range_deg=360.0, pose_std=0.3, tilt_std=0.1,
        transl_std=0.1, pose_correlation=0.0,
        shape_std_scale=1.0, log_scale_std=0.0, occlusion_tol=None, jpeg_quality=92,
        masks=True, seed=0)

    def __init__(self, **options: Any) -> None:
        unknown = set(options) - set(self.DEFAULTS)
        if unknown:
            raise TypeError(f'unknown synthetic options {sorted(unknown)}; known: '
                            f'{sorted(self.DEFAULTS)}')
        super().__init__({**self.DEFAULTS, **options})
        if not 0.0 <= float(self['heading_range_deg']) <= 360.0:
            raise ValueError(f"heading_range_deg must be in [0, 360], got "
                             f"{self['heading_range_deg']!r}")
        if not 0.0 <= float(self['pose_correlation']) < 1.0:
            raise ValueError(f"pose_correlation must be in [0, 1), got "
                             f"{self['pose_correlation']!r}")


def _rest_length(model) -> float:
    with torch.no_grad():
        v = model(return_vertices=True).vertices[0].numpy()
    return float(np.max(v.max(0) - v.min(0)))


def generate_synthetic_dataset(out_path: Union[str, Path], *, body_model: Any = None,
                               overwrite: bool = False, progress: bool = True,
                               source_record: Optional[Mapping[str, Any]] = None,
                               **options: Any) -> Path:
    """Generate a synthetic multi-view dataset and write it as smilfit HDF5.

    Args:
        out_path: the ``.h5`` file to write.
        body_model: a ``SMILModel``, a ``BODY_MODELS`` config dict, a model file path, or
            None for the embedded demo mouse.
        overwrite: replace an existing file.
        progress: show a tqdm progress bar.
        source_record: what the dataset is made from
            (:func:`smilfit.datasets.provenance.expected_source`), stored with it.
        options: see :class:`SyntheticOptions` and the module docstring:
            ``num_sessions``, ``frames_per_session``, ``num_views``, ``image_size``
            (W, H) or int, ``focal`` (pixels) or ``fov_deg`` (horizontal), ``distance``
            (model units; None: from ``fill``, the fraction of the image the body length
            spans), ``elevation_deg`` (one value or a (min, max) range), ``azimuth_jitter_deg``,
            ``heading_range_deg`` (360: any heading; less: headings within that range
            about the rig's first camera azimuth, e.g. for a quick-start regressor),
            ``pose_std`` / ``tilt_std`` (radians), ``transl_std`` (body lengths),
            ``pose_correlation`` (0: every frame drawn anew; ``rho`` in (0, 1): each
            session a video whose frames are correlated by ``rho``),
            ``shape_std_scale``, ``log_scale_std``, ``occlusion_tol`` (model units),
            ``jpeg_quality``, ``masks``, ``seed``.

    Returns:
        The path written.
    """
    from tqdm import tqdm

    opts = SyntheticOptions(**options)
    size = opts['image_size']
    W, H = (int(size), int(size)) if np.ndim(size) == 0 else (int(size[0]), int(size[1]))
    C, S, F = int(opts['num_views']), int(opts['num_sessions']), int(opts['frames_per_session'])
    if min(C, S, F) < 1:
        raise ValueError('num_views, num_sessions and frames_per_session must be >= 1')
    model = build_body_model(body_model)
    data = model.data
    J, Kb = model.num_joints, model.num_betas
    faces = model.faces.numpy()
    up = up_vector(data.up_axis)
    length = _rest_length(model)
    focal = float(opts['focal']) if opts['focal'] else \
        (W / 2.0) / math.tan(math.radians(opts['fov_deg']) / 2.0)
    distance = float(opts['distance']) if opts['distance'] else \
        focal * length / (float(opts['fill']) * min(W, H))
    tol = float(opts['occlusion_tol']) if opts['occlusion_tol'] is not None else 0.1 * length
    elev = opts['elevation_deg']
    elev_range = (float(elev), float(elev)) if np.ndim(elev) == 0 else \
        (float(elev[0]), float(elev[1]))
    rng = np.random.default_rng(int(opts['seed']))

    attrs = {'generator': 'smilfit.datasets.synthetic',
             'options': json.dumps({k: (list(v) if isinstance(v, tuple) else v)
                                    for k, v in opts.items()}),
             'body_model': getattr(data, 'name', '') or type(model).__name__,
             'up_axis': data.up_axis}
    if source_record is not None:
        attrs[SOURCE_ATTR] = json.dumps(dict(source_record), sort_keys=True)
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    bar = tqdm(total=S * F, desc='synthetic', unit='frame', disable=not progress)
    with DatasetWriter(str(out_path), keypoint_names=list(model.keypoint_names),
                       num_views=C, overwrite=overwrite, source='synthetic',
                       units=data.units, attrs=attrs) as writer:
        for s in range(S):
            session_name = f'synthetic_{s:04d}'
            session = writer.add_session(session_name, [f'cam_{c}' for c in range(C)])
            # --- the animal: shape, proportions, colour
            betas = _sample_betas(rng, data, Kb, float(opts['shape_std_scale']))
            log_scale = float(opts['log_scale_std']) * rng.standard_normal((J, 3))
            albedo = rng.uniform(0.35, 0.95) * np.array([1.0, rng.uniform(0.8, 1.0),
                                                         rng.uniform(0.65, 1.0)])
            # --- poses
            rho = float(opts['pose_correlation'])
            body_pose = _in_time(
                float(opts['pose_std']) * rng.standard_normal((F, J - 1, 3)), rho)
            heading_range = float(opts['heading_range_deg'])
            if heading_range >= 360.0:
                heading = rng.uniform(-math.pi, math.pi, F)
            else:  # relative to the rig (drawn first): an easier, curriculum-style set
                az0 = rng.uniform(0.0, 360.0)
                heading = math.radians(az0) + np.radians(
                    rng.uniform(-heading_range / 2, heading_range / 2, F))
            if rho > 0.0:       # a video turns a little every frame, from its first heading
                heading = heading[0] + np.concatenate([[0.0], np.cumsum(
                    math.sqrt(1.0 - rho * rho) * float(opts['pose_std'])
                    * rng.standard_normal(F - 1))])
            tilt = _in_time(float(opts['tilt_std']) * rng.standard_normal((F, 3)), rho)
            rots = np.stack([_rotation_about(up, heading[f]) @ cv2.Rodrigues(tilt[f])[0]
                             for f in range(F)])
            global_orient = matrix_to_axis_angle(torch.as_tensor(rots)).numpy()
            offsets = _in_time(float(opts['transl_std']) * length
                               * rng.standard_normal((F, 3)), rho)
            offsets -= np.outer(offsets @ up, up)               # stay on the ground plane
            params = dict(global_orient=global_orient, body_pose=body_pose,
                          betas=np.repeat(betas[None], F, 0),
                          transl=np.zeros((F, 3)),
                          log_scale=np.repeat(log_scale[None], F, 0),
                          bone_trans=np.zeros((F, J, 3)))
            with torch.no_grad():
                out = model(**{k: torch.as_tensor(v) for k, v in params.items()})
            verts, kps = out.vertices.numpy(), out.keypoints.numpy()
            centre = verts.mean(1)                                # (F, 3)
            transl = -(centre - np.outer(centre @ up, up)) + offsets
            params['transl'] = transl
            verts = verts + transl[:, None]
            kps = kps + transl[:, None]
            # --- the rig: looks at the mean position of the animal in this session
            target = (verts.mean(1)).mean(0)
            if heading_range >= 360.0:
                az0 = rng.uniform(0.0, 360.0)
            azimuths = az0 + 360.0 * np.arange(C) / C \
                + rng.uniform(-1, 1, C) * float(opts['azimuth_jitter_deg'])
            elevations = rng.uniform(*elev_range, C)
            cams = ring_cameras(C, target=target, up=up, distance=distance,
                                elevations_deg=elevations, azimuths_deg=azimuths, focal=focal,
                                image_size=(W, H))
            bg_top = rng.uniform(40, 200, (C, 3))
            bg_bottom = np.clip(bg_top * rng.uniform(0.6, 1.2, (C, 1)), 0, 255)
            ramp = np.linspace(0.0, 1.0, H)[None, :, None, None]
            backgrounds = (bg_top[:, None, None] * (1 - ramp)
                           + bg_bottom[:, None, None] * ramp)          # (C, H, 1, 3)
            backgrounds = np.broadcast_to(np.clip(np.rint(backgrounds), 0, 255)
                                          .astype(np.uint8), (C, H, W, 3))
            # --- render
            kp2d = np.zeros((F, C, len(model.keypoint_names), 2), np.float32)
            visible = np.zeros((F, C, len(model.keypoint_names)), bool)
            images: List[List[bytes]] = []
            masks: List[List[bytes]] = []
            for f in range(F):
                normals = vertex_normals(verts[f], faces)
                row_img, row_mask = [], []
                for c in range(C):
                    view = render_view(verts[f], faces, normals, cams['K'][c], cams['R'][c],
                                       cams['t'][c], cams['dist'][c], (W, H), albedo=albedo,
                                       background=backgrounds[c])
                    uv, depth = project_points_numpy(kps[f], cams['K'][c], cams['R'][c], cams['t'][c],
                                         cams['dist'][c])
                    kp2d[f, c] = uv
                    visible[f, c] = keypoint_visibility(uv, depth, view['depth'], tol)
                    row_img.append(encode_image(view['image'], int(opts['jpeg_quality'])))
                    row_mask.append(encode_mask(view['mask']))
                images.append(row_img)
                masks.append(row_mask)
                bar.update(1)
            rep = lambda a: np.repeat(np.asarray(a)[None], F, 0)  # noqa: E731
            samples = {
                'session': np.full(F, session, dtype=np.int64),
                'frame': np.arange(F, dtype=np.int64),
                'valid': np.ones((F, C), bool),
                'keypoints_2d': kp2d,
                'confidence': visible.astype(np.float32),
                'visible': visible,
                'K': rep(cams['K']).astype(np.float64),
                'dist': rep(cams['dist']).astype(np.float64),
                'R': rep(cams['R']).astype(np.float64),
                't': rep(cams['t']).astype(np.float64),
                'image_size': rep(cams['image_size']).astype(np.int64),
                'crop': np.broadcast_to(np.eye(3), (F, C, 3, 3)).copy(),
                'images': images,
                'keypoints_3d': kps.astype(np.float32),
                'params': {k: np.asarray(v, dtype=np.float32) for k, v in params.items()},
            }
            if opts['masks']:
                samples['masks'] = masks
            writer.add_samples(samples)
        writer.commit()
    bar.close()
    return out_path
