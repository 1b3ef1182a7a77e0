"""Settings of a Levenberg-Marquardt stage (its ``optimizer`` dict)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

from .trust_region import DAMPING

#: Optimizer ``type`` names that select the Levenberg-Marquardt solver in a stage config.
LM_NAMES = ('LevenbergMarquardt', 'LM')


@dataclass
class LMOptions:
    """Settings of :func:`~smilfit.registrants.solver.loop.levenberg_marquardt`.

    Attributes:
        lambda_init: initial damping (relative to the diagonal of ``J^T J``).
        lambda_max: a sample whose damping exceeds this cannot improve and stops.
        xtol: stop when the step's largest entry is below ``xtol * (|x|_inf + xtol)``.
        damping: a name of :data:`~smilfit.registrants.solver.trust_region.DAMPING`:
            ``'levenberg'`` (``J^T J + lambda mean(diag) I``, the default: robust when
            some directions are unconstrained) or ``'marquardt'``
            (``J^T J + lambda diag(J^T J)``, scale-invariant).
        linear_dtype: precision of ``J^T J`` and its solve: ``'auto'`` (the
            parameters' dtype), ``'float32'`` or ``'float64'``. float32 halves the
            dominant cost; residuals, gradients and the acceptance test keep the
            parameters' precision, so a less exact step only costs an iteration.
        progress_tol: a chain of frames coupled in time (a stage with a motion term
            and no parameters shared between frames: a skeleton or a shape is fitted to
            its minimum) stops when an accepted step lowers its cost by less than this share of
            what the stage has lowered it so far (0: off). A chain's cost keeps the
            motion term's share however near the optimum, so the relative test of
            ``ftol`` alone lets it creep on along directions the labels hardly see (a
            bone's twist) for its whole budget; docs/fitting.md has the measurements.
        noise_tol: a chain of frames coupled in time also stops when an accepted step
            lowers no frame's cost by as much as this many times the squared error of
            one label residual, estimated as the chain's cost per label residual row
            where it stands (0: off). Such a step moves no frame by as much as a
            standard error of its estimate: with noisy labels the last steps of
            Gauss-Newton converge linearly (the residuals' own curvature, which it
            leaves out, is as large as the labels' along directions they hardly see),
            and every chain then steps until its slowest frame has converged. A frame
            whose cost two accepted steps in a row lowered by less is held still
            until then (not linearised or solved; set moving again where a step of
            its own would gain more), so a chain's last steps cost what its moving
            frames cost. The estimate follows the labels' errors: near zero on exact
            labels in a loss in pixels; about one in noise units
            (``scale_from_residuals``), whose scales are measured from those same
            errors.
    """

    lambda_init: float = 1e-3
    lambda_max: float = 1e10
    xtol: float = 1e-10
    damping: str = 'levenberg'
    linear_dtype: str = 'auto'
    progress_tol: float = 3e-4
    noise_tol: float = 1.0

    @classmethod
    def from_config(cls, cfg: Mapping, where: str) -> 'LMOptions':
        allowed = ('lambda_init', 'lambda_max', 'xtol', 'damping', 'linear_dtype',
                   'progress_tol', 'noise_tol')
        unknown = sorted(set(cfg) - set(allowed))
        if unknown:
            raise ValueError(f'{where}: unknown Levenberg-Marquardt option(s) {unknown}; '
                             f'allowed: {list(allowed)} (iterations come from n_iter, '
                             'tolerances from ftol/gtol)')
        damping = cfg.get('damping', 'levenberg')
        if damping not in DAMPING:
            raise ValueError(f'{where}: damping must be one of {sorted(DAMPING)}, '
                             f'got {damping!r}')
        linear = cfg.get('linear_dtype', 'auto')
        if linear not in ('auto', 'float32', 'float64'):
            raise ValueError(f"{where}: linear_dtype must be 'auto', 'float32' or 'float64', "
                             f'got {linear!r}')
        opts = cls(damping=damping, linear_dtype=linear,
                   **{k: float(v) for k, v in cfg.items() if k not in ('damping', 'linear_dtype')})
        if not (opts.lambda_init > 0 and opts.lambda_max > opts.lambda_init and opts.xtol >= 0
                and 0 <= opts.progress_tol < 1 and opts.noise_tol >= 0):
            raise ValueError(f'{where}: need 0 < lambda_init < lambda_max, xtol >= 0, '
                             f'0 <= progress_tol < 1 and noise_tol >= 0, got {opts}')
        return opts


__all__ = ['LM_NAMES', 'LMOptions']
