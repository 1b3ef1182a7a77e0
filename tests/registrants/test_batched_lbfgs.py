"""BatchedLBFGS: per-sample independence, parity with torch.optim.LBFGS, NaN guard, state."""
from __future__ import annotations

import math
from typing import Callable, List, Sequence

import pytest
import torch

from smilfit.body_models.rotations import axis_angle_to_matrix
from smilfit.registrants.batched_lbfgs import BatchedLBFGS, StopReason

F64 = torch.float64
TIGHT = dict(tolerance_grad=1e-10, tolerance_change=1e-14)


# ------------------------------------------------------------------ problems
class Problem:
    """A batch of independent problems: ``loss(xs, idx)`` -> per-sample losses (len(idx),)."""

    def __init__(self, x0: Sequence[torch.Tensor], data: dict,
                 fn: Callable[[List[torch.Tensor], dict], torch.Tensor]) -> None:
        self.x0, self.data, self.fn = list(x0), data, fn

    @property
    def batch_size(self) -> int:
        return self.x0[0].shape[0]

    def subset(self, idx) -> 'Problem':
        return Problem([x[idx] for x in self.x0], {k: v[idx] for k, v in self.data.items()},
                       self.fn)

    def replace(self, i: int, other: 'Problem', j: int) -> 'Problem':
        """A copy with sample i replaced by sample j of ``other``."""
        def put(a, b):
            a = a.clone()
            a[i] = b[j]
            return a
        return Problem([put(a, b) for a, b in zip(self.x0, other.x0)],
                       {k: put(v, other.data[k]) for k, v in self.data.items()}, self.fn)

    def params(self) -> List[torch.Tensor]:
        return [x.clone().requires_grad_() for x in self.x0]

    def closure(self, params: List[torch.Tensor]) -> Callable[[], torch.Tensor]:
        def closure():
            loss = self.fn(params, self.data)
            loss.sum().backward()
            return loss
        return closure


def quadratics(B: int = 6, D: int = 5, seed: int = 0) -> Problem:
    """0.5 (x - c)^T A (x - c) with condition numbers from 1 to 1e4."""
    g = torch.Generator().manual_seed(seed)
    Q = torch.linalg.qr(torch.randn(B, D, D, generator=g, dtype=F64))[0]
    cond = torch.logspace(0, 4, B, dtype=F64)
    eig = torch.stack([torch.logspace(0, math.log10(c), D, dtype=F64) for c in cond])
    A = Q @ torch.diag_embed(eig) @ Q.transpose(1, 2)
    c = torch.randn(B, D, generator=g, dtype=F64)

    def fn(xs, data):
        r = xs[0] - data['c']
        return 0.5 * torch.einsum('bi,bij,bj->b', r, data['A'], r)
    return Problem([torch.randn(B, D, generator=g, dtype=F64)], dict(A=A, c=c), fn)


def rosenbrock(B: int = 5, seed: int = 0) -> Problem:
    """(a - x)^2 + b (y - x^2)^2 with per-sample a, b; minimum at (a, a^2)."""
    g = torch.Generator().manual_seed(seed)
    a = 0.5 + torch.rand(B, generator=g, dtype=F64)
    b = torch.logspace(0, 2, B, dtype=F64)
    x0 = torch.tensor([-1.2, 1.0], dtype=F64) + 0.5 * torch.randn(B, 2, generator=g, dtype=F64)

    def fn(xs, data):
        x, y = xs[0].unbind(-1)
        return (data['a'] - x) ** 2 + data['b'] * (y - x ** 2) ** 2
    return Problem([x0], dict(a=a, b=b), fn)


def rigid(B: int = 6, N: int = 20, seed: int = 0, dtype=F64) -> Problem:
    """Similarity fit (axis-angle, translation, log-scale: 7 parameters) to noisy 3D points."""
    g = torch.Generator().manual_seed(seed)
    P = torch.randn(B, N, 3, generator=g, dtype=F64)
    aa = torch.randn(B, 3, generator=g, dtype=F64)
    T = torch.randn(B, 3, generator=g, dtype=F64)
    s = torch.exp(0.3 * torch.randn(B, 1, generator=g, dtype=F64))
    Qt = s[:, :, None] * P @ axis_angle_to_matrix(aa).transpose(1, 2) + T[:, None]
    Qt = Qt + 0.01 * torch.randn(B, N, 3, generator=g, dtype=F64)

    def fn(xs, data):
        rot, transl, log_scale = xs
        R = axis_angle_to_matrix(rot)
        pred = log_scale.exp()[:, :, None] * data['P'] @ R.transpose(1, 2) + transl[:, None]
        return (pred - data['Q']).square().sum((1, 2))
    x0 = [torch.full((B, 3), 0.1, dtype=dtype), torch.zeros(B, 3, dtype=dtype),
          torch.zeros(B, 1, dtype=dtype)]
    return Problem(x0, dict(P=P.to(dtype), Q=Qt.to(dtype)), fn)


PROBLEMS = dict(quadratics=quadratics, rosenbrock=rosenbrock, rigid=rigid)


def fit(problem: Problem, steps: int = 1, **kw) -> tuple:
    params = problem.params()
    opt = BatchedLBFGS(params, **kw)
    closure = problem.closure(params)
    for _ in range(steps):
        loss = opt.step(closure)
    return torch.cat([p.detach().flatten(1) for p in params], 1), loss, opt


# ------------------------------------------------------------------ independence
@pytest.mark.parametrize('name', list(PROBLEMS))
@pytest.mark.parametrize('line_search_fn', ['strong_wolfe', None])
def test_batch_equals_each_sample_alone(name, line_search_fn):
    problem = PROBLEMS[name]()
    kw = dict(max_iter=60, line_search_fn=line_search_fn, **TIGHT)
    if line_search_fn is None:
        kw['lr'] = 0.01 if name == 'rigid' else 1e-4
    x, loss, opt = fit(problem, **kw)
    for i in range(problem.batch_size):
        xi, li, oi = fit(problem.subset([i]), **kw)
        torch.testing.assert_close(x[i:i + 1], xi, atol=1e-6, rtol=0)
        torch.testing.assert_close(loss[i:i + 1], li, atol=1e-6, rtol=1e-6)
        assert opt.n_iter[i] == oi.n_iter[0] and opt.reason[i] == oi.reason[0]
        assert opt.sample_evals[i] == oi.sample_evals[0]
    # total closure calls = the busiest sample's (samples do not wait for each other)
    assert opt.n_evals == int(opt.sample_evals.max())


@pytest.mark.parametrize('name', list(PROBLEMS))
def test_replacing_another_sample_changes_nothing(name):
    problem = PROBLEMS[name]()
    other = PROBLEMS[name](seed=7)
    for key in other.data:  # a very different problem: rescaled by 1e3
        other.data[key] = other.data[key] * 1e3
    other.x0 = [5 * x + 3 for x in other.x0]
    changed = problem.replace(1, other, 0)
    kw = dict(max_iter=40, **TIGHT)
    x, loss, opt = fit(problem, **kw)
    x2, loss2, opt2 = fit(changed, **kw)
    keep = [i for i in range(problem.batch_size) if i != 1]
    assert not torch.allclose(x[1], x2[1])
    torch.testing.assert_close(x[keep], x2[keep], atol=1e-12, rtol=0)
    torch.testing.assert_close(loss[keep], loss2[keep], atol=1e-12, rtol=1e-12)
    assert torch.equal(opt.n_iter[keep], opt2.n_iter[keep])
    assert torch.equal(opt.sample_evals[keep], opt2.sample_evals[keep])


def test_rosenbrock_converges_per_sample():
    problem = rosenbrock(B=8)
    x, loss, opt = fit(problem, max_iter=200, **TIGHT)
    a = problem.data['a']
    torch.testing.assert_close(x, torch.stack([a, a ** 2], 1), atol=1e-6, rtol=0)
    assert bool(opt.converged.all()) and not bool(opt.diverged.any())
    assert loss.max() < 1e-12


def test_rigid_fit_recovers_pose():
    problem = rigid(B=16)
    x, loss, opt = fit(problem, max_iter=100)
    assert bool(opt.converged.all())
    # residual of the least-squares fit ~ noise: 20 points * 3 * 0.01^2
    assert loss.max() < 0.02


# ------------------------------------------------------------------ parity with torch
def torch_fit(problem: Problem, steps: int = 1, **kw) -> tuple:
    params = problem.params()
    opt = torch.optim.LBFGS(params, **kw)

    def closure():
        opt.zero_grad()
        loss = problem.fn(params, problem.data).sum()
        loss.backward()
        return loss
    for _ in range(steps):
        opt.step(closure)
    return torch.cat([p.detach().flatten(1) for p in params], 1), opt.state[params[0]]


@pytest.mark.parametrize('name', ['rosenbrock', 'rigid'])
@pytest.mark.parametrize('max_iter,steps', [(100, 1), (7, 3)])
def test_matches_torch_lbfgs_strong_wolfe(name, max_iter, steps):
    kw = dict(max_iter=max_iter, history_size=10, line_search_fn='strong_wolfe', **TIGHT)
    for i in range(3):
        single = PROBLEMS[name]().subset([i])
        x, _, opt = fit(single, steps=steps, **kw)
        x_ref, state = torch_fit(single, steps=steps, **kw)
        torch.testing.assert_close(x, x_ref, atol=1e-9, rtol=0)
        assert int(opt.n_iter[0]) == state['n_iter']


def test_matches_torch_lbfgs_fixed_step():
    kw = dict(max_iter=15, lr=0.01, history_size=5, line_search_fn=None)
    single = rigid().subset([2])
    x, _, _ = fit(single, steps=2, **kw)
    x_ref, _ = torch_fit(single, steps=2, **kw)
    torch.testing.assert_close(x, x_ref, atol=1e-9, rtol=0)


# ------------------------------------------------------------------ NaN guard
def poisoned_quadratics(bad: int = 2) -> tuple:
    """Quadratics where sample ``bad`` is NaN for x_0 < 0 and has its minimum at x_0 = -5."""
    base = quadratics(B=4)

    def fn(xs, data):
        loss = base.fn(xs, data)
        poisoned = (xs[0][:, 0] < 0) & (torch.arange(4) == bad)
        return torch.where(poisoned, torch.full_like(loss, float('nan')), loss)
    data = dict(base.data)
    data['c'] = data['c'].clone()
    data['c'][bad, 0] = -5.0
    x0 = base.x0[0].clone()
    x0[bad, 0] = 1.0
    return Problem([x0], data, fn), base


def test_non_finite_sample_is_frozen_and_the_others_continue():
    bad = 2
    problem, base = poisoned_quadratics(bad)
    x, loss, opt = fit(problem, max_iter=50, **TIGHT)
    assert opt.diverged.tolist() == [i == bad for i in range(4)]
    assert opt.reason[bad] == StopReason.DIVERGED and not opt.converged[bad]
    assert torch.isfinite(x).all() and torch.isfinite(loss).all()
    assert x[bad, 0] >= 0  # its last finite point
    ref, _, _ = fit(Problem([base.x0[0]], base.data, base.fn), max_iter=50, **TIGHT)
    good = [i for i in range(4) if i != bad]
    torch.testing.assert_close(x[good], ref[good], atol=1e-12, rtol=0)
    # frozen over later steps too
    params = problem.params()
    opt = BatchedLBFGS(params, max_iter=50, **TIGHT)
    opt.step(problem.closure(params))
    frozen = params[0][bad].detach().clone()
    opt.step(problem.closure(params))
    assert torch.equal(params[0][bad].detach(), frozen) and bool(opt.diverged[bad])


def test_backtrack_shrinks_non_finite_trial_steps():
    bad = 2
    problem, base = poisoned_quadratics(bad)
    x, loss, opt = fit(problem, max_iter=50, non_finite='backtrack', **TIGHT)
    assert not bool(opt.diverged.any()) and torch.isfinite(loss).all()
    assert 0 <= x[bad, 0] < 1e-3  # crept up to the edge of its domain
    start = problem.fn([problem.x0[0]], problem.data)
    assert loss[bad] < start[bad]
    ref, _, _ = fit(Problem([base.x0[0]], base.data, base.fn), max_iter=50, **TIGHT)
    good = [i for i in range(4) if i != bad]
    torch.testing.assert_close(x[good], ref[good], atol=1e-12, rtol=0)


def test_non_finite_start_leaves_parameters_untouched():
    problem = rosenbrock(B=3)
    problem.x0[0][0, 0] = float('inf')
    x, loss, opt = fit(problem, max_iter=50)
    assert opt.diverged.tolist() == [True, False, False]
    assert x[0, 0] == float('inf') and not torch.isfinite(loss[0])
    assert bool(opt.converged[1:].all())


# ------------------------------------------------------------------ bookkeeping
def test_stop_reasons_and_counters():
    _, _, opt = fit(rosenbrock(B=3), max_iter=2, max_eval=100)  # default max_eval: 2 * 5 // 4
    assert opt.reason.tolist() == [StopReason.MAX_ITER] * 3 and not bool(opt.converged.any())
    assert opt.n_iter.tolist() == [2, 2, 2]
    _, _, opt = fit(quadratics(B=3), max_iter=100)
    assert bool(opt.converged.all()) and opt.reason[0] == StopReason.GRAD
    _, _, opt = fit(rosenbrock(B=3), max_iter=100, max_eval=4)
    assert opt.reason.tolist() == [StopReason.MAX_EVAL] * 3


def test_state_dict_resumes_exactly():
    problem = rigid(B=4)
    kw = dict(max_iter=4, **TIGHT)
    params = problem.params()
    opt = BatchedLBFGS(params, **kw)
    closure = problem.closure(params)
    opt.step(closure)
    state = opt.state_dict()
    after_one = [p.detach().clone().requires_grad_() for p in params]
    for _ in range(2):  # keeps going; must not leak into the saved state
        opt.step(closure)
    resumed = BatchedLBFGS(after_one, max_iter=1)
    resumed.load_state_dict(state)
    for _ in range(2):
        resumed.step(problem.closure(after_one))
    for p, q in zip(params, after_one):
        assert torch.equal(p, q)
    assert torch.equal(opt.n_iter, resumed.n_iter) and opt.n_evals == resumed.n_evals
    with pytest.raises(ValueError, match='history_size'):
        BatchedLBFGS(problem.params(), history_size=3).load_state_dict(state)


def test_one_host_sync_per_closure_call(monkeypatch):
    problem = rigid(B=8)
    params = problem.params()
    opt = BatchedLBFGS(params, max_iter=30)
    closure = problem.closure(params)
    counts = dict(bool=0, other=0)
    real_bool = torch.Tensor.__bool__

    def counting_bool(self):
        counts['bool'] += 1
        return real_bool(self)

    def forbidden(name):
        real = getattr(torch.Tensor, name)

        def wrapper(self, *args, **kwargs):
            counts['other'] += 1
            return real(self, *args, **kwargs)
        return wrapper
    monkeypatch.setattr(torch.Tensor, '__bool__', counting_bool)
    for name in ('item', 'tolist', '__float__', '__int__', 'cpu', 'numpy'):
        monkeypatch.setattr(torch.Tensor, name, forbidden(name))
    opt.step(closure)
    monkeypatch.undo()
    assert counts['other'] == 0
    assert 0 < counts['bool'] <= opt.n_evals  # one `bool(pending.any())` per round


def test_float32_and_several_parameter_tensors():
    problem = rigid(B=8, dtype=torch.float32)
    x, loss, opt = fit(problem, max_iter=100)
    assert x.dtype == torch.float32 and torch.isfinite(x).all()
    assert loss.max() < 0.02 and not bool(opt.diverged.any())


def test_input_validation():
    x = torch.zeros(3, 2, requires_grad=True)
    with pytest.raises(ValueError, match='batch dim'):
        BatchedLBFGS([x, torch.zeros(4, 2, requires_grad=True)])
    with pytest.raises(ValueError, match='leaf'):
        BatchedLBFGS([torch.zeros(3, 2)])
    with pytest.raises(ValueError, match='line_search_fn'):
        BatchedLBFGS([x], line_search_fn='armijo')
    with pytest.raises(ValueError, match='non_finite'):
        BatchedLBFGS([x], non_finite='ignore')
    opt = BatchedLBFGS([x])

    def summed():
        loss = (x - 1).square().sum()
        loss.backward()
        return loss
    with pytest.raises(ValueError, match=r'per-sample losses of shape \(3,\)'):
        opt.step(summed)
