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

**Losses** (:mod:`.loss_terms`) are the fitting handlers and the built-in terms ``param``,
``triangulation`` and ``heading``. Every term is the batch mean of its per-sample loss times
``loss_weights[name]`` (changeable with :meth:`set_loss_weight`), averaged over the
supervised IEF iterations, and returned as ``loss_<name>``.

The regressor orchestrates; its parts live next to it: :mod:`.options` (constructor
options, parts built from configs), :mod:`.encoding` (views -> backbone and neck features),
:mod:`.head_start` (the head's start vectors, MultiBin heading bins), :mod:`.decoding`
(codecs, head outputs -> parameters, cameras, posed body), :mod:`.loss_terms` (handlers,
built-in terms, weights), :mod:`.packing` (predictions per sample), :mod:`.keypoints` (the
data's keypoints), :mod:`.embedding` (optional embedding); the heading head is in
:mod:`smilfit.models.heads.heading` and the built-in losses in :mod:`smilfit.losses`.
"""
from __future__ import annotations

import math
from typing import Any, Dict, List, Mapping, Optional, Sequence, Union

import torch
from mmengine.model import BaseModel
from torch import nn

# DEFAULT_PARAM_WEIGHTS, rotation_geodesic_sq, triangulation_consistency: re-exported.
from smilfit.body_models.keypoint_naming import source_carriers
from smilfit.losses.param_supervision import (DEFAULT_PARAM_WEIGHTS,  # noqa: F401
                                              ROTATION_LOSSES, rotation_geodesic_sq)
from smilfit.losses.triangulation import triangulation_consistency  # noqa: F401
from smilfit.registry import BODY_MODELS, MODELS
from smilfit.utils.batch_tree import slice_batch, tile_batch

from .decoding import (build_body_codec, build_camera_codec, decode_prediction,
                       full_precision, handler_params, project_keypoints, rest_body_length,
                       view_tensor)
from .embedding import embedding_settings, part_centre, part_crops
from .encoding import as_views, encode_views
from .head_start import build_heading, check_heading_options, heading_targets, initial_vectors
from .keypoints import (DataKeypointsError, KeypointCountError, check_data_keypoints,
                        check_keypoint_count, setup_keypoints)
# BUILTIN_TERMS: re-exported.
from .loss_terms import (BUILTIN_TERMS, build_builtin_losses, build_handlers,  # noqa: F401
                         checked_loss_weight, default_loss_weights, handler_terms,
                         triangulation_term)
from .options import (ModuleSpec, build_data_preprocessor, build_part, check_options,
                      check_rotation_codec, compile_options)
# META_KEYS, PER_VIEW_META_KEYS, per_view_strings: re-exported.
from .rig_units import estimate_rig_units, to_model_units, to_rig_units
from .packing import (META_KEYS, PER_VIEW_META_KEYS, pack_predictions,  # noqa: F401
                      per_view_strings)


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
        joint_lookup: model keypoint name -> data keypoint name, or a lookup CSV path.
        supervise_iterations: ``'all'`` (every IEF iteration, averaged) or ``'last'``.
        heading_bins: K > 0 turns on MultiBin heading (:mod:`.head_start`): a classifier
            (``heading_classifier``) picks one of K headings and the head refines from that
            bin's orientation. Term ``heading`` (cross-entropy, weight 1 by default). 0: off.
        heading_features: what the classifier reads: ``'fused'`` (the fused features) or
            ``'grid'`` (backbone feature maps pooled to ``heading_grid`` x ``heading_grid``
            cells; :class:`~smilfit.models.MultiBinHeadingHead`).
        heading_grid: cells per side of the ``'grid'`` features.
        rotation_loss: how ``param`` compares rotations
            (:class:`~smilfit.losses.ParamSupervisionLoss`): ``'frobenius'`` (the decoded
            matrices) or ``'raw_6d'`` (the head's raw 6D output in the body vector's frame;
            needs ``param_codec.rotation='6d'``; no singularity where the heading is
            unsure: docs/regression.md, "Training that learns").
        embedding: optional AniMer-style embedding: ``dict(neck=dict(type=
            'FeatureFusionNeck', ...), part_keypoint='head', part_size=0.4,
            inputs=('backbone', 'part', 'params'))``; ``in_dims`` are filled in.
        keypoint_offsets: learn one offset per model keypoint, in the frame of the joint
            carrying it (model units), shared by every sample: where this data's
            labellers put each keypoint relative to the model's (e.g. a "trunk" label on
            the fur above the spine joint). A consistent displacement is not pose: without
            it every pose is wrong by it. Starts at zero.
        compile_loss: ``torch.compile`` what runs after the backbone in training
            (``mode='loss'``): the head and the scoring of its iterations; True or a dict
            of ``torch.compile`` options (:func:`~.options.compile_options`).
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
                 keypoint_offsets: bool = False,
                 compile_loss: Union[bool, Mapping[str, Any]] = False,
                 data_preprocessor: Optional[Union[dict, nn.Module]] = None,
                 init_cfg: Optional[dict] = None) -> None:
        super().__init__(data_preprocessor=build_data_preprocessor(data_preprocessor),
                         init_cfg=init_cfg)
        self.num_views = check_options(num_views, supervise_iterations, rotation_loss)
        self.supervise_iterations = supervise_iterations
        self.rotation_loss = rotation_loss
        # Body model: fixed, never trained.
        self.body_model = build_part(BODY_MODELS, body_model, 'body model')
        for p in self.body_model.parameters():
            p.requires_grad_(False)
        self.body_length = rest_body_length(self.body_model)
        # Codecs.
        self.camera_codec = build_camera_codec(camera, self.body_length)
        self.body_codec = build_body_codec(self.body_model, self.camera_codec, param_codec)
        check_rotation_codec(rotation_loss, self.body_codec.rotation)
        # Networks.
        self.backbone = build_part(MODELS, backbone, 'backbone')
        feat_dim = int(self.backbone.out_dim)
        self.neck = None
        if neck is not None:
            self.neck = build_part(MODELS, neck, 'neck', in_dim=feat_dim,
                                   max_views=self.num_views)
            feat_dim = int(self.neck.out_dim)
        self.head = build_part(MODELS, head, 'head', in_dim=feat_dim,
                               body_dim=self.body_codec.dim, camera_dim=self.camera_codec.dim,
                               num_views=self.num_views)
        self.feature_dim = feat_dim
        self._build_heading(int(heading_bins), heading_features, int(heading_grid))
        self.embedding_cfg = None
        self.embedding_neck = None
        if embedding is not None:
            sizes = dict(backbone=int(self.backbone.out_dim), fused=self.feature_dim,
                         part=int(self.backbone.out_dim), params=self.body_codec.dim)
            neck_cfg, self.embedding_cfg = embedding_settings(
                embedding, sizes, self.body_model.keypoint_names)
            self.embedding_neck = MODELS.build(neck_cfg)
        # Losses.
        self.handlers = build_handlers(losses)
        self.builtin_losses = build_builtin_losses(param_weights, rotation_loss,
                                                   self.body_length)
        self.loss_weights: Dict[str, float] = default_loss_weights(
            self.handlers, bool(self.heading_bins), self._extra_loss_weights())
        for name, w in dict(loss_weights or {}).items():
            self.set_loss_weight(name, w)
        self.setup_keypoints(keypoint_names, joint_lookup)
        self.keypoint_offsets = None
        if keypoint_offsets:
            carriers = source_carriers(self.body_model, 'keypoints')
            self.register_buffer('_offset_carriers', carriers, persistent=False)
            self.keypoint_offsets = nn.Parameter(torch.zeros(
                len(carriers), 3, dtype=self.body_model.dtype))
        # The rig's units per model unit and the animal's depth in the cameras (model
        # units): NaN until measured (RigUnitsHook, set_rig_units); saved in checkpoints.
        self.register_buffer('rig_scale', torch.tensor(float('nan'), dtype=torch.float64))
        self.register_buffer('rig_depth', torch.tensor(float('nan'), dtype=torch.float64))
        # the same as host floats: read every step without a device sync
        self._rig_units = (float('nan'), float('nan'))
        self.compile_loss = compile_options(compile_loss)
        self._compiled: Dict[str, Any] = {}

    def __getstate__(self) -> Dict[str, Any]:
        # Compiled functions are bound to this instance and cannot be copied (EMA and
        # deepcopy); a copy compiles its own on first use.
        state = dict(super().__getstate__())
        state['_compiled'] = {}
        return state

    @property
    def param_weights(self) -> Dict[str, float]:
        """``{param: weight}`` of the ground-truth parameter loss (every known parameter;
        held by ``builtin_losses['param']``)."""
        return self.builtin_losses['param'].param_weights

    @param_weights.setter
    def param_weights(self, weights: Mapping[str, float]) -> None:
        self.builtin_losses['param'].param_weights = dict(weights)

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
        """MultiBin heading: the classifier (``heading_classifier``) and the start vectors
        of its bins ``heading_bin_vectors`` (K, P_rot) (:func:`~.head_start.build_heading`)."""
        check_heading_options(bins, features, grid)
        self.heading_bins, self.heading_features, self.heading_grid = bins, features, grid
        self.heading_classifier = None
        if not bins:
            return
        self.heading_classifier, vectors = build_heading(
            bins, features, grid, self.body_codec, self.feature_dim, self.num_views,
            int(self.backbone.out_dim))
        self.register_buffer('heading_bin_vectors', vectors, persistent=False)

    def heading_targets(self, data_samples: Optional[Mapping[str, Any]], B: int
                        ) -> Optional[torch.Tensor]:
        """(B,) the ground truth's heading bin in the body vector's frame, or None
        without MultiBin heading, ground-truth ``global_orient`` (or calibration, for
        calibrated cameras)."""
        if not self.heading_bins:
            return None
        return heading_targets(self.heading_classifier, data_samples, B,
                               self.camera_codec.uses_calibration, self.num_views)

    def setup_keypoints(self, keypoint_names: Optional[Sequence[str]] = None,
                        joint_lookup: Optional[Mapping[str, Optional[str]]] = None) -> None:
        """Set the data's keypoint names (e.g. from a dataset's ``metainfo``) and match
        the body model's keypoints to them by name; handlers are set up again."""
        self.keypoint_names, self.joint_lookup, self.keypoint_match = setup_keypoints(
            self.body_model, self.handlers, keypoint_names, joint_lookup)

    def check_data(self, data_keypoint_names: Sequence[str], data: str) -> None:
        """Refuse data whose keypoints are not the ones this model was set up for
        (:func:`.keypoints.check_data_keypoints`): every entry point calls this before a
        hook or step indexes the data with ``keypoint_match``."""
        check_data_keypoints(self.keypoint_names, data_keypoint_names,
                             self.body_model.keypoint_names, data)

    # ------------------------------------------------------------------ rig units
    def set_rig_units(self, scale: float, depth: Optional[float] = None) -> None:
        """Set the calibration's units per model unit (``scale``) and the animal's typical
        depth in the cameras (model units): see :mod:`.rig_units`. Inputs are divided by
        ``scale`` on the way in and predictions multiplied by it on the way out; the body
        starts ``depth`` in front of the reference camera."""
        scale = float(scale)
        if not (math.isfinite(scale) and scale > 0):
            raise ValueError(f'rig scale must be finite and > 0, got {scale}')
        if depth is not None and not (math.isfinite(float(depth)) and float(depth) > 0):
            raise ValueError(f'rig depth must be finite and > 0, got {depth}')
        depth = float('nan') if depth is None else float(depth)
        self.rig_scale.fill_(scale)
        self.rig_depth.fill_(depth)
        self._rig_units = (scale, depth)

    def estimate_rig_units(self, samples: Mapping[str, Any]):
        """``(scale, depth)`` measured on a batch of samples (:func:`.rig_units.
        estimate_rig_units`), or None where they hold too few 3D points."""
        return estimate_rig_units(self.body_model, self.keypoint_match, samples)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # Checkpoints saved before the rig's units were measured have no rig entries:
        # they load (strictly) with the units unset, as they were trained.
        for name in ('rig_scale', 'rig_depth'):
            state_dict.setdefault(prefix + name, torch.tensor(float('nan'),
                                                              dtype=torch.float64))
        # and before keypoint offsets were learned: none (zero) where this model learns them
        if self.keypoint_offsets is not None:
            state_dict.setdefault(prefix + 'keypoint_offsets',
                                  torch.zeros_like(self.keypoint_offsets))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
        self._rig_units = (float(state_dict[prefix + 'rig_scale']),
                           float(state_dict[prefix + 'rig_depth']))

    @property
    def uses_rig_units(self) -> bool:
        """Whether the rig's units are set (calibrated cameras only)."""
        return bool(self.camera_codec.uses_calibration and math.isfinite(self._rig_units[0]))

    @property
    def rig_units_scale(self) -> float:
        """The calibration's units per model unit (NaN: unset)."""
        return self._rig_units[0]

    def _in_model_units(self, data_samples: Optional[Mapping[str, Any]]):
        if not data_samples or not self.uses_rig_units:
            return data_samples
        return to_model_units(data_samples, self._rig_units[0])

    def _depth_offset(self) -> Optional[float]:
        if not self.uses_rig_units or not math.isfinite(self._rig_units[1]):
            return None
        return self._rig_units[1] - float(self.camera_codec.distance)

    # ------------------------------------------------------------------ loss weights
    def set_loss_weight(self, name: str, weight: float) -> None:
        """Set ``loss_weights[name]`` (a curriculum hook calls this; finite, >= 0)."""
        self.loss_weights[name] = checked_loss_weight(name, weight, self.loss_weights)

    # ------------------------------------------------------------------ encode
    def _as_views(self, inputs: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) or (B, C, 3, H, W) -> (B, C, 3, H, W) with C = num_views."""
        return as_views(inputs, self.num_views, type(self).__name__)

    def encode(self, inputs: torch.Tensor, data_samples: Optional[Mapping[str, Any]] = None
               ) -> Dict[str, torch.Tensor]:
        """Backbone (+ neck) features of every view (:func:`~.encoding.encode_views`:
        ``memory``, ``memory_mask``, ``views``, ``fused``, ``backbone_views``,
        ``backbone``, ``backbone_tokens``, ``view_valid``)."""
        return encode_views(self.backbone, self.neck, self._as_views(inputs), data_samples)

    def initial_vectors(self, B: int, device, dtype,
                        heading_bins: Optional[torch.Tensor] = None
                        ) -> Dict[str, Optional[torch.Tensor]]:
        """The vectors the head starts from: ``body`` (B, P_b), ``cameras`` (B, C, P_c);
        with ``heading_bins`` (B,) long each sample starts from its bin's orientation."""
        bins = None if heading_bins is None else self.heading_bin_vectors
        return initial_vectors(self.body_codec, self.camera_codec, B, self.num_views, device,
                               dtype, bins, heading_bins)

    def run_head(self, enc: Dict[str, torch.Tensor],
                 data_samples: Optional[Mapping[str, Any]] = None
                 ) -> List[Dict[str, torch.Tensor]]:
        """Run the head from the initial vectors. With MultiBin heading, ``enc`` gets
        ``heading_logits`` (B, K), ``heading_target`` (B,) or None and ``heading_bin``
        (B,): the ground truth's bin in training when known, else the classifier's."""
        B = enc['fused'].shape[0]
        bins = None
        if self.heading_bins:
            enc.update(self.heading_classifier(enc, self.heading_targets(data_samples, B)))
            bins = enc['heading_bin']
        init = self.initial_vectors(B, enc['fused'].device, enc['fused'].dtype, bins)
        head = self._maybe_compiled('head', self.head)
        return head(enc['memory'], enc.get('memory_mask'), enc['views'], enc['fused'],
                    init['body'], init['cameras'])

    # ------------------------------------------------------------------ decode
    def decode(self, pred: Mapping[str, torch.Tensor], data_samples: Mapping[str, Any],
               image_hw: Sequence[int], return_vertices: bool = False) -> Dict[str, Any]:
        """Body and camera vectors -> parameters, cameras and the posed body (world frame):
        :func:`~.decoding.decode_prediction` with this regressor's codecs and body model
        (``params``, ``cameras``, ``output``, ``body``)."""
        offsets = None if self.keypoint_offsets is None else \
            (self.keypoint_offsets, self._offset_carriers)
        with full_precision(pred['body'].device):
            return decode_prediction(pred, data_samples, image_hw, self.body_codec,
                                     self.camera_codec, self.body_model, self.num_views,
                                     return_vertices, self._depth_offset(), offsets)

    # ------------------------------------------------------------------ losses
    def _needs_vertices(self) -> bool:
        return any(getattr(h, 'needs_vertices', False) and self.loss_weights.get(n, 0) > 0
                   for n, h in self.handlers.items())

    #: What handlers read from ``params`` (:func:`~.decoding.handler_params`).
    handler_params = staticmethod(handler_params)

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
        raw = self.body_codec.split(body) if self.rotation_loss == 'raw_6d' and \
            body is not None else None
        return self.builtin_losses['param'](params, gt, raw=raw, reference_R=reference_R)

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
        with full_precision(decoded['body'].device):
            return self._frame_losses(decoded, data_samples, iterations)

    def _frame_losses(self, decoded: Mapping[str, Any], data_samples: Mapping[str, Any],
                      iterations: int) -> Dict[str, torch.Tensor]:
        rows = decoded['body'].shape[0]
        out = handler_terms(self.handlers, self.loss_weights, decoded['output'], data_samples,
                            self.handler_params(decoded), rows, iterations)
        if self.loss_weights['param'] > 0 and data_samples.get('params'):
            ref = None
            if self.camera_codec.uses_calibration:
                ref = view_tensor(data_samples, 'R', rows, self.num_views, 2)[:, 0]
            term = self.param_loss(decoded['params'], data_samples['params'],
                                   body=decoded['body'], reference_R=ref)
            if term is not None:
                out['param'] = term
        if self.loss_weights['triangulation'] > 0:
            term = triangulation_term(self.builtin_losses['triangulation'], decoded,
                                      data_samples, self.keypoint_match, self.num_views)
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
        check_keypoint_count(data_samples, self.keypoint_names, self.body_model.keypoint_names)

    def loss(self, inputs: torch.Tensor, data_samples: Mapping[str, Any]
             ) -> Dict[str, torch.Tensor]:
        """``loss_<name>``: weighted batch means, averaged over supervised iterations
        (lengths in model units: :mod:`.rig_units`)."""
        self.check_data_keypoints(data_samples)
        data_samples = self._in_model_units(data_samples)
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
                self.heading_classifier.loss(enc['heading_logits'], enc['heading_target'])
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
        with full_precision(decoded['body'].device):
            return project_keypoints(decoded, self.keypoint_match, len(self.keypoint_names))

    def part_crops(self, inputs: torch.Tensor, centre: torch.Tensor) -> torch.Tensor:
        """(B, 3, h, w) square crops of view slot 0 centred on ``centre`` (B, 2) pixels,
        ``part_size`` times the shorter image side wide (bilinear, ``roi_align``)."""
        return part_crops(self._as_views(inputs)[:, 0], centre, self.embedding_cfg['part_size'],
                          self.embedding_cfg['part_resolution'])

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
                i = self.body_model.keypoint_names.index(self.embedding_cfg['part_keypoint'])
                uv = part_centre(decoded, i)
                feats['part'] = self.backbone(self.part_crops(inputs, uv))['pooled']
            feats['embedding'] = self.embedding_neck(
                {k: feats[k] for k in self.embedding_cfg['inputs']})
        return feats

    # ------------------------------------------------------------------ predict
    def predict(self, inputs: torch.Tensor, data_samples: Optional[Mapping[str, Any]] = None
                ) -> List[Dict[str, Any]]:
        """One dict per sample (see the package docstring for the keys)."""
        data_samples = data_samples or {}
        inside = self._in_model_units(data_samples)
        res = self.predictions(inputs, inside)
        decoded = self.decode(res['iterations'][-1], inside, inputs.shape[-2:])
        feats = self.extract_features(inputs, inside, res, decoded)
        kps = self.project_keypoints(decoded)
        if self.uses_rig_units:   # predictions in the calibration's units
            decoded, kps = to_rig_units(decoded, kps, self._rig_units[0])
        if self.keypoint_offsets is not None:
            # The learned offsets belong to the prediction as a fit's do to its result:
            # re-posing the model keypoints from the parameters alone would miss them.
            B = decoded['body'].shape[0]
            offsets = self.keypoint_offsets.detach()[None].expand(B, -1, -1)
            decoded = dict(decoded, params=dict(decoded['params'], keypoint_offsets=offsets))
        return self.pack_predictions(decoded, kps, feats, data_samples, inputs.shape[-2:])

    def pack_predictions(self, decoded, kps, feats, data_samples, image_hw
                         ) -> List[Dict[str, Any]]:
        """One dict per sample: :func:`~.packing.pack_predictions`."""
        return pack_predictions(decoded, kps, feats, data_samples, image_hw, self.num_views,
                                self.keypoint_names)

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


__all__ = ['BodyRegressor', 'DataKeypointsError', 'KeypointCountError',
           'triangulation_consistency', 'rotation_geodesic_sq', 'ROTATION_LOSSES', 'ModuleSpec',
           'BUILTIN_TERMS', 'rest_body_length', 'per_view_strings', 'DEFAULT_PARAM_WEIGHTS',
           'META_KEYS', 'PER_VIEW_META_KEYS']
