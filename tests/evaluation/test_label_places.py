"""Where each label sits on the fitted body: a label placed on the skin is on it, moved by
the joint whose skinning dominates there; one placed far off its joint is reported far off
the surface; the fit report lists every keypoint's place."""
import json

import numpy as np
import pytest
import torch

from smilfit.body_models import SMILModel, demo_model_data
from smilfit.evaluation.label_places import format_label_places, label_places
from smilfit.registry import HANDLERS

from ..conftest import mouse_session_config_on_demo_mouse


@pytest.fixture(scope='module')
def model():
    return SMILModel(data=demo_model_data(), dtype=torch.float64)


def _handler(model):
    handler = HANDLERS.build(dict(type='Keypoint2DHandler', name='kp2d', source='keypoints',
                                  offsets_frame='joint'))
    handler.setup(model, dict(keypoint_names=list(model.keypoint_names)))
    return handler


def test_a_label_moved_onto_a_vertex_is_on_the_skin_the_vertexs_joint_moves(model):
    handler = _handler(model)
    names = list(model.keypoint_names)
    with torch.no_grad():
        rest = model(global_orient=torch.zeros(1, 3, dtype=torch.float64))
    # every keypoint's offset moves it onto the vertex nearest to it (the rest frames
    # of the demo model are the world's axes: offsets in joint frames are world offsets)
    assert torch.allclose(rest.joint_transforms[0, :, :3, :3],
                          torch.eye(3, dtype=torch.float64).expand(model.num_joints, 3, 3))
    kp, verts = rest.keypoints[0], rest.vertices[0]
    nearest = torch.cdist(kp, verts).argmin(1)
    offsets = (verts[nearest] - kp)[None].numpy()
    # a second animal whose first label sits 20 % of the body length off that vertex
    far = offsets.copy()
    direction = (verts[nearest[0]] - verts.mean(0)).numpy()
    places0 = label_places(model, handler, names, dict(param_keypoint_offsets=offsets))
    length = places0['body_length']
    far[0, 0] += 0.2 * length * direction / np.linalg.norm(direction)
    skeleton = dict(param_keypoint_offsets=np.concatenate([offsets, far]),
                    fitted=np.array([True, True]))
    places = label_places(model, handler, names, skeleton)
    for row in places0['keypoints'].values():
        assert row['off_surface'] < 1e-9
    weights = model.lbs_weights[nearest]                        # (Kp, J)
    joint_names = list(model.joint_names)
    for name, w in zip(names, weights):
        row = places0['keypoints'][name]
        assert w[joint_names.index(row['moved_by'])] >= 0.5 * w.max()
        assert row['model_point'] == name
    first = places['keypoints'][names[0]]['off_surface_per_animal']
    assert first[0] < 1e-9 and 0.05 < first[1] <= 0.2 + 1e-9     # off, at most 20 %
    # an animal that was never fitted is left out
    skeleton['fitted'] = np.array([True, False])
    kept = label_places(model, handler, names, skeleton)
    assert len(kept['keypoints'][names[0]]['off_surface_per_animal']) == 1
    text = format_label_places(places)
    assert names[0] in text and 'skin moved by' in text


def test_no_surface_no_places(model):
    handler = _handler(model)

    class NoFaces:
        faces = None
    assert label_places(NoFaces(), handler, list(model.keypoint_names)) == dict(
        body_length=None, keypoints={})
    assert format_label_places(dict(body_length=None, keypoints={})) == ''


def test_the_fit_report_lists_where_each_label_sits(tmp_path):
    """A fit of the shipped config: fit_quality.txt and .json name every keypoint's model
    point, the joint moving the skin under it and its distance from the skin; the label
    placed 15 % of the body length from the knee is the one farthest off the surface."""
    from smilfit.apis.fitting import fit_dataset
    from smilfit.datasets.synthetic import build_body_model
    from smilfit.datasets.synthetic_animals import displaced_label, generate_animal_session
    displaced = displaced_label(build_body_model(None), 'knee_L', 0.15, seed=9)
    generate_animal_session(tmp_path / 'a.h5', num_animals=1, frames=8, num_views=4,
                            noise_px=0.5, pose_std=0.3, seed=1, keypoint_offsets=displaced)
    cfg = mouse_session_config_on_demo_mouse(tmp_path / 'a.h5', batch_size=8)
    fit_dataset(cfg, tmp_path / 'work', progress=False)
    report = json.loads((tmp_path / 'work' / 'fit_quality.json').read_text())
    rows = report['label_places']['keypoints']
    assert set(rows) == set(report['keypoints'])
    off = {name: row['off_surface'] for name, row in rows.items()}
    assert max(off, key=off.get) == 'knee_L'
    text = (tmp_path / 'work' / 'fit_quality.txt').read_text()
    assert 'Where each label sits' in text and 'knee_L' in text.split('Where each label')[1]


def test_both_tables_say_what_a_placed_model_point_is_where_one_is_listed():
    from smilfit.evaluation.label_places import label_places_markdown
    row = dict(marker_depth=None, moved_by='spine_2', off_surface=0.01)
    mapped = dict(body_length=1.0, keypoints={'Nose': dict(row, model_point='nose')})
    placed = dict(body_length=1.0, keypoints={'Nose': dict(row, model_point='nose'),
                                              'Back': dict(row, model_point='placed:Back')})
    for table in (format_label_places, label_places_markdown):
        assert 'joint lookup left out' not in table(mapped)
        text = table(placed)
        assert 'placed:Back' in text and 'joint lookup left out' in text
