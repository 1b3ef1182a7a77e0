"""Fit-in-the-loop on the shared 4-camera mouse session: a network trained on
triangulated points only predicts every frame, every frame is fitted from those starts,
and the network trains on from its weights with the fits as labels (tools/
fit_in_the_loop.py); and the schedule scaling the loop applies per round."""
import json

import h5py
import numpy as np
import pytest
import torch
from mmengine.config import Config

from ..conftest import REPO_ROOT, shared_path
from .test_real_session_regression import small_network

TRAIN_CONFIG = REPO_ROOT / 'configs' / 'regression' / 'mouse_session_resnet18.py'
FIT_CONFIG = REPO_ROOT / 'configs' / 'fitting' / 'mouse_multiview.py'
LOOKUP = REPO_ROOT / 'configs' / 'fitting' / 'mouse_joint_lookup.csv'
START_ITERS = 20


@pytest.fixture(scope='module')
def start(tmp_path_factory):
    """The prepared session (64 px crops) and a network trained 20 iterations on its
    triangulated points (no fit)."""
    session = shared_path('data', 'sleap_anipose_minimal_session', 'minimal_session')
    shared_path('models', 'SMILy_Mouse_static_joints.pkl')
    from mmengine.runner import Runner

    from smilfit.apis.fit_in_the_loop import set_iterations
    from smilfit.cli.preprocess_sleap import main as preprocess
    from smilfit.cli.train import _with_required_hooks
    from smilfit.utils import register_all_modules
    root = tmp_path_factory.mktemp('loop')
    data = root / 'session_64.h5'
    assert preprocess([str(session), str(data), '--crop-mode', 'bbox_crop',
                       '--target-size', '64', '--no-progress']) == 0
    register_all_modules(init_default_scope=True)
    cfg = small_network(Config.fromfile(str(TRAIN_CONFIG)), data, root / 'start')
    set_iterations(cfg, START_ITERS)
    cfg.custom_hooks = _with_required_hooks(cfg.get('custom_hooks'))
    Runner.from_cfg(cfg).train()
    checkpoint = root / 'start' / f'iter_{START_ITERS}.pth'
    assert checkpoint.is_file()
    return data, checkpoint


def _loop_args(data, checkpoint, work_dir, *extra):
    model = str(shared_path('models', 'SMILy_Mouse_static_joints.pkl'))
    return [str(TRAIN_CONFIG), str(FIT_CONFIG), str(checkpoint), '--rounds', '1',
            '--iters', '10', '--work-dir', str(work_dir), '--no-progress',
            '--cfg-options', f'model.body_model.model_path={model}',
            f'model.joint_lookup={LOOKUP}', 'model.backbone.model_name=test_resnet',
            'model.neck.dim=32', 'model.head.dim=32', 'model.head.depth=1',
            f'train_dataloader.dataset.data_root={data.parent}',
            f'train_dataloader.dataset.ann_file={data.name}',
            f'val_dataloader.dataset.data_root={data.parent}',
            f'val_dataloader.dataset.ann_file={data.name}',
            'train_dataloader.batch_size=4',
            '--fit-cfg-options', f'body_model.model_path={model}',
            f'data.joint_lookup={LOOKUP}', *extra]


def test_one_round_fits_from_the_network_and_trains_on_the_fits(start, tmp_path,
                                                               monkeypatch, capsys):
    from smilfit.cli.fit_in_the_loop import main
    from smilfit.apis.evaluation import load_checkpoint_config
    from smilfit.engine.checkpoint_io import load_checkpoint_file
    data, checkpoint = start
    monkeypatch.chdir(tmp_path)
    work = tmp_path / 'loop'
    assert main(_loop_args(data, checkpoint, work)) == 0
    report = json.loads((work / 'rounds.json').read_text())
    assert len(report['rounds']) == 1
    row = report['rounds'][0]
    assert row['samples'] == 120 and row['failed'] == 0 and row['lm_iterations'] > 0
    assert 0 <= row['network_starts'] <= 120

    # the fit started from this round's predictions of the starting network
    predictions = work / 'round_1' / 'predictions' / 'predictions.h5'
    results = work / 'round_1' / 'fit' / 'fit_results.h5'
    assert row['predictions'] == str(predictions) and row['fit'] == str(results)
    with h5py.File(results, 'r') as f:
        stamp = json.loads(f.attrs['config'])
        assert 'samples/network_start' in f
        assert int(f['samples/network_start'][:].sum()) == row['network_starts']
    assert stamp['data']['init_from'] == str(predictions)
    assert stamp['data']['path'] == str(data.resolve())

    # the network trained on from the starting weights, with the fit as its labels
    stored = load_checkpoint_config(row['checkpoint'])
    assert stored.train_dataloader.dataset.fit_results == str(results.resolve())
    assert stored.load_from == str(checkpoint)
    trained = load_checkpoint_file(row['checkpoint'])
    before = load_checkpoint_file(checkpoint)['state_dict']
    after = trained['state_dict']
    moved = [k for k in before if before[k].dtype.is_floating_point
             and not torch.equal(before[k], after[k])]
    assert moved, 'the round trained nothing'
    # ... and is better on the frames the training config holds out than where it began
    assert np.isfinite(row['val_metrics']['reproj/median'])
    assert row['val_metrics']['reproj/median'] < report['start_metrics']['reproj/median']
    out = capsys.readouterr().out
    assert 'network starts' in out and 'rounds.json' in out

    # a second run needs --resume (which redoes nothing) or --overwrite
    assert main(_loop_args(data, checkpoint, work)) == 1
    assert 'holds rounds of an earlier run' in capsys.readouterr().err
    mtime = (work / 'rounds.json').stat().st_mtime_ns
    assert main(_loop_args(data, checkpoint, work, '--resume')) == 0
    assert (work / 'rounds.json').stat().st_mtime_ns == mtime
    # ... of the same run: other configs would reuse steps that no longer fit them
    assert main(_loop_args(data, checkpoint, work, 'data.batch_size=7', '--resume')) == 1
    err = capsys.readouterr().err
    assert 'another checkpoint, data or configs (configs: the configs differ)' in err
    assert (work / 'rounds.json').stat().st_mtime_ns == mtime
    # ... and a run that recorded no configs (an older smilfit's) is not taken for it
    recorded = json.loads((work / 'rounds.json').read_text())
    del recorded['configs']
    (work / 'rounds.json').write_text(json.dumps(recorded))
    assert main(_loop_args(data, checkpoint, work, '--resume')) == 1
    assert 'configs: not recorded there (an older run)' in capsys.readouterr().err


def test_schedule_is_scaled_to_the_iterations_of_a_round():
    from smilfit.apis.fit_in_the_loop import FitInTheLoopError, set_iterations
    cfg = Config.fromfile(str(TRAIN_CONFIG))
    set_iterations(cfg, 100)
    assert cfg.train_cfg.max_iters == cfg.train_cfg.val_interval == 100
    assert cfg.default_hooks.checkpoint.interval == 100
    warmup, cosine = cfg.param_scheduler
    assert (warmup.begin, warmup.end) == (0, 5)        # 20 of 400: the same share
    assert (cosine.begin, cosine.end) == (5, 100)
    epochs = Config(dict(train_cfg=dict(max_epochs=3), param_scheduler=[]))
    with pytest.raises(FitInTheLoopError, match='by epochs'):
        set_iterations(epochs, 10)
    by_epoch = Config(dict(train_cfg=dict(max_iters=10), param_scheduler=[
        dict(type='CosineAnnealingLR', by_epoch=True, begin=0, end=3)]))
    with pytest.raises(FitInTheLoopError, match='epoch-based'):
        set_iterations(by_epoch, 10)
    with pytest.raises(FitInTheLoopError, match='>= 1'):
        set_iterations(Config.fromfile(str(TRAIN_CONFIG)), 0)


def test_missing_checkpoint_and_training_file_are_one_line_errors(tmp_path, capsys):
    from smilfit.cli.fit_in_the_loop import main
    assert main([str(TRAIN_CONFIG), str(FIT_CONFIG), str(tmp_path / 'none.pth'),
                 '--work-dir', str(tmp_path / 'w')]) == 1
    assert 'none.pth does not exist' in capsys.readouterr().err
    checkpoint = tmp_path / 'c.pth'
    checkpoint.write_bytes(b'')
    assert main([str(TRAIN_CONFIG), str(FIT_CONFIG), str(checkpoint), '--work-dir',
                 str(tmp_path / 'w'), '--cfg-options',
                 f'train_dataloader.dataset.data_root={tmp_path}']) == 1
    err = capsys.readouterr().err
    assert 'fit_in_the_loop: error:' in err and 'does not exist' in err
    assert not (tmp_path / 'w').exists()
