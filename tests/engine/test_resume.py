"""``tools/train.py --resume`` continues exactly: the same per-iteration losses, learning
rates, validation results and final weights as an uninterrupted run.

The toy run draws random numbers everywhere mmengine's resume alone would get wrong:
dropout in the model, input noise in the dataset's ``__getitem__`` (main process), a
shuffling sampler, validation (its dataloader draws a seed from torch's generator) between
the checkpoint and the next step, a momentum optimizer, a step LR schedule and an
iteration curriculum. The interrupted run stops right after a checkpoint (and its
validation); the resumed run uses the very same config plus ``--resume``.
"""
import json
import textwrap
from collections import OrderedDict
from pathlib import Path

import pytest
import torch
from mmengine.hooks import Hook
from mmengine.registry import DefaultScope

from smilfit.cli import train as train_cli
from smilfit.registry import HOOKS
from tests.engine.test_train_tool import logged_scalars, unique_name, write_config

N_ITERS = 8
N_EPOCHS = 3


@HOOKS.register_module(name='ResumeTestStop', force=True)
class StopAfter(Hook):
    """Simulates an interruption: training stops after ``iters`` iterations or ``epochs``."""

    def __init__(self, iters=None, epochs=None):
        self.iters, self.epochs = iters, epochs

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None):
        if self.iters is not None and runner.iter + 1 == self.iters:
            runner.train_loop.stop_training = True

    def after_train_epoch(self, runner):
        if self.epochs is not None and runner.epoch + 1 == self.epochs:
            runner.train_loop.stop_training = True


COMMON = """\
    model = dict(type='TrainToolToyModel', dropout=0.3)
    optim_wrapper = dict(optimizer=dict(type='SGD', lr=0.1, momentum=0.9))
    val_dataloader = dict(
        batch_size=4, num_workers=0,
        dataset=dict(type='TrainToolToyDataset', size=8, noise=0.1),
        sampler=dict(type='DefaultSampler', shuffle=False),
        collate_fn=dict(type='default_collate'))
    val_evaluator = dict(type='TrainToolToyMSE')
    val_cfg = dict()
    randomness = dict(seed=123, deterministic=True)
    """

LOOPS = {
    'iter': f"""\
    train_dataloader = dict(
        batch_size=4, num_workers=0,
        dataset=dict(type='TrainToolToyDataset', size=24, noise=0.1),
        sampler=dict(type='InfiniteSampler', shuffle=True),
        collate_fn=dict(type='default_collate'))
    train_cfg = dict(by_epoch=False, max_iters={N_ITERS}, val_interval=2)
    param_scheduler = dict(type='MultiStepLR', by_epoch=False, milestones=[3, 6], gamma=0.5)
    default_hooks = dict(logger=dict(interval=1),
                         checkpoint=dict(interval=2, by_epoch=False))
    log_processor = dict(window_size=1, by_epoch=False)
    custom_hooks = [dict(type='LossWeightCurriculumHook', by_epoch=False,
                         schedule={{0: dict(l2=0.0), 5: dict(l2=0.1)}})]
    """,
    'epoch': f"""\
    train_dataloader = dict(
        batch_size=4, num_workers=0,
        dataset=dict(type='TrainToolToyDataset', size=16, noise=0.1),
        sampler=dict(type='DefaultSampler', shuffle=True),
        collate_fn=dict(type='default_collate'))
    train_cfg = dict(by_epoch=True, max_epochs={N_EPOCHS}, val_interval=1)
    param_scheduler = dict(type='MultiStepLR', by_epoch=True, milestones=[2], gamma=0.5)
    custom_hooks = [dict(type='LossWeightCurriculumHook', schedule={{1: dict(l2=0.1)}})]
    """,
}
STOP = {'iter': dict(iters=N_ITERS // 2), 'epoch': dict(epochs=1)}
LAST_CKPT = {'iter': f'iter_{N_ITERS}.pth', 'epoch': f'epoch_{N_EPOCHS}.pth'}


@pytest.fixture(autouse=True)
def _isolated_default_scope(monkeypatch):
    """Runners set mmengine's current default scope; restore it after each test."""
    monkeypatch.setattr(DefaultScope, '_instance_dict', OrderedDict(DefaultScope._instance_dict))


@pytest.fixture(autouse=True)
def _restore_global_torch_flags():
    """randomness.deterministic=True flips process-wide torch switches: put them back."""
    flags = (torch.are_deterministic_algorithms_enabled(),
             torch.is_deterministic_algorithms_warn_only_enabled(),
             torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark)
    yield
    torch.use_deterministic_algorithms(flags[0], warn_only=flags[1])
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = flags[2:]


def _config(tmp_path: Path, loop: str, extra_hooks: str = '') -> Path:
    body = textwrap.dedent(COMMON) + textwrap.dedent(LOOPS[loop])
    if extra_hooks:
        body = body.replace('custom_hooks = [', f'custom_hooks = [{extra_hooks}, ')
    name = 'stopped.py' if extra_hooks else 'toy.py'
    return write_config(tmp_path / name, body,
                        imports=('tests.engine.test_train_tool', 'tests.engine.test_resume'))


def _train(cfg_file: Path, work_dir: Path, *options: str, drop_hook=None):
    args = train_cli.build_parser().parse_args(
        [str(cfg_file), '--work-dir', str(work_dir), *options,
         '--cfg-options', f'experiment_name={unique_name()}'])
    cfg = train_cli.build_config(args)
    if drop_hook is not None:
        cfg.custom_hooks = [h for h in cfg.custom_hooks if h['type'] != drop_hook]
    train_cli.build_runner(cfg).train()


def _val_mse(work_dir: Path) -> list:
    """Every validation result in order (runs' log dirs are named by start time)."""
    values = []
    for path in sorted(work_dir.glob('*/vis_data/scalars.json')):
        for line in path.read_text().splitlines():
            entry = json.loads(line)
            if 'mse' in entry:
                values.append(entry['mse'])
    return values


@pytest.fixture(scope='module')
def uninterrupted(tmp_path_factory):
    """loop kind -> work dir of a run that was never interrupted (trained once per kind)."""
    runs = {}

    def get(loop: str) -> Path:
        if loop not in runs:
            base = tmp_path_factory.mktemp(f'uninterrupted_{loop}')
            flags = (torch.are_deterministic_algorithms_enabled(),
                     torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark)
            try:
                _train(_config(base, loop), base / 'work')
            finally:
                torch.use_deterministic_algorithms(flags[0])
                torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = flags[1:]
            runs[loop] = base / 'work'
        return runs[loop]
    return get


@pytest.mark.parametrize('loop', ['iter', 'epoch'])
def test_resume_matches_uninterrupted_run(tmp_path, uninterrupted, loop):
    reference = uninterrupted(loop)
    work_dir = tmp_path / 'work'
    stop = ', '.join(f'{k}={v}' for k, v in STOP[loop].items())
    _train(_config(tmp_path, loop, f"dict(type='ResumeTestStop', {stop})"), work_dir)
    first_half = logged_scalars(work_dir, 'loss')
    assert not (work_dir / LAST_CKPT[loop]).exists()  # really interrupted
    _train(_config(tmp_path, loop), work_dir, '--resume')  # latest checkpoint in work_dir

    expected = logged_scalars(reference, 'loss')
    n = N_ITERS if loop == 'iter' else N_EPOCHS * 4
    assert sorted(expected) == list(range(1, n + 1))
    assert 0 < len(first_half) < n
    resumed = logged_scalars(work_dir, 'loss')
    assert resumed == expected  # every iteration's loss, bit for bit
    assert logged_scalars(work_dir, 'lr') == logged_scalars(reference, 'lr')
    assert logged_scalars(work_dir, 'loss_l2') == logged_scalars(reference, 'loss_l2')
    assert _val_mse(work_dir) == _val_mse(reference) and len(_val_mse(reference)) >= 3

    final = torch.load(work_dir / LAST_CKPT[loop])
    final_ref = torch.load(reference / LAST_CKPT[loop])
    for key, value in final_ref['state_dict'].items():
        assert torch.equal(final['state_dict'][key], value), key
    momentum = [s['momentum_buffer'] for s in final['optimizer']['state'].values()]
    momentum_ref = [s['momentum_buffer'] for s in final_ref['optimizer']['state'].values()]
    assert all(torch.equal(a, b) for a, b in zip(momentum, momentum_ref))
    assert torch.equal(final['rng_state']['torch'], final_ref['rng_state']['torch'])


@pytest.mark.parametrize('loop', ['iter', 'epoch'])
def test_resume_without_rng_state_diverges(tmp_path, uninterrupted, loop):
    """The same resume without RandomStateHook: dropout and noise draw other numbers
    (what mmengine alone does), so the test above can fail."""
    reference = uninterrupted(loop)
    work_dir = tmp_path / 'work'
    stop = ', '.join(f'{k}={v}' for k, v in STOP[loop].items())
    _train(_config(tmp_path, loop, f"dict(type='ResumeTestStop', {stop})"), work_dir)
    n_first = len(logged_scalars(work_dir, 'loss'))
    _train(_config(tmp_path, loop), work_dir, '--resume', drop_hook='RandomStateHook')
    resumed = logged_scalars(work_dir, 'loss')
    expected = logged_scalars(reference, 'loss')
    assert sorted(resumed) == sorted(expected)
    assert all(resumed[s] == expected[s] for s in range(1, n_first + 1))
    assert any(resumed[s] != expected[s] for s in range(n_first + 1, len(expected) + 1))


def test_rng_state_round_trip_through_weights_only_checkpoint(tmp_path):
    import random

    import numpy as np

    from smilfit.engine.hooks import capture_rng_state, restore_rng_state
    torch.manual_seed(5), np.random.seed(5), random.seed(5)
    random.gauss(0, 1)  # leaves a cached second normal in Python's generator state
    torch.save(dict(rng_state=capture_rng_state()), tmp_path / 'c.pth')
    draws = (torch.rand(3), np.random.rand(3), np.random.randn(), random.gauss(0, 1))
    torch.manual_seed(0), np.random.seed(0), random.seed(0)
    restore_rng_state(torch.load(tmp_path / 'c.pth')['rng_state'])  # weights_only=True
    again = (torch.rand(3), np.random.rand(3), np.random.randn(), random.gauss(0, 1))
    assert torch.equal(draws[0], again[0])
    np.testing.assert_array_equal(draws[1], again[1])
    assert draws[2:] == again[2:]
