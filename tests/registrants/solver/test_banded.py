"""Block-banded solves of chains of frames: the dense answer, chain by chain."""
import pytest
import torch

from smilfit.registrants.solver.banded import banded_solve


def _chains(lengths, P, b, seed=0):
    """Random symmetric positive definite block-banded systems, as blocks and dense."""
    g = torch.Generator().manual_seed(seed)
    C, T = len(lengths), max(lengths)
    diag = torch.zeros(C, T, P, P, dtype=torch.float64)
    below = torch.zeros(C, T, b, P, P, dtype=torch.float64)
    dense = []
    for c, n in enumerate(lengths):
        M = torch.randn(n * P + 2, n * P, generator=g, dtype=torch.float64)
        A = M.T @ M
        for i in range(n):
            for j in range(n):
                if abs(i - j) > b:
                    A[i * P:(i + 1) * P, j * P:(j + 1) * P] = 0
        A = A + n * P * torch.eye(n * P, dtype=torch.float64)   # (still definite once cut)
        for t in range(n):
            diag[c, t] = A[t * P:(t + 1) * P, t * P:(t + 1) * P]
            for d in range(1, min(b, t) + 1):
                below[c, t, d - 1] = A[t * P:(t + 1) * P, (t - d) * P:(t - d + 1) * P]
        dense.append(A)
    return diag, below, dense


@pytest.mark.parametrize('b', [1, 2])
@pytest.mark.parametrize('columns', [None, 3])
def test_banded_solve_is_the_dense_solve_for_chains_of_any_length(b, columns):
    lengths = [9, 6, 2, 1, 17, 4]
    P = 5
    diag, below, dense = _chains(lengths, P, b)
    shape = (len(lengths), max(lengths), P) + (() if columns is None else (columns,))
    rhs = torch.randn(shape, dtype=torch.float64)
    x, info = banded_solve(diag, below, rhs, torch.tensor(lengths))
    assert (info == 0).all() and x.shape == rhs.shape
    for c, n in enumerate(lengths):
        expected = torch.linalg.solve(dense[c], rhs[c, :n].reshape(n * P, -1))
        torch.testing.assert_close(x[c, :n].reshape(n * P, -1), expected, rtol=1e-9,
                                   atol=1e-11)
        assert (x[c, n:] == 0).all()            # rows past a chain's end are 0


@pytest.mark.parametrize('b', [1, 2])
@pytest.mark.parametrize('lengths', [[7, 3, 1, 12], [1, 1], [2, 5, 4, 2]])
def test_diagonal_couplings_given_as_vectors_solve_the_same(b, lengths):
    P = 4
    diag, below, _ = _chains(lengths, P, b, seed=2)
    vectors = torch.randn(len(lengths), max(lengths), b, P, dtype=torch.float64)
    full = torch.diag_embed(vectors)
    rhs = torch.randn(len(lengths), max(lengths), P, 2, dtype=torch.float64)
    x, info = banded_solve(diag, vectors, rhs, torch.tensor(lengths))
    expected, _ = banded_solve(diag, full, rhs, torch.tensor(lengths))
    assert (info == 0).all()
    torch.testing.assert_close(x, expected)


def test_an_indefinite_chain_is_flagged_and_leaves_the_others_exact():
    lengths = [5, 5, 3]
    diag, below, dense = _chains(lengths, 4, 1, seed=1)
    diag[1, 2] = -diag[1, 2]                    # chain 1 is not positive definite
    rhs = torch.randn(3, 5, 4, dtype=torch.float64)
    x, info = banded_solve(diag, below, rhs, torch.tensor(lengths))
    assert info.tolist()[1] != 0 and info[0] == 0 and info[2] == 0
    for c in (0, 2):
        n = lengths[c]
        torch.testing.assert_close(x[c, :n].reshape(-1),
                                   torch.linalg.solve(dense[c], rhs[c, :n].reshape(-1)))
    assert torch.isfinite(x).all()
    # the same through the elimination of diagonal couplings
    x, info = banded_solve(diag, torch.zeros(3, 5, 1, 4, dtype=torch.float64), rhs,
                           torch.tensor(lengths))
    assert info.tolist()[1] != 0 and info[0] == 0 and info[2] == 0
    assert torch.isfinite(x).all()


@pytest.mark.parametrize('b', [1, 2])
def test_blocks_read_by_reference_solve_as_the_dense_system(b):
    """Frames' matrices in any order, referenced by each chain's rows, with a diagonal
    added per row, wide enough for the blocked inverses: the dense solve's answer (a
    velocity's couplings by elimination from both ends, an acceleration's by reduction)."""
    from smilfit.ops.spd_inverse import BLOCK_MIN_SIZE
    from smilfit.registrants.solver.banded import FrameBlocks
    lengths = [6, 1, 3, 2, 9]
    P = BLOCK_MIN_SIZE + 1
    diag, _, _ = _chains(lengths, P, b, seed=4)
    coupling = torch.randn(len(lengths), max(lengths), b, P, dtype=torch.float64)
    extra = torch.rand(len(lengths), max(lengths), P, dtype=torch.float64)
    # the frames' matrices stored shuffled, as a batch's frames are
    valid = torch.arange(max(lengths))[None, :] < torch.tensor(lengths)[:, None]
    order = torch.randperm(int(valid.sum()), generator=torch.Generator().manual_seed(0))
    store = torch.empty(int(valid.sum()), P, P, dtype=torch.float64)
    index = torch.full(valid.shape, -1)
    index[valid] = order
    store[order] = diag[valid]
    rhs = torch.randn(len(lengths), max(lengths), P, dtype=torch.float64)
    x, info = banded_solve(FrameBlocks(store, index, extra), coupling, rhs,
                           torch.tensor(lengths))
    assert (info == 0).all()
    for c, n in enumerate(lengths):
        A = diag[c, :n] + torch.diag_embed(extra[c, :n])
        full = torch.block_diag(*A)
        for t in range(n):
            for d in range(1, min(b, t) + 1):
                block = torch.diag(coupling[c, t, d - 1])
                full[t * P:(t + 1) * P, (t - d) * P:(t - d + 1) * P] = block
                full[(t - d) * P:(t - d + 1) * P, t * P:(t + 1) * P] = block
        expected = torch.linalg.solve(full, rhs[c, :n].reshape(-1))
        torch.testing.assert_close(x[c, :n].reshape(-1), expected, rtol=1e-8, atol=1e-10)
        assert (x[c, n:] == 0).all()


def test_chains_of_one_and_two_rows_read_no_uninitialised_memory():
    """A chain of one or two rows has a half of no rows in the elimination from both ends;
    its answer must not depend on memory that half never wrote (NaN here, see conftest.py;
    garbage, and so a result that changes from run to run, otherwise)."""
    import torch.utils.deterministic
    assert torch.are_deterministic_algorithms_enabled()
    assert torch.utils.deterministic.fill_uninitialized_memory
    lengths = [2, 1, 5, 2]
    P = 3
    diag, _, _ = _chains(lengths, P, 1, seed=5)
    coupling = torch.randn(len(lengths), max(lengths), 1, P, dtype=torch.float64)
    rhs = torch.randn(len(lengths), max(lengths), P, dtype=torch.float64)
    x, info = banded_solve(diag, coupling, rhs, torch.tensor(lengths))
    assert (info == 0).all() and torch.isfinite(x).all()
    expected, _ = banded_solve(diag, torch.diag_embed(coupling), rhs, torch.tensor(lengths))
    torch.testing.assert_close(x, expected)
