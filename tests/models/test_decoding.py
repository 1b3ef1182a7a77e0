"""Decoding head outputs (smilfit.models.regressors.decoding): per-view batch tensors,
calibration, codecs and the regressor's decode."""
import copy

import pytest
import torch

from smilfit.models.regressors.decoding import (build_camera_codec, calibration,
                                                decode_prediction, handler_params, image_size,
                                                view_tensor)

from .helpers import tiny_multiview


def test_view_tensor_and_calibration():
    samples = dict(K=torch.eye(3).expand(4, 3, 3), R=torch.eye(3).expand(4, 1, 3, 3),
                   view_valid=torch.ones(4, dtype=torch.bool))
    assert view_tensor(samples, 'K', 4, 1, 2).shape == (4, 1, 3, 3)      # squeezed: restored
    assert view_tensor(samples, 'R', 4, 1, 2).shape == (4, 1, 3, 3)
    assert view_tensor(samples, 'view_valid', 4, 1, 0).shape == (4, 1)
    assert view_tensor(samples, 't', 4, 1, 1) is None and view_tensor(None, 'K', 4, 1, 2) is None
    assert calibration(samples, 4, 1) is None                           # no t
    samples['t'] = torch.zeros(4, 3)
    assert sorted(calibration(samples, 4, 1)) == ['K', 'R', 't']
    assert image_size((48, 64), 'cpu').tolist() == [64, 48]


def test_camera_codec_distance_from_fill():
    codec = build_camera_codec(dict(fov_deg=90.0, fill=0.5), body_length=10.0)
    assert codec.distance == pytest.approx(10.0)                         # 10 / (2 * 1 * 0.5)
    assert build_camera_codec(dict(distance=3.0), 10.0).distance == 3.0


def test_decode_prediction_is_the_regressor_decode(multiview_batch):
    model = tiny_multiview()
    data = model.data_preprocessor(copy.deepcopy(multiview_batch), False)
    s = data['data_samples']
    pred = dict(body=model.body_codec.init_vector[None].expand(4, -1), cameras=None)
    got = decode_prediction(pred, s, (64, 64), model.body_codec, model.camera_codec,
                            model.body_model, model.num_views)
    want = model.decode(pred, s, (64, 64))
    assert torch.equal(got['output'].keypoints, want['output'].keypoints)
    assert torch.equal(got['cameras']['K'], s['K'])                      # fixed calibrated
    params = handler_params(got)
    assert torch.equal(params['camera_R'], s['R']) and 'body_pose' in params
    with pytest.raises(KeyError, match='calibrated'):
        decode_prediction(pred, {}, (64, 64), model.body_codec, model.camera_codec,
                          model.body_model, model.num_views)


def test_names_stay_importable_from_the_regressor_modules():
    """Names that moved out of regressors/base.py are still importable there."""
    from smilfit.losses import param_supervision, triangulation
    from smilfit.models.regressors import base, keypoints, packing
    from smilfit.models.regressors import decoding
    moved = dict(triangulation_consistency=triangulation, rotation_geodesic_sq=param_supervision,
                 ROTATION_LOSSES=param_supervision, DEFAULT_PARAM_WEIGHTS=param_supervision,
                 rest_body_length=decoding, per_view_strings=packing, META_KEYS=packing,
                 PER_VIEW_META_KEYS=packing, KeypointCountError=keypoints)
    for name, home in moved.items():
        assert getattr(base, name) is getattr(home, name), name
        assert name in base.__all__
