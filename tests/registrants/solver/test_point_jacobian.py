"""Closed-form point Jacobians against autograd."""
import pytest
import torch

from smilfit.body_models import SMILModel, demo_model_data, load_model_data
from smilfit.registrants.solver.point_jacobian import (UnsupportedJacobian, point_jacobians,
                                           so3_left_jacobian)
from smilfit.body_models.rotations import axis_angle_to_matrix


def _pool(model, params):
    out = model(**params, return_vertices=False, return_keypoints=True)
    if out.keypoints is None:
        return out.joints
    J = model.num_joints
    order = sorted((s, i) for i, s in enumerate(model.keypoint_source.tolist()) if s >= J)
    extra = [out.keypoints[:, i] for s, i in order]
    return torch.cat([out.joints] + ([torch.stack(extra, 1)] if extra else []), dim=1)


def _check(model, seed=0, log_scale=False, B=2, global_scale=False):
    g = torch.Generator().manual_seed(seed)
    J, K = model.num_joints, model.num_betas
    params = dict(global_orient=0.5 * torch.randn(B, 3, generator=g, dtype=torch.float64),
                  body_pose=0.4 * torch.randn(B, J - 1, 3, generator=g, dtype=torch.float64),
                  betas=torch.randn(B, K, generator=g, dtype=torch.float64),
                  transl=torch.randn(B, 3, generator=g, dtype=torch.float64))
    if log_scale == 'zero':   # given but all zero, as the registrant passes it
        params['log_scale'] = torch.zeros(B, J, 3, dtype=torch.float64)
    elif log_scale:
        params['log_scale'] = 0.2 * torch.randn(B, J, 3, generator=g, dtype=torch.float64)
        params['bone_trans'] = 0.01 * torch.randn(B, J, 3, generator=g, dtype=torch.float64)
    fitted = ['global_orient', 'body_pose', 'transl', 'betas']
    if global_scale:
        params['global_log_scale'] = torch.randn(B, 1, generator=g, dtype=torch.float64)
        fitted.append('global_log_scale')
    points, jac = point_jacobians(model, params, fitted)
    torch.testing.assert_close(points, _pool(model, params), rtol=1e-9, atol=1e-9)
    for name in fitted:
        def f(x, name=name):
            p = dict(params)
            p[name] = x.reshape(params[name].shape)
            return _pool(model, p)
        full = torch.autograd.functional.jacobian(f, params[name])
        # (B, N, 3, B, *shape) -> per-sample diagonal blocks (B, N, 3, D)
        full = full.reshape(B, points.shape[1], 3, B, -1)
        diag = torch.stack([full[b, :, :, b] for b in range(B)])
        torch.testing.assert_close(jac[name], diag, rtol=1e-7, atol=1e-7, msg=name)


def test_demo_model_regressed_joints_and_keypoints():
    model = SMILModel(data=demo_model_data(), dtype=torch.float64)
    _check(model)
    _check(model, seed=5, global_scale=True)


def _with_markers(model):
    """``model`` with two of its keypoints made markers (labels placed on the body),
    one partly and one wholly moved by the skin."""
    rest = model(return_vertices=True).vertices[0]
    defs = dict(model.keypoint_definitions)
    for name, ids, depth in (('spine_2', [433, 434, 449], 0.3), ('knee_L', [2747, 2763, 2778],
                                                                1.0)):
        w = torch.tensor([0.2, 0.3, 0.5], dtype=rest.dtype)
        place = (w[:, None] * rest[ids]).sum(0) + 0.5
        defs[name] = dict(marker=dict(position=place.tolist(), joint=name, vertices=ids,
                                      weights=w.tolist(), depth=depth))
    model.set_keypoints(defs)
    return model


def test_marker_keypoints_match_autograd():
    """A marker's readout (its rest point skinned with weights between its joint's and
    the skin's, its shape motion likewise) has the Jacobian autograd gives."""
    model = _with_markers(SMILModel(data=demo_model_data(), dtype=torch.float64))
    _check(model, seed=2)
    _check(model, seed=3, log_scale=True, global_scale=True)


@pytest.mark.parametrize('propagate', [False, True])
def test_demo_model_with_fixed_scales(propagate):
    model = SMILModel(data=demo_model_data(), dtype=torch.float64, propagate_scaling=propagate)
    _check(model, seed=1, log_scale=True)
    _check(model, seed=1, log_scale='zero', global_scale=True)   # the faster path


def test_stick_model(stick_model_path):
    _check(SMILModel(data=load_model_data(stick_model_path), dtype=torch.float64), seed=2,
           global_scale=True)


def test_mouse_model_kinematic_joints(mouse_model_path):
    model = SMILModel(data=load_model_data(mouse_model_path), dtype=torch.float64)
    assert not model.regressed_joints
    _check(model, seed=3, log_scale=True, global_scale=True)


def test_left_jacobian_matches_finite_differences():
    theta = torch.tensor([[0.3, -1.2, 0.7], [1e-6, 0.0, 2e-6]], dtype=torch.float64)
    Jl = so3_left_jacobian(theta)
    R = axis_angle_to_matrix(theta)
    for a in range(3):
        d = torch.zeros_like(theta)
        d[:, a] = 1e-6
        dR = (axis_angle_to_matrix(theta + d) - axis_angle_to_matrix(theta - d)) / 2e-6
        w = dR @ R.transpose(-1, -2)
        omega = torch.stack([w[:, 2, 1], w[:, 0, 2], w[:, 1, 0]], -1)
        torch.testing.assert_close(omega, Jl[:, :, a], rtol=1e-6, atol=1e-8)


def test_unsupported_parameters_are_named():
    model = SMILModel(data=demo_model_data(), dtype=torch.float64)
    with pytest.raises(UnsupportedJacobian, match='log_scale'):
        point_jacobians(model, {}, ['log_scale'])


def test_sparse_normal_equations_match_the_dense_product(stick_model_path):
    """The block-sparse H = D^T blockdiag(I) D and g = D^T r equal the dense products."""
    from smilfit.ops.sparse_cholesky import SparseCholeskyPlan
    from smilfit.registrants.solver.normal_equations import PackedLayout
    from smilfit.registrants.solver.point_jacobian import PointJacobian
    model = SMILModel(data=load_model_data(stick_model_path), dtype=torch.float64)
    g = torch.Generator().manual_seed(4)
    B, J = 3, model.num_joints
    params = dict(global_orient=torch.randn(B, 3, generator=g, dtype=torch.float64),
                  body_pose=0.3 * torch.randn(B, J - 1, 3, generator=g, dtype=torch.float64),
                  betas=torch.randn(B, model.num_betas, generator=g, dtype=torch.float64),
                  transl=torch.randn(B, 3, generator=g, dtype=torch.float64),
                  global_log_scale=torch.randn(B, 1, generator=g, dtype=torch.float64))
    pj = PointJacobian(model)
    # each parameter list twice, at two poses: the second call reuses the first's
    # index structure and buffers (nothing of the first may stay in them)
    for fitted, bend in [(f, b) for f in (['transl', 'body_pose', 'betas', 'global_orient',
                                           'global_log_scale'],
                                          ['body_pose'], ['global_orient', 'transl'])
                         for b in (1.0, -0.7)]:
        jac = pj.sparse(dict(params, body_pose=bend * params['body_pose']), fitted)
        N = jac.points.shape[1]
        A = torch.randn(B, N, 4, 3, generator=g, dtype=torch.float64)
        info = A.transpose(-1, -2) @ A
        grad = torch.randn(B, N, 3, generator=g, dtype=torch.float64)
        H, gv = jac.normal_equations(info, grad)
        D = jac.to_dense().reshape(B, N * 3, -1)
        dense_H = torch.einsum('bip,bij,bjq->bpq', D, torch.stack(
            [torch.block_diag(*info[b]) for b in range(B)]), D)
        torch.testing.assert_close(H, dense_H, rtol=1e-10, atol=1e-9)
        torch.testing.assert_close(gv, torch.einsum('bip,bi->bp', D, grad.reshape(B, -1)))
        # only the upper triangle, for a reader of it alone (the LM's Cholesky)
        Hu, gu = jac.normal_equations(info, grad, upper_only=True)
        torch.testing.assert_close(torch.triu(Hu), torch.triu(dense_H), rtol=1e-10, atol=1e-9)
        torch.testing.assert_close(gu, gv)
        # packed in the sparse factorisation's layout: the same upper triangle
        plan = SparseCholeskyPlan.build(dense_H.abs().sum(0) > 0)
        Hp, gp = jac.normal_equations(info, grad, layout=PackedLayout(plan.slot_map(), plan.packed_size))
        assert Hp.shape == (B, plan.packed_size)
        torch.testing.assert_close(Hp[:, :-1], plan.pack(dense_H)[:, :-1], rtol=1e-10,
                                   atol=1e-9)
        torch.testing.assert_close(gp, gv)


def test_point_subsets_and_group_sums_of_the_normal_equations():
    """``keep``: the Jacobian of some pool points equals those rows of the whole one;
    ``reduce``: the normal equations (and a prior's block) summed per group equal the
    per-sample ones summed."""
    from smilfit.registrants.solver.point_jacobian import PointJacobian
    from smilfit.registrants.solver.normal_equations import ConstantJacobian, add_param_block
    model = SMILModel(data=demo_model_data(), dtype=torch.float64)
    g = torch.Generator().manual_seed(5)
    B, J = 5, model.num_joints
    params = dict(global_orient=torch.randn(B, 3, generator=g, dtype=torch.float64),
                  body_pose=0.3 * torch.randn(B, J - 1, 3, generator=g, dtype=torch.float64),
                  betas=torch.randn(B, model.num_betas, generator=g, dtype=torch.float64),
                  transl=torch.randn(B, 3, generator=g, dtype=torch.float64))
    fitted = ['global_orient', 'transl', 'body_pose', 'betas']
    jacobian = PointJacobian(model)
    whole = jacobian.sparse(params, fitted)
    keep = torch.tensor([0, 3, 6, 12, 19])
    part = jacobian.sparse(params, fitted, keep=keep)
    torch.testing.assert_close(part.points, whole.points[:, keep])
    torch.testing.assert_close(part.to_dense(), whole.to_dense()[:, keep])
    N = part.points.shape[1]
    A = torch.randn(B, N, 4, 3, generator=g, dtype=torch.float64)
    info, grad = A.transpose(-1, -2) @ A, torch.randn(B, N, 3, generator=g, dtype=torch.float64)
    group = torch.tensor([1, 0, 1, 2, 1])
    H, gv = part.normal_equations(info, grad)
    Hs, gs = part.normal_equations(info, grad, reduce=(group, 3))
    expected = torch.zeros(3, *H.shape[1:], dtype=H.dtype).index_add_(0, group, H)
    torch.testing.assert_close(Hs, expected)
    torch.testing.assert_close(gs, gv)                       # gradients stay per sample
    r = torch.randn(B, 4, generator=g, dtype=torch.float64)
    cols = torch.tensor([4, 9, 10])
    for jac in (ConstantJacobian(torch.randn(4, 3, generator=g, dtype=torch.float64), cols),
                torch.randn(B, 4, 3, generator=g, dtype=torch.float64)):
        per, summed = H.clone(), Hs.clone()
        add_param_block(per, gv.clone(), r, jac, cols)
        add_param_block(summed, gv.clone(), r, jac, cols, reduce=(group, 3))
        torch.testing.assert_close(
            summed, torch.zeros_like(Hs).index_add_(0, group, per))


@pytest.mark.parametrize('which', ['demo', 'mouse'])
def test_attached_joint_frame_offsets_match_autograd(which, request):
    """Points with joint-frame offsets (``pool point + M_j o``, the handlers' own
    :func:`rotate_offsets`) have the Jacobian autograd gives, offsets held fixed."""
    from smilfit.body_models.keypoint_naming import rotate_offsets
    from smilfit.registrants.solver.point_jacobian import PointJacobian
    if which == 'demo':  # regressed joints and vertex keypoints: carriers by skinning mass
        model = SMILModel(data=demo_model_data(), dtype=torch.float64)
    else:
        model = SMILModel(data=load_model_data(request.getfixturevalue('mouse_model_path')),
                          dtype=torch.float64)
    g = torch.Generator().manual_seed(7)
    B, J = 2, model.num_joints
    params = dict(global_orient=0.5 * torch.randn(B, 3, generator=g, dtype=torch.float64),
                  body_pose=0.4 * torch.randn(B, J - 1, 3, generator=g, dtype=torch.float64),
                  betas=torch.randn(B, model.num_betas, generator=g, dtype=torch.float64),
                  transl=torch.randn(B, 3, generator=g, dtype=torch.float64),
                  global_log_scale=0.3 * torch.randn(B, 1, generator=g, dtype=torch.float64),
                  log_scale=0.1 * torch.randn(B, J, 3, generator=g, dtype=torch.float64))
    N = _pool(model, params).shape[1]
    attach = torch.tensor([0, N - 1, J // 2, N - 1])     # repeats allowed
    offsets = 0.1 * torch.randn(1, attach.numel(), 3, generator=g, dtype=torch.float64)
    carriers = model.pool_joints[attach]

    def points_of(p):
        out = model(**p, return_vertices=False, return_keypoints=True)
        base = _pool(model, p)
        extra = base[:, attach] + rotate_offsets(offsets, out.joint_transforms, carriers)
        return torch.cat([base, extra], dim=1)

    fitted = ['global_orient', 'body_pose', 'transl', 'betas', 'global_log_scale']
    jac = PointJacobian(model)
    sparse = jac.sparse(params, fitted, attach, offsets)
    torch.testing.assert_close(sparse.points, points_of(params), rtol=1e-9, atol=1e-9)
    assert torch.count_nonzero(sparse.points[:, N:] - sparse.points[:, attach]) > 0
    dense = sparse.to_dense()
    col = 0
    for name in fitted:
        def f(x, name=name):
            p = dict(params)
            p[name] = x.reshape(params[name].shape)
            return points_of(p)
        full = torch.autograd.functional.jacobian(f, params[name]).reshape(
            B, N + attach.numel(), 3, B, -1)
        diag = torch.stack([full[b, :, :, b] for b in range(B)])
        width = diag.shape[-1]
        torch.testing.assert_close(dense[..., col:col + width], diag, rtol=1e-7, atol=1e-7,
                                   msg=name)
        col += width
    # the same structure is reused for the same attached points
    assert jac._structure(attach) is jac._structure(attach.clone())


def _skeleton_params(model, B, seed, reference_compat=False):
    g = torch.Generator().manual_seed(seed)
    J = model.num_joints
    return dict(global_orient=0.5 * torch.randn(B, 3, generator=g, dtype=torch.float64),
                body_pose=0.4 * torch.randn(B, J - 1, 3, generator=g, dtype=torch.float64),
                betas=torch.randn(B, model.num_betas, generator=g, dtype=torch.float64),
                transl=torch.randn(B, 3, generator=g, dtype=torch.float64),
                global_log_scale=0.3 * torch.randn(B, 1, generator=g, dtype=torch.float64),
                log_scale=0.1 * torch.randn(B, J, 3, generator=g, dtype=torch.float64),
                bone_trans=0.05 * torch.randn(B, J, 3, generator=g, dtype=torch.float64))


@pytest.mark.parametrize('which,propagate,compat', [('demo', False, False),
                                                    ('demo', True, True),
                                                    ('demo_markers', False, False),
                                                    ('mouse', False, False)])
def test_bone_trans_and_keypoint_offsets_match_forward_mode(which, propagate, compat, request):
    """``bone_trans`` (a subtree's shift) and joint-frame ``keypoint_offsets`` (attached
    points) columns equal torch.func.jacfwd of the model's points, with every other
    parameter column fitted alongside."""
    from smilfit.body_models.keypoint_naming import rotate_offsets
    from smilfit.registrants.solver.point_jacobian import PointJacobian
    data = (demo_model_data() if which.startswith('demo')
            else load_model_data(request.getfixturevalue('mouse_model_path')))
    model = SMILModel(data=data, dtype=torch.float64, propagate_scaling=propagate,
                      reference_compat=compat)
    if which == 'demo_markers':
        model = _with_markers(model)
    B, J = 2, model.num_joints
    params = _skeleton_params(model, B, seed=11)
    N = _pool(model, params).shape[1]
    Kp = 5                                               # rows of keypoint_offsets
    rows = torch.tensor([3, 0, -1, 4])                   # -1: another handler's offsets
    attach = torch.tensor([0, N - 1, J // 2, 1])
    g = torch.Generator().manual_seed(3)
    params['keypoint_offsets'] = 0.1 * torch.randn(B, Kp, 3, generator=g, dtype=torch.float64)
    other = 0.1 * torch.randn(B, 1, 3, generator=g, dtype=torch.float64)
    carriers = model.pool_joints[attach]

    def offsets_of(p):
        picked = p['keypoint_offsets'][:, rows.clamp_min(0)]
        return torch.where((rows >= 0)[None, :, None], picked, other.expand(B, 4, 3))

    def points_of(p):
        out = model(**{k: v for k, v in p.items() if k != 'keypoint_offsets'},
                    return_vertices=False, return_keypoints=True)
        base = _pool(model, {k: v for k, v in p.items() if k != 'keypoint_offsets'})
        extra = base[:, attach] + rotate_offsets(offsets_of(p), out.joint_transforms, carriers)
        return torch.cat([base, extra], dim=1)

    fitted = ['transl', 'bone_trans', 'global_orient', 'keypoint_offsets', 'body_pose',
              'global_log_scale']
    sparse = PointJacobian(model).sparse(params, fitted, attach, offsets_of(params), rows)
    torch.testing.assert_close(sparse.points, points_of(params), rtol=1e-9, atol=1e-9)
    dense = sparse.to_dense()
    col = 0
    for name in fitted:
        def f(x, name=name):
            p = dict(params)
            p[name] = x
            return points_of(p)
        full = torch.func.jacfwd(f)(params[name]).reshape(B, N + 4, 3, B, -1)
        diag = torch.stack([full[b, :, :, b] for b in range(B)])
        width = diag.shape[-1]
        torch.testing.assert_close(dense[..., col:col + width], diag, rtol=1e-8, atol=1e-9,
                                   msg=name)
        col += width
    assert col == dense.shape[-1]
    # the block-sparse normal equations hold with the new blocks too
    info_factor = torch.randn(B, N + 4, 4, 3, generator=g, dtype=torch.float64)
    info = info_factor.transpose(-1, -2) @ info_factor
    grad = torch.randn(B, N + 4, 3, generator=g, dtype=torch.float64)
    H, gv = sparse.normal_equations(info, grad)
    D = dense.reshape(B, (N + 4) * 3, -1)
    dense_H = torch.einsum('bip,bij,bjq->bpq', D, torch.stack(
        [torch.block_diag(*info[b]) for b in range(B)]), D)
    torch.testing.assert_close(H, dense_H, rtol=1e-10, atol=1e-9)
    torch.testing.assert_close(gv, torch.einsum('bip,bi->bp', D, grad.reshape(B, -1)))


def test_keypoint_offsets_need_joint_frame_points():
    from smilfit.registrants.solver.point_jacobian import PointJacobian
    model = SMILModel(data=demo_model_data(), dtype=torch.float64)
    params = dict(keypoint_offsets=torch.zeros(1, 3, 3, dtype=torch.float64))
    with pytest.raises(UnsupportedJacobian, match='joint-frame'):
        PointJacobian(model).sparse(params, ['keypoint_offsets'])
