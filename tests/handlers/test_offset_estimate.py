"""smilfit.handlers.offset_estimate: the per-animal joint-frame offset that explains a
label's consistent displacement, robust to a bad camera and to swapped labels, and left
alone where there are too few observations to tell bias from noise."""
import torch

from smilfit.handlers.offset_estimate import MIN_EQUATIONS_PER_UNKNOWN, offset_steps


def _case(B=12, C=3, M=6, G=2, noise=0.5, seed=0, displaced=(0,)):
    """Residuals of points seen through random (frame, view) Jacobians (the joint turning
    from frame to frame) plus label noise; the ``displaced`` points are off by a known
    offset per group (labels far from their joints), the others on their joints."""
    gen = torch.Generator().manual_seed(seed)
    jac = 5.0 * torch.randn(B, C, M, 2, 3, generator=gen, dtype=torch.float64)
    truth = torch.zeros(G, M, 3, dtype=torch.float64)
    truth[:, list(displaced)] = 3.0 * torch.randn(G, len(displaced), 3, generator=gen,
                                                  dtype=torch.float64)
    groups = torch.arange(B) % G
    # residual = model - label; the model misses the offset: r = -A d + noise
    residual = -torch.einsum('bcmki,bmi->bcmk', jac, truth[groups]) \
        + noise * torch.randn(B, C, M, 2, generator=gen, dtype=torch.float64)
    valid = torch.ones(B, C, M, dtype=torch.bool)
    return residual, jac, valid, groups, truth


def test_moves_a_displaced_label_and_nothing_else():
    residual, jac, valid, groups, truth = _case()
    step, moved = offset_steps(residual, jac, valid, groups, 2)
    assert moved[:, 0].all() and not moved[:, 1:].any()
    assert (step - truth).abs().max() < 0.05        # 0.5 px noise, 36 coordinates each
    # after the step only the noise is left
    left = residual + torch.einsum('bcmki,bmi->bcmk', jac, step[groups])
    assert left[:, :, 0].norm(dim=-1).median() < 1.0


def test_labels_all_off_alike_are_left_to_the_skeleton_stage():
    """Every label off its joint by a similar amount (labels that are not joints): no
    point stands out, none is moved (the skeleton stage fits them with its priors)."""
    residual, jac, valid, groups, _ = _case(displaced=range(6))
    step, moved = offset_steps(residual, jac, valid, groups, 2)
    assert not moved.any() and (step == 0).all()


def test_a_bad_camera_and_swapped_labels_barely_move_it():
    residual, jac, valid, groups, truth = _case(B=20)
    bad = residual.clone()
    bad[:, 2] += 80.0                    # camera 2's calibration off: every point 80 px
    bad[3, 0, 0] += torch.tensor([300.0, -200.0], dtype=bad.dtype)   # swapped labels
    bad[7, 1, 0] -= 250.0
    step, moved = offset_steps(bad, jac, valid, groups, 2)
    plain, _ = offset_steps(residual, jac, valid, groups, 2)
    assert moved[:, 0].all()
    assert (step - truth).abs().max() < 0.5
    assert (step - plain).abs().max() < 0.5
    # without the weights a plain least-squares fit is far off
    H = torch.einsum('bcmki,bcmkj->bmij', jac, jac)
    g = torch.einsum('bcmki,bcmk->bmi', jac, bad)
    Hg = torch.zeros(2, 6, 3, 3, dtype=H.dtype).index_add_(0, groups, H)
    gg = torch.zeros(2, 6, 3, dtype=g.dtype).index_add_(0, groups, g)
    naive = -torch.linalg.solve(Hg, gg[..., None])[..., 0]
    assert (naive[:, 0] - truth[:, 0]).abs().max() > 1.0


def test_too_few_observations_leave_the_offset_alone():
    residual, jac, valid, groups, _ = _case(B=2, C=2)          # one frame per group
    valid[:, 1] = False                                        # seen in one view only
    step, moved = offset_steps(residual, jac, valid, groups, 2)
    assert 2 < 3 * MIN_EQUATIONS_PER_UNKNOWN
    assert not moved.any() and (step == 0).all()
    # unobserved elements (NaN residuals masked out) do not count either
    residual, jac, valid, groups, truth = _case()
    residual[0, 0, 0] = float('nan')
    valid[0, 0, 0] = False
    step, moved = offset_steps(torch.nan_to_num(residual), jac, valid, groups, 2)
    assert moved[:, 0].all() and (step - truth).abs().max() < 0.05


def test_a_group_without_frames_gets_no_step():
    residual, jac, valid, groups, truth = _case(G=2)
    step, moved = offset_steps(residual, jac, valid, groups, 3)     # group 2 is empty
    assert not moved[2].any() and (step[2] == 0).all()
    assert moved[:2, 0].all() and (step[:2] - truth).abs().max() < 0.05


def test_a_point_with_no_pixel_motion_gets_no_step():
    """A point behind every camera has a zero Jacobian (its pixels do not move): its
    normal equations are singular; it gets no step, the others theirs."""
    residual, jac, valid, groups, truth = _case(displaced=(0, 1))
    jac[:, :, 1] = 0.0
    step, moved = offset_steps(residual, jac, valid, groups, 2)
    assert not moved[:, 1].any() and (step[:, 1] == 0).all()
    assert moved[:, 0].all() and (step[:, 0] - truth[:, 0]).abs().max() < 0.05


def test_a_bias_that_differs_between_views_is_not_an_offset(monkeypatch):
    """Each view sees the label at another point (a label clicked on the silhouette's
    edge, which moves with the viewing direction): one 3D offset per view, not one per
    animal. The step the other views drive does not carry over to the view left out, so
    the offset is left to the skeleton stage and its priors; the point stands out and
    passes the F test, so without that cross-view check it would be moved."""
    from smilfit.handlers import offset_estimate
    gen = torch.Generator().manual_seed(3)
    residual, jac, valid, groups, _ = _case(C=3)
    # the left view sees the left flank, the right view the right one, the top the back
    per_view = torch.tensor([[3.0, 0.0, 0.0], [-3.0, 0.0, 0.0], [0.0, 3.0, 0.0]],
                            dtype=torch.float64)                            # (C, 3)
    residual[:, :, 0] = -torch.einsum('bcki,ci->bck', jac[:, :, 0], per_view) \
        + 0.5 * torch.randn(residual[:, :, 0].shape, generator=gen, dtype=torch.float64)
    step, moved = offset_steps(residual, jac, valid, groups, 2)
    assert not moved.any() and (step == 0).all()
    monkeypatch.setattr(offset_estimate, '_every_view_agrees',
                        lambda residual, jac, weight, groups, G: torch.ones(
                            G, residual.shape[2], dtype=torch.bool))
    _, unchecked = offset_steps(residual, jac, valid, groups, 2)
    assert unchecked[:, 0].all()


def test_one_view_alone_is_not_checked_against_others():
    """A point seen in one view only has no other view to check its step against: it is
    moved as the F test says."""
    residual, jac, valid, groups, truth = _case(C=2)
    valid[:, 1, 0] = False
    step, moved = offset_steps(torch.where(valid[..., None], residual, 0.0), jac, valid,
                               groups, 2)
    assert moved[:, 0].all()
    assert (step[:, 0] - truth[:, 0]).abs().max() < 0.1


def _steady_views(seed: int, convention: bool, B=12, C=2, M=6, G=2, turning=0.2):
    """Two views the animal hardly turns in (each view's Jacobian its mean plus
    ``turning`` times its size of per-frame change) and point 0 displaced: by a joint-frame
    offset ``d`` (its pixels move as the joint turns) or, with ``convention``, by each
    view's constant pixel bias that the same offset would give at the mean pose (a
    labelling convention per camera that looks like an offset)."""
    gen = torch.Generator().manual_seed(seed)
    mean = 5.0 * torch.randn(C, M, 2, 3, generator=gen, dtype=torch.float64)
    jac = mean + turning * 5.0 * torch.randn(B, C, M, 2, 3, generator=gen,
                                             dtype=torch.float64)
    d = 3.0 * torch.randn(G, 3, generator=gen, dtype=torch.float64)
    groups = torch.arange(B) % G
    residual = 0.5 * torch.randn(B, C, M, 2, generator=gen, dtype=torch.float64)
    seen_through = mean[:, 0].expand(B, -1, -1, -1) if convention else jac[:, :, 0]
    residual[:, :, 0] -= torch.einsum('bcki,bi->bck', seen_through, d[groups])
    return residual, jac, torch.ones(B, C, M, dtype=torch.bool), groups, d


def test_a_constant_bias_per_view_is_a_convention_and_a_turning_offset_is_taken(
        monkeypatch):
    """A camera's labelling convention stays put in its image; a label off its joint moves
    as the animal turns. Through the same steady views the first is refused and the
    second taken; without the comparison with a bias per view the convention is taken as
    an offset for some of the draws (it passes every other test)."""
    from smilfit.handlers import offset_estimate
    for seed in range(10):
        _, moved = offset_steps(*_steady_views(seed, convention=True)[:4], 2)
        assert not moved.any()
        residual, jac, valid, groups, d = _steady_views(seed, convention=False)
        step, moved = offset_steps(residual, jac, valid, groups, 2)
        assert moved[:, 0].all() and not moved[:, 1:].any()
        assert (step[:, 0] - d).abs().max() < 0.3
    monkeypatch.setattr(offset_estimate, '_per_view_bias',
                        lambda residual, weight, groups, G: residual.new_zeros(
                            G, *residual.shape[1:]))
    unchecked = [offset_steps(*_steady_views(seed, convention=True)[:4], 2)[1][:, 0].all()
                 for seed in range(10)]
    assert sum(map(bool, unchecked)) >= 3
