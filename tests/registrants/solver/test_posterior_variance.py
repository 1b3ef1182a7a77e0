"""The posterior variance a per-sample Levenberg-Marquardt stage reports (for a pose prior
estimated from the animal's frames): the diagonal of the inverse of each sample's
``J^T J``, whatever layout the stage's linear solver keeps it in, and handed to the
stages after it."""
import types

import pytest
import torch

from smilfit.body_models import SMILModel, demo_model_data
from smilfit.registrants import stage_runners
from smilfit.registrants.solver import linear_solver
from smilfit.registrants.solver import problem as problem_module

from .test_levenberg_marquardt import _problem, _registrant


@pytest.fixture(scope='module')
def model():
    return SMILModel(data=demo_model_data(), dtype=torch.float64)


def last_problem(monkeypatch, registrant, obs):
    """The last least-squares problem a fit of ``obs`` by ``registrant`` linearised."""
    seen = {}
    linearize = problem_module.LeastSquaresProblem.linearize

    def recording(problem, *args, **kwargs):
        seen['problem'] = problem
        return linearize(problem, *args, **kwargs)
    monkeypatch.setattr(problem_module.LeastSquaresProblem, 'linearize', recording)
    registrant.fit(obs)
    monkeypatch.setattr(problem_module.LeastSquaresProblem, 'linearize', linearize)
    return seen['problem']


def _fitted_problem(model, monkeypatch, solver):
    """A pose stage's problem after a short fit, in the layout of ``solver``."""
    if solver == 'split':
        monkeypatch.setattr(linear_solver, 'SPARSE_MAX_FLOP_FRACTION', -1.0)
    elif solver == 'dense':
        monkeypatch.setattr(linear_solver, 'SPARSE_MAX_FLOP_FRACTION', -1.0)
        monkeypatch.setattr(linear_solver, 'SEPARABLE_MIN_FRACTION', 2.0)
    obs, _, _ = _problem(model, 5, noise=1.0)
    handlers = [dict(type='Keypoint2DHandler', name='kp2d', source='joints'),
                dict(type='ShapePriorHandler', name='shape', weight=1e-2),
                dict(type='AnimalPosePriorHandler', name='pose', weight=1.0,
                     posterior_spread=True)]
    return last_problem(monkeypatch, _registrant(model, n_iter=3, handlers=handlers), obs)


@pytest.mark.parametrize('solver', ['sparse', 'split', 'dense'])
def test_the_variance_is_the_inverse_diagonal_in_every_solver_layout(model, monkeypatch,
                                                                    solver):
    problem = _fitted_problem(model, monkeypatch, solver)
    kind = {'sparse': linear_solver.SparseCholesky, 'split': linear_solver.SeparableSplit,
            'dense': linear_solver.DenseCholesky}[solver]
    assert isinstance(problem.solver, kind)
    gen = torch.Generator().manual_seed(3)
    x = problem.initial_x() + 0.05 * torch.randn(problem.initial_x().shape, generator=gen,
                                                dtype=torch.float64)
    units = torch.arange(problem.B)
    _, g, H = problem.linearize(x, units, upper_only=True)       # the solver's layout
    system = types.SimpleNamespace(H=H, g=g, x_linearized=x, num_units=problem.B,
                                   dtype=x.dtype)
    skip = torch.zeros(problem.B, dtype=torch.bool)
    skip[1] = True
    monkeypatch.setattr(stage_runners, 'COVARIANCE_CHUNK', 2)      # chunks join up
    variance, own, _ = stage_runners._posterior_variance(problem, system, skip)
    planned = problem.solver
    problem.solver = linear_solver.DenseCholesky()                 # the full matrices
    _, _, full = problem.linearize(x, units)
    problem.solver = planned
    inverse = torch.linalg.inv(full)
    expected = problem.unflatten(inverse.diagonal(dim1=-2, dim2=-1))
    # each sample's own answer: one Gauss-Newton step from where it is
    expected_own = problem.unflatten(x - (inverse @ g[..., None])[..., 0])
    assert set(variance) == set(expected) == set(own)
    keep = ~skip
    for name in expected:
        assert torch.isnan(variance[name][1]).all() and torch.isnan(own[name][1]).all()
        torch.testing.assert_close(variance[name][keep], expected[name][keep], rtol=1e-6,
                                   atol=1e-12)
        torch.testing.assert_close(own[name][keep], expected_own[name][keep], rtol=1e-6,
                                   atol=1e-9)
        assert (variance[name][keep] > 0).all()


def test_a_free_direction_has_a_large_variance_a_parameter_nothing_fixes_none(
        model, monkeypatch):
    """Sample 0: a column nothing fixes has no variance (NaN), its other columns theirs.
    Sample 1: singular along a combination of two columns (what labels leave free, e.g. a
    twist): a large, finite variance there, whether or not its rounding let a plain
    factorisation through (a stage's pairs of frames were once frozen by a NaN here).
    Sample 2: not positive semi-definite, nothing known. The others: their variance."""
    problem = _fitted_problem(model, monkeypatch, 'dense')
    P = problem.initial_x().shape[1]
    H = torch.eye(P, dtype=torch.float64).repeat(problem.B, 1, 1)
    H[0, 0, 0] = 0.0                                               # a column nothing fixes
    u = torch.zeros(P, dtype=torch.float64)
    u[1], u[2] = 0.6, 0.8
    H[1] -= torch.outer(u, u)                                      # free along u
    H[2] = -H[2]
    x = problem.initial_x()
    system = types.SimpleNamespace(H=H, g=torch.zeros_like(x), x_linearized=x,
                                   num_units=problem.B, dtype=torch.float64)
    variance, own, _ = stage_runners._posterior_variance(problem, system, None)
    flat = torch.cat([v.reshape(problem.B, -1) for v in variance.values()], 1)
    fits = torch.cat([v.reshape(problem.B, -1) for v in own.values()], 1)
    assert torch.isnan(flat[0, 0]) and torch.allclose(flat[0, 1:], torch.ones(P - 1,
                                                                              dtype=H.dtype))
    assert torch.isfinite(flat[1]).all() and (flat[1, 1:3] > 1e6).all()
    assert torch.allclose(flat[1, 3:], torch.ones(P - 3, dtype=H.dtype))
    assert torch.isnan(flat[2]).all() and torch.isnan(fits[2]).all()
    assert (flat[3:] == 1).all() and torch.isnan(fits[0, 0])
    assert torch.isfinite(fits[0, 1:]).all() and torch.isfinite(fits[1]).all()


def test_only_a_handler_that_asks_has_the_variance_computed(model, monkeypatch):
    """A fixed pose prior, or the animal's without ``posterior_spread``, needs no
    posterior variance: its stages never compute it (the animal prior's stages get it:
    tests/handlers/test_animal_pose_prior.py)."""
    obs, _, _ = _problem(model, 3, noise=1.0)
    calls = []
    original = stage_runners._posterior_variance

    def counting(*args):
        calls.append(1)
        return original(*args)
    monkeypatch.setattr(stage_runners, '_posterior_variance', counting)
    for prior, expected in ((dict(type='PosePriorHandler'), 0),
                            (dict(type='AnimalPosePriorHandler', posterior_spread=False), 0),
                            (dict(type='AnimalPosePriorHandler', posterior_spread=True), 1)):
        calls.clear()
        _registrant(model, n_iter=3, handlers=[
            dict(type='Keypoint2DHandler', name='kp2d', source='joints'),
            dict(prior, name='pose')]).fit(obs)
        assert len(calls) == expected, prior
