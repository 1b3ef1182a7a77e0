"""2D keypoint reprojection handler (multi-view; single view is C = 1)."""
from __future__ import annotations

import functools
import inspect
from typing import Any, Mapping, Optional, Sequence

import torch

from ..body_models.keypoint_naming import left_right_order, left_right_pairs
from ..cameras.projection import (distort_normalized, normalized_to_pixels,
                                  project_with_jacobian, world_to_camera)
from ..registry import HANDLERS
from ..utils.memo import TensorMemo
from .base import LossSpec
from .matching import KeypointHandlerBase
from .offset_estimate import offset_steps
from .residual_scale import residual_scales
from .views import view_cameras, view_keypoints


def project_with_depth(points: torch.Tensor, K: torch.Tensor, R: torch.Tensor,
                       t: torch.Tensor, dist: Optional[torch.Tensor],
                       min_depth: float = 0.0):
    """Project world points and report which lie in front of the camera.

    Same result as :func:`smilfit.cameras.project_points` wherever ``depth >
    min_depth``; elsewhere the depth is replaced by 1 *before* the division, so points
    on or behind the camera plane give finite values and finite (zero, once masked)
    gradients. Nothing is clamped to the image.

    Args:
        points: (..., N, 3) world points; K, R, t, dist: cameras broadcasting over
            the dimensions before N (see :mod:`smilfit.cameras.projection`).
        min_depth: points with ``depth <= min_depth`` are reported invalid.

    Returns:
        ``(pixels (..., N, 2), in_front (..., N) bool)``.
    """
    x_cam = world_to_camera(points, R, t)
    z = x_cam[..., 2]
    in_front = z > min_depth
    z = torch.where(in_front, z, torch.ones_like(z))
    xy = x_cam[..., :2] / z[..., None]
    return normalized_to_pixels(distort_normalized(xy, dist), K), in_front


def observed_extent(points: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """(B, C) largest side of the bounding box of each view's valid (B, C, M, 2)
    points (pixels; 0 with fewer than two)."""
    inf = torch.full_like(points, float('inf'))
    lo = torch.where(valid[..., None], points, inf).amin(2)
    hi = torch.where(valid[..., None], points, -inf).amax(2)
    extent = (hi - lo).amax(-1)
    return torch.where(torch.isfinite(extent), extent, torch.zeros_like(extent)).detach()


#: Views that must see a point in its frame, weighing alike, for each view's share of its
#: error to show in the residuals (with two, the fit follows one and the other takes the
#: residual).
RESOLVING_VIEWS = 3
#: Views weigh alike where their noise scales are within this factor of the most precise
#: view's (their weights within its square): a view far less precise than the others
#: hardly pulls the fit, which then follows the precise ones as it follows two.
ALIKE_SCALE_RATIO = 2.0


def total_noise_ratio(measured: torch.Tensor, floored: torch.Tensor, valid: torch.Tensor
                      ) -> torch.Tensor:
    """(B,) ``sqrt(sum measured^2 / sum floored^2)`` of each sample's labels ``valid``
    (B, C, M) (every view and point): multiplied into its floored scales (B, C, M), it
    keeps their summed variance the measured one, so the floor sets how the sample's
    labels weigh against each other (with two views, the split of a point's error
    between them, which the residuals cannot tell) and not how its data weigh against
    the priors (the total, which they measure). 1 where the floor does not bind or
    nothing is seen. Pooled over the sample, not per point: a label the fit follows
    wholly (a paw at the end of its limb, seen by two views) has a residual near 0
    whatever its noise, and per point its scale collapsed stage by stage."""
    m = valid.to(measured.dtype)
    total = (m * measured * measured).sum((1, 2))
    floored_total = (m * floored * floored).sum((1, 2))
    ratio = (total / floored_total.clamp_min(torch.finfo(measured.dtype).tiny)).sqrt()
    return torch.where(floored_total > 0, ratio.clamp(max=1.0), torch.ones_like(ratio))


def relative_scale_floor(valid: torch.Tensor, unresolved: float, resolved: float,
                         previous: Optional[torch.Tensor] = None) -> torch.Tensor:
    """(B, C, M) the smallest noise scale of each point, as a fraction of the animal's
    extent: ``resolved`` where at least :data:`RESOLVING_VIEWS` views see the point in
    its frame (``valid`` (B, C, M)) and, given the scales ``previous`` (B, C, M) a stage
    measured before, that many of them weigh alike (:data:`ALIKE_SCALE_RATIO`);
    ``unresolved`` elsewhere."""
    seen = valid
    if previous is not None:
        scale = torch.where(valid & torch.isfinite(previous) & (previous > 0), previous,
                            torch.full_like(previous, float('inf')))
        best = scale.amin(1, keepdim=True)
        seen = valid & (scale <= ALIKE_SCALE_RATIO * best)
    resolving = (seen.sum(1, keepdim=True) >= RESOLVING_VIEWS).expand_as(valid)
    return torch.where(resolving, resolved, unresolved)


#: Pixel offset given to detected points that the model puts behind the camera.
BEHIND_CAMERA_PX = 1.0e4
#: How the noise scales of ``scale_from_residuals`` are pooled (see Keypoint2DHandler).
SCALE_POOLINGS = ('animal', 'frame')
#: Noise scales beyond which a point's error counts no more in the choice of exchanging an
#: instance's left and right labels (as the robust kernel's ``sigma=3`` of the configs).
EXCHANGE_TRUNCATION = 3.0
#: The largest leverage a residual is studentized by (``studentize``): a guard, a
#: residual the fit follows wholly (leverage 1) is zero and says nothing of the noise; at
#: this one it is scaled up 4.5 times at most.
MAX_LEVERAGE = 0.95


@HANDLERS.register_module()
class Keypoint2DHandler(KeypointHandlerBase):
    """Reprojection error of model keypoints against 2D detections in C views.

    Model points (``output.keypoints``, or ``output.joints`` with ``source='joints'``)
    are matched to data keypoints by name at :meth:`setup`, shifted by the optional
    ``params['keypoint_offsets']`` (B or 1, Kp, 3) (world frame), projected through
    each sample's and view's camera with lens distortion (fitted cameras
    ``params['camera_*']`` take precedence over the observed ones) and compared with
    ``observations['keypoints_2d']`` by the loss (``KeypointMSELoss`` by default, e.g.
    ``robust='gmof', sigma=<pixels>``). With ``scale_from_residuals=True`` the errors
    are scored in units of a noise scale the registrant estimates from the residuals at
    the start of every stage (:mod:`.residual_scale`: by default per view and keypoint
    over an animal's frames in every stage; with ``scale_pooling='frame'`` per view and
    sample in stages fitting per-frame parameters only), so the loss is a
    negative log-likelihood in noise units and a robust ``sigma`` is in those units
    (``sigma=3``: points beyond about 3 noise scales count less); no pixel constant is
    tuned to a rig. An element counts when its detection is finite,
    its confidence finite, ``visible`` true and the view ``view_valid``; a model point at
    ``depth <= min_depth`` is scored as if it were ``BEHIND_CAMERA_PX`` pixels from its
    detection (so crossing the camera plane never lowers the loss). The loss's ``weight`` is the
    confidence (``use_confidence``) times the per-keypoint importance
    ``keypoint_weights`` (by name). Projections are never clamped to the image.

    Config::

        dict(type='Keypoint2DHandler', name='kp2d', weight=1.0,
             loss=dict(type='KeypointMSELoss', robust='gmof', sigma=50.0),
             keypoint_weights={'nose': 2.0})

    Args:
        name, loss, weight, source, keypoints: see :class:`~.matching.KeypointHandlerBase`.
        joint_lookup, keypoint_weights, offsets_key, offsets_frame, check_finite: likewise.
        use_confidence: weight elements by ``observations['confidence']``.
        min_depth: minimum depth (world units) of a scored point.
        scale_from_residuals: score errors in units of the noise scale estimated from
            the residuals at each stage's start (``observations[scale_key]``, set by
            the registrant through :meth:`stage_observations`); without it (e.g. a
            direct call) errors are in pixels.
        scale_pooling: ``'animal'`` (default): one noise scale per (animal, view,
            keypoint), estimated over the animal's frames in the batch (the
            registrant's groups; a batch without them is one animal) in every stage,
            so a keypoint that is labelled less precisely (a tail tip against an ear)
            weighs less in every frame, and a frame fitted from as many parameters as
            it has coordinates (two views) does not set its own, understated scale.
            ``'frame'``: one per (frame, view) in stages that fit per-frame parameters
            only, per (animal, view, keypoint) in stages that fit shared ones.
        offsets_from_residuals: in a stage fitting per-animal joint-frame offsets
            (``offsets_frame='joint'``, the offsets shared), start every round from the
            offsets that best explain the residuals (:mod:`.offset_estimate`), so that a
            label consistently away from its joint is absorbed by its offset before the
            noise scales are measured, not taken for label noise.
        min_relative_scale: the smallest noise scale of a point that one or two views
            see in its frame, as a fraction of the animal's extent in the view (the
            spread of its observed keypoints, pixels). A frame fitted with about as many
            pose parameters as it has coordinates absorbs its label noise, and which of
            two views carries a point's error cannot be told (the fit follows one, the
            other takes its residual): there, labels are not believed more precise than
            this fraction of the animal's size, on any image resolution, and the floor
            sets the two views' balance.
        resolved_min_relative_scale: the same where three or more views see the point
            and weigh alike (their scales in the stage before within
            :data:`ALIKE_SCALE_RATIO` of the most precise one's, where a stage handed
            them on): each view's share of its error then shows in the residuals
            (studentized, ``studentize``), and the floor is only a guard for labels the
            model fits almost exactly (rendered ones). Held at ``min_relative_scale``
            there too, precise labels' noise is overstated and the priors (the motion
            prior most) hold the fit away from them (docs/fitting.md, "Why these
            settings").
        exchange_left_right: at every stage's start, fit an instance (a sample in one
            view) with its left and right labels exchanged where the model at the current
            parameters fits them better so (by more than one squared noise scale per
            paired point, errors truncated at :data:`EXCHANGE_TRUNCATION` scales), as a
            pose estimator exchanges them now and then; never more than half of a
            sample's views (where most views disagree with the model, the model is
            mirrored, not the labels). Pairs are the dataset's skeleton symmetries, else
            found by name (``_L``/``_R``, ``left``/``right``). The exchanged instances
            are ``observations[exchanged_key]`` (B, C) and the fit reports them.
        studentize: with ``scale_from_residuals``, measure the noise scales on the
            residuals divided by ``sqrt(1 - h)``, ``h`` each view's point's leverage on
            the fit of the stage before (:mod:`smilfit.registrants.solver.leverage`,
            ``observations[leverage_key]``, handed on by Levenberg-Marquardt stages of
            frames): the share of a label's error its own fit follows. Without it the
            residuals understate the noise where the fit follows its labels, and
            unevenly: of two views of a point the heavier one's residual shrinks most,
            so per-view scales run away from each other stage by stage.
        keep_measured_total: the floors (``min_relative_scale``,
            ``resolved_min_relative_scale``) set how a frame's labels weigh against each
            other only: its floored scales are then scaled down together until their
            summed variance is the measured one (:func:`total_noise_ratio`), never below
            ``resolved_min_relative_scale``, so where labels are more precise than the
            floor the data still weigh against the priors as the residuals say. False:
            the floored scales as they are (such labels weighed as no more precise than
            the floor).
    """

    def __init__(self, name: str, loss: Optional[LossSpec] = None, weight: float = 1.0,
                 source: str = 'keypoints', keypoints: Optional[Sequence[str]] = None,
                 joint_lookup: Optional[Mapping[str, Optional[str]]] = None,
                 keypoint_weights: Optional[Mapping[str, float]] = None,
                 offsets_key: Optional[str] = 'auto', offsets_frame: str = 'world',
                 use_confidence: bool = True, min_depth: float = 0.0,
                 check_finite: bool = False, scale_from_residuals: bool = False,
                 scale_pooling: str = 'animal', min_relative_scale: float = 0.01,
                 resolved_min_relative_scale: float = 0.001,
                 offsets_from_residuals: bool = True,
                 exchange_left_right: bool = False, studentize: bool = True,
                 keep_measured_total: bool = True) -> None:
        super().__init__(name, dict(type='KeypointMSELoss') if loss is None else loss,
                         weight, source=source, keypoints=keypoints,
                         joint_lookup=joint_lookup, keypoint_weights=keypoint_weights,
                         offsets_key=offsets_key, offsets_frame=offsets_frame,
                         check_finite=check_finite)
        self.use_confidence = bool(use_confidence)
        self.min_depth = float(min_depth)
        self.scale_from_residuals = bool(scale_from_residuals)
        if scale_pooling not in SCALE_POOLINGS:
            raise ValueError(f'handler {name!r}: scale_pooling must be one of '
                             f'{SCALE_POOLINGS}, got {scale_pooling!r}')
        self.scale_pooling = scale_pooling
        if not (min_relative_scale >= 0 and resolved_min_relative_scale >= 0):
            raise ValueError(f'handler {name!r}: min_relative_scale and '
                             f'resolved_min_relative_scale must be >= 0, got '
                             f'{min_relative_scale!r} and {resolved_min_relative_scale!r}')
        self.min_relative_scale = float(min_relative_scale)
        self.resolved_min_relative_scale = float(resolved_min_relative_scale)
        self.offsets_from_residuals = bool(offsets_from_residuals)
        self.exchange_left_right = bool(exchange_left_right)
        self.studentize = bool(studentize)
        self.keep_measured_total = bool(keep_measured_total)
        self.register_buffer('data_order', None, persistent=False)
        self.register_buffer('matched_mirror', None, persistent=False)
        self._observed = TensorMemo()   # see _pixel_terms
        self._scaled = TensorMemo()     # see _terms

    residual_kind = 'points'

    @property
    def scale_key(self) -> str:
        """Observation key of the (B, C, M) noise scales (pixels) of this handler."""
        return f'{self.name}.residual_scale'

    @property
    def leverage_key(self) -> Optional[str]:
        """Observation key of the (B, C, M) leverages of the points on the fit that its
        noise scales are studentized by, or ``None`` where they are not."""
        return (f'{self.name}.leverage' if self.studentize and self.scale_from_residuals
                else None)

    @property
    def previous_scale_key(self) -> str:
        """Observation key of the (B, C, M) noise scales of the stage that measured the
        leverages (``leverage_key``), handed on with them."""
        return f'{self.name}.previous_scale'

    @property
    def exchanged_key(self) -> str:
        """Observation key of the (B, C) instances fitted with left and right exchanged."""
        return f'{self.name}.exchanged'

    @property
    def needs_stage_observations(self) -> bool:
        return self.scale_from_residuals or self.exchanges

    @property
    def exchanges(self) -> bool:
        """Whether instances may be fitted with left and right exchanged (asked for, and
        the matched keypoints have left/right pairs)."""
        return self.exchange_left_right and self.matched_mirror is not None and bool(
            (self.matched_mirror >= 0).any())

    def setup(self, body_model, data_info: Optional[Mapping[str, Any]] = None) -> None:
        super().setup(body_model, data_info)
        if not self.exchange_left_right:
            return
        names = list(data_info['keypoint_names'])
        order = torch.as_tensor(left_right_order(
            len(names), left_right_pairs(names, data_info.get('keypoint_symmetries', ()))))
        matched_of = torch.full((len(names),), -1, dtype=torch.long)
        matched_of[self.data_index.cpu()] = torch.arange(len(self.data_index))
        mirror = matched_of[order[self.data_index.cpu()]]
        mirror[order[self.data_index.cpu()] == self.data_index.cpu()] = -1
        device = self.data_index.device
        self.data_order, self.matched_mirror = order.to(device), mirror.to(device)

    @property
    def pools_per_animal(self) -> bool:
        """Whether the registrant pools the noise scales over each animal's frames in
        every stage (``scale_pooling='animal'``)."""
        return self.scale_pooling == 'animal'

    def stage_observations(self, output, observations: Mapping[str, Any],
                           params: Mapping[str, Any],
                           groups: Optional[torch.Tensor] = None) -> dict:
        """``{scale_key: (B, C, M)}``: noise scales (pixels) from the errors at
        ``params``, per (group, view, keypoint) with ``groups`` (B,), else per (sample,
        view); empty without ``scale_from_residuals``. Points behind a camera and
        unobserved ones do not count."""
        obs = {k: v for k, v in observations.items()
               if k not in (self.scale_key, self.exchanged_key)}
        points = self.matched_points(output, params)
        # (the labels an exchange moves do not change where the points project)
        projected = self._project(points, obs, params)
        out = {}
        if self.exchanges:
            exchanged = self.exchanged_views(points, obs, params, groups, projected)
            obs = self.with_exchanged(obs, exchanged)
            out.update({k: obs[k] for k in ('keypoints_2d', 'visible', 'confidence')
                        if obs.get(k) is not None})
            out[self.exchanged_key] = exchanged
        if self.scale_from_residuals:
            out[self.scale_key] = self._noise_scales(points, obs, params, groups, projected,
                                                     obs.get(self.previous_scale_key))
        return out

    def _noise_scales(self, points: torch.Tensor, obs: Mapping[str, Any],
                      params: Mapping[str, Any], groups: Optional[torch.Tensor],
                      projected=None, previous: Optional[torch.Tensor] = None):
        """(B, C, M) noise scales (pixels) of the errors of ``points`` (module docstring);
        ``projected``: their :meth:`_project` where already computed; ``previous``: the
        scales the stage before measured (which views weigh alike, for the floor)."""
        pix, target, _, mask, in_front = self._pixel_terms(points, obs, params,
                                                           projected=projected)
        valid = mask & in_front & torch.isfinite(target).all(-1)
        errors = torch.nan_to_num(pix - target).norm(dim=-1).detach()
        leverage = obs.get(self.leverage_key) if self.leverage_key else None
        if leverage is not None and leverage.shape == errors.shape:
            # a residual the fit follows almost wholly says little of the noise: its
            # studentized value is not blown up past what MAX_LEVERAGE gives
            errors = errors / (1.0 - leverage.to(errors).clamp(0.0, MAX_LEVERAGE)).sqrt()
        scale = residual_scales(errors, valid, groups)
        if previous is not None and previous.shape != valid.shape:
            previous = None
        extent = observed_extent(target, valid)[..., None]
        floor = relative_scale_floor(valid, self.min_relative_scale,
                                     self.resolved_min_relative_scale, previous)
        floored = torch.maximum(scale, floor * extent)
        if not self.keep_measured_total:
            return floored
        guard = torch.minimum(self.resolved_min_relative_scale * extent, floored)
        return torch.maximum(floored * total_noise_ratio(scale, floored, valid)[:, None, None],
                             guard)

    def exchanged_views(self, points: torch.Tensor, observations: Mapping[str, Any],
                        params: Mapping[str, Any], groups: Optional[torch.Tensor] = None,
                        projected=None) -> torch.Tensor:
        """(B, C) bool: the instances whose labels ``points`` (B, M, 3) fit better with
        left and right exchanged (see ``exchange_left_right``); ``projected``: the points'
        :meth:`_project` where already computed."""
        pix, target, _, mask, in_front = self._pixel_terms(points, observations, params,
                                                           projected=projected)
        valid = mask & in_front & torch.isfinite(target).all(-1)
        scale = residual_scales(torch.nan_to_num(pix - target).norm(dim=-1).detach(), valid,
                                groups)
        mirror = self.matched_mirror.to(pix.device)
        paired = mirror >= 0
        other = mirror.clamp(min=0)
        both = valid & valid.index_select(2, other) & paired

        def cost(labels):
            e = (torch.nan_to_num(pix - labels).norm(dim=-1) / scale).square()
            return torch.where(both, e.clamp(max=EXCHANGE_TRUNCATION ** 2), 0).sum(-1)
        gain = cost(target) - cost(target.index_select(2, other))
        points_paired = both.sum(-1)
        prefer = (points_paired > 0) & (gain > points_paired)
        views = (points_paired > 0).sum(-1, keepdim=True)
        return prefer & (2 * prefer.sum(-1, keepdim=True) <= views)

    def with_exchanged(self, observations: Mapping[str, Any], exchanged: torch.Tensor
                       ) -> dict:
        """``observations`` with the labels (and their ``visible`` and ``confidence``) of
        the ``exchanged`` (B, C) instances' left/right pairs exchanged."""
        out = dict(observations)
        if not bool(exchanged.any()):
            return out
        views = view_keypoints(observations, self.name)
        order = self.data_order.to(exchanged.device)
        for key in ('keypoints_2d', 'visible', 'confidence'):
            value = views[key]
            if value is None:
                continue
            flip = exchanged.view(exchanged.shape + (1,) * (value.dim() - 2))
            value = torch.where(flip, value.index_select(2, order), value)
            out[key] = value[:, 0] if views['squeezed'] else value
        return out

    @property
    def estimates_shared(self) -> Sequence[str]:
        """The joint-frame offsets (with ``offsets_from_residuals``)."""
        if self.offsets_from_residuals and self.offsets_frame == 'joint' and self.offsets_key:
            return (self.offsets_key,)
        return ()

    def shared_starts(self, output, observations: Mapping[str, Any],
                      params: Mapping[str, Any], groups: torch.Tensor,
                      shared: Mapping[str, torch.Tensor]) -> dict:
        """``{offsets_key: (G, N, 3)}``: each group's offsets, those of a keypoint that
        stands out moved by the step that best explains its residuals, where that
        displacement is consistent (:func:`~.offset_estimate.offset_steps`)."""
        current = shared.get(self.offsets_key)
        if current is None or not self.estimates_shared:
            return {}
        residuals, jac, valid = self.offset_residuals(output, observations, params)
        index = self.model_index.to(current.device)
        step, _ = offset_steps(residuals, jac, valid, groups, current.shape[0])
        moved = current.clone()
        moved[:, index] = current[:, index] + step.to(current)
        return {self.offsets_key: moved}

    def offset_residuals(self, output, observations: Mapping[str, Any],
                         params: Mapping[str, Any]):
        """What estimating the joint-frame offsets from the residuals reads: the
        matched points' reprojection residuals (B, C, M, 2) (pixels, 0 where not
        observed), their Jacobian (B, C, M, 2, 3) with respect to each point's offset
        (through its carrying joint's world map) and the (B, C, M) elements that count."""
        obs = {k: v for k, v in observations.items() if k != self.scale_key}
        pix, target, _, mask, in_front, dpix = self._pixel_terms(
            self.matched_points(output, params), obs, params, with_jacobian=True)
        valid = mask & in_front & torch.isfinite(target).all(-1)
        index = self.model_index.to(pix.device)
        maps = output.joint_transforms[..., :3, :3].index_select(
            1, self.carriers.to(pix.device).index_select(0, index))         # (B, M, 3, 3)
        jac = torch.einsum('bcmki,bmij->bcmkj', dpix, maps.to(dpix))
        return torch.nan_to_num(pix - target), jac, valid

    def project(self, output, observations: Mapping[str, Any],
                params: Mapping[str, Any], views: Optional[dict] = None):
        """Matched model points in every view.

        Returns:
            ``(pixels (B, C, M, 2), in_front (B, C, M))``.
        """
        return self._project(self.matched_points(output, params), observations, params, views)

    def _project(self, pts: torch.Tensor, observations: Mapping[str, Any],
                 params: Mapping[str, Any], views: Optional[dict] = None,
                 with_jacobian: bool = False):
        """``(pixels, in_front)`` of (B, M, 3) points, and their Jacobian (B, C, M, 2, 3)
        third ``with_jacobian``."""
        views = view_keypoints(observations, self.name) if views is None else views
        C = views['keypoints_2d'].shape[1]
        cams = view_cameras(observations, params, C, pts.dtype, pts.device, self.name,
                            views['squeezed'])
        if with_jacobian:
            return project_with_jacobian(pts[:, None], cams['K'], cams['R'], cams['t'],
                                         cams['dist'], self.min_depth)
        return project_with_depth(pts[:, None], cams['K'], cams['R'], cams['t'],
                                  cams['dist'], self.min_depth)

    def _terms(self, pts: torch.Tensor, observations: Mapping[str, Any],
               params: Mapping[str, Any], with_jacobian: bool = False):
        """(predictions, targets, weights, mask) of the loss for (B, M, 3) matched
        points: pixels, or pixels over the noise scale where the observations carry
        it (then ``unit`` (B, C, M, 1), 1 / scale, else ``None``, is returned next);
        ``with_jacobian``: the predictions' Jacobian w.r.t. the points (B, C, M, 2, 3)
        last."""
        pix, target, w, mask, _, *dpix = self._pixel_terms(pts, observations, params,
                                                           with_jacobian)
        scale = observations.get(self.scale_key) if self.scale_from_residuals else None
        unit = None
        if scale is not None:
            unit, target = self._scaled((scale, target), (pix.dtype, pix.device),
                                        lambda: self._scaled_target(scale, target, pix))
            pix = pix * unit
            dpix = [d * unit[..., None] for d in dpix]
        return (pix, target, w, mask, unit, *dpix)

    def _scaled_target(self, scale: torch.Tensor, target: torch.Tensor, pix: torch.Tensor):
        """``(1 / scale (B, C, M, 1), target / scale)``: the observations in noise units."""
        if scale.shape != pix.shape[:-1]:
            raise ValueError(f'handler {self.name!r}: {self.scale_key} has shape '
                             f'{tuple(scale.shape)}, expected {tuple(pix.shape[:-1])}')
        unit = 1.0 / scale.to(pix)[..., None]
        return unit, target * unit

    def _pixel_terms(self, pts: torch.Tensor, observations: Mapping[str, Any],
                     params: Mapping[str, Any], with_jacobian: bool = False,
                     projected=None):
        """(pixels, targets, weights, mask, in_front) for (B, M, 3) matched points, and
        ``with_jacobian`` the pixels' Jacobian (B, C, M, 2, 3) (zero behind the camera)
        last; ``projected``: the points' ``(pixels, in_front)`` where already computed
        (:meth:`_project`)."""
        obs = view_keypoints(observations, self.name)
        B, C = obs['keypoints_2d'].shape[:2]
        if B != pts.shape[0]:
            raise ValueError(f'handler {self.name!r}: keypoints_2d has {B} samples, the '
                             f'model output {pts.shape[0]}')
        if projected is not None and not with_jacobian:
            (pix, in_front), dpix = projected, []
        else:
            pix, in_front, *dpix = self._project(pts, observations, params, obs, with_jacobian)
        # What depends on the observations only is the same in every evaluation of a
        # fit: computed once per observation tensors (their identity and version).
        target, far, mask, w = self._observed(
            (observations['keypoints_2d'], observations.get('visible'),
             observations.get('view_valid'), observations.get('confidence'),
             self.data_index, self.importance),
            (pix.dtype, pix.device, self.use_confidence),
            lambda: self._observed_terms(obs, pix.dtype, pix.device))
        # A detected point behind the camera is not "unobserved": it lands
        # BEHIND_CAMERA_PX from its detection (the robust loss's saturation, a large
        # plain loss, no gradient), so no step can lower the loss by crossing the
        # camera plane.
        pix = torch.where(in_front[..., None], pix, far)
        return (pix, target, w, mask, in_front, *dpix)

    def _observed_terms(self, obs: Mapping[str, Any], dtype: torch.dtype, device):
        """``(target (B, C, M, 2), far (B, C, M, 2), mask (B, C, M) bool, weight
        (B, C, M) or None)`` of the matched observations ``obs`` (view axis present):
        ``far``, where a point behind the camera is put (see :meth:`_pixel_terms`)."""
        B, C = obs['keypoints_2d'].shape[:2]
        target = self.select_data(obs['keypoints_2d'].to(device=device, dtype=dtype), 2)
        far = torch.nan_to_num(target) + BEHIND_CAMERA_PX
        mask = torch.ones(target.shape[:-1], dtype=torch.bool, device=device)
        if obs['visible'] is not None:
            mask = mask & self.select_data(obs['visible'].to(device), 2).to(torch.bool)
        if obs['view_valid'] is not None:
            mask = mask & obs['view_valid'].to(device=device, dtype=torch.bool)[..., None]
        w = None
        if self.use_confidence and obs['confidence'] is not None:
            w = self.select_data(obs['confidence'].to(device=device, dtype=dtype), 2)
        imp = None if self.importance is None else self.importance.to(device=device,
                                                                        dtype=dtype)
        if imp is not None:
            w = imp.expand(B, C, -1) if w is None else w * imp
        return target, far, mask, w

    def compute(self, output, observations: Mapping[str, Any],
                params: Mapping[str, Any]) -> torch.Tensor:
        pix, target, w, mask, _ = self._terms(self.matched_points(output, params),
                                              observations, params)
        return self.loss(pix, target, weight=w, mask=mask)

    def point_residuals_and_jacobian(self, points: torch.Tensor,
                                     observations: Mapping[str, Any],
                                     params: Mapping[str, Any]):
        """:meth:`point_residuals` (B, C, M, 2) and their derivative w.r.t. the points
        (B, C, M, 2, 3), in closed form (projection and distortion differentiated
        analytically): what Levenberg-Marquardt stages use; ``None`` for a loss without
        ``residual_jacobian`` (differentiated by forward mode instead)."""
        if not hasattr(self.loss, 'residual_jacobian'):
            return None
        pts = self.offset_points(points, params)
        pix, target, w, mask, _, dpix = self._terms(pts, observations, params,
                                                    with_jacobian=True)
        method = self.loss.residual_jacobian
        if _takes_chain(getattr(method, '__func__', method)):
            # the loss chains its derivative onto the pixels' (B, C, M, 2, 3)
            return self.loss.residual_jacobian(pix, target, weight=w, mask=mask, chain=dpix)
        # a plugin loss giving (B, C, M, 2, 2) derivatives: dr @ dpix as two multiply-adds
        # ((B, C, M) products of 2 x 2 by 2 x 3 matrices cost far more as a batched matmul)
        r, dr = self.loss.residual_jacobian(pix, target, weight=w, mask=mask)
        return r, (dr[..., :, 0, None] * dpix[..., None, 0, :]
                   + dr[..., :, 1, None] * dpix[..., None, 1, :])

    def point_residuals(self, points: torch.Tensor, observations: Mapping[str, Any],
                        params: Mapping[str, Any]) -> torch.Tensor:
        """(B, C, M, 2) pixel residuals of the (B, M, 3) matched points (offsets added
        here); needs a loss with ``residuals`` (``KeypointMSELoss``)."""
        if not hasattr(self.loss, 'residuals'):
            raise NotImplementedError(self._no_residuals())
        pix, target, w, mask, _ = self._terms(self.offset_points(points, params),
                                              observations, params)
        return self.loss.residuals(pix, target, weight=w, mask=mask)


@functools.lru_cache(maxsize=None)
def _takes_chain(residual_jacobian) -> bool:
    """Whether a loss's ``residual_jacobian`` function takes ``chain=`` (looked up once
    per function: a signature costs more than the call it guards)."""
    return 'chain' in inspect.signature(residual_jacobian).parameters


__all__ = ['Keypoint2DHandler', 'project_with_depth', 'observed_extent', 'relative_scale_floor',
           'total_noise_ratio', 'RESOLVING_VIEWS', 'ALIKE_SCALE_RATIO']
