"""tools/train.py (smilfit.cli.train): options, config assembly, checkpoints, base configs.

Also home of the toy model and dataset that test_resume.py, test_curriculum_hook.py and
test_ddp_training.py train (configs load them with ``custom_imports`` of this module,
so subprocesses find them too).
"""
import json
import math
import textwrap
import uuid
from collections import OrderedDict
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import torch.nn as nn
from mmengine.config import Config
from mmengine.evaluator import BaseMetric
from mmengine.model import BaseModel
from mmengine.registry import DefaultScope
from torch.utils.data import Dataset

import smilfit
from smilfit.cli import train as train_cli
from smilfit.engine.hooks import CheckpointMetaHook
from smilfit.registry import DATASETS, METRICS, MODELS
from tests.conftest import REPO_ROOT

THIS_MODULE = 'tests.engine.test_train_tool'


# --- toy model, dataset and metric (shared with the other training tests) -------------

@MODELS.register_module(name='TrainToolToyModel', force=True)
class ToyModel(BaseModel):
    """y = w . x + b, with two weighted losses: ``loss_fit`` (MSE) and ``loss_l2`` (|w|^2).

    ``used_weights`` records the loss weights of every training forward (curriculum
    tests); dropout on the input draws from torch's global generator (resume tests).
    """

    def __init__(self, loss_weights=None, dropout: float = 0.0):
        super().__init__()
        self.lin = nn.Linear(2, 1)
        with torch.no_grad():
            self.lin.weight.copy_(torch.tensor([[0.3, -0.2]]))
            self.lin.bias.zero_()
        self.drop = nn.Dropout(dropout)
        self.loss_weights = dict(loss_weights or dict(fit=1.0, l2=0.0))
        self.used_weights = []

    def set_loss_weight(self, name, weight):
        if name not in self.loss_weights:
            raise KeyError(name)
        self.loss_weights[name] = float(weight)

    def checkpoint_meta(self):
        return dict(body_model_path=Path('models') / 'toy.json', joint_names=['root', 'tip'])

    def forward(self, x, y, mode='tensor'):
        pred = self.lin(self.drop(x))
        if mode == 'loss':
            self.used_weights.append(dict(self.loss_weights))
            return dict(loss_fit=self.loss_weights['fit'] * ((pred - y) ** 2).mean(),
                        loss_l2=self.loss_weights['l2'] * (self.lin.weight ** 2).sum())
        if mode == 'predict':
            return [dict(pred=p, target=t) for p, t in zip(pred, y)]
        return pred


@DATASETS.register_module(name='TrainToolToyDataset', force=True)
class ToyDataset(Dataset):
    """``size`` points on y = 2 x0 - x1 + 0.5; ``noise`` > 0 adds input noise drawn from
    torch's global generator in ``__getitem__`` (an augmentation in the main process)."""

    def __init__(self, size: int = 16, noise: float = 0.0):
        self.size, self.noise = size, noise
        self.metainfo = dict(name='toy')

    def __len__(self):
        return self.size

    def __getitem__(self, i):
        x = torch.tensor([math.sin(i), math.cos(2 * i)])
        y = torch.tensor([2 * x[0] - x[1] + 0.5])
        if self.noise:
            x = x + self.noise * torch.randn(2)
        return dict(x=x, y=y)


@METRICS.register_module(name='TrainToolToyMSE', force=True)
class ToyMSE(BaseMetric):
    def process(self, data_batch, data_samples):
        self.results.extend(float((s['pred'] - s['target']) ** 2) for s in data_samples)

    def compute_metrics(self, results):
        return dict(mse=sum(results) / len(results))


def write_config(path: Path, body: str, imports=(THIS_MODULE,),
                 bases=('default_runtime.py',), own_schedule: bool = True) -> Path:
    """A config on ``configs/_base_/<bases>`` with the toy model, then ``body``.

    ``own_schedule=False`` leaves train_cfg and optim_wrapper to the bases.
    """
    base_paths = [str(REPO_ROOT / 'configs' / '_base_' / b) for b in bases]
    schedule = textwrap.dedent("""\
        train_cfg = dict(by_epoch=True, max_epochs=2)
        optim_wrapper = dict(optimizer=dict(type='SGD', lr=0.2))
        """) if own_schedule else ''
    text = textwrap.dedent(f"""\
        _base_ = {base_paths!r}
        custom_imports = dict(imports={list(imports)!r}, allow_failed_imports=False)
        model = dict(type='TrainToolToyModel')
        train_dataloader = dict(
            batch_size=4, num_workers=0,
            dataset=dict(type='TrainToolToyDataset', size=16),
            sampler=dict(type='DefaultSampler', shuffle=True),
            collate_fn=dict(type='default_collate'))
        default_hooks = dict(logger=dict(interval=1), checkpoint=dict(interval=1))
        log_processor = dict(window_size=1)
        """) + schedule + textwrap.dedent(body)
    path.write_text(text)
    return path


def unique_name() -> str:
    """An experiment name: Runners in one process must not share MessageHub/loggers."""
    return f'exp_{uuid.uuid4().hex[:12]}'


def logged_scalars(work_dir: Path, key: str) -> dict:
    """step -> value of ``key`` from every run's vis_data/scalars.json under work_dir."""
    values = {}
    for path in sorted(work_dir.glob('*/vis_data/scalars.json')):
        for line in path.read_text().splitlines():
            entry = json.loads(line)
            if key in entry and 'step' in entry and 'mse' not in entry:
                assert values.setdefault(entry['step'], entry[key]) == entry[key]
    return values


@pytest.fixture(autouse=True)
def _isolated_default_scope(monkeypatch):
    """Runners set mmengine's current default scope; restore it after each test."""
    monkeypatch.setattr(DefaultScope, '_instance_dict', OrderedDict(DefaultScope._instance_dict))


def _args(*argv):
    return train_cli.build_parser().parse_args([str(a) for a in argv])


# --- options -> config -------------------------------------------------------------------

def test_help_describes_tool(capsys):
    with pytest.raises(SystemExit) as exit_info:
        train_cli.main(['--help'])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    for option in ('--resume', '--amp', '--amp-dtype', '--cfg-options', '--launcher',
                   '--work-dir'):
        assert option in out


def test_config_defaults(tmp_path):
    cfg_file = write_config(tmp_path / 'my_toy.py', '')
    cfg = train_cli.build_config(_args(cfg_file))
    assert cfg.work_dir == str(Path('work_dirs') / 'my_toy')
    assert cfg.launcher == 'none'
    assert cfg.default_scope == 'smilfit'
    assert cfg.get('resume') is False and cfg.get('load_from') is None
    # default_runtime lists the required hooks: not added a second time
    assert [h['type'] for h in cfg.custom_hooks] == ['CheckpointMetaHook', 'RandomStateHook',
                                                     'RigUnitsHook', 'DataSplitHook']
    assert cfg.optim_wrapper.get('type', 'OptimWrapper') == 'OptimWrapper'


def test_options_reach_the_config(tmp_path):
    cfg_file = write_config(tmp_path / 'toy.py', "custom_hooks = [dict(type='EMAHook')]\n")
    ckpt = tmp_path / 'epoch_1.pth'
    ckpt.write_bytes(b'')
    cfg = train_cli.build_config(_args(
        cfg_file, '--work-dir', tmp_path / 'wd', '--launcher', 'pytorch', '--resume', ckpt,
        '--cfg-options', 'train_cfg.max_epochs=7', 'optim_wrapper.optimizer.lr=0.5'))
    assert cfg.work_dir == str(tmp_path / 'wd')
    assert cfg.launcher == 'pytorch'
    assert cfg.resume is True and cfg.load_from == str(ckpt)
    assert cfg.train_cfg.max_epochs == 7 and cfg.optim_wrapper.optimizer.lr == 0.5
    # the config's own hooks are kept; the required ones are appended
    assert [h['type'] for h in cfg.custom_hooks] == ['EMAHook', 'CheckpointMetaHook',
                                                     'RandomStateHook', 'RigUnitsHook',
                                                     'DataSplitHook']
    auto = train_cli.build_config(_args(cfg_file, '--resume'))
    assert auto.resume is True and auto.load_from is None


def test_missing_inputs_fail_clearly(tmp_path, capsys):
    cfg_file = write_config(tmp_path / 'toy.py', '')
    assert train_cli.main([str(cfg_file), '--resume', str(tmp_path / 'nope.pth')]) == 1
    assert 'nope.pth: no such checkpoint' in capsys.readouterr().err
    assert train_cli.main([str(tmp_path / 'absent.py')]) == 1
    assert 'absent.py does not exist' in capsys.readouterr().err


def _truncated_h5(path: Path) -> Path:
    import h5py
    import numpy as np
    whole = path.with_name('whole.h5')
    with h5py.File(whole, 'w') as f:
        f['x'] = np.zeros((500, 100))
    data = whole.read_bytes()
    path.write_bytes(data[:len(data) // 2])      # a copy cut off half way
    return path


@pytest.mark.parametrize('prepared', [True, False], ids=['prepared-from-config', 'as-is'])
def test_a_truncated_dataset_file_is_one_line_naming_it(tmp_path, capsys, prepared):
    """The regression config's dataset cut short (a copy that did not finish): whether the
    tool checks where it came from (data.synthetic) or reads it as it is, one error line
    names the file instead of h5py's bare OSError and a traceback."""
    bad = _truncated_h5(tmp_path / 'data.h5')
    config = REPO_ROOT / 'configs' / 'regression' / 'synthetic_multiview_resnet18.py'
    options = [f'data.path={bad}', f'train_dataloader.dataset.ann_file={bad}',
               f'val_dataloader.dataset.ann_file={bad}', f'test_dataloader.dataset.ann_file={bad}']
    if not prepared:
        options.append('data.synthetic=None')
    code = train_cli.main([str(config), '--work-dir', str(tmp_path / 'work'),
                           '--cfg-options', *options])
    err = capsys.readouterr().err
    assert code == 1
    assert err.count('\n') == 1 and err.startswith('train: error: ') and str(bad) in err
    assert 'truncated' in err


@pytest.mark.skipif(torch.cuda.is_available(), reason='checks the CPU-only refusal')
@pytest.mark.parametrize('dtype', ['bf16', 'fp16'])
def test_amp_refused_on_cpu(tmp_path, capsys, dtype):
    cfg_file = write_config(tmp_path / 'toy.py', '')
    assert train_cli.main([str(cfg_file), '--amp', '--amp-dtype', dtype]) == 1
    err = capsys.readouterr().err
    assert '--amp' in err and 'needs a GPU' in err and dtype in err


@pytest.mark.parametrize('dtype, torch_dtype', [('bf16', 'bfloat16'), ('fp16', 'float16')])
def test_amp_sets_amp_optim_wrapper(tmp_path, monkeypatch, dtype, torch_dtype):
    monkeypatch.setattr(train_cli, '_accelerator_available', lambda: True)
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: False)  # skip the bf16 probe
    cfg_file = write_config(tmp_path / 'toy.py', '')
    cfg = train_cli.build_config(_args(cfg_file, '--amp', '--amp-dtype', dtype))
    assert cfg.optim_wrapper.type == 'AmpOptimWrapper'
    assert cfg.optim_wrapper.dtype == torch_dtype
    assert cfg.optim_wrapper.optimizer == dict(type='SGD', lr=0.2)
    assert cfg.optim_wrapper.get('loss_scale') == ('dynamic' if dtype == 'fp16' else None)
    custom = write_config(tmp_path / 'custom.py', "optim_wrapper = dict(type='MyWrapper')\n")
    with pytest.raises(train_cli.TrainConfigError, match="uses 'MyWrapper'"):
        train_cli.build_config(_args(custom, '--amp'))


# --- a real run ----------------------------------------------------------------------------

def test_train_writes_checkpoints_with_meta(tmp_path):
    cfg_file = write_config(tmp_path / 'toy.py', '')
    work_dir = tmp_path / 'work'
    assert train_cli.main([str(cfg_file), '--work-dir', str(work_dir),
                           '--cfg-options', f'experiment_name={unique_name()}']) == 0
    ckpt = torch.load(work_dir / 'epoch_2.pth')  # torch's default weights_only=True
    meta = ckpt['meta']
    assert meta['epoch'] == 2 and meta['iter'] == 8  # 16 samples / batch 4, 2 epochs
    ours = meta['smilfit']
    assert ours['version'] == smilfit.__version__
    assert ours['body_model_path'] == str(Path('models') / 'toy.json')  # Path -> str
    assert ours['joint_names'] == ['root', 'tip']
    assert 'config' not in ours  # no Python text of ours: the config is data
    saved = ours['config_data']
    assert saved['model']['type'] == 'TrainToolToyModel'
    assert saved['work_dir'] == str(work_dir)
    assert ckpt['rng_state']['torch'].dtype == torch.uint8
    # the loss went down: the toy problem is learnable with this lr
    losses = logged_scalars(work_dir, 'loss')
    assert sorted(losses) == list(range(1, 9))
    assert sum(losses[i] for i in range(5, 9)) < 0.5 * sum(losses[i] for i in range(1, 5))


def test_ema_hook_from_config(tmp_path):
    cfg_file = write_config(tmp_path / 'toy.py', """\
        custom_hooks = [dict(type='EMAHook', momentum=0.5)]
        train_cfg = dict(by_epoch=True, max_epochs=1)
        """)
    work_dir = tmp_path / 'work'
    assert train_cli.main([str(cfg_file), '--work-dir', str(work_dir),
                           '--cfg-options', f'experiment_name={unique_name()}']) == 0
    # EMAHook saves its weights where they live (the GPU on a GPU machine).
    ckpt = torch.load(work_dir / 'epoch_1.pth', map_location='cpu')
    ema = {k.removeprefix('module.'): v for k, v in ckpt['ema_state_dict'].items()}
    # EMA weights lag the trained ones
    assert not torch.equal(ema['lin.weight'], ckpt['state_dict']['lin.weight'])
    assert 'smilfit' in ckpt['meta'] and 'rng_state' in ckpt


@pytest.mark.parametrize('schedule, first_lr, lr_at_10', [
    # LinearLR warm-up: lr * (start + (1 - start) * k / (end - begin - 1)) at iteration k
    ('adamw_short', 1e-3 * 1e-3, 1e-3 * (1e-3 + (1 - 1e-3) * 10 / 99)),
    ('adamw_cosine', 5e-4 * 1e-3, 5e-4 * (1e-3 + (1 - 1e-3) * 10 / 499)),
])
def test_schedule_base_configs_train(tmp_path, schedule, first_lr, lr_at_10):
    cfg_file = write_config(tmp_path / f'{schedule}_toy.py', """\
        train_cfg = dict(max_epochs=3)  # merged into the schedule's train_cfg
        """, bases=('default_runtime.py', f'schedules/{schedule}.py'), own_schedule=False)
    work_dir = tmp_path / 'work'
    assert train_cli.main([str(cfg_file), '--work-dir', str(work_dir),
                           '--cfg-options', f'experiment_name={unique_name()}',
                           'train_dataloader.batch_size=2']) == 0
    cfg = Config.fromfile(str(cfg_file))
    assert cfg.optim_wrapper.optimizer.type == 'AdamW'
    assert cfg.optim_wrapper.clip_grad.max_norm == 1.0
    lrs = logged_scalars(work_dir, 'lr')
    assert len(lrs) == 24  # 3 epochs of 8 batches
    assert lrs[1] == pytest.approx(first_lr, rel=1e-6)    # the lr of iteration 0
    assert lrs[11] == pytest.approx(lr_at_10, rel=1e-6)   # of iteration 10
    assert (work_dir / 'epoch_3.pth').is_file()


# --- CheckpointMetaHook on its own ----------------------------------------------------------

class _MetaModel(nn.Module):
    def __init__(self, meta):
        super().__init__()
        self.meta = meta

    def checkpoint_meta(self):
        return self.meta


def _save_meta(model):
    checkpoint = dict(meta=dict(epoch=1))
    runner = SimpleNamespace(cfg=Config(dict(model=dict(type='X'))), model=model)
    CheckpointMetaHook().before_save_checkpoint(runner, checkpoint)
    return checkpoint['meta']


def test_checkpoint_meta_contents(tmp_path):
    import numpy as np
    meta = _save_meta(_MetaModel(dict(names=('a', 'b'), path=tmp_path / 'm.json',
                                      rest=np.array([[1.0, 2.0]]), n=np.int64(3),
                                      table=dict(k=torch.ones(2)))))
    assert meta['epoch'] == 1  # mmengine's entries are kept
    ours = meta['smilfit']
    assert ours['config_data'] == dict(model=dict(type='X'))
    assert ours['version'] == smilfit.__version__
    assert ours['names'] == ('a', 'b') and ours['path'] == str(tmp_path / 'm.json')
    assert ours['rest'] == [[1.0, 2.0]] and ours['n'] == 3 and type(ours['n']) is int
    torch.save(meta, tmp_path / 'meta.pth')
    assert torch.load(tmp_path / 'meta.pth')['smilfit']['path'] == str(tmp_path / 'm.json')
    # a model without checkpoint_meta() gets config and version only
    assert set(_save_meta(nn.Linear(1, 1))['smilfit']) == {'config_data', 'version'}


@pytest.mark.parametrize('meta, error, match', [
    ([1, 2], TypeError, r'checkpoint_meta\(\) returned a list, expected a dict'),
    (dict(version='9'), ValueError, r"reserved key\(s\) \['version'\]"),
    (dict(obj=dict(inner=object())), TypeError, r"\['obj'\]\['inner'\] is a object"),
    (dict(table={1: 'a'}), TypeError, r"has key 1: checkpoint meta keys must be strings"),
])
def test_checkpoint_meta_refuses_what_weights_only_cannot_load(meta, error, match):
    with pytest.raises(error, match=match):
        _save_meta(_MetaModel(meta))
