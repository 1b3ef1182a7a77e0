"""A label that sits consistently away from its joint is absorbed by the animal's keypoint
offset, not taken for label noise.

A synthetic session (the demo mouse, 6 cameras, 30 frames, 0.5 px label noise, every label
off its joint by about 5 % of the body length in the joint's frame) in which one label, the
right hind paw, sits 20 % of the body length from its joint (a user's joint lookup that
maps a label to the wrong joint). Fitted on 2 cameras by
``configs/fitting/mouse_multiview.py`` and scored in the 4 left out, that keypoint's
held-out error is within twice the other keypoints'. Without starting the offsets from the
residuals its noise scale takes the displacement for noise, the skeleton prior holds its
offset back, and it is about four times theirs.
"""
import numpy as np
import pytest
import torch
from mmengine.config import Config

from smilfit.apis.holdout import evaluate_holdout_views
from smilfit.datasets.synthetic import build_body_model
from smilfit.datasets.synthetic_animals import (body_length, displaced_label,
                                                generate_animal_session)

from ..conftest import REPO_ROOT

DISPLACED = 'hind_paw_R'


@pytest.fixture(scope='module')
def session(tmp_path_factory):
    tmp = tmp_path_factory.mktemp('displaced')
    extra = displaced_label(build_body_model(None), DISPLACED, 0.2, seed=9)
    generate_animal_session(tmp / 'session.h5', num_animals=1, frames=30, num_views=6,
                            bone_std=0.03, offset_std=0.05, pose_std=0.25, noise_px=0.5,
                            seed=9, keypoint_offsets=extra)
    return tmp


def _ratio(session, tmp, offsets_from_residuals):
    """The displaced keypoint's held-out median over the median of the others'."""
    cfg = Config.fromfile(str(REPO_ROOT / 'configs' / 'fitting' / 'mouse_multiview.py'))
    cfg.body_model = dict(type='DemoSMILModel')
    cfg.data = dict(path=str(session / 'session.h5'), batch_size=64)
    for handler in cfg.registrant.handlers:
        if handler['type'] == 'Keypoint2DHandler':
            handler['offsets_from_residuals'] = offsets_from_residuals
    torch.set_num_threads(1)
    report = evaluate_holdout_views(cfg, tmp, [2], max_subsets=3, progress=False)
    keypoints = report['k']['2']['keypoints']
    others = [g['fit_median_px'] for name, g in keypoints.items()
              if name != DISPLACED and g['fit_median_px'] is not None]
    return keypoints[DISPLACED]['fit_median_px'] / float(np.median(others))


def test_a_displaced_label_is_absorbed_by_its_offset(session, tmp_path):
    assert _ratio(session, tmp_path, True) < 2.0


def test_without_the_offset_start_it_is_taken_for_noise(session, tmp_path):
    """The check above fails without the mechanism it tests."""
    assert _ratio(session, tmp_path, False) > 2.0


def test_displaced_label_places_one_label_by_body_lengths():
    model = build_body_model(None)
    extra = displaced_label(model, DISPLACED, 0.2, num_animals=2, seed=9)
    norms = np.linalg.norm(extra, axis=-1)
    k = list(model.keypoint_names).index(DISPLACED)
    np.testing.assert_allclose(norms[:, k], 0.2 * body_length(model))
    assert (np.delete(norms, k, axis=1) == 0).all()
    with pytest.raises(ValueError, match='not one of'):
        displaced_label(model, 'no_such_label', 0.2)
