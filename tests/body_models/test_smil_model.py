"""SMILModel behaviour on small random models (no ../shared needed)."""
import numpy as np
import pytest
import torch

from smilfit.body_models import SMILModel
from smilfit.body_models import smil_model as smil_model_module
from smilfit.body_models.model_data import BodyModelData
from smilfit.body_models.rotations import axis_angle_to_matrix, matrix_to_rotation_6d
from tests.body_models.toy_models import toy_model_data


def random_inputs(model, B=3, seed=0, scale=0.4, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    J, K = model.num_joints, model.num_betas
    r = lambda *s: torch.randn(*s, generator=g, dtype=dtype)  # noqa: E731
    return dict(global_orient=r(B, 3) * scale, body_pose=r(B, J - 1, 3) * scale,
                betas=r(B, K), transl=r(B, 3), log_scale=r(B, J, 3) * 0.2,
                bone_trans=r(B, J, 3) * 0.2)


@pytest.fixture
def toy():
    return SMILModel(data=toy_model_data(with_pca=True), dtype=torch.float64)


def test_rest_pose_reproduces_template(toy):
    out = toy()
    np.testing.assert_allclose(out.vertices[0].numpy(), toy.data.v_template, atol=1e-12)
    np.testing.assert_allclose(out.joints_kin[0].numpy(),
                               toy.data.J_regressor @ toy.data.v_template, atol=1e-12)


@pytest.mark.parametrize('propagate', [False, True])
def test_fast_path_equals_full_path(toy, propagate):
    kw = random_inputs(toy)
    kw['scale_weights'] = torch.randn(3, toy.data.scaledirs.shape[0], dtype=torch.float64)
    full = toy(**kw, propagate_scaling=propagate)
    fast = toy(**kw, propagate_scaling=propagate, return_vertices=False)
    assert fast.vertices is None
    torch.testing.assert_close(fast.joints, full.joints)
    # Regressed joints are the regressor applied to the posed mesh.
    expect = torch.einsum('jv,bvc->bjc', torch.as_tensor(toy.data.J_regressor), full.vertices)
    torch.testing.assert_close(full.joints, expect)


def test_kinematics_only_is_the_full_pass_chain(toy):
    """``kinematics_only``: the same chain (rotations, joint transforms, kinematic joints
    with translation and global scale) as the full pass, nothing read out."""
    kw = random_inputs(toy)
    kw['global_log_scale'] = torch.full((3, 1), 0.3, dtype=torch.float64)
    full = toy(**kw)
    chain = toy(**kw, kinematics_only=True)
    assert chain.joints is None and chain.keypoints is None and chain.vertices is None
    for name in ('joints_kin', 'joint_transforms', 'rot_mats'):
        torch.testing.assert_close(getattr(chain, name), getattr(full, name))


def test_rotation_representations_agree(toy):
    kw = random_inputs(toy)
    aa = toy(**kw)
    mats = dict(kw, global_orient=axis_angle_to_matrix(kw['global_orient']),
                body_pose=axis_angle_to_matrix(kw['body_pose']))
    d6 = dict(kw, global_orient=matrix_to_rotation_6d(mats['global_orient']),
              body_pose=matrix_to_rotation_6d(mats['body_pose']))
    for other in (toy(**mats), toy(**d6)):
        torch.testing.assert_close(other.vertices, aa.vertices)


@pytest.mark.parametrize('propagate', [False, True])
def test_zero_scales_and_bone_offsets_are_no_ops_but_keep_their_gradients(toy, propagate):
    """All-zero log_scale / bone_trans (what a registrant passes when it fits neither)
    give the output of leaving them out, with and without autograd, and still get their
    gradients when they require them."""
    kw = random_inputs(toy)
    zeros = dict(kw, log_scale=torch.zeros_like(kw['log_scale']),
                 bone_trans=torch.zeros_like(kw['bone_trans']))
    plain = {k: v for k, v in kw.items() if k not in ('log_scale', 'bone_trans')}
    reference = toy(**plain, propagate_scaling=propagate)
    with torch.no_grad():
        skipped = toy(**zeros, propagate_scaling=propagate)
    for name in ('vertices', 'joints', 'joint_transforms'):
        torch.testing.assert_close(getattr(skipped, name), getattr(reference, name))
    grads = {k: v.clone().requires_grad_() for k, v in zeros.items()
             if k in ('log_scale', 'bone_trans')}
    out = toy(**dict(zeros, **grads), propagate_scaling=propagate)
    torch.testing.assert_close(out.joints, reference.joints)
    out.joints.square().sum().backward()
    assert all(float(g.grad.abs().sum()) > 0 for g in grads.values())


def test_global_rotation_pivots_about_root_joint(toy):
    rot = torch.tensor([[0.3, -1.2, 0.5]], dtype=torch.float64)
    out = toy(global_orient=rot)
    rest_root = torch.as_tensor(toy.data.J_regressor @ toy.data.v_template)[0]
    torch.testing.assert_close(out.joints_kin[0, 0], rest_root)
    R = axis_angle_to_matrix(rot)[0]
    v = torch.as_tensor(toy.data.v_template)
    torch.testing.assert_close(out.vertices[0], (v - rest_root) @ R.T + rest_root)


def test_root_scale_is_applied_and_scales_about_root(toy):
    """Corrected default: a root scale s scales the whole body about the root joint
    when propagating; the reference ignored it (kept only as a compat switch)."""
    s = 1.7
    log_scale = torch.zeros(1, toy.num_joints, 3, dtype=torch.float64)
    log_scale[0, 0] = np.log(s)
    out = toy(log_scale=log_scale, propagate_scaling=True)
    v = torch.as_tensor(toy.data.v_template)
    root = toy.rest_joints[0]
    torch.testing.assert_close(out.vertices[0], root + s * (v - root))
    compat = SMILModel(data=toy.data, reference_compat=True, dtype=torch.float64)
    assert not torch.allclose(compat(log_scale=log_scale, propagate_scaling=True).vertices,
                              out.vertices)


def test_non_propagating_scale_stays_in_segment(toy):
    """Without propagation, joint j's scale lengthens the bones to its children but
    leaves the children's own segments (and grandchildren offsets) unscaled."""
    parents = toy.data.parents
    j = int(np.flatnonzero(np.bincount(parents[parents >= 0], minlength=toy.num_joints))[0])
    s = torch.tensor([1.5, 0.7, 2.0], dtype=torch.float64)
    log_scale = torch.zeros(1, toy.num_joints, 3, dtype=torch.float64)
    log_scale[0, j] = s.log()
    joints = toy(log_scale=log_scale).joints_kin[0]
    rest = toy.rest_joints
    for c in np.flatnonzero(parents == j):
        torch.testing.assert_close(joints[c], joints[j] + s * (rest[c] - rest[j]))
        for gc in np.flatnonzero(parents == c):
            torch.testing.assert_close(joints[gc] - joints[c], rest[gc] - rest[c])


def test_bone_translation_is_not_negated(toy):
    """bone_trans d on joint j moves j and its subtree by +d (the reference negated y)."""
    parents = toy.data.parents
    j = int(np.flatnonzero(parents == 0)[0])
    d = torch.tensor([0.1, 0.2, -0.3], dtype=torch.float64)
    bone_trans = torch.zeros(1, toy.num_joints, 3, dtype=torch.float64)
    bone_trans[0, j] = d
    moved = toy(bone_trans=bone_trans).joints_kin[0] - toy.rest_joints
    subtree = {j}
    for k in range(toy.num_joints):  # toy parents precede children
        if parents[k] in subtree:
            subtree.add(k)
    for k in range(toy.num_joints):
        expect = d if k in subtree else torch.zeros(3, dtype=torch.float64)
        torch.testing.assert_close(moved[k], expect)
    compat = SMILModel(data=toy.data, reference_compat=True, dtype=torch.float64)
    moved_compat = compat(bone_trans=bone_trans).joints_kin[0, j] - toy.rest_joints[j]
    torch.testing.assert_close(moved_compat, d * torch.tensor([1.0, -1.0, 1.0],
                                                              dtype=torch.float64))


def test_pca_drivers_follow_reference_formula(toy):
    w_s = torch.randn(2, toy.data.scaledirs.shape[0], dtype=torch.float64) * 0.5
    w_t = torch.randn(2, toy.data.transdirs.shape[0], dtype=torch.float64)
    sd, td = torch.as_tensor(toy.data.scaledirs), torch.as_tensor(toy.data.transdirs)
    log_scale = (1 + torch.einsum('bk,kjc->bjc', w_s, sd)).clamp_min(1e-4).log()
    bone_trans = toy.data.trans_factor * torch.einsum('bk,kjc->bjc', w_t, td)
    a = toy(scale_weights=w_s, trans_weights=w_t)
    b = toy(log_scale=log_scale, bone_trans=bone_trans)
    torch.testing.assert_close(a.vertices, b.vertices)


def test_arbitrary_joint_order_gives_same_mesh():
    """Relabel joints so the root is not joint 0 and children precede parents."""
    data = toy_model_data(num_joints=7, seed=3)
    J = data.num_joints
    perm = np.random.default_rng(1).permutation(J)  # new joint i = old joint perm[i]
    while perm[0] == 0:
        perm = np.roll(perm, 1)
    inv = np.argsort(perm)
    parents = np.array([-1 if data.parents[p] < 0 else inv[data.parents[p]] for p in perm])
    shuffled = BodyModelData(
        v_template=data.v_template, faces=data.faces, weights=data.weights[:, perm],
        parents=parents, joint_names=[data.joint_names[p] for p in perm],
        shapedirs=data.shapedirs, posedirs=data.posedirs, J_regressor=data.J_regressor[perm],
        J=data.J[perm])
    a = SMILModel(data=data, dtype=torch.float64)
    b = SMILModel(data=shuffled, dtype=torch.float64)
    kw = random_inputs(a)
    full_pose = torch.cat([kw['global_orient'][:, None], kw['body_pose']], 1)  # old order
    new_pose = full_pose[:, perm]
    new_root = int(np.flatnonzero(parents < 0)[0])
    kw_b = dict(kw, global_orient=new_pose[:, new_root],
                body_pose=torch.cat([new_pose[:, :new_root], new_pose[:, new_root + 1:]], 1),
                log_scale=kw['log_scale'][:, perm], bone_trans=kw['bone_trans'][:, perm])
    out_a, out_b = a(**kw), b(**kw_b)
    torch.testing.assert_close(out_b.vertices, out_a.vertices)
    torch.testing.assert_close(out_b.joints, out_a.joints[:, perm])


def test_keypoints_joints_vertices_and_weighted_sets():
    data = toy_model_data(seed=5)
    kps = {'root': {'joint': 'j0'}, 'tip': {'vertex': 7},
           'blob': {'vertices': [1, 2, 3], 'weights': [0.2, 0.3, 0.5]},
           'j3': {'joint': 3}}
    model = SMILModel(data=data, keypoints=kps, dtype=torch.float64)
    assert model.keypoint_names == list(kps)
    kw = random_inputs(model, seed=2)
    out = model(**kw)
    v = out.vertices
    expect = torch.stack([out.joints[:, 0], v[:, 7],
                          0.2 * v[:, 1] + 0.3 * v[:, 2] + 0.5 * v[:, 3], out.joints[:, 3]], 1)
    torch.testing.assert_close(out.keypoints, expect)
    fast = model(**kw, return_vertices=False)
    torch.testing.assert_close(fast.keypoints, expect)


def test_pose_blendshapes_match_smplx_lbs():
    smplx_lbs = pytest.importorskip('smplx.lbs')
    data = toy_model_data(with_posedirs=True, seed=7)
    model = SMILModel(data=data, dtype=torch.float64)
    kw = random_inputs(model)
    ours = model(global_orient=kw['global_orient'], body_pose=kw['body_pose'],
                 betas=kw['betas'])
    V, P = data.num_vertices, data.posedirs.shape[2]
    pose = torch.cat([kw['global_orient'], kw['body_pose'].flatten(1)], 1)
    verts, joints = smplx_lbs.lbs(
        kw['betas'], pose, torch.as_tensor(data.v_template), torch.as_tensor(data.shapedirs),
        torch.as_tensor(data.posedirs).reshape(V * 3, P).T,
        torch.as_tensor(data.J_regressor), torch.as_tensor(data.parents),
        torch.as_tensor(data.weights))
    torch.testing.assert_close(ours.vertices, verts)
    fast = model(global_orient=kw['global_orient'], body_pose=kw['body_pose'],
                 betas=kw['betas'], return_vertices=False)
    torch.testing.assert_close(fast.joints, ours.joints)


def test_static_joints_and_zero_betas():
    data = toy_model_data(num_betas=0, static_joints=True, seed=9)
    model = SMILModel(data=data, dtype=torch.float64)
    assert model.num_betas == 0 and not model.regressed_joints
    out = model(body_pose=torch.zeros(2, data.num_joints - 1, 3, dtype=torch.float64))
    np.testing.assert_allclose(out.joints[0].numpy(), data.J)
    torch.testing.assert_close(out.joints, out.joints_kin)


def test_gradients_flow_to_every_input():
    data = toy_model_data(num_joints=4, num_vertices=12, num_betas=2, with_pca=True,
                          with_posedirs=True, seed=11)
    model = SMILModel(data=data, dtype=torch.float64)
    kw = random_inputs(model, B=2)
    kw['scale_weights'] = torch.randn(2, 2, dtype=torch.float64) * 0.3
    kw['trans_weights'] = torch.randn(2, 2, dtype=torch.float64)
    names = list(kw)

    def f(*args):
        out = model(**dict(zip(names, args)), propagate_scaling=False)
        return out.vertices, out.joints, out.joints_kin
    args = tuple(v.clone().requires_grad_(True) for v in kw.values())
    assert torch.autograd.gradcheck(f, args, eps=1e-6, atol=1e-5)
    # Also well-defined at the identity rotation (no NaN from |theta| = 0).
    zero = dict(kw, global_orient=torch.zeros(2, 3, dtype=torch.float64, requires_grad=True),
                body_pose=torch.zeros(2, 3, 3, dtype=torch.float64, requires_grad=True))
    model(**zero).vertices.sum().backward()
    assert torch.isfinite(zero['global_orient'].grad).all()
    assert torch.isfinite(zero['body_pose'].grad).all()


@pytest.mark.parametrize('kwargs,match', [
    (dict(body_pose=torch.zeros(2, 2, 3)), 'body_pose'),
    (dict(global_orient=torch.zeros(2, 4)), 'global_orient'),
    (dict(betas=torch.zeros(2, 9)), 'betas'),
    (dict(log_scale=torch.zeros(2, 6, 2)), 'log_scale'),
    (dict(transl=torch.zeros(3, 3), body_pose=torch.zeros(2, 5, 3)), 'transl|body_pose'),
])
def test_bad_inputs_name_the_argument(kwargs, match):
    model = SMILModel(data=toy_model_data())
    with pytest.raises(ValueError, match=match):
        model(**kwargs)


def test_constructor_errors():
    data = toy_model_data()
    with pytest.raises(ValueError, match='exactly one'):
        SMILModel()
    with pytest.raises(ValueError, match='num_betas'):
        SMILModel(data=data, num_betas=10)
    with pytest.raises(ValueError, match='joint_source'):
        SMILModel(data=data, joint_source='magic')
    with pytest.raises(ValueError, match='keypoints'):
        SMILModel(data=data, keypoints={'x': {'joint': 'nope'}})


def test_registered_and_built_from_config():
    from smilfit.registry import BODY_MODELS
    model = BODY_MODELS.build(dict(type='SMILModel', data=toy_model_data(),
                                   propagate_scaling=True))
    assert isinstance(model, SMILModel) and model.propagate_scaling


@pytest.mark.skipif(not torch.cuda.is_available(), reason='needs CUDA')
def test_cuda_matches_cpu(toy):
    kw = random_inputs(toy)
    cpu = toy(**kw)
    gpu_model = SMILModel(data=toy.data, dtype=torch.float64).cuda()
    gpu = gpu_model(**{k: v.cuda() for k, v in kw.items()})
    torch.testing.assert_close(gpu.vertices.cpu(), cpu.vertices)
    torch.testing.assert_close(gpu.joints.cpu(), cpu.joints)


@pytest.mark.parametrize('num_betas_in', [0, 2, 3])
def test_skinning_paths_agree(num_betas_in):
    """Shape-factored, chunked and single-chunk skinning give the same mesh."""
    data = toy_model_data(num_vertices=300, seed=13)
    model = SMILModel(data=data, dtype=torch.float64)
    kw = random_inputs(model, B=5)
    kw['betas'] = kw['betas'][:, :num_betas_in]
    model.factored_min_batch = 10 ** 9
    model.skinning_cache_bytes = 1 << 30  # one chunk
    reference = model(**kw).vertices
    model.skinning_cache_bytes = 1  # minimum chunk size: several chunks
    torch.testing.assert_close(model(**kw).vertices, reference)
    model.factored_min_batch = 1
    for cache in (1, 1 << 30):
        model.skinning_cache_bytes = cache
        torch.testing.assert_close(model(**kw).vertices, reference)


def test_factored_skinning_is_chosen_by_timing_once_per_batch_bucket(monkeypatch):
    """Without ``factored_min_batch`` the faster path is measured once per power-of-two
    batch bucket (and kept); a fixed threshold is used as given; a single mesh is never
    timed; both choices give the same mesh."""
    data = toy_model_data(num_vertices=300, seed=13)
    model = SMILModel(data=data, dtype=torch.float64)
    timed = []
    faster = {4: True, 8: False}

    def fake_timing(batch, repeats=2):
        timed.append(batch)
        return faster[batch]
    monkeypatch.setattr(model, '_time_factored_skinning', fake_timing)
    assert not model.factored_skinning_pays(1)
    assert model.factored_skinning_pays(5) and model.factored_skinning_pays(7)
    assert not model.factored_skinning_pays(8) and not model.factored_skinning_pays(15)
    assert timed == [4, 8]
    calls = []
    real = smil_model_module.skin_shape_factored

    def spy(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)
    monkeypatch.setattr(smil_model_module, 'skin_shape_factored', spy)
    factored = model(**random_inputs(model, B=5)).vertices
    chunked = model(**random_inputs(model, B=9)).vertices
    assert len(calls) == 1
    torch.testing.assert_close(factored, SMILModel(data=data, dtype=torch.float64,
                                                   factored_min_batch=10 ** 9)(
        **random_inputs(model, B=5)).vertices)
    assert chunked.shape[0] == 9
    pinned = SMILModel(data=data, dtype=torch.float64, factored_min_batch=3)
    assert pinned.factored_skinning_pays(3) and not pinned.factored_skinning_pays(2)
    with pytest.raises(ValueError, match='factored_min_batch'):
        SMILModel(data=data, factored_min_batch=0)


def test_measured_factored_skinning_choice_runs_both_paths():
    """The real timing runs (both paths, no autograd) and leaves the threshold unset."""
    model = SMILModel(data=toy_model_data(num_vertices=300, seed=13), dtype=torch.float64)
    assert isinstance(model.factored_skinning_pays(4), bool)
    assert model.factored_min_batch is None and len(model._factored_timings) == 1


def test_factored_skinning_gradients():
    data = toy_model_data(num_joints=4, num_vertices=20, num_betas=2, seed=17)
    model = SMILModel(data=data, dtype=torch.float64)
    model.factored_min_batch = 1
    kw = random_inputs(model, B=2)
    names = ('global_orient', 'body_pose', 'betas', 'transl', 'log_scale')
    args = tuple(kw[n].clone().requires_grad_(True) for n in names)
    assert torch.autograd.gradcheck(
        lambda *a: model(**dict(zip(names, a))).vertices, args, eps=1e-6, atol=1e-5)


def test_v_shaped_only_when_requested(toy):
    kw = random_inputs(toy)
    assert toy(**kw).v_shaped is None
    shaped = toy(**kw, return_v_shaped=True).v_shaped
    expect = torch.as_tensor(toy.data.v_template) + torch.einsum(
        'bk,vck->bvc', kw['betas'], torch.as_tensor(toy.data.shapedirs))
    torch.testing.assert_close(shaped, expect)


def test_model_without_keypoint_definitions_exposes_joints():
    data = toy_model_data(seed=21)
    assert not data.keypoints
    model = SMILModel(data=data, dtype=torch.float64)
    assert model.keypoint_names == data.joint_names
    out = model(**random_inputs(model))
    torch.testing.assert_close(out.keypoints, out.joints)


@pytest.mark.parametrize('with_posedirs', [False, True])
@pytest.mark.parametrize('num_betas_in', [None, 2, 0])
def test_sparse_and_dense_readouts_agree(with_posedirs, num_betas_in):
    """Joints and keypoints read out over the non-zero (row, joint) terms equal the
    dense readout (values and gradients), with fewer betas than the model's too."""
    data = toy_model_data(num_joints=9, with_posedirs=with_posedirs, seed=11)
    kps = {'tip': {'vertex': 7}, 'blob': {'vertices': [1, 2, 3], 'weights': [0.2, 0.3, 0.5]},
           'j3': {'joint': 3}}
    model = SMILModel(data=data, keypoints=kps, dtype=torch.float64)
    kw = random_inputs(model, B=4, seed=3)
    if num_betas_in is not None:
        kw['betas'] = kw['betas'][:, :num_betas_in]
    outs = {}
    for sparse in (True, False):
        model.sparse_readout = sparse
        inputs = {k: v.clone().requires_grad_() for k, v in kw.items()}
        out = model(**inputs, return_vertices=False)
        (out.joints.square().sum() + out.keypoints.sin().sum()).backward()
        outs[sparse] = (out.joints, out.keypoints, {k: v.grad for k, v in inputs.items()})
    torch.testing.assert_close(outs[True][0], outs[False][0])
    torch.testing.assert_close(outs[True][1], outs[False][1])
    for name in kw:
        torch.testing.assert_close(outs[True][2][name], outs[False][2][name])
    # and both equal the skinned mesh read out
    model.sparse_readout = True
    full = model(**kw)
    torch.testing.assert_close(outs[True][1].detach()[:, 0], full.vertices[:, 7])


def test_readout_path_follows_term_density():
    """A readout row touching a few joints is summed over its terms; one touching
    every joint (dense moments) keeps the dense product."""
    from smilfit.body_models.lbs import readout_terms
    R, J, K = 5, 20, 3
    m0, ms, mass = torch.zeros(R, J, 3), torch.zeros(R, J, 3, K), torch.zeros(R, J)
    mass[torch.arange(R), torch.arange(R)] = 1.0
    ms[0, 7, 1, 2] = 0.5    # a term with only a shape moment still counts
    row, joint, moments = readout_terms(m0, ms, mass)
    assert row.tolist() == [0, 0, 1, 2, 3, 4] and joint.tolist() == [0, 7, 1, 2, 3, 4]
    assert moments.shape == (1 + K, 6 * 4)
    data = toy_model_data(num_joints=30, num_vertices=200, seed=1)
    assert SMILModel(data=data, dtype=torch.float64).sparse_readout
    data.weights[:] = 1.0 / data.num_joints    # every vertex on every joint
    assert not SMILModel(data=data, dtype=torch.float64).sparse_readout


def test_chain_transforms_with_and_without_autograd_match_the_recursion():
    """World transforms composed level by level (the no-grad path writes each level in
    place; the autograd path concatenates) equal the plain parent-first recursion."""
    from smilfit.body_models.lbs import KinematicLevels, chain_transforms
    from tests.body_models.toy_models import random_parents
    rng = np.random.default_rng(4)
    parents = random_parents(12, rng)
    perm = rng.permutation(12)              # joints not in parent-first order
    inverse = np.argsort(perm)
    parents = np.where(parents[perm] < 0, -1, inverse[parents[perm].clip(0)])
    levels = KinematicLevels.from_parents(parents)
    local = torch.randn(3, 12, 4, 4, dtype=torch.float64)
    expect = [None] * 12
    todo = list(range(12))
    while todo:
        j = todo.pop(0)
        p = parents[j]
        if p >= 0 and expect[p] is None:
            todo.append(j)
            continue
        expect[j] = local[:, j] if p < 0 else expect[p] @ local[:, j]
    expect = torch.stack(expect, 1)
    with torch.no_grad():
        torch.testing.assert_close(chain_transforms(local, levels), expect)
    leaf = local.clone().requires_grad_()
    world = chain_transforms(leaf, levels)
    torch.testing.assert_close(world.detach(), expect)
    world.sum().backward()
    assert leaf.grad is not None and torch.isfinite(leaf.grad).all()
    # under function transforms (the LM's forward-mode Jacobians): no in-place writes
    tangent = torch.randn_like(local)
    _, jvp = torch.func.jvp(lambda t: chain_transforms(t, levels), (local,), (tangent,))
    with torch.no_grad():
        eps = 1e-6
        numeric = (chain_transforms(local + eps * tangent, levels)
                   - chain_transforms(local - eps * tangent, levels)) / (2 * eps)
    torch.testing.assert_close(jvp, numeric, rtol=1e-6, atol=1e-6)
    with torch.no_grad():
        batched = torch.func.vmap(lambda t: chain_transforms(t, levels))(local[None])
    torch.testing.assert_close(batched[0], expect)


@pytest.mark.parametrize('sparse', [True, False])
def test_keypoints_under_bf16_autocast_match_full_precision(sparse):
    """Mixed-precision training (``--amp``) runs the body model under autocast, where
    the read-out's products come back in bf16: its sums must still add up (in the maps'
    precision) on either read-out path."""
    data = toy_model_data(seed=5)
    kps = {'tip': {'vertex': 7}, 'blob': {'vertices': [1, 2, 3], 'weights': [0.2, 0.3, 0.5]},
           'j3': {'joint': 3}}
    model = SMILModel(data=data, keypoints=kps, dtype=torch.float32)
    model.sparse_readout = sparse
    kw = random_inputs(model, seed=2, dtype=torch.float32)
    full = model(**kw, return_vertices=False).keypoints
    with torch.autocast('cpu', dtype=torch.bfloat16):
        mixed = model(**kw, return_vertices=False).keypoints
    torch.testing.assert_close(mixed.float(), full, rtol=0.05,
                               atol=0.05 * float(full.abs().max()))
