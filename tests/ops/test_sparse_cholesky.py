"""Sparse batched Cholesky: the same solutions as the dense solve on tree-structured,
chordal and non-chordal patterns, reading only the pattern's upper triangle."""
import pytest
import torch

from smilfit.ops.sparse_cholesky import SparseCholeskyPlan


def _tree_pattern(parents, dense=0, separable=()):
    """A body's J^T J pattern: each joint's 3 columns meet its ancestors' (and so its
    descendants'); ``dense`` last columns meet everything; ``separable`` joints meet
    nothing but themselves."""
    J = len(parents)
    P = 3 * J + dense
    pattern = torch.zeros(P, P, dtype=torch.bool)
    for j in range(J):
        a = j
        while a >= 0:
            pattern[3 * j:3 * j + 3, 3 * a:3 * a + 3] = True
            a = parents[a]
    if dense:
        pattern[:, -dense:] = True
    pattern = pattern | pattern.T
    for j in separable:
        pattern[3 * j:3 * j + 3, :] = False
        pattern[:, 3 * j:3 * j + 3] = False
    return pattern | torch.eye(P, dtype=torch.bool)


def _random_tree(J, seed):
    g = torch.Generator().manual_seed(seed)
    return [-1] + [int(torch.randint(0, j, (1,), generator=g)) for j in range(1, J)]


def _system(pattern, n=5, seed=0, dtype=torch.float64):
    """(n, P, P) positive definite matrices zero outside ``pattern``: a sum of rank-one
    terms, each on a clique of the pattern (as J^T J is: one point's columns)."""
    g = torch.Generator().manual_seed(seed)
    P = pattern.shape[0]
    A = torch.zeros(n, P, P, dtype=torch.float64)
    for c in range(P):
        clique = torch.nonzero(pattern[c]).flatten()
        # columns that meet c and each other: a greedy clique through c
        keep = [c]
        for d in clique.tolist():
            if d != c and all(bool(pattern[d, k]) for k in keep):
                keep.append(d)
        idx = torch.tensor(keep)
        v = torch.randn(n, 3, len(keep), generator=g, dtype=torch.float64)
        A[:, idx[:, None], idx[None, :]] += v.transpose(1, 2) @ v
    A = A + 0.1 * torch.eye(P, dtype=torch.float64)
    b = torch.randn(n, P, generator=g, dtype=torch.float64)
    d = torch.rand(n, P, generator=g, dtype=torch.float64)
    return A.to(dtype), b.to(dtype), d.to(dtype)


@pytest.mark.parametrize('seed', [0, 1, 2])
def test_tree_systems_solve_like_the_dense_solve(seed):
    parents = _random_tree(25, seed)
    pattern = _tree_pattern(parents, dense=8, separable=(3, 7) if seed else ())
    A, b, d = _system(pattern, seed=seed)
    plan = SparseCholeskyPlan.build(pattern)
    reference = torch.linalg.solve(A + torch.diag_embed(d), b)
    factor = plan.factorize(A, d, rhs=b)
    assert not factor.info.any()
    torch.testing.assert_close(factor.solve(), reference, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(factor.solve(b), reference, rtol=1e-10, atol=1e-10)
    # a tree has no fill: far fewer flops than the dense factorisation
    assert plan.flops < plan.dense_flops / 3


def test_only_the_patterns_upper_triangle_is_read():
    pattern = _tree_pattern(_random_tree(12, 3), dense=4)
    A, b, d = _system(pattern)
    reference = torch.linalg.solve(A + torch.diag_embed(d), b)
    garbage = A.clone()
    lower = torch.tril(torch.ones_like(pattern), diagonal=-1)
    garbage[:, lower] = float('nan')            # below the diagonal
    garbage[:, torch.triu(~pattern)] = float('nan')   # outside the pattern
    A0 = garbage.clone()
    factor = SparseCholeskyPlan.build(pattern).factorize(garbage, d, rhs=b)
    torch.testing.assert_close(factor.solve(), reference, rtol=1e-10, atol=1e-10)
    assert torch.equal(garbage.isnan(), A0.isnan())
    assert torch.equal(torch.nan_to_num(garbage), torch.nan_to_num(A0))   # left as it was


def test_a_pattern_with_fill_and_a_dense_pattern():
    # a ring of 10 three-column nodes is not chordal: eliminating it fills in
    P = 30
    ring = torch.eye(P, dtype=torch.bool)
    for k in range(10):
        a, c = 3 * k, 3 * ((k + 1) % 10)
        ring[a:a + 3, a:a + 3] = ring[a:a + 3, c:c + 3] = ring[c:c + 3, a:a + 3] = True
    dense = torch.ones(P, P, dtype=torch.bool)
    for pattern in (ring, dense):
        A, b, d = _system(pattern, seed=4)
        plan = SparseCholeskyPlan.build(pattern)
        factor = plan.factorize(A, d, rhs=b)
        torch.testing.assert_close(factor.solve(),
                                   torch.linalg.solve(A + torch.diag_embed(d), b),
                                   rtol=1e-10, atol=1e-10)
    assert len(SparseCholeskyPlan.build(dense).groups) == 1   # one node: the dense solve


def test_a_limb_without_branches_is_one_node():
    """Columns with the same coupling are eliminated together: two unbranched chains of
    5 joints from a root give one 15-column node each, and the same solution."""
    pattern = _tree_pattern([-1, 0, 1, 2, 3, 4, 0, 6, 7, 8, 9], dense=5)   # two chains
    A, b, d = _system(pattern, seed=5)
    plan = SparseCholeskyPlan.build(pattern)
    widths = sorted(w for g in plan.groups for w in [g.own.shape[1]] * g.own.shape[0])
    assert widths == [8, 15, 15]            # the root with the dense columns, two limbs
    torch.testing.assert_close(plan.factorize(A, d, rhs=b).solve(),
                               torch.linalg.solve(A + torch.diag_embed(d), b),
                               rtol=1e-10, atol=1e-10)


def test_float32_and_a_failed_matrix_is_flagged_alone():
    pattern = _tree_pattern(_random_tree(20, 6), dense=8)
    A, b, d = _system(pattern, n=4, seed=6, dtype=torch.float32)
    reference = torch.linalg.solve((A + torch.diag_embed(d)).double(), b.double())
    A[2] = -A[2]
    d[2] = 0.0
    factor = SparseCholeskyPlan.build(pattern).factorize(A, d, rhs=b)
    assert factor.info.tolist() == [0, 0, 1, 0]
    x = factor.solve()
    assert x.dtype == torch.float32
    ok = [0, 1, 3]
    torch.testing.assert_close(x[ok].double(), reference[ok], rtol=1e-3, atol=1e-3)


def test_bad_input_is_refused():
    with pytest.raises(ValueError, match='pattern'):
        SparseCholeskyPlan.build(torch.ones(3, 4, dtype=torch.bool))
    plan = SparseCholeskyPlan.build(torch.eye(4, dtype=torch.bool))
    with pytest.raises(ValueError, match='expected'):
        plan.factorize(torch.eye(5)[None])
    with pytest.raises(ValueError, match='right-hand side'):
        plan.factorize(torch.eye(4)[None]).solve()


def test_packed_matrices_factorise_like_the_full_ones():
    """Matrices built packed through the slot map (scattered entry by entry, both
    triangles offered: the lower ones land in the ignored slot) factorise as the full
    (P, P) ones do."""
    pattern = _tree_pattern(_random_tree(15, 7), dense=5)
    A, b, d = _system(pattern, seed=7)
    plan = SparseCholeskyPlan.build(pattern)
    n, P = A.shape[:2]
    slots = plan.slot_map()
    assert slots.shape == (P * P,) and int(slots.max()) == plan.packed_size - 1
    packed = A.new_zeros(n, plan.packed_size)
    packed.index_add_(1, slots, A.reshape(n, -1))
    torch.testing.assert_close(packed[:, :-1], plan.pack(A)[:, :-1])
    reference = torch.linalg.solve(A + torch.diag_embed(d), b)
    torch.testing.assert_close(plan.factorize(packed, d, rhs=b).solve(), reference,
                               rtol=1e-10, atol=1e-10)
    with pytest.raises(ValueError, match='packed'):
        plan.factorize(packed[:, 1:])
