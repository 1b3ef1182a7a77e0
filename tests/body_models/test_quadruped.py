"""The builder's dog: skeleton, StanfordExtra joint lookup, geometry, registry, orientations."""
import numpy as np
import pytest
import torch

from smilfit.body_models import SMILModel
from smilfit.body_models.quadruped import (STANFORDEXTRA_JOINT_LOOKUP,
                                           STANFORDEXTRA_KEYPOINT_NAMES,
                                           camera_facing_orientations, quadruped_model_data,
                                           quadruped_skeleton)
from smilfit.body_models.rotations import axis_angle_to_matrix
from smilfit.body_models.keypoint_naming import match_keypoints
from smilfit.registry import BODY_MODELS


@pytest.fixture(scope='module')
def dog():
    return SMILModel(data=quadruped_model_data())


def test_skeleton_parts():
    names, parents, pos = quadruped_skeleton()
    assert len(names) == 36 and parents[0] < 0 and names[0] == 'pelvis'
    name_of = dict(zip(names, [names[p] if p >= 0 else None for p in parents]))
    # the chains the task asks for: spine, neck, head, jaw, ears, legs with paws, tail
    chains = [['front_paw_L', 'wrist_L', 'elbow_L', 'shoulder_L', 'withers'],
              ['hind_paw_R', 'hock_R', 'stifle_R', 'hip_R', 'pelvis'],
              ['chin', 'jaw', 'head', 'neck', 'withers', 'spine_2', 'spine_1', 'pelvis'],
              ['ear_tip_L', 'ear_base_L', 'head'],
              ['tail_tip', 'tail_4', 'tail_3', 'tail_2', 'tail_1', 'pelvis']]
    for chain in chains:
        for child, parent in zip(chain[:-1], chain[1:]):
            assert name_of[child] == parent, (child, parent)
    i = {n: k for k, n in enumerate(names)}
    # left/right mirror images in y; paws on the ground; nose in front, tail behind
    np.testing.assert_allclose(pos[i['hip_L']] * [1, -1, 1], pos[i['hip_R']])
    assert pos[i['front_paw_L'], 2] < 0.05 and pos[i['hind_paw_R'], 2] < 0.05
    assert pos[i['nose'], 0] > pos[i['head'], 0] > pos[i['pelvis'], 0] > pos[i['tail_tip'], 0]


def test_stanfordextra_lookup_covers_every_keypoint(dog):
    assert len(STANFORDEXTRA_KEYPOINT_NAMES) == 24
    assert sorted(STANFORDEXTRA_JOINT_LOOKUP.values()) == sorted(STANFORDEXTRA_KEYPOINT_NAMES)
    match = match_keypoints(dog.joint_names, list(STANFORDEXTRA_KEYPOINT_NAMES),
                            STANFORDEXTRA_JOINT_LOOKUP, what='joints')
    assert len(match) == 24
    pairs = dict(zip(match.model_names, match.data_names))
    assert pairs['stifle_L'] == 'left_rear_top' and pairs['wrist_R'] == 'right_front_middle'
    # left data names map to left joints (the lookup is not mirrored by mistake)
    for model, data in pairs.items():
        if data.startswith('left_'):
            assert model.endswith('_L'), (model, data)
        if data.startswith('right_'):
            assert model.endswith('_R'), (model, data)


def test_model_geometry(dog):
    assert dog.num_joints == 36 and dog.num_betas == 11
    out = dog(return_vertices=True)
    v = out.vertices[0]
    lo, hi = v.amin(0), v.amax(0)
    # a medium dog in metres: ~1.2 m from nose to tail tip, standing on z = 0
    assert 1.0 < float(hi[0] - lo[0]) < 1.4
    assert abs(float(lo[2])) < 0.01 and 0.8 < float(hi[2]) < 1.0
    assert float(hi[1] + lo[1]) == pytest.approx(0.0, abs=1e-5)  # symmetric in y
    # the shape's first direction is overall size: +1 grows every extent
    big = dog(betas=torch.eye(11)[:1], return_vertices=True).vertices[0]
    assert float((big.amax(0) - big.amin(0))[0]) > float(hi[0] - lo[0]) * 1.05
    assert dog.faces.shape[1] == 3 and int(dog.faces.max()) < dog.num_vertices
    sym = quadruped_model_data().sym_joint_pairs
    assert sym is not None and len(sym) == 11  # 11 left/right joint pairs


def test_registered_builder():
    model = BODY_MODELS.build(dict(type='QuadrupedSMILModel',
                                   builder_options=dict(segments=8)))
    assert isinstance(model, SMILModel) and model.num_joints == 36
    assert model.num_vertices < SMILModel(data=quadruped_model_data()).num_vertices


def test_camera_facing_orientations():
    rot = axis_angle_to_matrix(camera_facing_orientations(4, dtype=torch.float64))
    up, fwd = torch.tensor([0., 0., 1.], dtype=torch.float64), torch.tensor(
        [1., 0., 0.], dtype=torch.float64)
    # model up -> camera up (-y) for every heading
    for r in rot:
        torch.testing.assert_close(r @ up, torch.tensor([0., -1., 0.], dtype=torch.float64))
    # headings 0, 90, 180, 270 degrees: right, away from the camera, left, towards it
    expected = [[1, 0, 0], [0, 0, 1], [-1, 0, 0], [0, 0, -1]]
    for r, e in zip(rot, expected):
        torch.testing.assert_close(r @ fwd, torch.tensor(e, dtype=torch.float64),
                                   atol=1e-12, rtol=0)
    # elevation: the dog's up tilts towards the camera (-z) when looked at from above
    tilted = axis_angle_to_matrix(camera_facing_orientations(1, 30.0, torch.float64))[0]
    u = tilted @ up
    assert float(u[1]) == pytest.approx(-np.cos(np.pi / 6)) and float(u[2]) < 0
    with pytest.raises(ValueError, match='num_yaw'):
        camera_facing_orientations(0)
