"""TensorMemo: reuse while the same tensors hold the same contents, never otherwise."""
import torch

from smilfit.utils.memo import TensorMemo


def _counting(memo, *tensors, settings=None):
    calls = []

    def compute():
        calls.append(1)
        return sum(float(t.sum()) for t in tensors if t is not None)
    return memo(tensors, settings, compute), len(calls)


def test_reused_for_the_same_tensors_and_settings():
    memo = TensorMemo()
    a, b = torch.ones(3), torch.full((2,), 2.0)
    assert _counting(memo, a, None, b) == (7.0, 1)
    assert _counting(memo, a, None, b) == (7.0, 0)
    assert _counting(memo, a, None, b, settings='other') == (7.0, 1)


def test_recomputed_after_an_in_place_write_also_through_a_view():
    memo = TensorMemo()
    a = torch.ones(4)
    assert _counting(memo, a) == (4.0, 1)
    a[1] = 3.0
    assert _counting(memo, a) == (6.0, 1)
    a[2:].mul_(0.0)         # through a view: the same version counter
    assert _counting(memo, a) == (4.0, 1)
    assert _counting(memo, a) == (4.0, 0)


def test_an_equal_but_different_tensor_is_a_new_input():
    memo = TensorMemo()
    assert _counting(memo, torch.ones(2))[1] == 1
    # the first tensor is held by the memo, so the new one cannot reuse its id
    assert _counting(memo, torch.ones(2))[1] == 1


def test_nothing_memoised_for_tensors_that_require_grad_or_under_transforms():
    memo = TensorMemo()
    a = torch.ones(3, requires_grad=True)
    assert _counting(memo, a)[1] == 1
    assert _counting(memo, a)[1] == 1
    b = torch.ones(3)
    out = torch.func.vmap(lambda x: x * memo((b,), None, lambda: b + 1.0))(torch.ones(2, 3))
    torch.testing.assert_close(out, torch.full((2, 3), 2.0))
    assert memo._key is None   # computed inside the transform, not kept
    memo((b,), None, lambda: b + 1.0)
    memo.clear()
    assert memo._key is None and memo._inputs == ()
