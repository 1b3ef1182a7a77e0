"""tools/test.py (smilfit.cli.test): a trained regressor and a fitting config, same report."""
import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

from smilfit.cli import test as test_cli
from tests.conftest import REPO_ROOT

TRAIN_CONFIG = REPO_ROOT / 'configs' / 'regression' / 'synthetic_multiview_resnet18.py'
FIT_CONFIG = REPO_ROOT / 'configs' / 'benchmark' / 'synthetic_fit_2view.py'


def tiny_config(tmp, h5):
    """The regression demo config made tiny: 3 sessions x 2 frames, timm's test_resnet,
    2 training iterations (one checkpoint)."""
    text = f'''
    _base_ = [{str(TRAIN_CONFIG)!r}]
    data = dict(path={str(h5)!r}, synthetic=dict(num_sessions=3, frames_per_session=2))
    train_dataloader = dict(batch_size=2, dataset=dict(ann_file={str(h5)!r},
                            split_ratios=(1, 1, 1)))
    val_dataloader = dict(batch_size=2, dataset=dict(ann_file={str(h5)!r},
                          split='test', split_ratios=(1, 1, 1)))
    test_dataloader = val_dataloader
    model = dict(backbone=dict(model_name='test_resnet'),
                 neck=dict(dim=32, depth=1, num_heads=4),
                 head=dict(dim=32, depth=1, num_heads=4, num_iterations=2))
    train_cfg = dict(max_iters=2, val_interval=100)
    param_scheduler = []
    default_hooks = dict(checkpoint=dict(interval=2), logger=dict(interval=1))
    work_dir = {str(tmp / 'train')!r}
    '''
    path = tmp / 'tiny_regression.py'
    path.write_text(textwrap.dedent(text))
    return path


@pytest.fixture(scope='module')
def trained(tmp_path_factory):
    """(config path, checkpoint path, data path) of a 2-iteration tools/train.py run."""
    from smilfit.cli import train as train_cli
    tmp = tmp_path_factory.mktemp('test_tool')
    h5 = tmp / 'syn.h5'
    cfg = tiny_config(tmp, h5)
    assert train_cli.main([str(cfg)]) == 0
    ckpt = tmp / 'train' / 'iter_2.pth'
    assert ckpt.is_file()
    return cfg, ckpt, h5


def direct_errors(cfg_path, ckpt):
    """Predict the test split here and compute the 2D / 3D errors with numpy."""
    from smilfit.apis.inference import load_regressor
    from smilfit.registry import DATASETS
    from mmengine.dataset import default_collate
    model, cfg = load_regressor(ckpt, cfg_path)
    ds_cfg = dict(cfg.test_dataloader.dataset)
    ds = DATASETS.build(ds_cfg)
    preds = []
    with torch.no_grad():
        for start in range(0, len(ds), 2):
            batch = default_collate([ds[i] for i in range(start, min(start + 2, len(ds)))])
            data = model.data_preprocessor(batch, False)
            preds += model(data['inputs'], data['data_samples'], mode='predict')
    e2d, e3d = [], []
    for p in preds:
        err = np.linalg.norm(p['pred_keypoints_2d'].numpy() - p['gt_keypoints_2d'].numpy(),
                             axis=-1)
        ok = p['visible'].numpy() & p['view_valid'].numpy()[:, None] & np.isfinite(err)
        e2d.append(err[ok])
        d = np.linalg.norm(p['pred_keypoints_3d'].numpy() - p['gt_keypoints_3d'].numpy(), axis=-1)
        e3d.append(d[np.isfinite(d)])
    return np.concatenate(e2d), np.concatenate(e3d), len(ds)


def test_regression_checkpoint_report_matches_direct_computation(trained, tmp_path):
    cfg, ckpt, _ = trained
    out = tmp_path / 'report'
    assert test_cli.main([str(cfg), str(ckpt), '--out-dir', str(out)]) == 0
    summary = json.loads((out / 'summary.json').read_text())
    info = json.loads((out / 'run_info.json').read_text())
    assert (info['task'], info['mode'], info['num_views']) == ('regression', 'multi_view', 2)
    for name in ('pck_curve.png', 'error_histograms.png', 'keypoints_3d_error.png',
                 'per_joint_kp2d_px.png', 'summary.txt'):
        assert (out / name).is_file(), name
    assert (out / 'raw' / 'reproj' / 'errors_px.npy').is_file()
    e2d, e3d, n = direct_errors(cfg, ckpt)
    m = summary['metrics']
    assert info['num_samples'] == n == m['kp2d/num_samples']
    assert m['reproj/num_keypoints'] == len(e2d)
    assert m['reproj/mean'] == pytest.approx(e2d.mean(), rel=1e-4)
    assert m['reproj/median'] == pytest.approx(np.median(e2d), rel=1e-4)
    assert m['kp2d/pck@10px'] == pytest.approx((e2d <= 10).mean())
    assert m['kp3d/mpjpe'] == pytest.approx(e3d.mean(), rel=1e-4)
    raw = np.load(out / 'raw' / 'reproj' / 'errors_px.npy')
    assert np.nanmean(raw) == pytest.approx(e2d.mean(), rel=1e-4)
    # per camera, the report names the recording's cameras (not view slots)
    from smilfit.datasets.hdf5_format import DatasetReader
    with DatasetReader(trained[2]) as reader:
        cameras = {n for row in reader.camera_names for n in row}
    for group in ('reproj', 'kp2d'):
        named = {k.split('/')[2] for k in m if k.startswith(f'{group}/per_camera/')}
        assert named and named <= cameras, (named, cameras)


def test_checkpoint_alone_uses_its_stored_config(trained, tmp_path):
    _, ckpt, _ = trained
    out = tmp_path / 'r'
    assert test_cli.main([str(ckpt), '--out-dir', str(out), '--no-plots']) == 0
    info = json.loads((out / 'run_info.json').read_text())
    assert info['model_type'] == 'MultiViewRegressor'
    assert not (out / 'pck_curve.png').exists()


def test_fitting_config_writes_the_same_report(trained, tmp_path):
    _, _, h5 = trained
    out = tmp_path / 'fit'
    argv = [str(FIT_CONFIG), '--out-dir', str(out), '--no-progress', '--cfg-options',
            f'data.path={h5}', 'data.synthetic=None', f'test_dataloader.dataset.ann_file={h5}',
            'test_dataloader.dataset.split=test', 'test_dataloader.dataset.split_ratios=[1,1,1]',
            'registrant.stages.0.n_iter=1', 'registrant.stages.1.n_iter=1']
    assert test_cli.main(argv) == 0
    info = json.loads((out / 'run_info.json').read_text())
    assert (info['task'], info['mode'], info['num_samples']) == ('fitting', 'multi_view', 2)
    summary = json.loads((out / 'summary.json').read_text())
    assert {'pck_curve.png', 'error_histograms.png', 'keypoints_3d_error.png'} <= \
        set(summary['plots'])
    # Noise-free synthetic keypoints: the fit reprojects well below the regressor's error.
    assert summary['metrics']['reproj/mean'] < 5.0
    # An existing report is not replaced without --overwrite.
    assert test_cli.main(argv) == 1


def test_errors_and_help(trained, capsys):
    cfg, _, _ = trained
    assert test_cli.main([str(cfg)]) == 1
    assert 'needs a CHECKPOINT' in capsys.readouterr().err
    assert test_cli.main([str(FIT_CONFIG), 'x.pth']) == 1
    assert 'fitting needs no CHECKPOINT' in capsys.readouterr().err
    assert test_cli.main(['missing.py']) == 1
    res = subprocess.run([sys.executable, str(REPO_ROOT / 'tools' / 'test.py'), '--help'],
                         capture_output=True, text=True, cwd=REPO_ROOT)
    assert res.returncode == 0 and 'fitting' in res.stdout


@pytest.mark.slow
def test_distributed_matches_single_process(trained, tmp_path):
    """torchrun with 2 CPU processes: results gathered across ranks equal one process."""
    cfg, ckpt, _ = trained
    one, two = tmp_path / 'one', tmp_path / 'two'
    assert test_cli.main([str(cfg), str(ckpt), '--out-dir', str(one), '--no-plots']) == 0
    cmd = [sys.executable, '-m', 'torch.distributed.run', '--nproc_per_node', '2',
           '--master_port', '29517', str(REPO_ROOT / 'tools' / 'test.py'), str(cfg),
           str(ckpt), '--out-dir', str(two), '--no-plots', '--launcher', 'pytorch']
    res = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO_ROOT, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    a = json.loads((one / 'summary.json').read_text())['metrics']
    b = json.loads((two / 'summary.json').read_text())['metrics']
    assert json.loads((two / 'run_info.json').read_text())['world_size'] == 2
    for key in ('reproj/mean', 'kp2d/pck@10px', 'kp3d/mpjpe', 'kp2d/num_keypoints'):
        assert b[key] == pytest.approx(a[key], rel=1e-5), key
