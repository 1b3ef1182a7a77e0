"""The motion prior: an animal moves little from one video frame to the next.

Frames of one animal whose frame indices follow each other (``observations
['frame_index']``, the animals as the registrant pools them) form a *chain*; a frame
missing from the batch, a lost track or another animal breaks it. Along a chain the
prior's residuals are the per-frame parameters' velocities (``order=1``: ``x_t -
x_{t-1}``) or accelerations (``order=2``: ``x_t - 2 x_{t-1} + x_{t-2}``), each divided by
the motion's own scale, measured from the fit at the stage's start, for every entry
(each axis of each joint's rotation, of the root's turn and move, and the scale):

    gamma_k = (1.4826 median |x_t - x_{t-k}|)^2     (over the chains' frames)
    sigma^2 = gamma_2 - gamma_1                    (floored, below)

It is measured on each frame's own fit: where the stage before left it, or, where that
stage smoothed the frames (a stage over chains), where the frame's own labels put it (one
Gauss-Newton step of its per-frame terms: a smoothed answer shows less motion than there
is, and measured on it the next stage would smooth more, and so on). The variogram of a
per-frame fit: a random walk's lag-k differences have variance
``k sigma_q^2`` plus twice the fit's own noise at every lag, so the difference of the first
two lags is the motion's part alone (``sigma_q^2``), whatever the labels' noise. Where the
fit cannot tell motion from noise (``gamma_2 <= gamma_1``: an animal that sits still) the
floor is the difference's own sampling error over ``m_2`` lag-2 pairs,
``max(gamma_1, 2 v) / sqrt(m_2)`` (``v`` below): at the spread the fit shows, or the one
its own precision predicts where that is larger. A fit can vary far less than its precision:
an entry the labels barely see, held by a prior, or frames fitted to exact labels; its
stillness there says nothing finer than the labels could tell, and a scale far below it
would make the chain's system as ill-conditioned as it is unjustified. Chains of two frames
only (no lag-2 pair: every other frame of a short video, as a skeleton's frames are
picked) cannot tell motion from noise at all: their scale is the lag-1 spread, or ``2 v``
where that is larger. Frames that are not a video at all (poses drawn anew every frame)
also have ``gamma_2 = gamma_1``; they are told from a still animal by the fit's own
precision, the frames' posterior variance ``v`` from their labels alone in the stage before
(``sigma^2 >= gamma_1 - 2 v``): a lag-1 spread far above the fit's noise is motion, not
noise. Where no stage before measured ``v`` (the first stage of frames started from a
network), the scale is at least ``gamma_1``: no smoother than the frames' own steps. No
constant in radians or pixels per frame: the scale comes from the recording.

Frames numbered one after the other need not be a video (images of a collection, poses
drawn anew every frame): those vary as much between neighbours as between frames further
apart, where a video's spread grows with the lag. :func:`video_share` measures how much of
a random walk they are from the spread 4 frames apart (:func:`far_partners`) against the
neighbours', on the body's place, else its turn; frames that are none get no motion term
(a warning says so), frames partly one get their links widened. Chains too short to tell
(fewer than :data:`MIN_FAR_PAIRS` pairs far apart) are smoothed as a video, with a
warning: frames drawn anew are fitted worse so.

Levenberg-Marquardt stages solve a whole chain at once (:mod:`smilfit.registrants.solver.
chain_system`: a block-banded system, linear in the chain's length); gradient optimizers
use :meth:`MotionPriorHandler.compute` (each link's squared residual counted on its last
frame). Samples without ``frame_index``, or none consecutive, have no motion term.
"""
from __future__ import annotations

import math
import warnings
from typing import Any, Dict, Mapping, NamedTuple, Optional, Sequence, Tuple

import torch

from ..registry import HANDLERS
from .base import BaseHandler, get_param, per_frame_key, variance_key, zeros_like_batch

Tensor = torch.Tensor

#: The per-frame parameters smoothed by default: the pose, the root's turn and move, and
#: the global scale (those a dataset fit's pose stages fit).
DEFAULT_PARAMS = ('global_orient', 'transl', 'body_pose', 'global_log_scale')

#: Finite-difference coefficients of the residual at frame t, for frames t, t-1, t-2.
STENCILS = {1: (1.0, -1.0), 2: (1.0, -2.0, 1.0)}

#: Normal-consistency factor of the median absolute value (a Gaussian's sigma).
_MAD_TO_SIGMA = 1.4826

#: Axis-angle parameters: their earlier frames are read as the equivalent rotation vector
#: nearest the frame's own (:func:`finite_difference`, :func:`unwrap_rotations`).
ROTATION_PARAMS = ('global_orient', 'body_pose')


def consecutive_frames(frames: Tensor, animals: Tensor) -> Tensor:
    """(B,) long: the sample holding the same animal's previous frame (``frame - 1``),
    -1 where the batch has none.

    Args:
        frames: (B,) integer frame indices.
        animals: (B,) the animal (session and track) of each sample.
    """
    frames = frames.reshape(-1).long()
    animals = animals.reshape(-1).long().to(frames.device)
    order = torch.argsort(frames, stable=True)
    order = order[torch.argsort(animals[order], stable=True)]   # by animal, then frame
    f, a = frames[order], animals[order]
    prev = torch.full_like(frames, -1)
    if frames.numel() > 1:
        linked = (a[1:] == a[:-1]) & (f[1:] == f[:-1] + 1)
        prev[order[1:][linked]] = order[:-1][linked]
    return prev


def cut_chains(prev: Tensor, length: int) -> Tensor:
    """(B,) ``prev`` with every chain cut into pieces of ``length`` frames (the last piece
    of a chain shorter): the link into each piece's first frame removed."""
    _, position = chain_positions(prev)
    return torch.where(position % length == 0, torch.full_like(prev, -1), prev)


def ancestors(prev: Tensor, order: int) -> Tensor:
    """(order + 1, B) long: each sample itself, then the samples 1 .. ``order`` frames
    before it along its chain (-1 where the chain does not reach back)."""
    out = [torch.arange(prev.numel(), device=prev.device)]
    for _ in range(order):
        last = out[-1]
        out.append(torch.where(last >= 0, prev[last.clamp_min(0)], last))
    return torch.stack(out)


def chain_positions(prev: Tensor) -> Tuple[Tensor, Tensor]:
    """``(first, position)`` (B,) long each: every sample's chain start and its place
    along the chain (0 at the start), by pointer jumping (log of the longest chain's
    steps)."""
    idx = torch.arange(prev.numel(), device=prev.device)
    ptr = torch.where(prev >= 0, prev, idx)
    pos = (prev >= 0).long()
    while True:
        up = ptr[ptr]
        if torch.equal(up, ptr):
            return ptr, pos
        pos = pos + torch.where(ptr != idx, pos[ptr], torch.zeros_like(pos))
        ptr = up


def nearest_equivalent(rotation: Tensor, target: Tensor) -> Tensor:
    """(..., 3) the axis-angle vector of ``rotation`` (..., 3) among its equivalents
    ``u (theta + 2 pi k)`` nearest ``target`` (k chosen without gradient, so the answer
    moves with ``rotation`` as the rotation itself does)."""
    with torch.no_grad():
        theta = rotation.norm(dim=-1, keepdim=True)
        axis = rotation / theta.clamp_min(1e-12)
        k = torch.round(((axis * target).sum(-1, keepdim=True) - theta) / (2 * math.pi))
        shift = torch.where(theta > 1e-12, axis * (2 * math.pi * k), torch.zeros_like(axis))
    return rotation + shift


def finite_difference(values: Tensor, anc: Tensor, stencil: Sequence[float],
                      rotations: bool = False) -> Tensor:
    """(B, D) ``sum_k stencil[k] values[anc[k]]``, 0 where the chain does not reach back
    ``len(stencil) - 1`` frames; ``values`` (B, D), ``anc`` from :func:`ancestors`.
    ``rotations``: ``values`` are (B, N * 3) axis-angle vectors, each earlier frame's
    taken as its equivalent nearest the frame's own (a turn past half a revolution is
    not a jump of 2 pi)."""
    reach = anc[len(stencil) - 1] >= 0
    out = stencil[0] * values
    for k in range(1, len(stencil)):
        earlier = values.index_select(0, anc[k].clamp_min(0))
        if rotations:
            B = values.shape[0]
            earlier = nearest_equivalent(earlier.reshape(B, -1, 3),
                                         values.reshape(B, -1, 3)).reshape(B, -1)
        out = out + stencil[k] * earlier
    return out * reach[:, None].to(values.dtype)


#: The far lag of :func:`far_partners`, in frames: far enough that a random walk's spread
#: is clearly larger than between neighbours (4 times), near enough that a chain holds
#: many independent pairs (a walk's differences half a long chain apart are few and
#: correlated, and one that comes back on itself would look like frames drawn anew).
FAR_LAG = 4


def far_partners(prev: Tensor, lag: int = FAR_LAG) -> Tensor:
    """(B,) long: each sample's partner ``lag`` frames on along its chain (on chains
    shorter than ``2 lag``, half the chain's length, at least 2), -1 where the chain ends
    before it and on chains of fewer than four frames (too short to show more than the
    neighbours' agreement)."""
    B = prev.numel()
    first, position = chain_positions(prev)
    length = torch.zeros(B, dtype=torch.long, device=prev.device).index_add_(
        0, first, torch.ones_like(first))[first]
    order = torch.argsort(first * B + position)
    rank = torch.empty_like(order)
    rank[order] = torch.arange(B, device=prev.device)
    step = torch.clamp(length // 2, min=2, max=lag)
    ahead = position + step
    partner = order[(rank[first] + ahead).clamp(max=B - 1)]
    return torch.where((length >= 4) & (ahead < length), partner, torch.full_like(partner, -1))


#: Fewer far pairs than this (:func:`far_partners`) cannot tell a video from frames
#: drawn anew: on a video's short chains with a pose estimator's noise, the body's place
#: showed no walk beyond its sampling errors where its turn, scattered by the fit, looked
#: drawn anew; such frames are smoothed as a video.
MIN_FAR_PAIRS = 50


class Variogram(NamedTuple):
    """One parameter's spread along the chains, per entry (D,): at lag 1 (``g1``), lag 2
    (``g2``) and the far lag (``g_far``, over ``pairs`` pairs ``lag`` frames apart, NaN
    without them), each ``(1.4826 median |x_t - x_{t-k}|)^2``; the fit's own variance
    (``fit``, 0 where not ``known``); ``m2`` lag-2 pairs (0: chains of two frames)."""
    g1: Tensor
    g2: Tensor
    g_far: Tensor
    fit: Tensor
    known: Tensor
    lag: float
    pairs: int
    m2: int


def _spread(diff: Tensor) -> Tensor:
    return (_MAD_TO_SIGMA * diff.abs().median(0).values) ** 2


def variogram(values: Tensor, prev: Tensor, rotations: bool = False,
              variance: Optional[Tensor] = None) -> Optional[Variogram]:
    """The :class:`Variogram` of ``values`` (B, D) along the chains ``prev`` (B,), ``None``
    without a link. ``rotations``, ``variance``: as in :func:`motion_scale`."""
    anc = ancestors(prev, 2)
    one, two = anc[1] >= 0, anc[2] >= 0
    if not bool(one.any()):
        return None
    g1 = _spread(finite_difference(values, anc, (1.0, -1.0), rotations)[one])
    g2 = (_spread(finite_difference(values, anc, (1.0, 0.0, -1.0), rotations)[two])
          if bool(two.any()) else torch.zeros_like(g1))
    fit = (torch.full_like(g1, math.nan) if variance is None
           else variance.to(values)[one].nanmedian(0).values)
    known = torch.isfinite(fit)
    partner = far_partners(prev)
    far = partner >= 0
    g_far, lag = torch.full_like(g1, math.nan), 0.0
    if bool(far.any()):
        pairs = torch.stack([torch.arange(prev.numel(), device=prev.device), partner])
        g_far = _spread(finite_difference(values, pairs, (1.0, -1.0), rotations)[far])
        _, position = chain_positions(prev)
        lag = float((position[partner[far]] - position[far]).float().median())
    return Variogram(g1, g2, g_far, fit.nan_to_num(), known, lag, int(far.sum()),
                     int(two.sum()))


#: The parameters that say whether frames are a video, most trusted first: the body's
#: place, then its turn (:func:`video_share`).
PLACING_PARAMS = ('transl', 'global_orient')


def video_share(grams: Mapping[str, Variogram]) -> Tensor:
    """() how much of the frames' lag-1 spread beyond the fit's noise is a random walk's,
    0 (each frame drawn anew: images of a collection, a synthetic session) .. 1 (a random
    walk), from the parameters' variograms ``grams`` (name -> :class:`Variogram`):
    :func:`judged_video_share`, or 1 where nothing tells (frames are smoothed as a video
    unless they show they are not one)."""
    share = judged_video_share(grams)
    return torch.ones(()) if share is None else share


def judged_video_share(grams: Mapping[str, Variogram]) -> Optional[Tensor]:
    """() :func:`video_share` where the variograms tell, else ``None``: what the first
    parameter of :data:`PLACING_PARAMS` with anything to judge by shows
    (:func:`walk_share`), else the largest share any other shows. The frames are a video
    or not as a whole, and the body's place is what the labels see best: a fit scatters
    more than its precision says where the labels leave a choice (the body's turn against
    its spine's, a limb's twist), which looks like frames drawn anew in those
    parameters."""
    for name in PLACING_PARAMS:
        if name in grams:
            share = walk_share(grams[name])
            if share is not None:
                return share
    shares = [share for share in (walk_share(g) for name, g in grams.items()
                                  if name not in PLACING_PARAMS) if share is not None]
    return torch.stack(shares).max() if shares else None


def walk_share(gram: Variogram) -> Optional[Tensor]:
    """() the share of a random walk in one parameter's frames (:func:`video_share`), or
    ``None`` where they show nothing to judge by.

    In units of each entry's lag-1 spread, a walk of step ``q`` plus poses drawn anew with
    spread ``P`` seen through the fit's noise ``v`` spreads ``1 = q + 2 P + 2 v`` at lag 1
    and ``lag q + 2 P + 2 v`` far: the far-to-near ratio ``R`` gives ``q = (R - 1) / (lag -
    1)``, and the share is ``q / (1 - 2 v)`` (medians over the entries: one entry's far
    pairs are few and correlated). Only entries whose fit's precision a stage measured
    judge (without it the fit's noise is as much drawn anew every frame as poses drawn
    anew are), and of those the ones whose far spread is clearly beyond that noise
    (entries a prior holds vary far less than their precision). Nothing to judge by: no
    such entry, fewer far pairs than :data:`MIN_FAR_PAIRS`, or neither a walk (beyond two
    sampling errors) nor more than one (beyond three: frames are dropped from the video
    on stronger evidence than they are kept in it) (a still animal, noise the fit cannot
    see past). A walk and no more: 1; more and no walk: 0."""
    if gram.pairs < MIN_FAR_PAIRS or gram.lag <= 1 or not bool(gram.known.any()):
        return None
    known = gram.known
    g1, g_far, fit = gram.g1[known], gram.g_far[known], gram.fit[known]
    lag = gram.lag
    # a variance from a median of absolute differences errs by about 2.3 / sqrt(pairs)
    relative = 2.3 / math.sqrt(gram.pairs)
    seen = (g1 > 0) & (g_far > 2.0 * fit * (1.0 + 3.0 * relative))
    if not bool(seen.any()):
        return None
    g1, g_far, fit = g1[seen], g_far[seen], fit[seen]
    beyond_noise = (1.0 - 2.0 * fit / g1).median()
    ratio = (g_far / g1).median()
    walk = (ratio - 1.0) / (lag - 1.0)
    # a median over the entries errs sqrt(pi / 2) times as much as a mean
    error = relative * math.sqrt(math.pi / 2.0) / math.sqrt(g1.numel())
    walk_error = error * math.sqrt(2.0) * ratio / (lag - 1.0)
    spread = error * torch.sqrt(1.0 + 2.0 * (ratio / (lag - 1.0)) ** 2)
    walks = float(walk) > 2.0 * float(walk_error)
    if float(beyond_noise - walk) <= 3.0 * float(spread):   # no more than a walk
        return g1.new_ones(()) if walks else None
    if not walks:
        return g1.new_zeros(())         # frames drawn anew, no walk beyond its error
    return (walk / beyond_noise).clamp(0.0, 1.0)


def motion_scale(values: Tensor, prev: Tensor, rotations: bool = False,
                 variance: Optional[Tensor] = None, share: Optional[Tensor] = None
                 ) -> Tensor:
    """(D,) the motion's scale of each entry (module docstring), from ``values`` (B, D)
    along the chains ``prev`` (B,); 0 where there is no link, no motion at all, or frames
    that are not a video (such entries get no motion term). Every entry has its own
    scale: an animal's motion is not the same in every axis (a heading turns about the
    vertical, a knee bends about one axis), and pooled, the still axes would set the scale
    of the moving one. ``rotations``: as in :func:`finite_difference`. ``variance`` (B, D):
    each frame's posterior variance in the fit (NaN where unknown); where given, the scale
    is at least what the lag-1 spread leaves beyond twice the fit's own variance, so that
    frames that vary far more than the fit's precision are not taken for a still animal,
    and at least the variogram's sampling error; without it (no per-frame stage measured
    the fit's precision) at least the lag-1 spread itself: without knowing the fit's
    noise, no smoother than the frames' own steps. ``share``: as in
    :func:`scale_from_variogram` (of these values alone where not given)."""
    gram = variogram(values, prev, rotations, variance)
    if gram is None:
        return values.new_zeros(values.shape[1])
    return scale_from_variogram(gram, share)


def scale_from_variogram(gram: Variogram, share: Optional[Tensor] = None) -> Tensor:
    """(D,) :func:`motion_scale` from the values' :class:`Variogram`. Frames numbered
    consecutively but not consecutive in time show as much spread between neighbours as
    between frames far apart: the scale is widened by how little of a random walk they
    are (``share`` ``c``, :func:`video_share`, of this variogram alone where not given),
    to ``scale^2 (1 + c) / (2 c^2)``, the information one frame gives on its neighbour in
    a stationary sequence with that correlation, and dropped where they are none."""
    g1, g2, fit, known = gram.g1, gram.g2, gram.fit, gram.known
    # values held still by a prior, or fitted to exact labels, vary less than the labels
    # could tell: no scale below the fit's own precision (2 v) where a stage measured it,
    # and where it is unknown, no smoother than the frames' own steps
    if gram.m2 == 0:
        # chains of two frames: the raw velocity (it cannot be told from the fit's noise)
        motion = torch.where(known, torch.maximum(g1, 2.0 * fit), g1)
        still = g1 == 0
    else:
        # the variogram's sampling error at the lag-1 spread the fit shows or its own
        # precision predicts, whichever is larger
        error = torch.maximum(g1, 2.0 * fit) / math.sqrt(gram.m2)
        floor = torch.where(known, torch.maximum(g1 - 2.0 * fit, error), g1)
        motion = torch.maximum(g2 - g1, floor)
        still = (g1 == 0) & (g2 == 0)   # not moved at all (not fitted): no motion term
    share = video_share({'values': gram}) if share is None else share
    if float(share) <= 0.0:
        return torch.zeros_like(g1)
    widen = (1.0 + share) / (2.0 * share * share)
    return (motion * widen.to(g1)).sqrt().masked_fill(still, 0.0)


def unwrap_rotations(values: Tensor, prev: Tensor) -> Tensor:
    """(B, ..., 3) axis-angle rotations re-expressed along each chain so that every frame's
    vector is the one of its equivalents nearest the previous frame's
    (:func:`nearest_equivalent`): the same rotations, without the jump of 2 pi that a
    turn past half a revolution makes in the canonical form. One step per place along
    the longest chain (each frame needs its predecessor's answer)."""
    out = values.clone()
    _, position = chain_positions(prev)
    for d in range(1, int(position.max()) + 1 if position.numel() else 0):
        at = torch.nonzero(position == d).flatten()
        out[at] = nearest_equivalent(out[at], out[prev[at]])
    return out


@HANDLERS.register_module()
class MotionPriorHandler(BaseHandler):
    """Velocities (or accelerations) of the per-frame parameters along each animal's
    consecutive frames, in units of the motion's own scale (module docstring).

    Args:
        name, weight, check_finite: see :class:`~.base.BaseHandler`.
        params: the per-frame parameters smoothed (absent ones are ignored).
        order: 1 (velocity: a random walk) or 2 (acceleration).
        frame_key: observation key of the (B,) frame indices.
        judge_video: whether consecutive frame indices are checked for being a video
            (:func:`video_share`: frames drawn anew get no motion term, frames partly a
            video weaker links); ``False`` smooths every chain as a video, for a
            recording known to be one that the check gets wrong.
        chain_frames: the longest chain the fit couples (:func:`cut_chains`; ``None``:
            each animal's frames of the batch, however many). The motion scales and the
            video check are measured on the batch's whole chains first. A
            Levenberg-Marquardt step eliminates a chain frame by frame, every chain of
            the batch in the same batched operations, and a chain steps until its last
            frame has converged: with chains of a bounded length a larger batch adds
            chains to each operation instead of frames to each chain. The frames at a cut
            lose the link to one neighbour, as at a batch's edge (``benchmarks/
            chain_cuts.py``: about 0.4 % more 3D error at the cuts, none over the video).
    """

    residual_kind = 'temporal'
    couples_samples = True
    pools_per_animal = True
    needs_stage_observations = True

    def __init__(self, name: str, weight: float = 1.0,
                 params: Sequence[str] = DEFAULT_PARAMS, order: int = 1,
                 frame_key: str = 'frame_index', check_finite: bool = False,
                 judge_video: bool = True, chain_frames: Optional[int] = 128) -> None:
        super().__init__(name, None, weight, check_finite)
        if chain_frames is not None and (isinstance(chain_frames, bool)
                                         or not isinstance(chain_frames, int)
                                         or chain_frames < 2):
            raise ValueError(f'handler {name!r}: chain_frames must be an integer >= 2 or '
                             f'None, got {chain_frames!r}')
        self.chain_frames = chain_frames
        if not isinstance(judge_video, bool):
            raise ValueError(f'handler {name!r}: judge_video must be True or False, got '
                             f'{judge_video!r}')
        self.judge_video = judge_video
        if order not in STENCILS:
            raise ValueError(f'handler {name!r}: order must be one of {sorted(STENCILS)}, '
                             f'got {order!r}')
        if isinstance(params, str) or not params:
            raise ValueError(f'handler {name!r}: params must be a non-empty list of '
                             f'parameter names, got {params!r}')
        self.params = tuple(params)
        self.order = int(order)
        self.stencil = STENCILS[self.order]
        self.frame_key = frame_key
        # the per-frame stages' posterior variances tell motion from the fit's own noise
        self.uses_posterior_variance = True
        self._said_not_a_video = False
        self._said_too_short = False

    @property
    def prev_key(self) -> str:
        return f'{self.name}.prev'

    def scale_key(self, param: str) -> str:
        return f'{self.name}.scale.{param}'

    def stage_observations(self, output, observations: Mapping[str, Any],
                           params: Mapping[str, Any],
                           groups: Optional[Tensor] = None) -> Dict[str, Tensor]:
        """The chains (``prev_key``: (B,) each sample's previous frame, -1 for none) and
        each parameter's motion scale (``scale_key(param)``: ``(B, *shape)``) from the fit at
        the stage's start; nothing without frame indices."""
        frames = observations.get(self.frame_key)
        if frames is None:
            return {}
        frames = torch.as_tensor(frames).reshape(-1)
        B = frames.numel()
        animals = (torch.zeros(B, dtype=torch.long, device=frames.device) if groups is None
                   else groups)
        prev = consecutive_frames(frames, animals)
        out = {self.prev_key: prev}
        grams = {}
        for p in self.params:
            value = get_param(params, p)
            if value is None or value.shape[0] != B:
                continue
            value = value.detach().reshape(B, -1)
            variance = observations.get(variance_key(p))
            if variance is not None:
                variance = variance.reshape(B, -1)
            own = observations.get(per_frame_key(p))
            if own is not None:
                # each frame where its own labels put it (a stage's smoothed answer would
                # show less motion than there is, and the next stage smooth it more)
                own = own.reshape(B, -1).to(value)
                value = torch.where(torch.isfinite(own), own, value)
            gram = variogram(value, prev.to(value.device), self.is_rotation(p, value),
                             variance)
            if gram is not None:
                grams[p] = (gram, tuple(get_param(params, p).shape[1:]))
        # the frames are a video or not as a whole: judged on the body's place first
        judged = (judged_video_share({p: g for p, (g, _) in grams.items()})
                  if self.judge_video else torch.ones(()))
        share = torch.ones(()) if judged is None else judged
        if judged is None and grams:
            self._say_too_short(max(g.pairs for g, _ in grams.values()))
        if grams and float(share) <= 0.0 and not self._said_not_a_video:
            self._said_not_a_video = True          # once, not every batch and stage
            warnings.warn(f'handler {self.name!r}: frames numbered one after the other vary '
                          'as much between neighbours as between frames further apart: '
                          'they are not smoothed as a video (are their frame indices those '
                          'of separate images? For a recording known to be a video, '
                          'judge_video=False smooths it anyway)', stacklevel=2)
        for p, (gram, shape) in grams.items():
            scale = scale_from_variogram(gram, share)
            if not bool((scale > 0).any()):
                continue                   # no motion to smooth, or frames not a video
            out[self.scale_key(p)] = scale.reshape(shape).expand((B,) + shape)
        if self.chain_frames is not None:
            out[self.prev_key] = cut_chains(prev, self.chain_frames)
        return out

    def _say_too_short(self, pairs: int) -> None:
        """Warn (once) that chains too short to show whether their frames are a video
        (fewer than :data:`MIN_FAR_PAIRS` pairs far apart) are smoothed as one: frames
        drawn anew fit worse so."""
        if pairs >= MIN_FAR_PAIRS or self._said_too_short:
            return
        self._said_too_short = True
        warnings.warn(f'handler {self.name!r}: the chains of consecutive frames are too '
                      f'short to tell a video from frames drawn anew ({pairs} pairs of '
                      f'frames far apart, {MIN_FAR_PAIRS} needed): they are smoothed as a '
                      'video. Separate images numbered one after the other fit worse so: '
                      'leave the motion prior out for them (its weight 0). For a video, '
                      'longer batches (data.batch_size) let it tell; judge_video=False '
                      'says it is one', stacklevel=3)

    @staticmethod
    def is_rotation(param: str, value: Tensor) -> bool:
        """Whether ``param`` holds axis-angle rotations ((B, 3) or (B, N, 3))."""
        return param in ROTATION_PARAMS and value.shape[-1] == 3 and value.dim() in (2, 3)

    def chains(self, observations: Mapping[str, Any]) -> Optional[Tensor]:
        """(B,) each sample's previous frame along its chain, or ``None`` before
        :meth:`stage_observations` (or without frame indices)."""
        return observations.get(self.prev_key)

    def inverse_scales(self, observations: Mapping[str, Any], param: str
                       ) -> Optional[Tensor]:
        """``(B, *shape)`` ``1 / scale`` of ``param``'s entries (0 where it has no motion
        term), or ``None`` where the parameter is not smoothed."""
        scale = observations.get(self.scale_key(param))
        if scale is None:
            return None
        return torch.where(scale > 0, 1.0 / scale.clamp_min(1e-30), torch.zeros_like(scale))

    def residuals(self, params: Mapping[str, Any], observations: Mapping[str, Any]
                  ) -> Dict[str, Tensor]:
        """param -> (B, D) each frame's residual (its link to the frames before it; the
        loss is their sum of squares, times ``weight``); empty without chains."""
        prev = self.chains(observations)
        if prev is None:
            return {}
        anc = ancestors(prev, self.order)
        out = {}
        for p in self.params:
            value, inv = get_param(params, p), self.inverse_scales(observations, p)
            if value is None or inv is None:
                continue
            B = value.shape[0]
            diff = finite_difference(value.reshape(B, -1), anc.to(value.device), self.stencil,
                                     self.is_rotation(p, value))
            out[p] = diff * inv.reshape(B, -1).to(diff)
        return out

    def compute(self, output, observations: Mapping[str, Any],
                params: Mapping[str, Any]) -> Tensor:
        residuals = self.residuals(params, observations)
        if not residuals:
            return zeros_like_batch(output)
        return sum((r * r).sum(1) for r in residuals.values())


def chain_order(prev: Tensor) -> Tuple[Tensor, Tensor]:
    """The chains of ``prev`` (B,) as a table: ``(table (C, T) long, lengths (C,))``, each
    row one chain's samples in frame order (-1 past its end), longest chain first."""
    B = prev.numel()
    device = prev.device
    first, position = chain_positions(prev)
    starts = torch.nonzero(prev < 0).flatten()
    lengths = torch.zeros(B, dtype=torch.long, device=device).index_add_(
        0, first, torch.ones(B, dtype=torch.long, device=device))[starts]
    order = torch.argsort(lengths, descending=True, stable=True)
    starts, lengths = starts[order], lengths[order]
    row = torch.full((B,), -1, dtype=torch.long, device=device)
    row[starts] = torch.arange(starts.numel(), device=device)
    T = int(lengths[0]) if lengths.numel() else 0
    table = torch.full((starts.numel(), T), -1, dtype=torch.long, device=device)
    table[row[first], position] = torch.arange(B, device=device)
    return table, lengths


__all__ = ['MotionPriorHandler', 'DEFAULT_PARAMS', 'STENCILS', 'consecutive_frames',
           'cut_chains',
           'ancestors', 'finite_difference', 'motion_scale',
           'unwrap_rotations', 'chain_order', 'chain_positions', 'variogram',
           'video_share', 'walk_share', 'far_partners', 'Variogram', 'PLACING_PARAMS',
           'scale_from_variogram',
           'nearest_equivalent']
