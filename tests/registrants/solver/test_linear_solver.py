"""The linear solvers of the damped normal equations: the separable columns' divisions
plus the coupled block's factorisation, and the sparse factorisation over a tree, give the
dense solve's step and curvature."""
import pytest
import torch

from smilfit.registrants.solver.linear_solver import (
    SEPARABLE_MIN_FRACTION, SPARSE_MIN_SIZE, SPARSE_MIN_SYSTEMS, DenseCholesky,
    SeparableSplit, SparseCholesky, plan_linear_solver)


def damped_step(H, grad, damping, solver):
    return (solver or DenseCholesky()).solve(H, grad, damping)


def _system(n=4, P=12, separable=(2, 5, 6, 11), seed=0):
    g = torch.Generator().manual_seed(seed)
    A = torch.randn(n, P, 2 * P, generator=g, dtype=torch.float64)
    H = A @ A.transpose(1, 2)
    coupling = torch.ones(P, P, dtype=torch.bool)
    for c in separable:  # only their diagonal entry: no other column meets them
        keep = H[:, c, c].clone()
        H[:, c, :] = 0.0
        H[:, :, c] = 0.0
        H[:, c, c] = keep
        coupling[c, :] = coupling[:, c] = False
    grad = torch.randn(n, P, generator=g, dtype=torch.float64)
    damping = 0.1 * torch.rand(n, P, generator=g, dtype=torch.float64)
    return H, grad, damping, coupling


def test_split_step_equals_the_dense_step():
    H, grad, damping, coupling = _system()
    plan = plan_linear_solver(coupling)
    assert isinstance(plan, SeparableSplit) and plan.separable.tolist() == [2, 5, 6, 11]
    H0 = H.clone()
    dense, info_d, curv_d = damped_step(H, grad, damping, None)
    split, info_s, curv_s = damped_step(H, grad, damping, plan)
    assert torch.equal(H, H0)                    # left as it was by both paths
    assert not info_d.any() and not info_s.any()
    torch.testing.assert_close(split, dense)
    torch.testing.assert_close(curv_s, curv_d)
    full = (H + torch.diag_embed(damping)) @ split.unsqueeze(-1)
    torch.testing.assert_close(full.squeeze(-1), -grad)


def _chain_system(chains, length, dense=6, n=4, seed=1):
    """J^T J of points on ``chains`` limbs of ``length`` joints (3 columns each) from one
    root plus ``dense`` columns every point reads, and its structural coupling."""
    g = torch.Generator().manual_seed(seed)
    parents = [-1]
    for _ in range(chains):
        parents += [0] + list(range(len(parents), len(parents) + length - 1))
    joints = len(parents)
    P = 3 * joints + dense
    H = torch.zeros(n, P, P, dtype=torch.float64)
    coupling = torch.zeros(P, P, dtype=torch.bool)
    for j in range(joints):   # a point on joint j depends on j, its ancestors, the dense
        cols, a = [], j
        while a >= 0:
            cols += [3 * a, 3 * a + 1, 3 * a + 2]
            a = parents[a]
        cols = torch.tensor(cols + list(range(3 * joints, P)))
        D = torch.randn(n, 2, cols.numel(), generator=g, dtype=torch.float64)
        H[:, cols[:, None], cols[None, :]] += D.transpose(1, 2) @ D
        coupling[cols[:, None], cols[None, :]] = True
    grad = torch.randn(n, P, generator=g, dtype=torch.float64)
    damping = 0.1 * torch.rand(n, P, generator=g, dtype=torch.float64)
    return H, grad, damping, coupling


def test_a_tree_system_takes_the_sparse_factorisation_with_the_dense_step():
    H, grad, damping, coupling = _chain_system(6, 5)
    assert H.shape[-1] >= SPARSE_MIN_SIZE
    plan = plan_linear_solver(coupling)
    assert isinstance(plan, SparseCholesky)
    plan.dense_below = 0        # every batch through the sparse factorisation
    H0 = H.clone()
    upper = torch.triu(H)       # the LM builds the upper triangle only
    sparse, info_s, curv_s = damped_step(upper, grad, damping, plan)
    dense, info_d, curv_d = damped_step(H, grad, damping, None)
    assert not info_s.any() and not info_d.any()
    torch.testing.assert_close(sparse, dense, rtol=1e-9, atol=1e-10)
    torch.testing.assert_close(curv_s, curv_d, rtol=1e-9, atol=1e-10)
    assert torch.equal(H, H0)
    # a small system keeps the dense factorisation
    *_, small = _chain_system(2, 2, dense=2)
    assert not isinstance(plan_linear_solver(small), SparseCholesky)


def test_a_small_packed_batch_is_factorised_densely_with_the_same_step(monkeypatch):
    """Below ``dense_below`` systems the packed batch is unpacked and factorised densely
    (the sparse factorisation's fixed cost is not repaid by a few systems); from it on,
    sparsely. Both give the dense step of the full matrices."""
    H, grad, damping, coupling = _chain_system(6, 5, n=SPARSE_MIN_SYSTEMS + 1)
    solver = plan_linear_solver(coupling)
    assert isinstance(solver, SparseCholesky) and solver.dense_below == SPARSE_MIN_SYSTEMS
    slots, width = solver.layout
    n = H.shape[0]
    packed = H.new_zeros(n, width).scatter_(1, slots[None].expand(n, -1),
                                             torch.triu(H).reshape(n, -1))
    reference = DenseCholesky().solve(H, grad, damping)
    calls = []
    factorize = solver.plan.factorize
    monkeypatch.setattr(solver.plan, 'factorize',
                        lambda *a, **k: calls.append(a[0].shape[0]) or factorize(*a, **k))
    few = SPARSE_MIN_SYSTEMS - 1
    for rows in (slice(0, few), slice(0, n)):
        packed0 = packed[rows].clone()
        step, info, curvature = solver.solve(packed[rows], grad[rows], damping[rows])
        assert not info.any()
        torch.testing.assert_close(step, reference.step[rows], rtol=1e-9, atol=1e-10)
        torch.testing.assert_close(curvature, reference.curvature[rows], rtol=1e-9,
                                   atol=1e-10)
        assert torch.equal(packed[rows], packed0)       # H left as it was
    assert calls == [n]     # the small batch never reached the sparse factorisation
    # the unpacked matrices hold the upper triangle of the pattern, zeros elsewhere
    torch.testing.assert_close(solver.plan.unpack(packed), torch.triu(H))
    with pytest.raises(ValueError, match='packed'):
        solver.plan.unpack(packed[:, :-1])


def test_few_separable_columns_keep_the_dense_factorisation():
    P = 40
    few = int(SEPARABLE_MIN_FRACTION * P) - 1
    *_, coupling = _system(P=P, separable=tuple(range(few)))
    assert isinstance(plan_linear_solver(coupling), DenseCholesky)
    *_, coupling = _system(P=P, separable=tuple(range(few + 1)))
    assert isinstance(plan_linear_solver(coupling), SeparableSplit)


def test_an_unconstrained_undamped_separable_column_does_not_move():
    H, grad, damping, coupling = _system()
    H[:, 5, 5] = 0.0
    damping[:, 5] = 0.0
    grad[:, 5] = 0.0
    step, info, _ = damped_step(H, grad, damping, plan_linear_solver(coupling))
    assert torch.isfinite(step).all() and not step[:, 5].any()


@pytest.mark.parametrize('P', [12, 40])   # torch's factorisation, then LAPACK's in place
def test_curvature_is_the_undamped_quadratic_form(P):
    """The curvature comes from the solve (``-g.s - sum d s^2``), not from ``H``: it must
    equal ``s^T H s`` on both paths, in float64 and in float32 normal equations, and the
    step must solve the damped system."""
    H, grad, damping, coupling = _system(P=P)
    for dtype, tol in ((torch.float64, 1e-10), (torch.float32, 1e-4)):
        Hd = H.to(dtype)
        for plan in (None, plan_linear_solver(coupling)):
            step, info, curvature = damped_step(Hd, grad, damping.to(dtype), plan)
            assert step.dtype == dtype and curvature.dtype == dtype and not info.any()
            explicit = (step.unsqueeze(1) @ Hd @ step.unsqueeze(-1)).flatten()
            torch.testing.assert_close(curvature, explicit, rtol=tol, atol=tol)
            damped = (Hd + torch.diag_embed(damping.to(dtype))) @ step.unsqueeze(-1)
            torch.testing.assert_close(damped.squeeze(-1), -grad.to(dtype), rtol=tol,
                                       atol=tol)


def test_an_indefinite_system_reports_its_failed_factorisation():
    H, grad, damping, _ = _system(separable=())
    H[1] = -H[1]
    _, info, _ = damped_step(H, grad, damping, None)
    assert info.tolist()[0] == 0 and info.tolist()[1] > 0


def test_the_solver_benchmark_times_both_paths_on_a_pose_system(capsys):
    """``benchmarks/linear_solvers.py`` (which re-measures :data:`SPARSE_MIN_SYSTEMS`)
    builds a pose stage's coupling, solves with both paths, and prints a row per batch."""
    from smilfit.body_models import demo_model_data

    from ...conftest import benchmark_module
    bench = benchmark_module('linear_solvers')
    parents = [int(p) for p in demo_model_data().parents]
    coupling = bench.pose_coupling(parents)
    J = len(parents)
    assert coupling.shape == (3 * J + 4, 3 * J + 4) and torch.equal(coupling, coupling.T)
    assert coupling[3 * J:].all()      # translation and scale meet every column
    leaf = next(j for j in range(1, J) if j not in parents)
    cousins = [j for j in range(1, J) if j != leaf and j not in _ancestors(parents, leaf)
               and leaf not in _ancestors(parents, j)]
    assert cousins and not coupling[3 * leaf, 3 * cousins[0]]
    assert coupling[3 * leaf, 3 * parents[leaf]]
    assert bench.main(['--models', 'demo', '--systems', '1', str(SPARSE_MIN_SYSTEMS)]) == 0
    rows = [line.split('|')[1:-1] for line in capsys.readouterr().out.splitlines()
            if line.startswith('| demo |')]
    assert [int(r[3]) for r in rows] == [1, SPARSE_MIN_SYSTEMS]
    assert all(float(v) > 0 for r in rows for v in r[4:])


def _ancestors(parents, j):
    """The joints above ``j`` up to the root (joint 0)."""
    out = []
    while j:
        j = parents[j]
        out.append(j)
    return out


def test_the_solver_benchmark_times_chain_solves_of_valid_chain_systems(tmp_path):
    """``benchmarks/linear_solvers.py --chains`` builds positive definite block-tridiagonal
    chain systems (``banded_solve`` answers them as a dense solve does) and writes a row
    per chain length and chain count."""
    from smilfit.registrants.solver.banded import banded_solve

    from ...conftest import benchmark_module
    bench = benchmark_module('linear_solvers')
    blocks, below, rhs, lengths = bench.chain_systems(2, 5, 4)
    x, info = banded_solve(blocks, below, rhs, lengths)
    C, T, P = rhs.shape
    dense = torch.zeros(C, T * P, T * P)
    diagonal = blocks.dense()
    for t in range(T):
        dense[:, t * P:(t + 1) * P, t * P:(t + 1) * P] = diagonal[:, t]
        if t:
            link = torch.diag_embed(below[:, t, 0])
            dense[:, t * P:(t + 1) * P, (t - 1) * P:t * P] = link
            dense[:, (t - 1) * P:t * P, t * P:(t + 1) * P] = link
    assert (torch.linalg.eigvalsh(dense.double())[:, 0] > 0).all()
    assert not info.any()
    torch.testing.assert_close(dense @ x.reshape(C, -1, 1), rhs.reshape(C, -1, 1),
                               atol=1e-4, rtol=1e-4)
    assert bench.main(['--chains', '1', '3', '--chain-frames', '4', '8', '--columns', '6',
                       '--tables', str(tmp_path)]) == 0
    lines = (tmp_path / 'linear_solvers_chains.md').read_text().splitlines()
    rows = [[cell.strip() for cell in line.strip('|').split('|')] for line in lines[4:]]
    assert [(int(r[0]), int(r[1]), int(r[2])) for r in rows] == [
        (4, 1, 4), (4, 3, 12), (8, 1, 8), (8, 3, 24)]
    assert all(float(v) > 0 for r in rows for v in r[3:])
