"""A label the joint lookup leaves out is placed by the fit (the shipped multi-camera
config's ``place_unmapped``): on synthetic labels on the skin, the back label left out of
the lookup is placed where it sits on the surface, fitted about as well as mapped to the
joint under it, named in the report, and handed on with the skeleton."""
import json

import h5py
import numpy as np
import pytest
import torch

from smilfit.apis.fitting import fit_dataset
from smilfit.datasets import DatasetReader
from smilfit.datasets.synthetic import build_body_model
from smilfit.datasets.synthetic_animals import generate_animal_session, skin_labels
from smilfit.losses.skeleton_priors import body_length
from smilfit.registrants.marker_placement import KEYPOINT_DEFINITIONS

from ..conftest import mouse_session_config_on_demo_mouse, refit_with_fixed_skeleton

#: The back label: on the skin above spine_2, its neighbours unlabelled.
TRUNK, NEIGHBOURS = 'spine_2', ('spine_1', 'spine_3')


@pytest.fixture(scope='module')
def session(tmp_path_factory):
    tmp = tmp_path_factory.mktemp('unmapped')
    model = build_body_model(None).double()
    labels = skin_labels(model, leave_out=NEIGHBOURS)
    truth = generate_animal_session(
        tmp / 'skin.h5', num_animals=1, frames=16, num_views=4, bone_std=0.03,
        pose_std=0.25, noise_px=0.5, seed=7, return_keypoints_3d=True,
        keypoint_definitions=labels)
    names = list(DatasetReader(tmp / 'skin.h5').keypoint_names)
    torch.set_num_threads(1)
    fits = {}
    for label, lookup, place in (
            ('mapped', {n: n for n in names}, True),
            ('left_out', {n: n for n in names if n != TRUNK}, True),
            ('not_placed', {n: n for n in names if n != TRUNK}, False)):
        cfg = mouse_session_config_on_demo_mouse(tmp / 'skin.h5', batch_size=16)
        cfg.data['joint_lookup'] = lookup
        if not place:
            cfg.registrant.stages = [dict(s, place_unmapped=False)
                                     for s in cfg.registrant.stages]
        fits[label] = (cfg, fit_dataset(cfg, tmp / label, progress=False))
    return dict(model=model, label=labels[TRUNK], truth=truth['keypoints_3d'],
                column=names.index(TRUNK), fits=fits)


def _fitted(results, column):
    with h5py.File(results) as f:
        return f['fitted_keypoints_3d'][:, column], f['samples/index'][:]


def _error(session, label):
    fitted, index = _fitted(session['fits'][label][1], session['column'])
    return float(np.median(np.linalg.norm(fitted - session['truth'][index, session['column']],
                                          axis=-1)))


def test_a_label_left_out_of_the_lookup_is_placed_where_it_sits_on_the_body(session):
    """Its model point is a vertex of the rest surface within 2 % of the body length of
    where the label truly sits (a barycentric point of one triangle), not a joint."""
    with h5py.File(session['fits']['left_out'][1]) as f:
        definitions = json.loads(f.attrs[KEYPOINT_DEFINITIONS])
    placed = definitions['placed:' + TRUNK]
    assert set(placed) == {'vertex'}
    model = session['model']
    with torch.no_grad():
        rest = model(return_vertices=True)
    true = session['label']
    where = (rest.vertices[0, true['vertices']]
             * torch.as_tensor(true['weights'], dtype=torch.float64)[:, None]).sum(0)
    distance = float((rest.vertices[0, placed['vertex']] - where).norm())
    assert distance < 0.02 * body_length(rest.joints_kin[0]), distance


def test_a_placed_label_is_fitted_about_as_well_as_one_mapped_to_the_joint_under_it(
        session):
    """Left out and not placed, the label is not fitted at all (NaN); placed, its fitted
    3D error is within 1.5x of the fit whose lookup maps it to the joint under it."""
    assert np.isnan(_fitted(session['fits']['not_placed'][1], session['column'])[0]).all()
    placed, mapped = _error(session, 'left_out'), _error(session, 'mapped')
    assert placed < 1.5 * mapped, (placed, mapped)


def test_the_report_names_the_placed_model_point(session):
    work = session['fits']['left_out'][1].parent
    places = json.loads((work / 'fit_quality.json').read_text())['label_places']['keypoints']
    assert places[TRUNK]['model_point'] == 'placed:' + TRUNK
    text = (work / 'fit_quality.txt').read_text()
    assert 'placed:' + TRUNK in text and 'the joint lookup left out' in text


def test_a_reused_skeleton_brings_the_placed_labels(session, tmp_path):
    """data.skeleton from the fit that placed the label (held fixed): the refit defines
    the same points, matches the label to its placed point again and fits it where the
    first fit did."""
    cfg, first = session['fits']['left_out']
    again = refit_with_fixed_skeleton(cfg, first, tmp_path / 'again')
    a, _ = _fitted(first, session['column'])
    b, _ = _fitted(again, session['column'])
    scale = float(np.ptp(a, axis=0).max())
    assert float(np.median(np.linalg.norm(a - b, axis=-1))) < 0.02 * scale
