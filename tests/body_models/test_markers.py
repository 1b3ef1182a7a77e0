"""Labels as markers on the body: the ``marker`` keypoint kind and its surface places."""
import pytest
import torch

from smilfit.body_models import SMILModel, demo_model_data
from smilfit.body_models.markers import (definitions_from_text, definitions_to_text,
                                         marker_definitions, surface_definitions,
                                         surface_places)
from smilfit.body_models.model_data import ModelValidationError


def _model():
    return SMILModel(data=demo_model_data(), dtype=torch.float64)


def _random_params(model, B=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    J = model.num_joints
    return dict(global_orient=torch.randn(B, 3, generator=g, dtype=torch.float64),
                body_pose=0.4 * torch.randn(B, J - 1, 3, generator=g, dtype=torch.float64),
                betas=torch.randn(B, model.num_betas, generator=g, dtype=torch.float64),
                bone_trans=torch.randn(B, J, 3, generator=g, dtype=torch.float64),
                log_scale=0.1 * torch.randn(B, J, 3, generator=g, dtype=torch.float64),
                transl=torch.randn(B, 3, generator=g, dtype=torch.float64))


def _marker(position, joint, vertices, weights, depth):
    return dict(marker=dict(position=[float(x) for x in position], joint=joint,
                            vertices=list(vertices), weights=list(weights), depth=depth))


def test_a_marker_at_depth_0_moves_exactly_as_its_joint():
    model = _model()
    j = model.joint_names.index('spine_2')
    rest = model(return_vertices=False).joints_kin[0, j]
    defs = dict(model.keypoint_definitions,
                back=_marker(rest, 'spine_2', [433, 434, 449], [0.2, 0.3, 0.5], 0.0))
    model.set_keypoints(defs)
    params = _random_params(model)
    out = model(**params, return_vertices=False)
    back = out.keypoints[:, model.keypoint_names.index('back')]
    torch.testing.assert_close(back, out.joints_kin[:, j], rtol=1e-10, atol=1e-10)


def test_a_marker_at_depth_1_is_its_surface_point_at_rest_and_moves_with_the_skin():
    """At depth 1 a marker is its surface point skinned with that point's weights: at
    rest (any shape) the surface point itself; posed, within the triangle's size of the
    skinned surface point (skinning blends the corners' maps, not their places)."""
    model = _model()
    ids, w = [433, 434, 449], [0.2, 0.3, 0.5]
    rest = model(return_vertices=True).vertices[0]
    surface = (torch.tensor(w, dtype=torch.float64)[:, None] * rest[ids]).sum(0)
    model.set_keypoints(dict(model.keypoint_definitions,
                             back=_marker(surface, 'spine_2', ids, w, 1.0),
                             skin=dict(vertices=ids, weights=w)))
    i, s = model.keypoint_names.index('back'), model.keypoint_names.index('skin')
    betas = torch.randn(2, model.num_betas, dtype=torch.float64)
    shaped = model(betas=betas, return_vertices=False).keypoints
    torch.testing.assert_close(shaped[:, i], shaped[:, s], rtol=1e-10, atol=1e-10)
    posed = model(**_random_params(model), return_vertices=True)
    size = (rest[ids] - rest[ids].mean(0)).norm(dim=-1).max()
    assert float((posed.keypoints[:, i] - posed.keypoints[:, s]).norm(dim=-1).max()) < float(size)


def test_set_keypoints_keeps_dtype_and_device_and_reports_the_definitions():
    model = SMILModel(data=demo_model_data(), dtype=torch.float32)
    defs = surface_definitions(model.keypoint_definitions, ['spine_2'],
                               torch.tensor([[433, 434, 449]]),
                               torch.tensor([[0.2, 0.3, 0.5]], dtype=torch.float64))
    model.set_keypoints(defs)
    assert model.dtype == torch.float32 and model.readout_matrix_0.dtype == torch.float32
    assert model.keypoint_definitions['spine_2'] == dict(vertices=[433, 434, 449],
                                                         weights=[0.2, 0.3, 0.5])
    assert model(return_vertices=False).keypoints.dtype == torch.float32


@pytest.mark.parametrize('marker,message', [
    (dict(position=[0, 0, 0], joint='spine_2', vertices=[1], weights=[1.0]), 'fields'),
    (dict(position=[0, 0], joint='spine_2', vertices=[1], weights=[1.0], depth=0.5),
     'position'),
    (dict(position=[0, 0, 0], joint='spine_9', vertices=[1], weights=[1.0], depth=0.5),
     'spine_9'),
    (dict(position=[0, 0, 0], joint='spine_2', vertices=[1], weights=[1.0], depth=1.5),
     'depth'),
    (dict(position=[0, 0, 0], joint='spine_2', vertices=[1, 2], weights=[0.9, 0.3],
          depth=0.5), 'sum to 1'),
])
def test_bad_marker_definitions_are_refused_naming_the_field(marker, message):
    model = _model()
    with pytest.raises(ModelValidationError, match=message):
        model.set_keypoints(dict(model.keypoint_definitions, back=dict(marker=marker)))


def test_surface_places_finds_the_closest_surface_point_shared_by_the_animals():
    model = _model()
    rest = model(return_vertices=True).vertices                            # (1, V, 3)
    faces = model.faces
    g = torch.Generator().manual_seed(0)
    f = torch.randint(0, faces.shape[0], (6,), generator=g)
    bary = torch.rand(6, 3, generator=g, dtype=torch.float64)
    bary = bary / bary.sum(-1, keepdim=True)
    on_surface = (bary[:, :, None] * rest[0, faces[f]]).sum(1)             # (6, 3)
    # two animals: the second a scaled copy; its points the same surface points
    vertices = torch.cat([rest, 1.1 * rest])
    points = torch.stack([on_surface, 1.1 * on_surface])
    corners, weights, surface = surface_places(points, vertices, faces)
    assert corners.shape == (6, 3) and weights.shape == (6, 3)
    torch.testing.assert_close(weights.sum(-1), torch.ones(6, dtype=torch.float64))
    assert bool((weights >= 0).all())
    torch.testing.assert_close(surface, points, rtol=0, atol=1e-9)
    placed = (weights[:, :, None] * vertices[:, corners]).sum(-2)
    torch.testing.assert_close(placed, points, rtol=0, atol=1e-9)


def test_definitions_round_trip_as_json_text_and_refuse_other_text():
    model = _model()
    defs = marker_definitions(model.keypoint_definitions, ['spine_2'],
                              torch.tensor([[433, 434, 449]]),
                              torch.tensor([[0.2, 0.3, 0.5]], dtype=torch.float64),
                              torch.tensor([0.4]), torch.tensor([2]),
                              torch.tensor([[1.0, 2.0, 3.0]]), model.joint_names)
    assert defs['spine_2']['marker']['joint'] == model.joint_names[2]
    back = definitions_from_text(definitions_to_text(defs))
    assert back == defs
    model.set_keypoints(back)
    with pytest.raises(ValueError, match='JSON object'):
        definitions_from_text('[1, 2]')
