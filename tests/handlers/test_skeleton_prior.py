"""The skeleton prior in body units (smilfit.losses.skeleton_priors,
SkeletonPriorHandler): magnitude, left/right symmetry, midline, counted once per animal."""
import pytest
import torch

from smilfit.datasets.synthetic import build_body_model
from smilfit.handlers import SkeletonPriorHandler
from smilfit.losses.skeleton_priors import skeleton_prior_operator
from smilfit.registrants import SMILRegistrant


@pytest.fixture(scope='module')
def model():
    return build_body_model(None).double()


def _prior(model, **kw):
    h = SkeletonPriorHandler('skeleton_prior', offset_scale=None, **kw)
    h.setup(model, {})
    return h


def _mirror(normal):
    return torch.eye(3, dtype=torch.float64) - 2 * torch.outer(normal, normal)


def test_symmetric_corrections_cost_only_their_size(model):
    h = _prior(model)
    L = h.body_length
    J = model.num_joints
    pairs = torch.as_tensor(model.data.sym_joint_pairs)
    A = h.operators['bone_trans']
    # the plane: lateral axis of the demo mouse (left/right along one model axis)
    rest = model(return_vertices=False).joints[0]
    lateral = rest[pairs[:, 0]] - rest[pairs[:, 1]]
    normal = lateral[0] / lateral[0].norm()
    g = torch.Generator().manual_seed(0)
    t = 0.03 * L * torch.randn(J, 3, generator=g, dtype=torch.float64)
    t[pairs[:, 0]] = t[pairs[:, 1]] @ _mirror(normal).T        # mirror images
    paired = set(pairs.flatten().tolist())
    for j in range(J):                                        # midline: along the plane
        if j not in paired:
            t[j] -= (t[j] @ normal) * normal
    r = (t.reshape(1, -1) @ A.T)[0]
    expected = (t * t).sum() / (0.05 * L) ** 2
    assert float((r * r).sum()) == pytest.approx(float(expected), rel=1e-9)
    # one side moved by 1 % of the body length: symmetry costs (1 / 2 %)^2 = 0.25 more
    moved = t.clone()
    moved[pairs[0, 0]] += 0.01 * L * torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64)
    r2 = (moved.reshape(1, -1) @ A.T)[0]
    size = (moved * moved).sum() / (0.05 * L) ** 2
    assert float((r2 * r2).sum() - size) == pytest.approx(0.25, rel=1e-6)
    # a midline joint moved sideways by 1 %: the same
    mid = next(j for j in range(J) if j not in paired and j != int(model.levels.root))
    side = t.clone()
    side[mid] += 0.01 * L * normal
    r3 = (side.reshape(1, -1) @ A.T)[0]
    size = (side * side).sum() / (0.05 * L) ** 2
    assert float((r3 * r3).sum() - size) == pytest.approx(0.25, rel=1e-6)


def test_the_prior_is_in_body_units():
    """The same skeleton, ten times larger in its units, costs the same."""
    pairs = torch.tensor([[0, 1]])
    normal = torch.tensor([1.0, 0.0, 0.0], dtype=torch.float64)
    x = torch.randn(1, 9, dtype=torch.float64)
    A1 = skeleton_prior_operator(3, 2.0, 0.05, 0.02, pairs, normal, torch.tensor([2]))
    A10 = skeleton_prior_operator(3, 20.0, 0.05, 0.02, pairs, normal, torch.tensor([2]))
    assert torch.allclose(x @ A1.T, (10 * x) @ A10.T)
    with pytest.raises(ValueError, match='> 0'):
        skeleton_prior_operator(3, 0.0, 0.05, 0.02)


def test_pairs_by_name_when_the_model_has_none(model):
    """Real SMIL files carry no symmetric pairs: they are found by name (``_L``/``_R``)."""
    import copy
    m = copy.deepcopy(model)
    m.data.sym_joint_pairs = None
    assert torch.allclose(_prior(m).operators['bone_trans'],
                          _prior(model).operators['bone_trans'])


def _registrant(model, stages):
    return SMILRegistrant(
        model, handlers=[dict(type='Keypoint3DHandler', name='kp3d', source='joints'),
                         dict(type='SkeletonPriorHandler', name='skeleton_prior',
                              offset_scale=None)],
        stages=stages, init='zeros', shared=dict(bone_trans=True))


def test_counted_once_per_animal(model):
    """Animal 0 has 1 frame, animal 1 has 3: the prior's per-frame values sum to one prior
    per animal, and only stages fitting the skeleton see it."""
    reg = _registrant(model, [dict(name='skel', fit=['bone_trans'], n_iter=1,
                                   optimizer=dict(type='LBFGS', max_iter=2))])
    reg.setup(dict(keypoint_names=list(model.joint_names)))
    J = model.num_joints
    groups = torch.tensor([0, 1, 1, 1])
    joints = model(return_vertices=False).joints.expand(4, -1, -1)
    bones = 0.02 * torch.randn(2, J, 3, dtype=torch.float64,
                               generator=torch.Generator().manual_seed(1))
    result = reg.fit(dict(keypoints_3d=joints + 0.01), groups=groups,
                     init_params=dict(bone_trans=bones))
    prior = reg.handlers['skeleton_prior']
    once = prior.param_residuals(dict(bone_trans=result.params['bone_trans'][[0, 1]]), {})
    once = (once * once).sum(1)
    per_frame = result.losses['skeleton_prior']
    assert float(per_frame[0]) == pytest.approx(float(once[0]), rel=1e-9)
    assert float(per_frame[1:].sum()) == pytest.approx(float(once[1]), rel=1e-9)
    assert reg.counted_per_group(prior) and not reg.counted_per_group(reg.handlers['kp3d'])
    # a stage that fits no shared parameter: the prior is constant there, and a stage of
    # nothing else is refused with a clear error
    only = SMILRegistrant(model, handlers=[dict(type='SkeletonPriorHandler', name='sp',
                                                offset_scale=None)],
                          stages=[dict(name='pose', fit=['transl'], n_iter=1)],
                          init='zeros', shared=dict(bone_trans=True))
    only.setup(dict(keypoint_names=list(model.joint_names)))
    with pytest.raises(ValueError, match='priors on shared parameters'):
        only.fit(dict(keypoints_3d=joints), groups=groups)
