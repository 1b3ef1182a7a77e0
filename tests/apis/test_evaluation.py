"""smilfit.apis.evaluation: fitting scored like a regressor; per-sample camera names."""
import json

import cv2
import numpy as np
import pytest
import torch
from mmengine.config import Config
from mmengine.dataset import default_collate

from smilfit.apis.evaluation import (_rank_share, evaluate_fitting, fit_to_predictions,
                                     split_sample_indices)
from smilfit.models.regressors.packing import per_view_strings
from smilfit.utils import register_all_modules
from tests.conftest import REPO_ROOT


@pytest.fixture(scope='module')
def tiny_h5(tmp_path_factory):
    from smilfit.datasets.synthetic import generate_synthetic_dataset
    path = tmp_path_factory.mktemp('evaluation') / 'syn.h5'
    generate_synthetic_dataset(path, num_sessions=3, frames_per_session=2, num_views=2,
                               image_size=64, progress=False, seed=3)
    return path


def fitting_cfg(h5, tmp_path):
    cfg = Config.fromfile(str(REPO_ROOT / 'configs' / 'fitting' / 'demo_mouse.py'))
    cfg.data = dict(path=str(h5), batch_size=8)
    cfg.registrant.stages[0].n_iter = 1
    cfg.registrant.stages[1].n_iter = 1
    cfg.test_dataloader = dict(dataset=dict(type='MultiViewHDF5Dataset', ann_file=str(h5),
                                            split='test', split_ratios=(1, 1, 1), seed=0))
    return cfg


def test_per_view_strings_both_layouts():
    collated = default_collate([dict(c=['a0', 'a1']), dict(c=['b0', 'b1']),
                                dict(c=['c0', 'c1'])])['c']      # per camera: tuples of B
    assert per_view_strings(collated, 1, B=3, C=2, key='c') == ['b0', 'b1']
    per_sample = [['a0', 'a1'], ['b0', 'b1'], ['c0', 'c1']]
    assert per_view_strings(per_sample, 2, B=3, C=2, key='c') == ['c0', 'c1']
    # B == C: collated tuples are still told apart from per-sample lists.
    sq = default_collate([dict(c=['a0', 'a1']), dict(c=['b0', 'b1'])])['c']
    assert per_view_strings(sq, 0, B=2, C=2, key='c') == ['a0', 'a1']
    with pytest.raises(ValueError, match="'camera_names'"):
        per_view_strings([['x']], 0, B=3, C=2, key='camera_names')


def test_regressor_predictions_carry_each_samples_camera_names(tiny_h5):
    register_all_modules()
    from smilfit.registry import DATASETS
    from tests.models.helpers import tiny_multiview
    pack = dict(type='PackInputs', meta_keys=('session', 'frame', 'sample_idx',
                                              'camera_names'))
    ds = DATASETS.build(dict(type='MultiViewHDF5Dataset', ann_file=str(tiny_h5),
                             pipeline=[pack]))
    items = [ds[i] for i in range(3)]
    items[1]['data_samples']['camera_names'] = ['left', 'right']    # differ per sample
    batch = default_collate(items)
    torch.manual_seed(0)
    model = tiny_multiview().eval()
    with torch.no_grad():
        data = model.data_preprocessor(batch, False)
        preds = model(data['inputs'], data['data_samples'], mode='predict')
    assert [p['camera_names'] for p in preds] == [['cam_0', 'cam_1'], ['left', 'right'],
                                                  ['cam_0', 'cam_1']]


def test_fit_to_predictions_projects_through_each_view():
    # Two views: identity pose and a camera shifted by 1 in x; f = 100, c = (50, 40).
    K = np.array([[100.0, 0, 50], [0, 100, 40], [0, 0, 1]])
    batch = dict(K=np.stack([K, K])[None], R=np.stack([np.eye(3)] * 2)[None],
                 t=np.array([[[0, 0, 0], [1.0, 0, 0]]]), dist=np.zeros((1, 2, 5)),
                 keypoints_2d=np.zeros((1, 2, 3, 2)), visible=np.ones((1, 2, 3), bool),
                 confidence=np.ones((1, 2, 3)), valid=np.ones((1, 2), bool),
                 image_size=np.full((1, 2, 2), 100), session=np.array([0]),
                 frame=np.array([7]), index=np.array([4]),
                 keypoints_3d=np.zeros((1, 3, 3)))
    model_points = torch.tensor([[[0.0, 0.0, 2.0], [1.0, 0.5, 5.0]]])   # 2 model points
    # model point 1 -> data keypoint 0, model point 0 -> data keypoint 2; data 1 unmatched
    preds = fit_to_predictions(model_points, torch.tensor([1, 0]), torch.tensor([0, 2]), 3,
                               batch, [['a', 'b']], ['k0', 'k1', 'k2'], ['s0'])
    p = preds[0]
    np.testing.assert_allclose(p['pred_keypoints_2d'][0, 0], [50 + 100 * 1 / 5, 40 + 10])
    np.testing.assert_allclose(p['pred_keypoints_2d'][1, 0], [50 + 100 * 2 / 5, 40 + 10])
    np.testing.assert_allclose(p['pred_keypoints_2d'][1, 2], [50 + 100 * 1 / 2, 40])
    assert np.isnan(p['pred_keypoints_2d'][:, 1]).all()
    assert np.isnan(p['pred_keypoints_3d'][1]).all()
    assert (p['session'], p['frame'], p['sample_idx'], p['camera_names']) == \
        ('s0', 7, 4, ['a', 'b'])


def test_rank_share_covers_every_sample_once_plus_padding():
    shares = [_rank_share(7, r, 3) for r in range(3)]
    assert all(len(s) == 3 for s in shares)
    interleaved = np.stack(shares, 1).reshape(-1)[:7]      # mmengine's gather order
    np.testing.assert_array_equal(interleaved, np.arange(7))


def test_fitting_report_matches_direct_computation(tiny_h5, tmp_path):
    """The report's reprojection and PCK numbers equal errors computed here from an
    independent fit of the same split with OpenCV's projection."""
    register_all_modules()
    cfg = fitting_cfg(tiny_h5, tmp_path)
    rows = split_sample_indices(cfg, None)
    assert len(rows) == 2                                   # one of three sessions
    out = evaluate_fitting(cfg, tmp_path / 'report', progress=False)
    summary = json.loads((tmp_path / 'report' / 'summary.json').read_text())
    info = json.loads((tmp_path / 'report' / 'run_info.json').read_text())
    assert info['task'] == 'fitting' and info['mode'] == 'multi_view'
    assert info['num_samples'] == 2
    for plot in ('pck_curve.png', 'error_histograms.png', 'keypoints_3d_error.png'):
        assert (tmp_path / 'report' / plot).is_file()

    # Direct computation: fit the same rows, project with cv2, compare with the GT.
    from smilfit.apis.fitting import observations_from_batch
    from smilfit.datasets import DatasetReader
    from smilfit.registry import REGISTRANTS
    reg_cfg = dict(cfg.registrant, body_model=cfg.body_model, hooks=[])
    reg = REGISTRANTS.build(reg_cfg)
    reader = DatasetReader(tiny_h5)
    reg.setup(dict(keypoint_names=list(reader.keypoint_names), joint_lookup=None))
    batch = reader.read(rows)
    result = reg.fit(reg.to_tensors(observations_from_batch(batch)))
    h = reg.keypoint_handler()
    pts = result.output.keypoints.double().numpy()[:, h.model_index.numpy()]
    data_idx = h.data_index.numpy()
    errors = []
    for b in range(len(rows)):
        for c in range(2):
            cam = {k: np.asarray(batch[k][b, c], np.float64) for k in ('R', 't', 'K', 'dist')}
            obj = np.ascontiguousarray(pts[b]).reshape(-1, 1, 3)
            uv, _ = cv2.projectPoints(obj, cv2.Rodrigues(cam['R'])[0], cam['t'], cam['K'],
                                      cam['dist'])
            gt = batch['keypoints_2d'][b, c][data_idx]
            ok = batch['visible'][b, c][data_idx] & np.isfinite(gt).all(-1)
            errors.append(np.linalg.norm(uv[:, 0] - gt, axis=-1)[ok])
    errors = np.concatenate(errors)
    m = summary['metrics']
    assert m['reproj/num_keypoints'] == len(errors)
    assert m['reproj/mean'] == pytest.approx(errors.mean(), rel=1e-4)
    assert m['reproj/median'] == pytest.approx(np.median(errors), rel=1e-4)
    assert m['kp2d/pck@5px'] == pytest.approx((errors <= 5).mean())
    assert out['metrics']['reproj/mean'] == pytest.approx(m['reproj/mean'])
    # 3D: the fitted keypoints against the dataset's ground truth.
    gt3d = batch['keypoints_3d'][:, data_idx]
    err3d = np.linalg.norm(pts - gt3d, axis=-1)
    assert m['kp3d/mpjpe'] == pytest.approx(err3d[np.isfinite(err3d)].mean(), rel=1e-4)
