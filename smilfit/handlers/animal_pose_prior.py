"""A pose prior from the animal's own frames: where it holds a joint, how far it moves it.

A prior of one fixed scale per joint (``PoseL2Prior``: about 1 rad per joint and axis)
knows nothing about the animal: where the labels leave a rotation free (a twist about a
bone that no label measures, a spine joint between two labels) the pose follows each
frame's label noise. An animal's frames say more. At the start of every stage, the
pose of each animal's frames (the registrant's ``animals`` groups) gives a robust centre
(median) and spread (1.4826 x the median absolute deviation) per joint and axis, and the
stage scores ``(theta - mean) / scale``, in units of the animal's own variation, against
keypoint errors in units of their noise (``scale_from_residuals``): a MAP estimate under
a per-animal Gaussian, re-estimated between stages, as hierarchical skeletal models do
(GIMBAL, Zhang et al. 2021).

The spread of the fitted poses alone understates the animal's: each frame's pose is a
MAP estimate, pulled towards the prior's mean wherever its labels say little (a joint
between two labels, a twist), so a prior re-estimated from them would tighten at every
stage. As in the EM update of a hierarchical Gaussian, each component's variance is the
spread of the fitted values plus their posterior variance, the mean over the animal's
frames of the variance that the last Levenberg-Marquardt stage fitting the pose measured
(the diagonal of the inverse of each frame's ``J^T J``). A component the labels pin has
little posterior variance and keeps its spread; one they do not measure keeps the
variance of the prior it was fitted under instead of collapsing to its mean. This is
``posterior_spread=True``; by default the spread of the fitted values alone is used: it
understates the animal's spread, and so regularises more, which measured better wherever
the labels had a pose estimator's errors and worse on clean labels.

With few frames the estimate is shrunk towards the fixed prior (mean 0, scale
``prior_scale``) as the noise scales are: weight ``(n - 1) / (n - 1 + prior_frames)`` on
the animal's own, so one frame alone gets the fixed prior (it says nothing about the
animal's variation), a session of a hundred frames its own. A component whose poses were
never fitted (every frame's value still its start of 0) has no evidence either and keeps
the fixed prior.
"""
from __future__ import annotations

from typing import Any, Mapping, Optional

import torch

from ..registry import HANDLERS
from .base import BaseHandler, get_param, variance_key, zeros_like_batch

Tensor = torch.Tensor

#: 1.4826 x median absolute deviation = the standard deviation of a Gaussian.
MAD_TO_STD = 1.4826


def _grouped(values: Tensor, groups: Tensor) -> Tensor:
    """(B, D) -> (G, n_max, D), each group's rows (in order), NaN padding."""
    counts = torch.bincount(groups)
    order = torch.argsort(groups, stable=True)
    starts = torch.cumsum(counts, 0) - counts
    g = groups[order]
    slot = torch.arange(groups.numel(), device=groups.device) - starts[g]
    out = values.new_full((counts.numel(), int(counts.max()), values.shape[1]), float('nan'))
    out[g, slot] = values[order]
    return out


def animal_pose_statistics(pose: Tensor, groups: Tensor, prior_scale: Optional[float] = 1.0,
                           prior_frames: float = 3.0, variance: Optional[Tensor] = None):
    """Each sample's prior mean and scale from its animal's poses.

    Args:
        pose: (B, ...) per-frame values, e.g. (B, N, 3) axis-angle (radians).
        groups: (B,) long, the animal of each sample (0..G-1).
        prior_scale: the fixed prior's scale (radians) that few frames are shrunk to; None:
            no fixed prior (a value with no natural centre, such as the global scale):
            the animal's own centre, and a scale that grows as the frames get fewer
            (infinite, no prior, for one frame).
        prior_frames: pseudo-frames of the fixed prior in the shrinkage.
        variance: shaped as ``pose``, each frame's posterior variance of each component
            (squared radians), added to the spread (module docstring); NaN or None where
            not known (then the spread alone).

    Returns:
        ``(mean, scale)``, shaped as ``pose`` each: the animal's robust centre shrunk
        towards 0 and its spread shrunk towards ``prior_scale`` (variances mixed with the
        weight in the module docstring).
    """
    B = pose.shape[0]
    flat = pose.detach().reshape(B, -1)
    flat = torch.where(torch.isfinite(flat), flat, torch.nan)   # a failed frame is no evidence
    per_group = _grouped(flat, groups)                          # (G, n, D)
    # interpolated medians: torch's median of an even count is the lower middle value
    centre = per_group.nanquantile(0.5, dim=1)                  # (G, D)
    spread = MAD_TO_STD * (per_group - centre[:, None]).abs().nanquantile(0.5, dim=1)
    n = torch.isfinite(per_group).sum(1).to(flat.dtype)         # (G, D)
    weight = (n - 1).clamp(min=0) / ((n - 1).clamp(min=0) + prior_frames)
    fitted = ((centre != 0) | (spread > 0)) & (n > 1)           # evidence in the poses
    weight = torch.where(fitted, weight, torch.zeros_like(weight))
    if variance is not None:
        var = variance.detach().reshape(B, -1).to(flat)
        var = torch.where(torch.isfinite(var) & torch.isfinite(flat) & (var >= 0), var,
                          torch.nan)
        posterior = torch.nan_to_num(_grouped(var, groups).nanmean(dim=1))
        spread = torch.sqrt(spread ** 2 + posterior)
    centre, spread = torch.nan_to_num(centre), torch.nan_to_num(spread)
    if prior_scale is None:
        mean = centre
        # frames that agree exactly (more than half the same value) are no reason for an
        # unbounded weight: the spread is at least 0.1 % of the value (or of 1)
        floor = 1e-3 * centre.abs().clamp(min=1.0)
        scale = torch.where(weight > 0, torch.maximum(spread, floor) / weight.sqrt(),
                            torch.full_like(spread, float('inf')))
    else:
        mean = weight * centre
        scale = torch.sqrt(weight * spread ** 2 + (1 - weight) * prior_scale ** 2)
    return mean[groups].reshape(pose.shape), scale[groups].reshape(pose.shape)


@HANDLERS.register_module()
class AnimalPosePriorHandler(BaseHandler):
    """The pose prior of each animal's own frames (module docstring) on ``params[param]``.

    Residuals ``(theta - mean) / scale`` (Levenberg-Marquardt stages use them as they are;
    the loss is their sum of squares), the mean and scale from the animal's frames at
    every stage's start. Without those statistics (a loss computed outside a stage) it is
    the fixed prior ``theta / prior_scale``.

    Args:
        name, weight, check_finite: see :class:`~.base.BaseHandler`.
        param: the params key of the (B, N, 3) axis-angle pose.
        prior_scale: the fixed prior's scale per joint and axis (radians), for animals with
            few frames.
        prior_frames: how many frames the fixed prior counts for.
        posterior_spread: add each frame's posterior variance to the spread (module
            docstring). Off by default: the spread of the fitted poses alone, tighter,
            held the fit closer to the truth wherever the labels had a pose estimator's
            errors (docs/fitting.md, "Why these settings").
    """

    residual_kind = 'params'
    affine_param_residuals = False      # the coefficients differ per animal
    pools_per_animal = True             # every stage: over each animal's frames
    needs_stage_observations = True

    def __init__(self, name: str, weight: float = 1.0, param: str = 'body_pose',
                 prior_scale: Optional[float] = 1.0, prior_frames: float = 3.0,
                 posterior_spread: bool = False, check_finite: bool = False) -> None:
        super().__init__(name, None, weight, check_finite)
        if (prior_scale is not None and not prior_scale > 0) or not prior_frames >= 0:
            raise ValueError(f'handler {name!r}: prior_scale must be > 0 and prior_frames '
                             f'>= 0, got {prior_scale} and {prior_frames}')
        self.param = param
        self.prior_scale = None if prior_scale is None else float(prior_scale)
        self.prior_frames = float(prior_frames)
        # the registrant has the Levenberg-Marquardt stages measure it where asked
        self.uses_posterior_variance = bool(posterior_spread)

    @property
    def residual_params(self):
        return (self.param,)

    @property
    def mean_key(self) -> str:
        return f'{self.name}.mean'

    @property
    def scale_key(self) -> str:
        return f'{self.name}.scale'

    def stage_observations(self, output, observations: Mapping[str, Any],
                           params: Mapping[str, Any],
                           groups: Optional[Tensor] = None) -> dict:
        """``{mean_key, scale_key}``: (B, N, 3) each, from each animal's poses in
        ``params`` (each sample its own animal without ``groups``)."""
        pose = get_param(params, self.param)
        if pose is None:
            return {}
        self._check_axis_angle(pose)
        if groups is None:
            groups = torch.arange(pose.shape[0], device=pose.device)
        variance = (observations.get(variance_key(self.param))
                    if self.uses_posterior_variance else None)
        mean, scale = animal_pose_statistics(pose, groups.to(pose.device), self.prior_scale,
                                             self.prior_frames, variance)
        return {self.mean_key: mean, self.scale_key: scale}

    def _check_axis_angle(self, pose: Tensor) -> None:
        if self.param in ('body_pose', 'global_orient') and (pose.ndim != 3
                                                             or pose.shape[-1] != 3):
            raise ValueError(f'handler {self.name!r}: {self.param} must be (B, N, 3) '
                             f'axis-angle, got {tuple(pose.shape)}')

    def param_residuals(self, params: Mapping[str, Any],
                        observations: Mapping[str, Any]) -> Tensor:
        pose = get_param(params, self.param)
        if pose is None:
            raise NotImplementedError(self._no_residuals())
        self._check_axis_angle(pose)
        mean = observations.get(self.mean_key)
        scale = observations.get(self.scale_key)
        if mean is None or scale is None:
            if self.prior_scale is None:
                return pose.new_zeros(pose.shape[0], pose[0].numel())
            return (pose / self.prior_scale).reshape(pose.shape[0], -1)
        return ((pose - mean.to(pose)) / scale.to(pose)).reshape(pose.shape[0], -1)

    def param_residual_diagonal(self, params: Mapping[str, Any],
                                observations: Mapping[str, Any]) -> Tensor:
        """(B, 3N) the diagonal of the residuals' Jacobian w.r.t. the pose (residual i
        reads pose component i only): one over each sample's scale. Levenberg-Marquardt
        stages use it instead of autograd, and keep the sparsity the keypoints give."""
        pose = get_param(params, self.param)
        scale = observations.get(self.scale_key)
        if scale is None:
            fixed = 0.0 if self.prior_scale is None else 1.0 / self.prior_scale
            return torch.full_like(pose, fixed).reshape(pose.shape[0], -1)
        inverse = 1.0 / scale.to(pose)
        return inverse.reshape(pose.shape[0], -1)

    def compute(self, output, observations: Mapping[str, Any],
                params: Mapping[str, Any]) -> Tensor:
        if get_param(params, self.param) is None:
            return zeros_like_batch(output)
        return self.param_residuals(params, observations).pow(2).sum(-1)
