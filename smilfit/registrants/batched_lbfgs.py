"""L-BFGS over a batch in which every sample is optimised independently, vectorised.

``torch.optim.LBFGS`` over a batch of frames (the per-sample losses summed) couples the
samples through one line search, one curvature history and one set of stopping tests: a
sample's result depends on the others. :class:`BatchedLBFGS` runs one L-BFGS per sample,
with its own history, its own strong-Wolfe line search (``torch.optim.lbfgs._strong_wolfe``
ported to tensors) and its own stopping tests, while all samples share one batched call
of the closure per round: each sample is evaluated at its own trial point.

Lockstep, not synchronised: one round = one closure call. After it, every sample advances
its own state machine by one evaluation (bracketing or zoom phase of its line search, end
of an iteration, start of the next), so a sample whose line search ends early starts its
next iteration at the next round instead of waiting for the others. Stopped samples
(converged, out of iterations, diverged) keep their parameters fixed; the closure still
evaluates them there (their loss is unchanged), and their values are ignored. With the
per-sample loss depending only on that sample's parameters, every sample follows exactly
the iterates it would follow alone (``B = 1``), which for ``B = 1`` are torch's.

Non-finite values: a sample whose loss or gradient turns non-finite is frozen at its last
finite point and flagged in ``diverged`` while the others go on (``non_finite='freeze'``);
``non_finite='backtrack'`` instead treats a non-finite line-search trial as an infinitely
bad point and shrinks the step. Parameters never come back non-finite (unless they
started so). Where the cubic interpolation overflows (float32, huge trial loss) it
bisects; torch returns NaN there.

Adam needs no such class: with the per-sample losses *summed*, the gradient of sample b
depends only on sample b and Adam's moments are element-wise, so ``torch.optim.Adam`` over
a batch is already per-sample independent (verified in the architecture probe), as long
as nothing global couples them again: no gradient clipping by the global norm, no
learning-rate schedule driven by the summed loss (ReduceLROnPlateau), no early stop on it.

Shapes: B batch, D flat per-sample parameter count (``x_b`` is the concatenation of
``params[i][b].flatten()``), m history size.
"""
from __future__ import annotations

import enum
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch

Tensor = torch.Tensor

C1, C2 = 1e-4, 0.9  # strong-Wolfe constants, as in torch (max_ls = max_eval - evaluations)
CURVATURE_EPS = 1e-10           # an (s, y) pair with y^T s <= this is skipped, as in torch


class StopReason(enum.IntEnum):
    """Why a sample stopped in the last :meth:`BatchedLBFGS.step` (``reason`` codes)."""

    RUNNING = 0    # never stopped (only seen before the first step)
    GRAD = 1       # |g|_inf <= tolerance_grad
    STEP = 2       # |t d|_inf <= tolerance_change
    LOSS = 3       # |f - f_prev| < tolerance_change
    DIRECTION = 4  # g^T d > -tolerance_change: no descent left along the L-BFGS direction
    MAX_ITER = 5   # max_iter iterations in this step
    MAX_EVAL = 6   # max_eval closure evaluations in this step
    DIVERGED = 7   # non-finite loss or gradient; frozen at its last finite point


CONVERGED_REASONS = (StopReason.GRAD, StopReason.STEP, StopReason.LOSS, StopReason.DIRECTION)


# ------------------------------------------------------------------ pure helpers
def cubic_interpolate(x1: Tensor, f1: Tensor, g1: Tensor, x2: Tensor, f2: Tensor,
                      g2: Tensor, lo: Tensor, hi: Tensor) -> Tensor:
    """Minimiser of the cubic through two points with slopes, clamped to [lo, hi]; (B,) each.

    ``torch.optim.lbfgs._cubic_interpolate`` element-wise: the bisection ``(lo + hi) / 2``
    where the cubic has no real minimiser or its minimiser is not finite.
    """
    d1 = g1 + g2 - 3 * (f1 - f2) / (x1 - x2)
    d2_square = d1 ** 2 - g1 * g2
    d2 = d2_square.clamp_min(0).sqrt()
    min_pos = torch.where(x1 <= x2,
                          x2 - (x2 - x1) * ((g2 + d2 - d1) / (g2 - g1 + 2 * d2)),
                          x1 - (x1 - x2) * ((g1 + d2 - d1) / (g1 - g2 + 2 * d2)))
    clamped = torch.minimum(torch.maximum(min_pos, lo), hi)
    # Also bisect where the cubic overflows (float32 with a huge trial loss), where torch
    # returns NaN and its line search never recovers.
    return torch.where((d2_square >= 0) & torch.isfinite(clamped), clamped, (lo + hi) / 2)


def rowdot(a: Tensor, b: Tensor) -> Tensor:
    """(B, D), (B, D) -> (B,) per-sample dot products."""
    return (a * b).sum(-1)


def two_loop(g: Tensor, S: Tensor, Y: Tensor, rho: Tensor, H_diag: Tensor) -> Tensor:
    """L-BFGS direction ``-H g`` per sample by the two-loop recursion.

    Args:
        g: (B, D) gradients.
        S, Y: (B, m, D) steps and gradient changes, oldest first; a sample's unused rows
            (beyond its history length) and their ``rho`` are exactly zero, so they leave
            q and r unchanged (no masks needed).
        rho: (B, m) ``1 / y^T s``.
        H_diag: (B,) initial inverse-Hessian scale ``y^T s / y^T y`` of the newest pair.
    Returns:
        (B, D) directions, operation for operation torch's recursion.
    """
    S_rows, Y_rows, rho_rows = S.unbind(1), Y.unbind(1), rho.unbind(1)
    m = len(S_rows)
    al: List[Tensor] = [g] * m
    q = g.neg()
    for i in range(m - 1, -1, -1):
        al[i] = rowdot(S_rows[i], q).mul_(rho_rows[i]).unsqueeze_(1)
        q.sub_(al[i] * Y_rows[i])
    r = q.mul_(H_diag[:, None])
    for i in range(m):
        be_i = rowdot(Y_rows[i], r).mul_(rho_rows[i]).unsqueeze_(1)
        r.add_(al[i].sub_(be_i) * S_rows[i])
    return r


def push_pairs(S: Tensor, Y: Tensor, rho: Tensor, length: Tensor, s: Tensor, y: Tensor,
               rho_new: Tensor, mask: Tensor) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
    """Append (s, y, rho) to the (B, m, D) histories of the samples in ``mask`` (B,).

    A full history drops its oldest pair first (torch's ``pop(0)``); the rows of samples
    with ``length == 0`` are zeroed first (keeps :func:`two_loop`'s invariant).
    """
    m = S.shape[1]
    empty = (length == 0)[:, None]  # a history reset: clear stale rows (two_loop needs zeros)
    S = S.masked_fill(empty[..., None], 0.0)
    Y = Y.masked_fill(empty[..., None], 0.0)
    rho = rho.masked_fill(empty, 0.0)
    full = (mask & (length == m))[:, None]
    S = torch.where(full[..., None], S.roll(-1, 1), S)
    Y = torch.where(full[..., None], Y.roll(-1, 1), Y)
    rho = torch.where(full, rho.roll(-1, 1), rho)
    slot = (torch.arange(m, device=S.device) == length.clamp(max=m - 1)[:, None]) & mask[:, None]
    S = torch.where(slot[..., None], s[:, None], S)
    Y = torch.where(slot[..., None], y[:, None], Y)
    rho = torch.where(slot, rho_new[:, None], rho)
    return S, Y, rho, torch.where(mask, (length + 1).clamp(max=m), length)


def take(pair: Tensor, index: Tensor) -> Tensor:
    """(B, 2, ...) pair of values, (B,) index in {0, 1} -> (B, ...) chosen value."""
    idx = index.view(-1, *([1] * (pair.dim() - 1))).expand(-1, 1, *pair.shape[2:])
    return pair.gather(1, idx).squeeze(1)


def lower_of(br_f: Tensor) -> Tensor:
    """(B, 2) bracket losses -> (B,) position of the low point (ties: 0, as torch)."""
    return (br_f[:, 0] > br_f[:, 1]).long()


# ------------------------------------------------------------------ line search
class BatchedStrongWolfe:
    """B strong-Wolfe line searches advanced in lockstep, one evaluation per round.

    Per sample, ``torch.optim.lbfgs._strong_wolfe`` as a state machine: a bracketing
    phase (extrapolating by cubic interpolation until the Wolfe point is bracketed) and a
    zoom phase (cubic interpolation inside the bracket with torch's insufficient-progress
    safeguard). ``pending`` (B,) marks the samples waiting for an evaluation at ``t``.
    """

    def __init__(self, B: int, D: int, like: Tensor, tolerance_change: float) -> None:
        new = lambda *shape: like.new_zeros(shape)  # noqa: E731
        flag = lambda: torch.zeros(B, dtype=torch.bool, device=like.device)  # noqa: E731
        self.tolerance_change = tolerance_change
        self.f0, self.gtd0, self.d_norm = new(B), new(B), new(B)
        self.g0, self.d = new(B, D), new(B, D)
        self.t, self.t_prev, self.f_prev, self.gtd_prev = new(B), new(B), new(B), new(B)
        self.g_prev = new(B, D)
        self.br_t, self.br_f, self.br_gtd, self.br_g = new(B, 2), new(B, 2), new(B, 2), new(B, 2, D)
        self.low = torch.zeros(B, dtype=torch.long, device=like.device)
        self.evals = torch.zeros_like(self.low)
        self.max_ls = torch.zeros_like(self.low)
        self.in_bracket, self.in_zoom, self.done, self.insuf = flag(), flag(), flag(), flag()

    @property
    def pending(self) -> Tensor:
        """(B,) samples whose line search waits for an evaluation at ``t``."""
        return self.in_bracket | self.in_zoom

    def start(self, mask: Tensor, f: Tensor, g: Tensor, gtd: Tensor, t: Tensor, d: Tensor,
              max_ls: Tensor) -> None:
        """Begin searches for the samples in ``mask`` from (f, g) along d with first step t."""
        w, w2 = mask, mask[:, None]
        self.f0 = torch.where(w, f, self.f0)
        self.g0 = torch.where(w2, g, self.g0)
        self.gtd0 = torch.where(w, gtd, self.gtd0)
        self.d = torch.where(w2, d, self.d)
        self.d_norm = torch.where(w, d.abs().amax(-1), self.d_norm)
        self.t = torch.where(w, t, self.t)
        self.t_prev = self.t_prev.masked_fill(w, 0.0)
        self.f_prev = torch.where(w, f, self.f_prev)
        self.g_prev = torch.where(w2, g, self.g_prev)
        self.gtd_prev = torch.where(w, gtd, self.gtd_prev)
        self.evals = self.evals.masked_fill(w, 0)
        self.max_ls = torch.where(w, max_ls, self.max_ls)
        self.in_bracket = self.in_bracket | w
        self.in_zoom = self.in_zoom & ~w
        self.done = self.done & ~w
        self.insuf = self.insuf & ~w

    def cancel(self, mask: Tensor) -> None:
        """Abandon the searches of the samples in ``mask``."""
        self.in_bracket = self.in_bracket & ~mask
        self.in_zoom = self.in_zoom & ~mask

    def update(self, f_new: Tensor, g_new: Tensor) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
        """Consume one evaluation (f_new (B,), g_new (B, D) at ``t`` for pending samples).

        Returns:
            finished (B,) bool, and for those the accepted step t (B,), loss (B,) and
            gradient (B, D) (the bracket's low point, as torch returns).
        """
        in_bracket, in_zoom = self.in_bracket, self.in_zoom
        self.evals = self.evals + (in_bracket | in_zoom).long()
        ls_iter = self.evals - 1  # torch's ls_iter after this evaluation
        t = self.t
        gtd_new = rowdot(g_new, self.d)
        armijo_fail = f_new > self.f0 + C1 * t * self.gtd0
        wolfe = gtd_new.abs() <= -C2 * self.gtd0

        # bracketing phase
        out = in_bracket & (ls_iter >= self.max_ls)
        rest = in_bracket & ~out
        c_armijo = rest & (armijo_fail | ((ls_iter > 1) & (f_new >= self.f_prev)))
        c_wolfe = rest & ~c_armijo & wolfe
        c_slope = rest & ~c_armijo & ~c_wolfe & (gtd_new >= 0)
        extrapolate = rest & ~c_armijo & ~c_wolfe & ~c_slope
        to_zoom = c_armijo | c_slope
        self._set_bracket(out, to_zoom, c_wolfe, f_new, g_new, gtd_new)

        # zoom phase: fold the new point into the bracket
        self._zoom_update(in_zoom, armijo_fail, wolfe, f_new, g_new, gtd_new)

        # extrapolate the samples still bracketing
        t_next = cubic_interpolate(self.t_prev, self.f_prev, self.gtd_prev, t, f_new, gtd_new,
                                   lo=t + 0.01 * (t - self.t_prev), hi=t * 10)
        e, e2 = extrapolate, extrapolate[:, None]
        self.t_prev = torch.where(e, t, self.t_prev)
        self.f_prev = torch.where(e, f_new, self.f_prev)
        self.g_prev = torch.where(e2, g_new, self.g_prev)
        self.gtd_prev = torch.where(e, gtd_new, self.gtd_prev)
        self.t = torch.where(e, t_next, self.t)
        self.in_bracket = extrapolate
        self.done = self.done | c_wolfe
        self.insuf = self.insuf & ~to_zoom

        # zoom loop head: stop, or choose the next trial point
        zoom = in_zoom | to_zoom
        width = (self.br_t[:, 1] - self.br_t[:, 0]).abs()
        stop = self.done | (ls_iter >= self.max_ls) | (width * self.d_norm < self.tolerance_change)
        self.in_zoom = zoom & ~stop
        self._zoom_trial(self.in_zoom)

        finished = out | c_wolfe | (zoom & stop)
        return (finished, take(self.br_t, self.low), take(self.br_f, self.low),
                take(self.br_g, self.low))

    def _set_bracket(self, out: Tensor, to_zoom: Tensor, wolfe: Tensor, f_new: Tensor,
                     g_new: Tensor, gtd_new: Tensor) -> None:
        """Brackets at the end of the bracketing phase: [t_prev, t] when entering the zoom,
        [0, t] when out of evaluations, the single point t when it satisfies Wolfe."""
        first_t = torch.where(wolfe, self.t, self.t_prev).masked_fill(out, 0.0)
        first_f = torch.where(out, self.f0, torch.where(wolfe, f_new, self.f_prev))
        first_gtd = torch.where(out, self.gtd0, torch.where(wolfe, gtd_new, self.gtd_prev))
        first_g = torch.where(out[:, None], self.g0,
                              torch.where(wolfe[:, None], g_new, self.g_prev))
        w = out | to_zoom | wolfe
        self.br_t = torch.where(w[:, None], torch.stack([first_t, self.t], 1), self.br_t)
        self.br_f = torch.where(w[:, None], torch.stack([first_f, f_new], 1), self.br_f)
        self.br_gtd = torch.where(w[:, None], torch.stack([first_gtd, gtd_new], 1), self.br_gtd)
        self.br_g = torch.where(w[:, None, None], torch.stack([first_g, g_new], 1), self.br_g)
        self.low = torch.where(w, lower_of(self.br_f), self.low)

    def _zoom_update(self, zoom: Tensor, armijo_fail: Tensor, wolfe: Tensor, f_new: Tensor,
                     g_new: Tensor, gtd_new: Tensor) -> None:
        """torch's zoom-phase bracket update for the samples in ``zoom``."""
        low = self.low
        high = 1 - low
        lo_t, hi_t = take(self.br_t, low), take(self.br_t, high)
        fail = zoom & (armijo_fail | (f_new >= take(self.br_f, low)))
        ok = zoom & ~fail
        swap = ok & ~wolfe & (gtd_new * (hi_t - lo_t) >= 0)
        is_high = torch.arange(2, device=low.device) == high[:, None]
        put_new = (fail[:, None] & is_high) | (ok[:, None] & ~is_high)
        low_to_high = swap[:, None] & is_high

        def fold(pair: Tensor, new: Tensor) -> Tensor:
            shape = (-1, 2) + (1,) * (pair.dim() - 2)
            pair = torch.where(low_to_high.view(shape), take(pair, low)[:, None], pair)
            return torch.where(put_new.view(shape), new[:, None], pair)

        self.br_t = fold(self.br_t, self.t)
        self.br_f = fold(self.br_f, f_new)
        self.br_gtd = fold(self.br_gtd, gtd_new)
        self.br_g = fold(self.br_g, g_new)
        self.low = torch.where(fail, lower_of(self.br_f), low)
        self.done = self.done | (ok & wolfe)

    def _zoom_trial(self, mask: Tensor) -> None:
        """Next zoom trial point (cubic, pushed 10% inside the bracket when stalling)."""
        br_t, br_f, br_gtd = self.br_t, self.br_f, self.br_gtd
        lo, hi = br_t.amin(1), br_t.amax(1)
        t = cubic_interpolate(br_t[:, 0], br_f[:, 0], br_gtd[:, 0], br_t[:, 1], br_f[:, 1],
                              br_gtd[:, 1], lo, hi)
        eps = 0.1 * (hi - lo)
        near = torch.minimum(hi - t, t - lo) < eps
        move = near & (self.insuf | (t >= hi) | (t <= lo))
        t = torch.where(move, torch.where((t - hi).abs() < (t - lo).abs(), hi - eps, lo + eps), t)
        self.t = torch.where(mask, t, self.t)
        self.insuf = torch.where(mask, near & ~move, self.insuf)


# ------------------------------------------------------------------ optimiser
_STATE_KEYS = ('d', 't', 'S', 'Y', 'rho', 'length', 'H_diag', 'prev_g', 'prev_loss',
               'n_iter', 'sample_evals', 'diverged', 'reason', 'loss')


class BatchedLBFGS:
    """L-BFGS in which each sample of a batch is optimised independently (see module doc).

    Args:
        params: leaf tensors, each (B, ...) with the batch in dim 0, requiring grad, with
            one dtype and device.
        lr: step scale; the first iteration's initial step is ``min(1, 1 / |g|_1) * lr``.
        max_iter: iterations per sample per :meth:`step`.
        history_size: m, curvature pairs kept per sample.
        tolerance_grad: a sample stops when ``|g|_inf <= tolerance_grad``.
        tolerance_change: ... or when its step ``|t d|_inf``, loss change or directional
            derivative falls below this.
        line_search_fn: ``'strong_wolfe'`` or None (fixed step ``lr``, as torch).
        max_eval: closure evaluations per sample per step (default ``max_iter * 5 // 4``).
        non_finite: what a non-finite loss or gradient does to a sample. ``'freeze'``
            (default): the sample stops at its last finite point, ``reason`` DIVERGED,
            ``diverged`` True, over later steps too. ``'backtrack'``: a non-finite *line
            search trial* counts as an infinitely bad point (Armijo fails, the search
            shrinks the step), so one wild trial step (e.g. ``exp`` of a log-scale
            overflowing float32) does not end the fit; a non-finite loss at an accepted
            point, or any with ``line_search_fn=None``, still freezes.

    Attributes (all (B,), from the last :meth:`step` unless noted):
        reason: :class:`StopReason` codes; ``converged`` derived from it.
        diverged: samples frozen by a non-finite loss or gradient (kept over steps).
        converged: samples stopped by a gradient / change tolerance.
        n_iter: iterations per sample, cumulative over steps (torch's ``state['n_iter']``).
        sample_evals: evaluations each sample used, cumulative.
        n_evals: closure calls, cumulative (an int).
        loss: the latest per-sample losses at the returned parameters.

    Differences from ``torch.optim.LBFGS``: ``step`` returns the *final* (B,) losses (torch
    returns the first); without a line search the last iteration is evaluated too (torch
    skips it), which gives the final loss and the non-finite check but not another step;
    samples that diverged stay frozen over later steps (``reset`` releases them).
    """

    def __init__(self, params: Sequence[Tensor], lr: float = 1.0, max_iter: int = 100,
                 history_size: int = 10, tolerance_grad: float = 1e-7,
                 tolerance_change: float = 1e-9,
                 line_search_fn: Optional[str] = 'strong_wolfe',
                 max_eval: Optional[int] = None, non_finite: str = 'freeze') -> None:
        self.params = list(params)
        self._check_params(self.params)
        if line_search_fn not in (None, 'strong_wolfe'):
            raise ValueError(f"line_search_fn must be 'strong_wolfe' or None, "
                             f"got {line_search_fn!r}")
        if non_finite not in ('freeze', 'backtrack'):
            raise ValueError(f"non_finite must be 'freeze' or 'backtrack', got {non_finite!r}")
        if lr <= 0 or max_iter < 1 or history_size < 1:
            raise ValueError('need lr > 0, max_iter >= 1 and history_size >= 1')
        self.lr, self.max_iter, self.history_size = float(lr), int(max_iter), int(history_size)
        self.tolerance_grad, self.tolerance_change = tolerance_grad, tolerance_change
        self.line_search_fn, self.non_finite = line_search_fn, non_finite
        self.max_eval = int(max_eval) if max_eval is not None else max_iter * 5 // 4
        first = self.params[0]
        self.batch_size = first.shape[0]
        self.numels = [p.numel() // max(self.batch_size, 1) for p in self.params]
        self.dim = sum(self.numels)
        self.dtype, self.device = first.dtype, first.device
        self.n_evals = 0
        self.reset()

    # ------------------------------------------------------------ bookkeeping
    @staticmethod
    def _check_params(params: List[Tensor]) -> None:
        if not params:
            raise ValueError('BatchedLBFGS got no parameters')
        B = params[0].shape[0] if params[0].dim() else None
        for i, p in enumerate(params):
            if not isinstance(p, Tensor) or not p.is_leaf or not p.requires_grad:
                raise ValueError(f'params[{i}] must be a leaf tensor that requires grad')
            if p.dim() == 0 or p.shape[0] != B:
                raise ValueError(f'params[{i}] has shape {tuple(p.shape)}: every parameter '
                                 f'needs the batch dim 0 of size {B} (that of params[0])')
            if not p.dtype.is_floating_point or p.dtype != params[0].dtype \
                    or p.device != params[0].device:
                raise ValueError(f'params[{i}]: all parameters need one real floating '
                                 f'dtype and one device ({params[0].dtype}, {params[0].device})')

    def reset(self) -> None:
        """Forget histories, counters and divergence (the next step starts afresh)."""
        B, D, m = self.batch_size, self.dim, self.history_size
        new = lambda *shape: torch.zeros(shape, dtype=self.dtype, device=self.device)  # noqa: E731
        count = lambda: torch.zeros(B, dtype=torch.long, device=self.device)  # noqa: E731
        self.d, self.t = new(B, D), new(B)
        self.S, self.Y, self.rho = new(B, m, D), new(B, m, D), new(B, m)
        self.length, self.H_diag = count(), new(B) + 1
        self.prev_g, self.prev_loss = new(B, D), new(B)
        self.n_iter, self.sample_evals, self.reason = count(), count(), count()
        self.diverged = torch.zeros(B, dtype=torch.bool, device=self.device)
        self.loss = new(B) + float('nan')

    @property
    def converged(self) -> Tensor:
        """(B,) bool: stopped by a gradient / change tolerance in the last step."""
        codes = torch.tensor([int(r) for r in CONVERGED_REASONS], device=self.device)
        return torch.isin(self.reason, codes)

    def state_dict(self) -> Dict[str, object]:
        """Per-sample histories, counters and hyper-parameters (tensors cloned)."""
        state = {k: getattr(self, k).clone() for k in _STATE_KEYS}
        state['n_evals'] = self.n_evals
        state['hyper'] = dict(lr=self.lr, max_iter=self.max_iter, history_size=self.history_size,
                              tolerance_grad=self.tolerance_grad,
                              tolerance_change=self.tolerance_change,
                              line_search_fn=self.line_search_fn, max_eval=self.max_eval,
                              non_finite=self.non_finite,
                              batch_size=self.batch_size, dim=self.dim)
        return state

    def load_state_dict(self, state: Dict[str, object]) -> None:
        """Restore :meth:`state_dict` output (same batch size, D and history size)."""
        hyper = dict(state['hyper'])
        for key in ('batch_size', 'dim', 'history_size'):
            if hyper[key] != getattr(self, key):
                raise ValueError(f'state_dict has {key}={hyper[key]}, this optimiser '
                                 f'{getattr(self, key)}')
        for key in ('lr', 'max_iter', 'tolerance_grad', 'tolerance_change', 'line_search_fn',
                    'max_eval', 'non_finite'):
            setattr(self, key, hyper[key])
        for key in _STATE_KEYS:
            old = getattr(self, key)
            setattr(self, key, state[key].to(device=old.device, dtype=old.dtype).clone())
        self.n_evals = int(state['n_evals'])

    def zero_grad(self) -> None:
        """Clear the parameters' gradients (for closures written for torch optimisers)."""
        for p in self.params:
            p.grad = None

    # ------------------------------------------------------------ flat views
    def _get_x(self) -> Tensor:
        """(B, D) current parameters."""
        return torch.cat([p.detach().reshape(self.batch_size, -1) for p in self.params], 1)

    def _set_x(self, x: Tensor) -> None:
        offset = 0
        for p, n in zip(self.params, self.numels):
            p.copy_(x[:, offset:offset + n].view_as(p))
            offset += n

    def _evaluate(self, closure: Callable[[], Tensor], x: Tensor) -> Tuple[Tensor, Tensor]:
        """Closure at x: (B,) losses and (B, D) gradients (non-finite values kept)."""
        self._set_x(x)
        self.zero_grad()
        with torch.enable_grad():
            loss = closure()
        self.n_evals += 1
        if not isinstance(loss, Tensor) or loss.shape != (self.batch_size,):
            shape = tuple(loss.shape) if isinstance(loss, Tensor) else type(loss).__name__
            raise ValueError(f'the closure must return the per-sample losses of shape '
                             f'({self.batch_size},) (and backward their sum), got {shape}')
        grads = [p.grad.reshape(self.batch_size, -1) if p.grad is not None
                 else p.new_zeros(self.batch_size, n) for p, n in zip(self.params, self.numels)]
        return loss.detach().to(self.dtype), torch.cat(grads, 1)

    # ------------------------------------------------------------ iterations
    def _begin_iteration(self, mask: Tensor, f: Tensor, g: Tensor
                         ) -> Tuple[Tensor, Tensor, Tensor]:
        """Start an iteration for the samples in ``mask``: history update, direction, step.

        Returns (start, no_descent, gtd): samples that go on to a line search / step,
        samples stopped by ``gtd > -tolerance_change``, and the directional derivatives.
        """
        self.n_iter = self.n_iter + mask.long()
        first = mask & (self.n_iter == 1)
        later = mask & ~first
        y = g - self.prev_g
        s = self.d * self.t[:, None]
        ys = rowdot(y, s)
        add = later & (ys > CURVATURE_EPS)
        self.S, self.Y, self.rho, self.length = push_pairs(
            self.S, self.Y, self.rho, self.length.masked_fill(first, 0), s, y, 1.0 / ys, add)
        self.H_diag = torch.where(add, ys / rowdot(y, y), self.H_diag.masked_fill(first, 1.0))
        d = two_loop(g, self.S, self.Y, self.rho, self.H_diag)
        self.d = torch.where(mask[:, None], d, self.d)
        self.prev_g = torch.where(mask[:, None], g, self.prev_g)
        self.prev_loss = torch.where(mask, f, self.prev_loss)
        t_first = (1.0 / g.abs().sum(-1)).clamp(max=1.0) * self.lr
        self.t = torch.where(mask, torch.where(first, t_first, self.lr), self.t)
        gtd = rowdot(g, self.d)
        no_descent = mask & (gtd > -self.tolerance_change)
        return mask & ~no_descent, no_descent, gtd

    def _end_checks(self, finished: Tensor, f: Tensor, g: Tensor, step_iter: Tensor,
                    step_evals: Tensor) -> Tensor:
        """Reason codes (B,) for the samples in ``finished`` that stop (0: go on)."""
        conds = [
            (g.abs().amax(-1) <= self.tolerance_grad, StopReason.GRAD),
            ((self.d * self.t[:, None]).abs().amax(-1) <= self.tolerance_change, StopReason.STEP),
            ((f - self.prev_loss).abs() < self.tolerance_change, StopReason.LOSS),
            (step_iter >= self.max_iter, StopReason.MAX_ITER),
            (step_evals >= self.max_eval, StopReason.MAX_EVAL),
        ]
        code = torch.zeros_like(self.reason)
        for cond, reason in reversed(conds):  # the first listed wins
            code = code.masked_fill(finished & cond, int(reason))
        return code

    @torch.no_grad()
    def step(self, closure: Callable[[], Tensor]) -> Tensor:
        """Run up to ``max_iter`` iterations per sample; return the final losses (B,).

        ``closure()`` computes the per-sample losses (B,) at the current parameters,
        calls ``loss.sum().backward()`` and returns them (gradients are cleared before
        every call; the closure may clear them too). It must not mix samples.
        """
        B, line_search = self.batch_size, self.line_search_fn is not None
        backtrack = line_search and self.non_finite == 'backtrack'
        x = self._get_x()
        f, g = self._evaluate(closure, x)
        step_evals = torch.ones(B, dtype=torch.long, device=self.device)
        step_iter = torch.zeros_like(step_evals)
        finite = torch.isfinite(f) & torch.isfinite(g).all(-1)
        self.diverged = self.diverged | ~finite
        self.reason = torch.zeros_like(self.reason).masked_fill(self.diverged,
                                                                 int(StopReason.DIVERGED))
        # A sample frozen by an earlier step keeps its last finite loss.
        f = torch.where(finite | torch.isnan(self.loss), f, self.loss)
        g = g.masked_fill(~finite[:, None], 0.0)
        grad_ok = ~self.diverged & (g.abs().amax(-1) <= self.tolerance_grad)
        self.reason = self.reason.masked_fill(grad_ok, int(StopReason.GRAD))
        active = ~self.diverged & ~grad_ok

        search = BatchedStrongWolfe(B, self.dim, x, self.tolerance_change)
        pending = self._start(active, f, g, step_iter, step_evals, search)
        step_iter = step_iter + active.long()
        while bool(pending.any()):
            trial = (search.t if line_search else self.t).masked_fill(~pending, 0.0)
            f_e, g_e = self._evaluate(
                closure, torch.where(pending[:, None], x + trial[:, None] * self.d, x))
            step_evals = step_evals + pending.long()
            finite = torch.isfinite(f_e) & torch.isfinite(g_e).all(-1)
            # 'backtrack': every pending sample is in a line search, where f = inf, g = 0
            # fails Armijo and is never accepted (the cubic then bisects): none diverges
            bad = pending & ~finite & (not backtrack)
            f_e = f_e.masked_fill(~finite, float('inf') if backtrack else 0.0)
            g_e = g_e.masked_fill(~finite[:, None], 0.0)
            self.diverged = self.diverged | bad
            self.reason = self.reason.masked_fill(bad, int(StopReason.DIVERGED))
            if line_search:
                search.cancel(bad)
                finished, t_acc, f_acc, g_acc = search.update(f_e, g_e)
            else:
                finished, t_acc, f_acc, g_acc = pending & ~bad, self.t, f_e, g_e
            x = torch.where(finished[:, None], x + t_acc[:, None] * self.d, x)
            f = torch.where(finished, f_acc, f)
            g = torch.where(finished[:, None], g_acc, g)
            self.t = torch.where(finished, t_acc, self.t)
            code = self._end_checks(finished, f, g, step_iter, step_evals)
            self.reason = torch.where(code > 0, code, self.reason)
            go_on = finished & (code == 0)
            next_pending = self._start(go_on, f, g, step_iter, step_evals, search)
            step_iter = step_iter + go_on.long()
            pending = (search.pending if line_search else next_pending)
        self._set_x(x)
        self.sample_evals = self.sample_evals + step_evals
        self.loss = f
        return f.clone()

    def _start(self, mask: Tensor, f: Tensor, g: Tensor, step_iter: Tensor, step_evals: Tensor,
               search: BatchedStrongWolfe) -> Tensor:
        """Begin the next iteration of the samples in ``mask``; (B,) which now need an
        evaluation (the line search's first trial point, or the fixed step)."""
        start, no_descent, gtd = self._begin_iteration(mask, f, g)
        self.reason = self.reason.masked_fill(no_descent, int(StopReason.DIRECTION))
        if self.line_search_fn is not None:
            search.start(start, f, g, gtd, self.t, self.d, self.max_eval - step_evals)
        return start
