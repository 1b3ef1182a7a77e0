"""The procedural model builder: skeleton -> skinned, shape-parametric BodyModelData."""
import numpy as np
import pytest
import trimesh

from smilfit.body_models.builder import (SkeletonError, build_model_from_skeleton,
                                         default_bone_groups, find_symmetric_pairs,
                                         mirror_joint_name, validate_skeleton)
from smilfit.body_models.model_data import BodyModelData

# A small lizard-like skeleton: a straight body through the root (tail <- root ->
# chest -> head), two 2-bone arms branching off the chest and a bent neck.
NAMES = ['root', 'chest', 'head', 'tail_1', 'tail_2',
         'arm_L', 'hand_L', 'arm_R', 'hand_R']
PARENTS = [None, 'root', 'chest', 'root', 'tail_1', 'chest', 'arm_L', 'chest', 'arm_R']
POSITIONS = np.array([
    [0.0, 0.0, 0.0], [1.0, 0.0, 0.0], [1.6, 0.3, 0.0], [-0.8, 0.0, 0.0], [-1.7, 0.1, 0.0],
    [1.1, 0.0, 0.5], [1.5, -0.3, 0.9], [1.1, 0.0, -0.5], [1.5, -0.3, -0.9]])


@pytest.fixture(scope='module')
def model() -> BodyModelData:
    return build_model_from_skeleton(NAMES, PARENTS, POSITIONS, radius=0.15,
                                     tip_keypoints=True, units='m', up_axis='y', name='lizard')


def bone_lengths(joints: np.ndarray, parents: np.ndarray) -> np.ndarray:
    """(..., J, 3) joints -> (..., J) length of the bone ending at each joint (root 0)."""
    safe = np.maximum(parents, 0)
    return np.linalg.norm(joints - joints[..., safe, :], axis=-1) * (parents >= 0)


# ----------------------------------------------------------------- structure
def test_result_validates_and_has_expected_fields(model):
    model.validate()
    V, J = model.num_vertices, model.num_joints
    assert J == len(NAMES) and model.joint_names == NAMES
    assert model.posedirs.shape == (V, 3, 0)
    assert model.static_joint_locs is False
    np.testing.assert_allclose(model.J, POSITIONS)
    K = model.num_betas
    assert K == len(model.extra['builder']['shape_directions'])
    np.testing.assert_array_equal(model.shape_mean, np.zeros(K))
    np.testing.assert_array_equal(model.shape_cov, np.eye(K))
    assert model.joint_limits is None
    assert (model.units, model.up_axis, model.name) == ('m', 'y', 'lizard')
    assert model.faces.dtype.kind == 'i' and model.parents.dtype.kind == 'i'


def test_parents_by_index_or_name_give_the_same_model(model):
    index = {n: i for i, n in enumerate(NAMES)}
    by_index = [-1 if p is None else index[p] for p in PARENTS]
    other = build_model_from_skeleton(NAMES, by_index, POSITIONS, radius=0.15,
                                      tip_keypoints=True, units='m', name='lizard')
    np.testing.assert_array_equal(other.v_template, model.v_template)
    np.testing.assert_array_equal(other.faces, model.faces)
    np.testing.assert_array_equal(other.weights, model.weights)


def test_vertex_count_follows_rings_and_segments():
    def size(rings, segments, cap_rings):
        d = build_model_from_skeleton(NAMES, PARENTS, POSITIONS, rings=rings,
                                      segments=segments, cap_rings=cap_rings)
        return d.num_vertices, d.extra['builder']['num_tubes']

    # Tubes: tail_2..head (4 bones), each arm branch (2 bones). Per tube:
    # (bones * rings + 1 + 2 * cap_rings) rings of `segments` vertices + 2 poles.
    for rings, segments, cap_rings in [(6, 16, 3), (2, 5, 1), (10, 24, 4)]:
        V, tubes = size(rings, segments, cap_rings)
        assert tubes == 3
        expect = sum((bones * rings + 1 + 2 * cap_rings) * segments + 2 for bones in (4, 2, 2))
        assert V == expect


# ------------------------------------------------------------------- skinning
def test_weights_are_convex_and_sparse(model):
    W = model.weights
    assert np.all(W >= 0)
    np.testing.assert_allclose(W.sum(axis=1), 1.0, atol=1e-12)
    assert np.count_nonzero(W, axis=1).max() <= 2
    # Leaf joints move nothing (a bone p -> c is skinned to p).
    for leaf in ('head', 'tail_2', 'hand_L', 'hand_R'):
        assert not W[:, NAMES.index(leaf)].any()
    # Every non-leaf joint drives some vertices fully.
    for j in ('root', 'chest', 'tail_1', 'arm_L', 'arm_R'):
        assert W[:, NAMES.index(j)].max() == pytest.approx(1.0)


def test_weights_blend_half_and_half_at_joints(model):
    # The ring the regressor reads for joint `arm_L` sits on that joint: half chest
    # (the arm bone's joint), half arm_L (the forearm's joint).
    ring = np.flatnonzero(model.J_regressor[NAMES.index('arm_L')])
    w = model.weights[ring]
    np.testing.assert_allclose(w[:, NAMES.index('chest')], 0.5)
    np.testing.assert_allclose(w[:, NAMES.index('arm_L')], 0.5)


# ------------------------------------------------------------------ regressor
def test_joint_regressor_reproduces_rest_joints(model):
    np.testing.assert_allclose(model.J_regressor @ model.v_template, model.J, atol=1e-12)
    np.testing.assert_allclose(model.J_regressor.sum(axis=1), 1.0)
    assert np.all(model.J_regressor >= 0)


# ------------------------------------------------------------------------ mesh
def test_faces_point_outward_and_components_are_closed(model):
    mesh = trimesh.Trimesh(model.v_template, model.faces, process=False)
    parts = mesh.split(only_watertight=False)
    assert len(parts) == model.extra['builder']['num_tubes']
    for part in parts:
        assert part.is_watertight and part.is_winding_consistent
        assert part.volume > 0
    # The signed volume, summed directly over the faces, is positive too.
    tri = model.v_template[model.faces]
    signed = np.einsum('fi,fi->f', tri[:, 0], np.cross(tri[:, 1], tri[:, 2])).sum() / 6
    assert signed == pytest.approx(sum(p.volume for p in parts))


def test_tube_surface_keeps_its_radius(model):
    # Joint rings are circles of the joint radius around the joint.
    r = np.asarray(model.extra['builder']['radii'])
    for j in range(model.num_joints):
        ring = np.flatnonzero(model.J_regressor[j])
        dist = np.linalg.norm(model.v_template[ring] - model.J[j], axis=1)
        np.testing.assert_allclose(dist, r[j])


def test_tip_keypoints_are_the_extreme_vertices(model):
    for leaf in ('head', 'tail_2', 'hand_L'):
        spec = model.keypoints[f'{leaf}_tip']
        tip = model.v_template[spec['vertex']]
        j = NAMES.index(leaf)
        bone = model.J[j] - model.J[model.parents[j]]
        bone /= np.linalg.norm(bone)
        assert np.linalg.norm(tip - model.J[j]) == pytest.approx(0.15)
        # No vertex sticks out further along the bone than the tip.
        ahead = (model.v_template - model.J[j]) @ bone
        assert ahead.max() == pytest.approx((tip - model.J[j]) @ bone)
    for name in NAMES:
        assert model.keypoints[name] == {'joint': name}
    assert 'root_tip' not in model.keypoints and 'chest_tip' not in model.keypoints


def test_a_root_with_one_child_is_a_tip_too():
    # SLEAP skeletons are often rooted at the nose.
    d = build_model_from_skeleton(['nose', 'head', 'tail'], [None, 'nose', 'head'],
                                  [[0, 0, 0], [-1, 0, 0], [-3, 0, 0]], radius=0.2,
                                  tip_keypoints=True)
    assert {'nose_tip', 'tail_tip'} <= set(d.keypoints)
    np.testing.assert_allclose(d.v_template[d.keypoints['nose_tip']['vertex']], [0.2, 0, 0])
    np.testing.assert_allclose(d.v_template[d.keypoints['tail_tip']['vertex']], [-3.2, 0, 0])


def test_default_radius_is_proportional_to_bone_length():
    small = build_model_from_skeleton(NAMES, PARENTS, POSITIONS)
    big = build_model_from_skeleton(NAMES, PARENTS, 10 * POSITIONS)
    np.testing.assert_allclose(big.v_template, 10 * small.v_template, atol=1e-12)
    np.testing.assert_allclose(big.weights, small.weights, atol=1e-12)


def test_radius_per_joint_and_by_name():
    per_joint = np.linspace(0.1, 0.2, len(NAMES))
    a = build_model_from_skeleton(NAMES, PARENTS, POSITIONS, radius=per_joint)
    b = build_model_from_skeleton(NAMES, PARENTS, POSITIONS,
                                  radius=dict(zip(NAMES, per_joint.tolist())))
    np.testing.assert_allclose(a.v_template, b.v_template)
    np.testing.assert_allclose(a.extra['builder']['radii'], per_joint)


# ---------------------------------------------------------------------- shape
def regressed(model: BodyModelData, k: int, amount: float = 1.0) -> np.ndarray:
    return model.J_regressor @ (model.v_template + amount * model.shapedirs[:, :, k])


def test_bone_length_directions_lengthen_their_bones(model):
    names = model.extra['builder']['shape_directions']
    groups = model.extra['builder']['bone_groups']
    step = model.extra['builder']['shape_step']
    rest = bone_lengths(model.J, model.parents)
    for k, name in enumerate(names):
        if not name.startswith('length:'):
            continue
        lengths = bone_lengths(regressed(model, k), model.parents)
        in_group = np.isin(NAMES, groups[name])
        np.testing.assert_allclose(lengths[in_group], (1 + step) * rest[in_group])
        np.testing.assert_allclose(lengths[~in_group], rest[~in_group], atol=1e-12)
        # Bone directions are kept.
        assert np.all(lengths[in_group] > rest[in_group])


def test_size_and_thickness_directions(model):
    names = model.extra['builder']['shape_directions']
    assert names[:2] == ['size', 'thickness']
    rest = bone_lengths(model.J, model.parents)
    np.testing.assert_allclose(bone_lengths(regressed(model, 0), model.parents), 1.1 * rest)
    np.testing.assert_allclose(regressed(model, 1), model.J, atol=1e-12)
    # Thickness inflates the tube around its (unmoved) joints.
    thick = model.v_template + model.shapedirs[:, :, 1]
    ring = np.flatnonzero(model.J_regressor[0])
    np.testing.assert_allclose(np.linalg.norm(thick[ring] - model.J[0], axis=1), 0.15 * 1.1)


def test_regressed_joints_are_linear_in_the_coefficients(model):
    rng = np.random.default_rng(0)
    beta = rng.normal(size=model.num_betas)
    shaped = model.v_template + model.shapedirs @ beta
    P = model.J.copy()
    for k, b in enumerate(beta):
        P += b * (regressed(model, k) - model.J)
    np.testing.assert_allclose(model.J_regressor @ shaped, P, atol=1e-10)


def test_default_bone_groups_merge_mirrored_limbs():
    groups = default_bone_groups(validate_skeleton(NAMES, PARENTS, POSITIONS))
    # Segments end at branch points: the chest (three children) splits the body.
    assert groups == {'length:chest': ['chest'], 'length:tail_2': ['tail_1', 'tail_2'],
                      'length:head': ['head'],
                      'length:hand_L+hand_R': ['arm_L', 'hand_L', 'arm_R', 'hand_R']}


def test_custom_bone_groups_and_num_betas():
    d = build_model_from_skeleton(NAMES, PARENTS, POSITIONS, num_betas=3,
                                  bone_groups={'arms': ['hand_L', 'hand_R']})
    assert d.num_betas == 3
    assert d.extra['builder']['shape_directions'] == ['size', 'thickness', 'arms']
    lengths = bone_lengths(regressed(d, 2), d.parents)
    rest = bone_lengths(d.J, d.parents)
    changed = np.flatnonzero(~np.isclose(lengths, rest))
    assert sorted(NAMES[i] for i in changed) == ['hand_L', 'hand_R']
    with pytest.raises(SkeletonError, match='num_betas=9'):
        build_model_from_skeleton(NAMES, PARENTS, POSITIONS, num_betas=9)
    with pytest.raises(SkeletonError, match="unknown joint 'foot'"):
        build_model_from_skeleton(NAMES, PARENTS, POSITIONS, bone_groups={'x': ['foot']})


# ------------------------------------------------------------------- symmetry
@pytest.mark.parametrize('left,right', [
    ('hip_L', 'hip_R'), ('hip_l', 'hip_r'), ('L_ear', 'R_ear'), ('l_ear', 'r_ear'),
    ('left_paw', 'right_paw'), ('LeftFoot', 'RightFoot'), ('paw.L', 'paw.R'),
    ('Ear_L_tip', 'Ear_R_tip'), ('l_1_co_l', 'l_1_co_r'), ('fore_l_paw', 'fore_r_paw')])
def test_mirror_joint_name(left, right):
    assert mirror_joint_name(left) == right
    assert mirror_joint_name(right) == left


@pytest.mark.parametrize('name', ['tail_1', 'nose', 'spine', 'pelvis', 'lumbar_1', 'wrist'])
def test_names_without_side_markers_have_no_mirror(name):
    assert mirror_joint_name(name) is None


def test_symmetric_pairs(model):
    np.testing.assert_array_equal(model.sym_joint_pairs,
                                  [[NAMES.index('arm_L'), NAMES.index('arm_R')],
                                   [NAMES.index('hand_L'), NAMES.index('hand_R')]])
    # Left comes first whichever side is listed first; unpaired names are skipped.
    pairs = find_symmetric_pairs(['right_eye', 'nose', 'left_eye', 'l_ear'])
    np.testing.assert_array_equal(pairs, [[2, 0]])
    assert find_symmetric_pairs(['a', 'b']) is None


# --------------------------------------------------------------------- errors
def _bad(**changes):
    kwargs = dict(joint_names=list(NAMES), parents=list(PARENTS), rest_positions=POSITIONS.copy())
    kwargs.update(changes)
    return kwargs


def _with_parent(joint: str, parent):
    parents = list(PARENTS)
    parents[NAMES.index(joint)] = parent
    return parents


def _nan_at(joint: str):
    pos = POSITIONS.copy()
    pos[NAMES.index(joint), 1] = np.nan
    return pos


@pytest.mark.parametrize('kwargs,message', [
    (_bad(rest_positions=POSITIONS[:-1]), '9 joint names but 8 rest positions'),
    (_bad(rest_positions=POSITIONS[:, :2]), r'shape \(J, 3\)'),
    (_bad(parents=PARENTS[:-1]), '9 joint names but 8 parents'),
    (_bad(parents=_with_parent('hand_L', 'arm_Left')), "'hand_L' has unknown parent 'arm_Left'"),
    (_bad(parents=_with_parent('chest', None)), r"exactly one root.*\['root', 'chest'\]"),
    (_bad(parents=_with_parent('root', 'tail_1')), 'exactly one root.*found 0'),
    (_bad(parents=_with_parent('chest', 'head')), r"not a tree.*'chest', 'head'"),
    (_bad(parents=_with_parent('arm_L', 'arm_L')), "'arm_L' is its own parent"),
    (_bad(parents=_with_parent('arm_L', 42)), "'arm_L' has parent index 42 out of range"),
    (_bad(rest_positions=np.where(np.arange(9)[:, None] == 6, POSITIONS[5], POSITIONS)),
     "bone 'arm_L' -> 'hand_L' has zero length"),
    (_bad(rest_positions=_nan_at('tail_2')), "joint 'tail_2' is not finite"),
    (_bad(joint_names=NAMES[:-1] + ['arm_L']), r"duplicate joint names: \['arm_L'\]"),
    (_bad(joint_names=[], parents=[], rest_positions=np.zeros((0, 3))), 'no joints'),
    (_bad(joint_names=['a'], parents=[None], rest_positions=np.zeros((1, 3))),
     'at least one bone'),
    (_bad(radius=-1.0), "radius of joint 'root' must be positive"),
    (_bad(radius=[0.1, 0.2]), 'one value per joint'),
    (_bad(radius={'foot': 0.1}), r"unknown joint\(s\) \['foot'\]"),
    (_bad(segments=2), 'segments >= 3'),
    (_bad(blend=0.8), 'blend must be in'),
    (_bad(up_axis='w'), 'up_axis must be one of'),
    (_bad(units='inch'), 'units must be'),
])
def test_bad_skeletons_name_the_problem(kwargs, message):
    with pytest.raises(SkeletonError, match=message):
        build_model_from_skeleton(**kwargs)


def test_skeleton_error_is_a_value_error():
    assert issubclass(SkeletonError, ValueError)


# ------------------------------------------------------------ with SMILModel
def test_smil_model_rest_pose_and_shape(model):
    torch = pytest.importorskip('torch')
    SMILModel = pytest.importorskip('smilfit.body_models').SMILModel
    body = SMILModel(data=model, dtype=torch.float64)
    out = body()
    np.testing.assert_allclose(out.vertices[0].numpy(), model.v_template, atol=1e-12)
    np.testing.assert_allclose(out.joints[0].numpy(), model.J, atol=1e-12)
    beta = torch.zeros(1, model.num_betas, dtype=torch.float64)
    beta[0, 0] = 1.0  # size: every bone 10 % longer
    out = body(betas=beta)
    np.testing.assert_allclose(bone_lengths(out.joints[0].numpy(), model.parents),
                               1.1 * bone_lengths(model.J, model.parents))


# ---------------------------------------------------------------- robustness
def test_any_joint_order_and_random_trees_give_closed_outward_tubes():
    rng = np.random.default_rng(7)
    for _ in range(15):
        J = int(rng.integers(2, 25))
        parents = [-1] + [int(rng.integers(0, j)) for j in range(1, J)]
        pos = np.zeros((J, 3))
        for j in range(1, J):  # random bends, sharp ones included
            pos[j] = pos[parents[j]] + rng.normal(size=3)
        # Shuffle so that children may come before their parents and the root anywhere.
        perm = rng.permutation(J)
        inv = np.argsort(perm)
        shuffled = [-1 if parents[p] < 0 else int(inv[parents[p]]) for p in perm]
        d = build_model_from_skeleton([f'j{p}' for p in perm], shuffled, pos[perm],
                                      radius=0.15, rings=3, segments=6, cap_rings=1)
        np.testing.assert_allclose(d.J_regressor @ d.v_template, d.J, atol=1e-10)
        parts = trimesh.Trimesh(d.v_template, d.faces, process=False).split(
            only_watertight=False)
        assert len(parts) == d.extra['builder']['num_tubes']
        assert all(p.is_watertight and p.volume > 0 for p in parts)


def test_builder_module_re_exports_mesh_from_skeleton():
    """smilfit.body_models.builder is the old address of the mesh_from_skeleton package."""
    from smilfit.body_models import builder, mesh_from_skeleton
    assert builder.__all__ == mesh_from_skeleton.__all__
    for name in builder.__all__:
        assert getattr(builder, name) is getattr(mesh_from_skeleton, name), name
