"""The evidence a marker must show to be kept: each label's errors after its best offset,
and the sign test between two sets of errors."""
import types

import torch

from smilfit.body_models import SMILModel, demo_model_data
from smilfit.registrants.marker_placement import label_errors, significantly_smaller


class _Residuals:
    """A keypoint handler stand-in: fixed residuals and offset Jacobians."""

    def __init__(self, residuals, jac, valid):
        self.values = residuals, jac, valid

    def offset_residuals(self, output, observations, params):
        return self.values


def test_label_errors_remove_each_animals_offset_and_ignore_what_does_not_count():
    g = torch.Generator().manual_seed(0)
    B, C, M = 8, 3, 4
    groups = torch.tensor([0, 0, 0, 0, 1, 1, 1, 1])
    jac = torch.randn(B, C, M, 2, 3, generator=g, dtype=torch.float64)
    offsets = torch.randn(2, M, 3, generator=g, dtype=torch.float64)      # per animal
    noise = 0.01 * torch.randn(B, C, M, 2, generator=g, dtype=torch.float64)
    residuals = -torch.einsum('bcmki,bmi->bcmk', jac, offsets[groups]) + noise
    valid = torch.ones(B, C, M, dtype=torch.bool)
    valid[0, 0, 0] = False       # not observed: its values are garbage
    residuals[0, 0, 0] = float('nan')
    jac[0, 0, 0] = float('inf')
    residuals[1, 1, 1] += 50.0   # one outlier (a swapped label)
    valid[:4, :, 3] = False      # a label the first animal never shows
    residuals[:4, :, 3] = float('nan')
    registrant = types.SimpleNamespace(
        body_model=SMILModel(data=demo_model_data(), dtype=torch.float64), shared=set())
    params = dict(global_orient=torch.zeros(B, 3, dtype=torch.float64))
    errors, counted = label_errors(registrant, _Residuals(residuals, jac, valid), params, {},
                                   groups)
    assert not bool(counted[0, 0, 0]) and bool(counted[1:, :, :3].all())
    assert bool(counted[4:, :, 3].all()) and not bool(counted[:4, :, 3].any())
    good = counted.clone()
    good[1, 1, 1] = False
    assert bool(torch.isfinite(errors[counted]).all())
    # the offsets explain the residuals: what is left is the noise, the outlier stands out
    assert float(errors[good].median()) < 0.05
    assert float(errors[1, 1, 1]) > 40.0


def test_significantly_smaller_is_a_sign_test_over_the_counted_elements():
    g = torch.Generator().manual_seed(1)
    reference = torch.rand(40, 2, 3, generator=g)
    valid = torch.ones(40, 2, 3, dtype=torch.bool)
    errors = reference.clone()
    errors[..., 0] -= 0.1                  # smaller everywhere: significant
    errors[:50 // 2, :, 1] -= 0.1          # smaller in 50 of 80, larger in none: ...
    errors[50 // 2:, :, 1] += 0.0          # ... ties left out: 50 of 50, significant
    flip = torch.rand(40, 2, generator=g) < 0.5
    errors[..., 2] = torch.where(flip, reference[..., 2] - 0.1, reference[..., 2] + 0.1)
    out = significantly_smaller(errors, reference, valid)
    assert out.tolist() == [True, True, False]
    # nothing counted: never significant
    assert not bool(significantly_smaller(errors, reference, torch.zeros_like(valid)).any())
