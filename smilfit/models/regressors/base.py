"""What every body regressor shares: encode views, refine vectors, decode, losses, predict.

:class:`BodyRegressor` is an mmengine ``BaseModel``:

``images (B, C, 3, H, W)`` --backbone per view--> ``pooled (B, C, D)``, ``tokens (B, C, N, D)``
--neck (optional; cross-view fusion)--> ``memory``, per-view and fused features
--head (IEF)--> body vector (B, P_b) and camera vectors (B, C, P_c) per iteration
--codecs--> body parameters, OpenCV cameras ``K, R, t, dist`` per view
--body model--> joints / keypoints (/ vertices) in the world frame --> losses or predictions.

**Frames.** With ``camera=dict(init='calibrated')`` the body is predicted in the frame of
the calibrated camera of view slot 0 and mapped to the world with that camera, so that
predictions (and ground-truth parameter losses) live in the dataset's world frame whatever
the rig's orientation; the cameras are the calibrated ones, optionally refined
(``predict=True``). With ``init='default'`` every view's camera is predicted relative to
the body's frame (the usual single-image setting); parameters are then in that frame
(compare ``body_pose``/``betas`` with ground truth, not ``global_orient``/``transl``).

**Losses** reuse the fitting handlers (``HANDLERS``: ``Keypoint2DHandler`` through the
predicted cameras, ``Keypoint3DHandler``, ``ShapePriorHandler``, ``PosePriorHandler``,
``SilhouetteHandler`` when a renderer is configured, ...), plus ``param`` (ground-truth
parameters, when the batch has them) and ``triangulation`` (the 2D observations
triangulated through the predicted cameras against the predicted 3D keypoints). Every
term is the batch mean of the handler's per-sample loss times ``loss_weights[name]``
(changeable with :meth:`set_loss_weight`), averaged over the supervised IEF iterations,
and returned as ``loss_<name>``.
"""
from __future__ import annotations

import copy
import math
from dataclasses import replace
from typing import Any, Dict, List, Mapping, Optional, Sequence, Union

import torch
from mmengine.model import BaseModel
from torch import nn

from smilfit.body_models.rotations import (axis_angle_to_matrix, matrix_to_axis_angle,
                                           matrix_to_rotation_6d)
from smilfit.cameras.projection import project_points, undistort_pixels
from smilfit.cameras.triangulation import triangulate_dlt
from smilfit.handlers.matching import lookup_model_names, match_keypoints
from smilfit.registry import BODY_MODELS, HANDLERS, MODELS
from smilfit.utils.batch_tree import slice_batch, tile_batch

from ...errors import SmilfitUserError
from ..necks.fusion import masked_view_mean, valid_view_mask
from ..param_codec import BodyParamCodec, CameraCodec, upright_orientation

ModuleSpec = Union[dict, nn.Module]

#: Metadata passed from data samples into predictions.
META_KEYS = ('session', 'session_index', 'frame', 'instance', 'index', 'sample_idx',
             'flipped', 'view_indices', 'camera_names')
#: Metadata holding one string per view: collated per camera, unpacked per sample.
PER_VIEW_META_KEYS = ('camera_names',)
#: Default weights of the ground-truth parameter loss.
DEFAULT_PARAM_WEIGHTS = dict(global_orient=1.0, body_pose=1.0, betas=0.1, transl=1.0,
                             log_scale=1.0, bone_trans=1.0, scale_weights=0.1,
                             trans_weights=0.1)
#: How the ground-truth parameter loss compares rotations.
ROTATION_LOSSES = ('frobenius', 'raw_6d')
#: Loss terms computed by the regressor itself (besides its handlers).
BUILTIN_TERMS = ('param', 'triangulation', 'heading')


class KeypointCountError(SmilfitUserError, ValueError):
    """The data's keypoint count differs from the keypoints the model was set up for."""


def _build(registry, spec: ModuleSpec, **defaults: Any) -> nn.Module:
    if isinstance(spec, nn.Module):
        return spec
    cfg = dict(copy.deepcopy(dict(spec)))
    for k, v in defaults.items():
        cfg.setdefault(k, v)
    return registry.build(cfg)


def per_view_strings(value: Sequence[Any], i: int, B: int, C: int, key: str) -> List[str]:
    """Sample ``i``'s (C,) per-view strings (e.g. ``camera_names``) from a batch entry.

    mmengine's ``default_collate`` and ``pseudo_collate`` transpose a batch of per-sample
    string lists into one tuple per view (``value[c][i]`` is sample ``i``'s view ``c``);
    a batch assembled by hand holds one list per sample (``value[i][c]``). Collated tuples
    are told apart from per-sample lists by their type and lengths.

    Raises:
        ValueError: the entry fits neither layout (names ``key``).
    """
    value = list(value)
    collated = len(value) == C and all(isinstance(v, tuple) and len(v) == B for v in value)
    if collated:
        return [str(v[i]) for v in value]
    per_sample = len(value) == B and all(
        isinstance(v, (list, tuple)) and len(v) == C for v in value)
    if per_sample:
        return [str(n) for n in value[i]]
    raise ValueError(f'data_samples[{key!r}] must hold {C} per-view entries of {B} samples '
                     f'(as collated) or {B} per-sample lists of {C} views; got '
                     f'{len(value)} entries of lengths '
                     f'{[len(v) if isinstance(v, (list, tuple)) else None for v in value]}')


def rest_body_length(body_model) -> float:
    """Largest extent of the rest-pose mesh (model units); joints when there are no
    vertices."""
    with torch.no_grad():
        out = body_model(return_vertices=True)
    pts = out.vertices if out.vertices is not None and out.vertices.shape[1] else out.joints
    ext = pts[0].max(0).values - pts[0].min(0).values
    return float(ext.max())


def rotation_geodesic_sq(R1: torch.Tensor, R2: torch.Tensor) -> torch.Tensor:
    """Squared Frobenius distance of rotation matrices (..., 3, 3) -> (...,)
    (``= 8 sin^2(angle / 2)``: smooth everywhere, unlike the angle itself)."""
    d = R1 - R2
    return (d * d).sum((-1, -2))


def triangulation_consistency(points2d: torch.Tensor, weights: torch.Tensor,
                              K: torch.Tensor, R: torch.Tensor, t: torch.Tensor,
                              dist: Optional[torch.Tensor], points3d: torch.Tensor,
                              scale: float = 1.0) -> torch.Tensor:
    """Mean squared distance between triangulated observations and predicted 3D points.

    The 2D observations are undistorted and triangulated (DLT, differentiable) through the
    *predicted* cameras; the result is compared with the predicted 3D points.

    Args:
        points2d: (B, C, N, 2) observed pixels (NaN missing).
        weights: (B, C, N) non-negative weights (0 = absent).
        K, R, t, dist: (B, C, ...) cameras (``dist`` (B, C, 5) or None).
        points3d: (B, N, 3) predicted points, same order as ``points2d``.
        scale: length that distances are divided by (e.g. the body length).

    Returns:
        (B,) mean over the points seen in at least two views of ``|X_tri - X| ^ 2 /
        scale ^ 2`` (0 where none is).
    """
    ok = torch.isfinite(points2d).all(-1) & (weights > 0)
    uv = torch.where(ok[..., None], points2d, torch.zeros_like(points2d))
    if dist is not None:
        uv = undistort_pixels(uv, K, dist)
    P = K @ torch.cat([R, t[..., None]], -1)
    X = triangulate_dlt(uv, P, torch.where(ok, weights, torch.zeros_like(weights)))
    good = torch.isfinite(X).all(-1) & torch.isfinite(points3d).all(-1)
    diff = torch.where(good[..., None], X - points3d, torch.zeros_like(X))
    sq = (diff * diff).sum(-1) / (scale * scale)
    return sq.sum(1) / good.sum(1).clamp_min(1).to(sq.dtype)


class BodyRegressor(BaseModel):
    """Body-model regressor over C views (single view: C = 1).

    Args:
        backbone: ``MODELS`` config of a backbone (:class:`~smilfit.models.TimmBackbone`).
        head: ``MODELS`` config of a head (``in_dim``, ``body_dim``, ``camera_dim``,
            ``num_views`` are filled in).
        body_model: ``BODY_MODELS`` config or module (kept fixed, no parameters trained).
        neck: optional ``MODELS`` config of a fusion neck (``in_dim`` and ``max_views``
            filled in), e.g. :class:`~smilfit.models.CrossViewFusion`.
        num_views: C, the canonical view slots (1 for single view).
        param_codec: :class:`~smilfit.models.BodyParamCodec` options (``rotation``,
            ``per_joint_scale``, ``per_joint_trans``, ``init_global_orient``: axis-angle
            or ``'upright'`` (default: the model's up axis to image up)).
        camera: :class:`~smilfit.models.CameraCodec` options (``model``, ``init``,
            ``predict``, ``predict_rotation``, ``fov_deg``, ``distance``) and ``fill``
            (the fraction of the image the body spans; sets the default ``distance``).
        losses: ``HANDLERS`` configs (each with a unique ``name``).
        param_weights: ``{param: weight}`` of the ground-truth parameter loss
            (``DEFAULT_PARAM_WEIGHTS``; keys the batch lacks are skipped).
        loss_weights: ``{term: weight}``: handler names, ``'param'``, ``'triangulation'``
            (defaults: 1 for handlers, 1 for param, 0 for triangulation).
        keypoint_names: the data's keypoint names (default: the body model's keypoint
            names, as in synthetic data); see :meth:`setup_keypoints`.
        joint_lookup: model keypoint name -> data keypoint name.
        supervise_iterations: ``'all'`` (every IEF iteration, averaged) or ``'last'``.
        heading_bins: K > 0 turns on MultiBin heading (Mousavian et al. 2017): a linear
            classifier on the fused features picks one of K headings (rotations of the
            initial global orientation by ``2 pi k / K`` about the camera's vertical
            axis) and the head refines from that bin's orientation, so it only regresses
            a residual of at most ``pi / K``. Trained with cross-entropy against the
            ground truth's bin (term ``heading``, weight 1 by default; the classifier
            reads ``heading_features``) and with the head
            started from the ground truth's bin (teacher forcing); without ground truth
            and at test time the classifier's bin is used. 0: off (one fixed start).
            Regressing a uniform 360-degree heading directly stalls: the L2 optimum of
            an unresolved heading is the mean rotation (docs/regression.md).
        heading_features: what the heading classifier reads: ``'fused'`` (the fused
            feature vector) or ``'grid'`` (every view slot's backbone feature map pooled
            to a ``heading_grid`` x ``heading_grid`` grid and concatenated, through a
            LayerNorm-MLP: where the head is in the image is kept, which is what the
            heading is).
        heading_grid: cells per side of the ``'grid'`` features.
        rotation_loss: how ``param`` compares rotations: ``'frobenius'`` (squared
            Frobenius distance of the decoded matrices) or ``'raw_6d'`` (squared distance
            of the head's raw, not yet orthonormalised 6D output to the target's 6D, in
            the body vector's frame; needs ``param_codec.rotation='6d'``). ``'raw_6d'``
            has no singularity when the network is unsure of the heading: the
            Frobenius loss then pulls the 6D columns towards their mean (near zero for
            a uniform heading), where Gram-Schmidt's gradient explodes and the heading
            is not learnt (docs/regression.md, "Training that learns").
        embedding: optional AniMer-style embedding: ``dict(neck=dict(type=
            'FeatureFusionNeck', ...), part_keypoint='head', part_size=0.4,
            inputs=('backbone', 'part', 'params'))``; ``in_dims`` are filled in.
        compile_loss: ``torch.compile`` what runs after the backbone in training
            (``mode='loss'``): the head and the scoring of its iterations (decode, body
            model, losses); True or a dict of ``torch.compile`` options (e.g.
            ``dict(mode='max-autotune-no-cudagraphs')``). On a GPU these are a few
            thousand small kernels whose launches, not arithmetic, bound a step; compiled,
            they fuse into a few hundred (``benchmarks/train_throughput.py
            --compile-loss``). The first training steps compile (tens of seconds);
            prediction stays eager. The backbone is compiled by the training config's
            ``compile=True`` (mmengine), which compiles the whole model instead.
        data_preprocessor: default ``RegressionDataPreprocessor``.
    """

    def __init__(self, backbone: ModuleSpec, head: ModuleSpec, body_model: ModuleSpec,
                 neck: Optional[ModuleSpec] = None, num_views: int = 1,
                 param_codec: Optional[dict] = None, camera: Optional[dict] = None,
                 losses: Sequence[ModuleSpec] = (), param_weights: Optional[dict] = None,
                 loss_weights: Optional[Mapping[str, float]] = None,
                 keypoint_names: Optional[Sequence[str]] = None,
                 joint_lookup: Optional[Mapping[str, Optional[str]]] = None,
                 supervise_iterations: str = 'all', embedding: Optional[dict] = None,
                 rotation_loss: str = 'frobenius', heading_bins: int = 0,
                 heading_features: str = 'fused', heading_grid: int = 2,
                 compile_loss: Union[bool, Mapping[str, Any]] = False,
                 data_preprocessor: Optional[Union[dict, nn.Module]] = None,
                 init_cfg: Optional[dict] = None) -> None:
        if data_preprocessor is None:
            data_preprocessor = dict(type='RegressionDataPreprocessor')
        if isinstance(data_preprocessor, Mapping):
            data_preprocessor = MODELS.build(dict(data_preprocessor))
        super().__init__(data_preprocessor=data_preprocessor, init_cfg=init_cfg)
        if supervise_iterations not in ('all', 'last'):
            raise ValueError(f"supervise_iterations must be 'all' or 'last', got "
                             f'{supervise_iterations!r}')
        self.num_views = int(num_views)
        if self.num_views < 1:
            raise ValueError(f'num_views must be >= 1, got {num_views}')
        self.supervise_iterations = supervise_iterations
        if rotation_loss not in ROTATION_LOSSES:
            raise ValueError(f'rotation_loss must be one of {ROTATION_LOSSES}, got '
                             f'{rotation_loss!r}')
        self.rotation_loss = rotation_loss
        # Body model: fixed, never trained.
        self.body_model = _build(BODY_MODELS, body_model)
        for p in self.body_model.parameters():
            p.requires_grad_(False)
        self.body_length = rest_body_length(self.body_model)
        # Codecs.
        cam_cfg = dict(camera or {})
        fill = float(cam_cfg.pop('fill', 0.6))
        fov = float(cam_cfg.get('fov_deg', 40.0))
        cam_cfg.setdefault('distance', self.body_length / (2.0 * math.tan(math.radians(fov) / 2)
                                                           * fill))
        self.camera_codec = CameraCodec(**cam_cfg)
        self.body_codec = self._build_body_codec(dict(param_codec or {}))
        if rotation_loss == 'raw_6d' and self.body_codec.rotation != '6d':
            raise ValueError("rotation_loss='raw_6d' needs param_codec=dict(rotation='6d'), "
                             f'got rotation={self.body_codec.rotation!r}')
        # Networks.
        self.backbone = _build(MODELS, backbone)
        feat_dim = int(self.backbone.out_dim)
        self.neck = None
        if neck is not None:
            self.neck = _build(MODELS, neck, in_dim=feat_dim, max_views=self.num_views)
            feat_dim = int(self.neck.out_dim)
        self.head = _build(MODELS, head, in_dim=feat_dim, body_dim=self.body_codec.dim,
                           camera_dim=self.camera_codec.dim, num_views=self.num_views)
        self.feature_dim = feat_dim
        self._build_heading(int(heading_bins), heading_features, int(heading_grid))
        self.embedding_cfg = None
        self.embedding_neck = None
        if embedding is not None:
            self._build_embedding(dict(embedding))
        # Losses.
        self.handlers = nn.ModuleDict()
        for spec in losses:
            handler = _build(HANDLERS, spec)
            if handler.name in self.handlers or handler.name in BUILTIN_TERMS:
                raise ValueError(f'loss name {handler.name!r} is used twice (or is one of '
                                 f'the built-in terms {BUILTIN_TERMS})')
            self.handlers[handler.name] = handler
        weights = dict(DEFAULT_PARAM_WEIGHTS)
        if param_weights is not None:
            unknown = sorted(set(param_weights) - set(DEFAULT_PARAM_WEIGHTS))
            if unknown:
                raise KeyError(f'param_weights: unknown parameters {unknown}; known: '
                               f'{sorted(DEFAULT_PARAM_WEIGHTS)}')
            weights = {k: float(param_weights.get(k, 0.0)) for k in DEFAULT_PARAM_WEIGHTS}
        self.param_weights = weights
        self.loss_weights: Dict[str, float] = {name: 1.0 for name in self.handlers}
        self.loss_weights.update(param=1.0, triangulation=0.0)
        if self.heading_bins:
            self.loss_weights['heading'] = 1.0
        self.loss_weights.update(self._extra_loss_weights())
        for name, w in dict(loss_weights or {}).items():
            self.set_loss_weight(name, w)
        self.setup_keypoints(keypoint_names, joint_lookup)
        if not isinstance(compile_loss, (bool, Mapping)):
            raise TypeError(f'compile_loss must be a bool or a dict of torch.compile options, '
                            f'got {type(compile_loss).__name__}')
        self.compile_loss = dict(compile_loss) if isinstance(compile_loss, Mapping) else \
            ({} if compile_loss else None)
        self._compiled: Dict[str, Any] = {}

    def __getstate__(self) -> Dict[str, Any]:
        # Compiled functions are bound to this instance and cannot be copied (EMA and
        # deepcopy); a copy compiles its own on first use.
        state = dict(super().__getstate__())
        state['_compiled'] = {}
        return state

    def _maybe_compiled(self, name: str, fn):
        """``fn`` compiled (once per instance) when ``compile_loss`` is on and training."""
        if self.compile_loss is None or not self.training:
            return fn
        if name not in self._compiled:
            self._compiled[name] = torch.compile(fn, **self.compile_loss)
        return self._compiled[name]

    # ------------------------------------------------------------------ construction
    def _extra_loss_weights(self) -> Dict[str, float]:
        """Default weights of subclass loss terms."""
        return {}

    def _build_heading(self, bins: int, features: str, grid: int) -> None:
        """MultiBin heading: classifier, bin rotations and the reference direction."""
        if bins < 0:
            raise ValueError(f'heading_bins must be >= 0, got {bins}')
        if features not in ('fused', 'grid') or grid < 1:
            raise ValueError(f"heading_features must be 'fused' or 'grid' and heading_grid "
                             f'>= 1, got {features!r}, {grid}')
        self.heading_bins, self.heading_features, self.heading_grid = bins, features, grid
        self.heading_classifier = None
        if not bins:
            return
        if features == 'fused':
            self.heading_classifier = nn.Linear(self.feature_dim, bins)
            last = self.heading_classifier
        else:
            n_in = self.num_views * grid * grid * int(self.backbone.out_dim)
            hidden = 256
            self.heading_classifier = nn.Sequential(nn.LayerNorm(n_in), nn.Linear(n_in, hidden),
                                                    nn.GELU(), nn.Linear(hidden, bins))
            last = self.heading_classifier[-1]
        nn.init.zeros_(last.weight)
        nn.init.zeros_(last.bias)
        # Bin k: the initial orientation turned by 2 pi k / K about the camera's y axis
        # (image vertical; the initial orientation stands the model's up axis on it).
        angles = torch.arange(bins, dtype=torch.float64) * (2 * math.pi / bins)
        turns = axis_angle_to_matrix(torch.stack([torch.zeros_like(angles), angles,
                                                  torch.zeros_like(angles)], -1))
        init_R = self.body_codec.decode(self.body_codec.init_vector[None].double())[
            'global_orient'][0]
        # A model direction orthogonal to the up axis: its turn about y is the heading.
        up = init_R.T @ torch.tensor([0.0, -1.0, 0.0], dtype=torch.float64)
        ref = torch.eye(3, dtype=torch.float64)[int(torch.argmin(up.abs()))]
        ref = ref - up * (ref @ up)
        bin_R = turns @ init_R
        self.register_buffer('heading_bin_R', bin_R.float(), persistent=False)
        self.register_buffer('heading_ref', (init_R @ (ref / ref.norm())).float(),
                             persistent=False)
        self.register_buffer('heading_model_ref', (ref / ref.norm()).float(),
                             persistent=False)
        raw = self.body_codec.encode(dict(global_orient=bin_R))
        self.register_buffer('heading_bin_vectors',
                             raw[:, self.body_codec.slices['global_orient']].float(),
                             persistent=False)

    def heading_targets(self, data_samples: Optional[Mapping[str, Any]], B: int
                        ) -> Optional[torch.Tensor]:
        """(B,) the ground truth's heading bin in the body vector's frame, or None
        without ground-truth ``global_orient`` (or calibration, for calibrated cameras)."""
        gt = (data_samples or {}).get('params') or {}
        if not self.heading_bins or gt.get('global_orient') is None:
            return None
        R = axis_angle_to_matrix(gt['global_orient'].to(self.heading_bin_R))
        if self.camera_codec.uses_calibration:
            cal_R = self._view_tensor(data_samples, 'R', B, self.num_views, 2)
            if cal_R is None:
                return None
            R = cal_R[:, 0].to(R) @ R
        v = R @ self.heading_model_ref                       # (B, 3) camera frame
        a = self.heading_ref
        angle = torch.atan2(a[2] * v[:, 0] - a[0] * v[:, 2], a[0] * v[:, 0] + a[2] * v[:, 2])
        width = 2 * math.pi / self.heading_bins
        return torch.remainder(torch.round(angle / width), self.heading_bins).long()

    def _build_body_codec(self, cfg: dict) -> BodyParamCodec:
        model = self.body_model
        calibrated = self.camera_codec.uses_calibration
        go = cfg.pop('init_global_orient', 'upright')
        if isinstance(go, str):
            if go != 'upright':
                raise ValueError(f"init_global_orient must be 'upright' or (3,) axis-angle, "
                                 f'got {go!r}')
            go = upright_orientation(getattr(model.data, 'up_axis', 'y'))
        go = torch.as_tensor(go, dtype=torch.float64).reshape(3)
        scaledirs = getattr(model, 'scaledirs', None)
        transdirs = getattr(model, 'transdirs', None)
        cfg.setdefault('num_scale_weights', 0 if scaledirs is None else scaledirs.shape[0])
        cfg.setdefault('num_trans_weights', 0 if transdirs is None else transdirs.shape[0])
        # Start centred on the optical axis at the camera distance (calibrated: the
        # body's frame is the reference camera's) or at the origin (default cameras).
        with torch.no_grad():
            out = model(global_orient=axis_angle_to_matrix(go)[None].to(model.dtype),
                        return_vertices=True)
        pts = out.vertices if out.vertices is not None else out.joints
        centre = pts[0].mean(0).double()
        target = torch.tensor([0.0, 0.0, self.camera_codec.distance if calibrated else 0.0],
                              dtype=torch.float64)
        cfg.setdefault('init_transl', (target - centre).tolist())
        cfg.setdefault('length_scale', self.camera_codec.distance)
        return BodyParamCodec(model.num_joints, model.num_betas, init_global_orient=go, **cfg)

    def _build_embedding(self, cfg: dict) -> None:
        inputs = tuple(cfg.pop('inputs', ('backbone', 'part', 'params')))
        neck = dict(cfg.pop('neck', dict(type='FeatureFusionNeck')))
        sizes = dict(backbone=int(self.backbone.out_dim), fused=self.feature_dim,
                     part=int(self.backbone.out_dim), params=self.body_codec.dim)
        unknown = [k for k in inputs if k not in sizes]
        if unknown:
            raise KeyError(f'embedding inputs {unknown} unknown; choose from {sorted(sizes)}')
        neck['in_dims'] = {k: sizes[k] for k in inputs}
        self.embedding_neck = MODELS.build(neck)
        part = cfg.pop('part_keypoint', None)
        if 'part' in inputs and part is None:
            raise ValueError("embedding input 'part' needs part_keypoint (a model keypoint "
                             'name to crop around, e.g. the head)')
        if part is not None and part not in self.body_model.keypoint_names:
            raise KeyError(f'embedding part_keypoint {part!r} is not a model keypoint; '
                           f'model keypoints: {self.body_model.keypoint_names}')
        self.embedding_cfg = dict(inputs=inputs, part_keypoint=part,
                                  part_size=float(cfg.pop('part_size', 0.4)),
                                  part_resolution=cfg.pop('part_resolution', None))
        if cfg:
            raise KeyError(f'embedding: unknown options {sorted(cfg)}')

    def setup_keypoints(self, keypoint_names: Optional[Sequence[str]] = None,
                        joint_lookup: Optional[Mapping[str, Optional[str]]] = None) -> None:
        """Set the data's keypoint names (e.g. from a dataset's ``metainfo``) and match
        the body model's keypoints to them by name; handlers are set up again."""
        model_names = list(self.body_model.keypoint_names)
        self.keypoint_names = list(model_names if keypoint_names is None else keypoint_names)
        self.joint_lookup = None if joint_lookup is None else dict(joint_lookup)
        self.keypoint_match = match_keypoints(
            model_names, self.keypoint_names, self.joint_lookup,
            lookup_names=lookup_model_names(self.body_model))
        data_info = dict(keypoint_names=self.keypoint_names)
        if self.joint_lookup is not None:
            data_info['joint_lookup'] = self.joint_lookup
        for handler in self.handlers.values():
            handler.setup(self.body_model, data_info)

    # ------------------------------------------------------------------ loss weights
    def set_loss_weight(self, name: str, weight: float) -> None:
        """Set ``loss_weights[name]`` (a curriculum hook calls this; finite, >= 0)."""
        if name not in self.loss_weights:
            raise KeyError(f'unknown loss {name!r}; known: {sorted(self.loss_weights)}')
        weight = float(weight)
        if not math.isfinite(weight) or weight < 0:
            raise ValueError(f'loss weight {name!r} must be finite and >= 0, got {weight}')
        self.loss_weights[name] = weight

    # ------------------------------------------------------------------ encode
    def _as_views(self, inputs: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) or (B, C, 3, H, W) -> (B, C, 3, H, W) with C = num_views."""
        if inputs.ndim == 4:
            inputs = inputs[:, None]
        if inputs.ndim != 5 or inputs.shape[2] != 3:
            raise ValueError(f'{type(self).__name__}: inputs must be (B, 3, H, W) or (B, C, '
                             f'3, H, W), got {tuple(inputs.shape)}')
        if inputs.shape[1] != self.num_views:
            raise ValueError(f'{type(self).__name__}: {inputs.shape[1]} views in the batch, '
                             f'the model has num_views={self.num_views} view slots (set '
                             'max_views in the dataset to match)')
        return inputs

    @staticmethod
    def _view_tensor(data_samples: Mapping[str, Any], key: str, B: int, C: int,
                     event_ndim: int) -> Optional[torch.Tensor]:
        """A per-view sample tensor with its view axis (squeezed single view restored)."""
        x = data_samples.get(key) if data_samples else None
        if x is None:
            return None
        if x.ndim == 1 + event_ndim:       # (B, ...) squeezed single view
            x = x[:, None]
        return x

    def encode(self, inputs: torch.Tensor, data_samples: Optional[Mapping[str, Any]] = None
               ) -> Dict[str, torch.Tensor]:
        """Backbone (+ neck) features of every view.

        Returns:
            ``memory`` (B, M, D) tokens for the head, ``memory_mask`` (B, M) or None,
            ``views`` (B, C, D) and ``fused`` (B, D) features, ``backbone_views`` (B, C,
            D_b) and ``backbone`` (B, D_b) pooled backbone features, ``view_valid`` (B, C).
        """
        x = self._as_views(inputs)
        B, C = x.shape[:2]
        feats = self.backbone(x.flatten(0, 1))
        pooled = feats['pooled'].reshape(B, C, -1)
        tokens = feats['tokens'].reshape(B, C, feats['tokens'].shape[1], -1)
        valid = valid_view_mask(self._view_tensor(data_samples, 'view_valid', B, C, 0), B, C,
                                x.device)
        enc = dict(backbone_views=pooled, backbone=masked_view_mean(pooled, valid),
                   view_valid=valid, backbone_tokens=tokens)
        if self.neck is not None:
            fused = self.neck(tokens, pooled, valid)
            enc.update(memory=fused['memory'], memory_mask=fused['memory_mask'],
                       views=fused['views'], fused=fused['fused'])
        else:
            N = tokens.shape[2]
            enc.update(memory=tokens.reshape(B, C * N, -1),
                       memory_mask=(~valid)[:, :, None].expand(B, C, N).reshape(B, C * N),
                       views=pooled, fused=enc['backbone'])
        return enc

    def initial_vectors(self, B: int, device, dtype,
                        heading_bins: Optional[torch.Tensor] = None
                        ) -> Dict[str, Optional[torch.Tensor]]:
        """The vectors the head starts from: ``body`` (B, P_b), ``cameras`` (B, C, P_c);
        with ``heading_bins`` (B,) long each sample starts from its bin's orientation."""
        body = self.body_codec.init_vector.to(device=device, dtype=dtype).expand(B, -1)
        if heading_bins is not None:
            sl = self.body_codec.slices['global_orient']
            body = body.clone()
            body[:, sl] = self.heading_bin_vectors.to(device=device, dtype=dtype)[
                heading_bins.to(device)]
        cams = None
        if self.camera_codec.dim:
            cams = self.camera_codec.init_vector.to(device=device, dtype=dtype).expand(
                B, self.num_views, -1)
        return dict(body=body, cameras=cams)

    def _heading_input(self, enc: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """(B, F) what the heading classifier reads (see ``heading_features``)."""
        if self.heading_features == 'fused':
            return enc['fused']
        tokens = enc['backbone_tokens']                           # (B, C, N, D)
        B, C, N, D = tokens.shape
        side = int(round(math.sqrt(N)))
        if side * side != N:
            raise ValueError(f"heading_features='grid' needs a square token grid, got "
                             f'{N} tokens per view')
        x = tokens.reshape(B * C, side, side, D).permute(0, 3, 1, 2)
        x = torch.nn.functional.adaptive_avg_pool2d(x, self.heading_grid)
        valid = enc['view_valid'].to(x.dtype).reshape(B * C, 1, 1, 1)
        return (x * valid).reshape(B, -1)

    def run_head(self, enc: Dict[str, torch.Tensor],
                 data_samples: Optional[Mapping[str, Any]] = None
                 ) -> List[Dict[str, torch.Tensor]]:
        """Run the head from the initial vectors. With MultiBin heading, ``enc`` gets
        ``heading_logits`` (B, K), ``heading_target`` (B,) or None and ``heading_bin``
        (B,): the ground truth's bin in training when known, else the classifier's."""
        B = enc['fused'].shape[0]
        bins = None
        if self.heading_bins:
            logits = self.heading_classifier(self._heading_input(enc))
            target = self.heading_targets(data_samples, B)
            bins = target if (self.training and target is not None) else \
                logits.detach().argmax(-1)
            enc.update(heading_logits=logits, heading_target=target, heading_bin=bins)
        init = self.initial_vectors(B, enc['fused'].device, enc['fused'].dtype, bins)
        head = self._maybe_compiled('head', self.head)
        return head(enc['memory'], enc.get('memory_mask'), enc['views'], enc['fused'],
                    init['body'], init['cameras'])

    # ------------------------------------------------------------------ decode
    def _calibration(self, data_samples: Mapping[str, Any], B: int, C: int
                     ) -> Optional[Dict[str, torch.Tensor]]:
        cal = {}
        for key, ev in (('K', 2), ('R', 2), ('t', 1), ('dist', 1)):
            x = self._view_tensor(data_samples, key, B, C, ev)
            if x is not None:
                cal[key] = x
        if not all(k in cal for k in ('K', 'R', 't')):
            return None
        return cal

    def _image_size(self, inputs_hw: Sequence[int], device) -> torch.Tensor:
        H, W = int(inputs_hw[0]), int(inputs_hw[1])
        return torch.tensor([W, H], device=device)

    def decode(self, pred: Mapping[str, torch.Tensor], data_samples: Mapping[str, Any],
               image_hw: Sequence[int], return_vertices: bool = False) -> Dict[str, Any]:
        """Body and camera vectors -> parameters, cameras and the posed body (world frame).

        Returns:
            ``params`` (world frame; rotations as matrices), ``cameras`` (``K``, ``R``,
            ``t``, ``dist``: (B, C, ...)), ``output`` (:class:`BodyModelOutput`, world
            frame) and ``body`` (the body vector).
        """
        body_vec = pred['body']
        B, C = body_vec.shape[0], self.num_views
        cal = self._calibration(data_samples, B, C) if data_samples else None
        if self.camera_codec.uses_calibration and cal is None:
            raise KeyError("camera init='calibrated' needs K, R and t in data_samples")
        size = self._image_size(image_hw, body_vec.device)
        cams = self.camera_codec.decode(pred.get('cameras'), size, cal, (B, C))
        params = self.body_codec.decode(body_vec)
        model_params = {k: (v.to(self.body_model.dtype)) for k, v in params.items()}
        out = self.body_model(**model_params, return_vertices=return_vertices)
        if self.camera_codec.uses_calibration:
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

    # ------------------------------------------------------------------ losses
    def _needs_vertices(self) -> bool:
        return any(getattr(h, 'needs_vertices', False) and self.loss_weights.get(n, 0) > 0
                   for n, h in self.handlers.items())

    @staticmethod
    def handler_params(decoded: Mapping[str, Any]) -> Dict[str, torch.Tensor]:
        """What handlers read from ``params``: body parameters and the predicted cameras
        (``camera_K`` ... take precedence over the observed cameras)."""
        params = dict(decoded['params'])
        cams = decoded['cameras']
        params.update(camera_K=cams['K'], camera_R=cams['R'], camera_t=cams['t'],
                      camera_dist=cams['dist'])
        return params

    def param_loss(self, params: Mapping[str, torch.Tensor],
                   gt: Mapping[str, torch.Tensor], body: Optional[torch.Tensor] = None,
                   reference_R: Optional[torch.Tensor] = None) -> Optional[torch.Tensor]:
        """(B,) weighted ground-truth parameter loss, or None when nothing is comparable.

        Args:
            params: decoded parameters (world frame, rotation matrices).
            gt: ground-truth parameters (axis-angle rotations, world frame).
            body: (B, P_b) the body vector (needed by ``rotation_loss='raw_6d'``).
            reference_R: (B, 3, 3) world -> body-vector frame rotation (the calibrated
                reference camera's; None: the frames coincide).
        """
        raw = None
        if self.rotation_loss == 'raw_6d' and body is not None:
            raw = self.body_codec.split(body)
        total = None
        for key, w in self.param_weights.items():
            if w <= 0 or key not in params or gt.get(key) is None:
                continue
            pred, target = params[key], gt[key].to(params[key])
            if key in ('global_orient', 'body_pose'):
                target = axis_angle_to_matrix(target)
                if raw is None:
                    term = rotation_geodesic_sq(pred, target)
                else:
                    if key == 'global_orient' and reference_R is not None:
                        target = reference_R.to(target) @ target
                    diff = raw[key].to(target) - matrix_to_rotation_6d(target)
                    term = diff * diff
            else:
                if key == 'betas' and target.shape[-1] != pred.shape[-1]:
                    n = pred.shape[-1]
                    target = torch.nn.functional.pad(target, (0, max(0, n - target.shape[-1])))
                    target = target[..., :n]
                diff = pred - target
                if key == 'transl':
                    diff = diff / self.body_length
                term = diff * diff
            term = term.reshape(term.shape[0], -1).sum(1) * w
            total = term if total is None else total + term
        return total

    def _triangulation_loss(self, decoded: Mapping[str, Any],
                            data_samples: Mapping[str, Any]) -> Optional[torch.Tensor]:
        if self.num_views < 2 or data_samples.get('keypoints_2d') is None:
            return None
        B, C = decoded['body'].shape[0], self.num_views
        kp = self._view_tensor(data_samples, 'keypoints_2d', B, C, 2)
        m = self.keypoint_match
        kp = kp.index_select(2, m.data_index.to(kp.device))
        w = torch.ones(kp.shape[:3], dtype=kp.dtype, device=kp.device)
        for key in ('confidence', 'visible'):
            x = self._view_tensor(data_samples, key, B, C, 1)
            if x is not None:
                w = w * x.index_select(2, m.data_index.to(kp.device)).to(kp.dtype)
        vv = self._view_tensor(data_samples, 'view_valid', B, C, 0)
        if vv is not None:
            w = w * vv.to(kp.dtype)[..., None]
        cams = decoded['cameras']
        pts = decoded['output'].keypoints.index_select(1, m.model_index.to(kp.device))
        return triangulation_consistency(kp, w, cams['K'], cams['R'], cams['t'],
                                         cams['dist'], pts, self.body_length)

    def frame_losses(self, decoded: Mapping[str, Any], data_samples: Mapping[str, Any],
                     iterations: int = 1) -> Dict[str, torch.Tensor]:
        """Unweighted per-sample (B,) terms of one prediction: handlers, param,
        triangulation (terms with weight 0 are skipped).

        With ``iterations`` T > 1, ``decoded`` and ``data_samples`` hold T stacked
        predictions of the same B samples (T * B rows, iteration-major; see
        :func:`~smilfit.utils.batch_tree.tile_batch`) and the terms are (T * B,).
        Handlers whose loss couples the samples of a batch (``couples_samples``, e.g. a
        temporal term over a sequence) see one iteration at a time.
        """
        out: Dict[str, torch.Tensor] = {}
        params = self.handler_params(decoded)
        rows = decoded['body'].shape[0]
        B = rows // iterations
        for name, handler in self.handlers.items():
            if self.loss_weights.get(name, 0.0) <= 0:
                continue
            if iterations > 1 and getattr(handler, 'couples_samples', False):
                parts = [handler(*slice_batch((decoded['output'], data_samples, params),
                                              t * B, (t + 1) * B, rows))
                         for t in range(iterations)]
                out[name] = torch.cat(parts)
            else:
                out[name] = handler(decoded['output'], data_samples, params)
        if self.loss_weights['param'] > 0 and data_samples.get('params'):
            ref = None
            if self.camera_codec.uses_calibration:
                B = decoded['body'].shape[0]
                ref = self._view_tensor(data_samples, 'R', B, self.num_views, 2)[:, 0]
            term = self.param_loss(decoded['params'], data_samples['params'],
                                   body=decoded['body'], reference_R=ref)
            if term is not None:
                out['param'] = term
        if self.loss_weights['triangulation'] > 0:
            term = self._triangulation_loss(decoded, data_samples)
            if term is not None:
                out['triangulation'] = term
        return out

    def score_iterations(self, stacked: Mapping[str, Optional[torch.Tensor]],
                         data_samples: Mapping[str, Any], image_hw: Sequence[int],
                         iterations: int) -> tuple:
        """Decode T stacked predictions and score them: ``(terms, decoded)``, the
        per-row (T * B,) terms of :meth:`frame_losses` and the :meth:`decode` result;
        ``data_samples`` tiled to T * B rows (:func:`~smilfit.utils.batch_tree.tile_batch`).
        """
        decoded = self.decode(stacked, data_samples, image_hw,
                              return_vertices=self._needs_vertices())
        return self.frame_losses(decoded, data_samples, iterations), decoded

    def predictions(self, inputs: torch.Tensor, data_samples: Optional[Mapping[str, Any]]
                    ) -> Dict[str, Any]:
        """Encode and run the head: ``enc`` (features) and ``iterations`` (head outputs)."""
        enc = self.encode(inputs, data_samples)
        return dict(enc=enc, iterations=self.run_head(enc, data_samples))

    def check_data_keypoints(self, data_samples: Mapping[str, Any]) -> None:
        """The batch's keypoints must be the ones the model was set up with
        (``keypoint_names``): a dataset with another keypoint count would otherwise index
        out of range deep in a loss.

        Raises:
            KeypointCountError: the counts differ; names the field and both counts and says
                how to set the model's keypoint names.
        """
        for key in ('keypoints_2d', 'keypoints_3d'):
            value = data_samples.get(key) if isinstance(data_samples, Mapping) else None
            if value is None or not hasattr(value, 'shape'):
                continue
            count = value.shape[-2]
            if count != len(self.keypoint_names):
                names = self.keypoint_names
                whose = "the body model's keypoints" if names == list(
                    self.body_model.keypoint_names) else 'model.keypoint_names'
                raise KeypointCountError(
                    f'the data has {count} keypoints ({key}) but the model is set up for '
                    f'{len(names)} ({whose}: {", ".join(names[:6])}'
                    f'{", ..." if len(names) > 6 else ""}); set '
                    "model.keypoint_names to the dataset's keypoint names (and "
                    'model.joint_lookup to map them to the body model)')

    def loss(self, inputs: torch.Tensor, data_samples: Mapping[str, Any]
             ) -> Dict[str, torch.Tensor]:
        """``loss_<name>``: weighted batch means, averaged over supervised iterations."""
        self.check_data_keypoints(data_samples)
        res = self.predictions(inputs, data_samples)
        iters = res['iterations'] if self.supervise_iterations == 'all' \
            else res['iterations'][-1:]
        # The supervised iterations are decoded and scored as one batch of T * B rows:
        # the body model and every loss run once, not T times (on a GPU the step is
        # bound by kernel launches, not arithmetic). The mean over the T * B rows is the
        # mean over iterations of the batch means.
        T, B = len(iters), iters[0]['body'].shape[0]
        stacked = dict(body=torch.cat([p['body'] for p in iters]), cameras=None)
        if iters[0].get('cameras') is not None:
            stacked['cameras'] = torch.cat([p['cameras'] for p in iters])
        score = self._maybe_compiled('score', self.score_iterations)
        terms, decoded = score(stacked, tile_batch(data_samples, T, B),
                               tuple(inputs.shape[-2:]), T)
        losses = {f'loss_{name}': value.mean() * self.loss_weights[name]
                  for name, value in terms.items()}
        decoded = slice_batch(decoded, (T - 1) * B, T * B, T * B)
        enc = res['enc']
        if self.heading_bins and self.loss_weights['heading'] > 0 \
                and enc.get('heading_target') is not None:
            losses['loss_heading'] = self.loss_weights['heading'] * \
                torch.nn.functional.cross_entropy(enc['heading_logits'],
                                                  enc['heading_target'])
        losses.update(self.extra_losses(res, data_samples, decoded))
        if not losses:
            raise RuntimeError(f'{type(self).__name__}: no loss term is active (weights '
                               f'{self.loss_weights}; the batch has keys '
                               f'{sorted(data_samples)})')
        return losses

    def extra_losses(self, res: Mapping[str, Any], data_samples: Mapping[str, Any],
                     decoded: Mapping[str, Any]) -> Dict[str, torch.Tensor]:
        """Subclass hook for losses over the whole batch (e.g. temporal terms);
        ``decoded`` is the last iteration's :meth:`decode` result."""
        return {}

    # ------------------------------------------------------------------ features
    def project_keypoints(self, decoded: Mapping[str, Any]) -> Dict[str, torch.Tensor]:
        """Predicted keypoints in the data's order (NaN where no model keypoint matches):
        ``keypoints_3d`` (B, N, 3) world and ``keypoints_2d`` (B, C, N, 2) pixels."""
        out = decoded['output']
        m = self.keypoint_match
        B, N = out.keypoints.shape[0], len(self.keypoint_names)
        kp3d = out.keypoints.new_full((B, N, 3), float('nan'))
        kp3d[:, m.data_index.to(kp3d.device)] = out.keypoints[:, m.model_index.to(
            kp3d.device)]
        cams = decoded['cameras']
        kp2d = project_points(torch.nan_to_num(kp3d)[:, None], cams['K'], cams['R'],
                              cams['t'], cams['dist'])
        kp2d = torch.where(torch.isfinite(kp3d)[:, None, :, :2], kp2d,
                           torch.full_like(kp2d, float('nan')))
        return dict(keypoints_3d=kp3d, keypoints_2d=kp2d)

    def part_crops(self, inputs: torch.Tensor, centre: torch.Tensor) -> torch.Tensor:
        """(B, 3, h, w) square crops of view slot 0 centred on ``centre`` (B, 2) pixels,
        ``part_size`` times the shorter image side wide (bilinear, ``roi_align``)."""
        from torchvision.ops import roi_align
        x = self._as_views(inputs)[:, 0]
        B, _, H, W = x.shape
        half = 0.5 * self.embedding_cfg['part_size'] * min(H, W)
        centre = torch.nan_to_num(centre.detach().to(x.dtype), nan=0.0)
        boxes = torch.cat([torch.arange(B, device=x.device, dtype=x.dtype)[:, None],
                           centre - half, centre + half], 1)
        res = self.embedding_cfg['part_resolution'] or (H, W)
        res = (int(res), int(res)) if isinstance(res, (int, float)) else tuple(res)
        return roi_align(x, boxes, res, spatial_scale=1.0, sampling_ratio=2, aligned=True)

    def extract_features(self, inputs: torch.Tensor, data_samples: Optional[Mapping[str, Any]],
                         res: Optional[Mapping[str, Any]] = None,
                         decoded: Optional[Mapping[str, Any]] = None
                         ) -> Dict[str, torch.Tensor]:
        """Features for downstream use: ``backbone`` (B, D_b) (mean over valid views),
        ``backbone_views`` (B, C, D_b), ``fused`` (B, D), ``fused_views`` (B, C, D),
        ``params`` (B, P_b) the final body vector, and with an embedding neck ``part``
        (B, D_b) and ``embedding`` (B, E)."""
        if res is None:
            res = self.predictions(inputs, data_samples)
        enc, last = res['enc'], res['iterations'][-1]
        feats = dict(backbone=enc['backbone'], backbone_views=enc['backbone_views'],
                     fused=enc['fused'], fused_views=enc['views'], params=last['body'])
        if self.embedding_neck is not None:
            if 'part' in self.embedding_cfg['inputs']:
                if decoded is None:
                    decoded = self.decode(last, data_samples or {}, inputs.shape[-2:])
                cams = decoded['cameras']
                name = self.embedding_cfg['part_keypoint']
                i = self.body_model.keypoint_names.index(name)
                pt = decoded['output'].keypoints[:, i:i + 1]
                uv = project_points(pt, cams['K'][:, 0], cams['R'][:, 0], cams['t'][:, 0],
                                    cams['dist'][:, 0])[:, 0]
                feats['part'] = self.backbone(self.part_crops(inputs, uv))['pooled']
            feats['embedding'] = self.embedding_neck(
                {k: feats[k] for k in self.embedding_cfg['inputs']})
        return feats

    # ------------------------------------------------------------------ predict
    def predict(self, inputs: torch.Tensor, data_samples: Optional[Mapping[str, Any]] = None
                ) -> List[Dict[str, Any]]:
        """One dict per sample (see the package docstring for the keys)."""
        data_samples = data_samples or {}
        res = self.predictions(inputs, data_samples)
        decoded = self.decode(res['iterations'][-1], data_samples, inputs.shape[-2:])
        feats = self.extract_features(inputs, data_samples, res, decoded)
        kps = self.project_keypoints(decoded)
        return self.pack_predictions(decoded, kps, feats, data_samples, inputs.shape[-2:])

    def pack_predictions(self, decoded, kps, feats, data_samples, image_hw
                         ) -> List[Dict[str, Any]]:
        B, C = decoded['body'].shape[0], self.num_views
        params = {}
        for k, v in decoded['params'].items():
            if k in ('global_orient', 'body_pose'):
                v = matrix_to_axis_angle(v)
            params[k] = v
        cpu = {k: v.detach().cpu() for k, v in params.items()}
        cams = {k: v.detach().cpu() for k, v in decoded['cameras'].items()}
        feats = {k: v.detach().cpu() for k, v in feats.items()}
        kp2d, kp3d = kps['keypoints_2d'].detach().cpu(), kps['keypoints_3d'].detach().cpu()
        gt = {}
        for key, ev in (('keypoints_2d', 2), ('visible', 1), ('confidence', 1),
                        ('view_valid', 0), ('image_size', 1)):
            x = self._view_tensor(data_samples, key, B, C, ev)
            if x is not None:
                gt[key] = x.detach().cpu()
        H, W = int(image_hw[0]), int(image_hw[1])
        out = []
        for i in range(B):
            sample = dict(pred_params={k: v[i] for k, v in cpu.items()},
                          pred_keypoints_2d=kp2d[i], pred_keypoints_3d=kp3d[i],
                          pred_cameras={k: v[i] for k, v in cams.items()},
                          features={k: v[i] for k, v in feats.items()},
                          keypoint_names=self.keypoint_names,
                          image_size=gt['image_size'][i] if 'image_size' in gt else
                          torch.tensor([[W, H]] * C))
            if 'keypoints_2d' in gt:
                sample['gt_keypoints_2d'] = gt['keypoints_2d'][i]
            for key in ('visible', 'confidence', 'view_valid'):
                if key in gt:
                    sample[key] = gt[key][i]
            if data_samples.get('keypoints_3d') is not None:
                sample['gt_keypoints_3d'] = data_samples['keypoints_3d'][i].detach().cpu()
            if data_samples.get('params'):
                sample['gt_params'] = {k: v[i].detach().cpu()
                                       for k, v in data_samples['params'].items()}
            for key in META_KEYS:
                value = data_samples.get(key)
                if value is None:
                    continue
                if key in PER_VIEW_META_KEYS:
                    sample[key] = per_view_strings(value, i, B, C, key)
                    continue
                item = value[i]
                if isinstance(item, torch.Tensor):
                    item = item.detach().cpu()
                    item = item.item() if item.ndim == 0 else item
                sample[key] = item
            out.append(sample)
        return out

    # ------------------------------------------------------------------ forward
    def forward(self, inputs: torch.Tensor, data_samples: Optional[Mapping[str, Any]] = None,
                mode: str = 'tensor'):
        """mmengine's entry point: ``mode`` is ``'loss'``, ``'predict'`` or ``'tensor'``
        (the raw head outputs: ``iterations`` and the features ``enc``)."""
        if mode == 'loss':
            if not data_samples:
                raise ValueError(f"{type(self).__name__}: mode='loss' needs data_samples")
            return self.loss(inputs, data_samples)
        if mode == 'predict':
            return self.predict(inputs, data_samples)
        if mode == 'tensor':
            return self.predictions(inputs, data_samples)
        raise ValueError(f"mode must be 'loss', 'predict' or 'tensor', got {mode!r}")


__all__ = ['BodyRegressor', 'KeypointCountError', 'triangulation_consistency',
           'rotation_geodesic_sq', 'ROTATION_LOSSES',
           'rest_body_length', 'per_view_strings', 'DEFAULT_PARAM_WEIGHTS', 'META_KEYS',
           'PER_VIEW_META_KEYS']
