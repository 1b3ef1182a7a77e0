"""Tests of smilfit.engine.compat: mmengine 0.10.7 on today's torch/Python/setuptools.

The two-process DDP test of fix 2 lives in test_dist_cpu.py.
"""
import io
import os
import pickle
import pickletools
import subprocess
import sys
import textwrap
import uuid
import zipfile
from collections import OrderedDict
from pathlib import Path

import mmengine.config.config as mm_config
import mmengine.config.utils as mm_config_utils
import mmengine.dist.utils as mm_dist_utils
import mmengine.utils as mm_utils
import mmengine.utils.package_utils as mm_package_utils
import numpy as np
import pytest
import torch
import torch.nn as nn
from mmengine import Config
from mmengine.hooks import Hook
from mmengine.logging import HistoryBuffer
from mmengine.model import BaseModel
from mmengine.model.wrappers import MMDistributedDataParallel
from mmengine.registry import DefaultScope
from mmengine.runner import Runner
from torch.utils.data import Dataset

from smilfit.engine import compat, hooks  # noqa: F401  (hooks applies every fix)

from ..conftest import subprocess_env


@pytest.fixture(autouse=True)
def _isolated_default_scope(monkeypatch):
    """Runners set mmengine's current default scope; restore it after each test."""
    monkeypatch.setattr(DefaultScope, '_instance_dict', OrderedDict(DefaultScope._instance_dict))


# --- apply() ---------------------------------------------------------------------

def _patched_functions():
    return (mm_dist_utils._init_dist_pytorch, mm_dist_utils._init_dist_slurm,
            mm_dist_utils._init_dist_mpi, MMDistributedDataParallel.__init__,
            mm_package_utils.is_installed, mm_package_utils.get_installed_path,
            mm_package_utils.package2module, mm_utils.is_installed, mm_config.is_installed,
            mm_config.get_installed_path, mm_config_utils._is_builtin_module,
            mm_config._is_builtin_module, Runner.train, Runner.val, Runner.test)


def test_apply_is_idempotent():
    compat.apply()
    before = _patched_functions()
    n_safe = len(torch.serialization.get_safe_globals())
    compat.apply()
    compat.apply()
    assert _patched_functions() == before
    assert len(torch.serialization.get_safe_globals()) == n_safe
    assert all(getattr(fn, '_smilfit_compat', False) for fn in before)


# --- 1. checkpoints under weights_only=True ----------------------------------------

class _TinyModel(BaseModel):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(2, 1)

    def forward(self, x, y, mode='tensor'):
        out = self.lin(x)
        if mode == 'loss':
            return dict(loss=((out - y) ** 2).mean())
        return out


class _TinyDataset(Dataset):
    def __len__(self):
        return 8

    def __getitem__(self, i):
        return dict(x=torch.tensor([float(i), 1.0]), y=torch.tensor([0.5 * i]))


class _ResumeProbe(Hook):
    """Records what the runner looked like when training (re)started."""

    def before_train(self, runner):
        self.start_iter = runner.iter
        buffer = runner.message_hub.log_scalars.get('train/loss')
        self.loss_history = None if buffer is None else buffer.data[0].copy()


def _runner(work_dir: Path, max_iters: int, resume: bool, probe: Hook) -> Runner:
    return Runner(
        model=_TinyModel(),
        work_dir=str(work_dir),
        experiment_name=f'compat_resume_{uuid.uuid4().hex}',  # fresh MessageHub/logger
        train_dataloader=dict(dataset=_TinyDataset(), batch_size=2, num_workers=0,
                              sampler=dict(type='DefaultSampler', shuffle=False),
                              collate_fn=dict(type='default_collate')),
        optim_wrapper=dict(optimizer=dict(type='SGD', lr=0.01, momentum=0.9)),
        param_scheduler=dict(type='MultiStepLR', milestones=[1], by_epoch=False),
        train_cfg=dict(by_epoch=False, max_iters=max_iters),
        default_hooks=dict(checkpoint=dict(type='CheckpointHook', interval=2, by_epoch=False),
                           logger=dict(type='LoggerHook', interval=1)),
        custom_hooks=[probe],
        resume=resume,
        default_scope='mmengine',
    )


def _pickled_globals(path: Path) -> set:
    """'module name' of every GLOBAL opcode in a torch zip checkpoint."""
    with zipfile.ZipFile(path) as archive:
        data = archive.read(next(n for n in archive.namelist() if n.endswith('data.pkl')))
    return {arg for op, arg, _ in pickletools.genops(data) if op.name == 'GLOBAL'}


def test_runner_resumes_with_weights_only_default(tmp_path):
    first = _runner(tmp_path, max_iters=2, resume=False, probe=_ResumeProbe())
    first.train()
    ckpt = tmp_path / 'iter_2.pth'
    assert ckpt.is_file()
    trained_history = first.message_hub.get_scalar('train/loss').data[0]
    # The checkpoint does hold what torch refuses by default (so the test means something).
    assert {'mmengine.logging.history_buffer HistoryBuffer', '__builtin__ getattr'} <= \
        _pickled_globals(ckpt)

    probe = _ResumeProbe()
    second = _runner(tmp_path, max_iters=3, resume=True, probe=probe)
    second.train()  # mmengine's torch.load has no weights_only: torch's default True applies
    assert probe.start_iter == 2
    np.testing.assert_array_equal(probe.loss_history, trained_history)
    assert second.iter == 3
    assert len(second.message_hub.get_scalar('train/loss').data[0]) == 3

    loaded = torch.load(ckpt, weights_only=True)
    assert loaded['meta']['iter'] == 2
    buffer = loaded['message_hub']['log_scalars']['train/loss']
    assert isinstance(buffer, HistoryBuffer)
    np.testing.assert_array_equal(buffer.data[0], trained_history)
    assert buffer.mean() == pytest.approx(float(np.mean(trained_history)))


def test_numpy_1_module_names_load(tmp_path):
    """numpy 1 wrote numpy.core.multiarray, numpy 2 writes numpy._core.multiarray."""
    obj = dict(array=np.arange(6, dtype=np.float32).reshape(2, 3), scalar=np.float64(2.5),
               ints=np.array([1, 2], dtype=np.int64), flags=np.array([True, False]))
    buf = io.BytesIO()
    torch.save(obj, buf, _use_new_zipfile_serialization=False)  # one plain pickle stream
    data = buf.getvalue()
    for core in (b'numpy._core.multiarray', b'numpy.core.multiarray'):
        # GLOBAL opcodes hold newline-terminated names: a same-stream rename is safe.
        renamed = data.replace(b'numpy._core.multiarray', core)
        loaded = torch.load(io.BytesIO(renamed), weights_only=True)
        for key, value in obj.items():
            np.testing.assert_array_equal(loaded[key], value)
            assert loaded[key].dtype == value.dtype


class _Evil:
    def __reduce__(self):
        return os.system, ('echo pwned',)


class _NotAllowListed:
    pass


class _GetattrOnAllowed:
    def __reduce__(self):  # getattr on an allow-listed object, but not a statistics method
        return getattr, (HistoryBuffer, '__init__')


@pytest.mark.parametrize('payload', [_Evil(), _NotAllowListed(), _GetattrOnAllowed()],
                         ids=['os.system', 'class', 'getattr'])
def test_other_globals_still_refused(tmp_path, payload):
    path = tmp_path / 'evil.pth'
    torch.save(dict(state=payload), path)
    with pytest.raises(pickle.UnpicklingError):
        torch.load(path)  # torch's default: weights_only=True
    with pytest.raises(pickle.UnpicklingError):
        torch.load(path, weights_only=True)


def test_safe_globals_name_both_numpy_paths():
    names = {entry[1] for entry in compat.weights_only_safe_globals() if isinstance(entry, tuple)}
    assert {'numpy.core.multiarray._reconstruct', 'numpy._core.multiarray._reconstruct',
            'numpy.core.multiarray.scalar', 'numpy._core.multiarray.scalar',
            'builtins.getattr'} <= names


# --- 2. distributed training on CPU (single-process parts) -------------------------

def test_cpu_model_wrapper_cfg():
    cfg = compat.cpu_model_wrapper_cfg()
    assert cfg == dict(type='MMDistributedDataParallel', device_ids=None,
                       broadcast_buffers=False, find_unused_parameters=False)
    assert compat.cpu_model_wrapper_cfg(find_unused_parameters=True)['find_unused_parameters']


def test_init_wrappers_map_nccl_to_gloo_without_cuda(monkeypatch):
    if torch.cuda.is_available():
        pytest.skip('checks the CPU-only path')
    seen = {}

    def fake_init(backend, **kwargs):
        seen['backend'] = backend
        torch.cuda.set_device(0)  # what mmengine does: must be a no-op here
        seen['kwargs'] = kwargs

    wrapped = compat._cpu_safe_init(fake_init)
    wrapped('nccl', timeout=5)
    assert seen == dict(backend='gloo', kwargs=dict(timeout=5))
    wrapped('mpi')
    assert seen['backend'] == 'mpi'
    with pytest.raises(RuntimeError):  # set_device is restored afterwards
        torch.cuda.set_device(0)


def test_cpu_processes_on_a_gpu_machine_never_set_the_cuda_device(monkeypatch):
    """CPU fitting sharded over more ranks than GPUs: mmengine's set_device(local_rank)
    failed with 'invalid device ordinal' for rank 1 on a 1-GPU machine."""
    calls = []
    monkeypatch.setattr(compat, '_no_accelerator', lambda: False)   # a GPU machine
    monkeypatch.setattr(torch.cuda, 'set_device', lambda d: calls.append(d))
    seen = {}

    def fake_init_dist(launcher, backend=None, **kwargs):
        seen.update(launcher=launcher, backend=backend, kwargs=kwargs)
        torch.cuda.set_device(1)   # what mmengine's _init_dist_pytorch does
    monkeypatch.setattr(compat.mm_dist_utils, 'init_dist', fake_init_dist)
    compat.init_dist_cpu_safe('pytorch', cpu=True, timeout=5)
    assert seen == dict(launcher='pytorch', backend='gloo', kwargs=dict(timeout=5))
    assert calls == []
    compat.init_dist_cpu_safe('pytorch')   # GPU processes: nccl and set_device as usual
    assert seen['backend'] == 'nccl' and calls == [1]


# --- 3. pkg_resources ---------------------------------------------------------------

def test_package_utils_without_pkg_resources():
    from mmengine.utils import get_installed_path, is_installed
    assert is_installed('numpy')
    # Distribution name != module name: opencv-python, or -headless where that is the
    # build installed (the CUDA image's).
    cv = next(n for n in ('opencv-python', 'opencv-python-headless') if is_installed(n))
    assert not is_installed('surely_not_an_installed_package_xyz')
    assert Path(get_installed_path('numpy')) == Path(np.__file__).parent
    assert Path(get_installed_path(cv)).name == 'cv2'
    assert mm_package_utils.package2module(cv) == 'cv2'
    import smilfit  # editable install: the sources, not site-packages/smilfit
    assert Path(get_installed_path('smilfit')) == Path(smilfit.__file__).parent
    with pytest.raises(ImportError):
        get_installed_path('surely_not_an_installed_package_xyz')


def _fake_installed_package(root: Path, monkeypatch) -> None:
    """A distribution ``fakepkg`` with a ``.mim`` base config and a lazy config module."""
    pkg = root / 'fakepkg'
    (pkg / '.mim' / 'configs' / 'base').mkdir(parents=True)
    (pkg / 'configs').mkdir()
    (pkg / '__init__.py').write_text('')
    (pkg / 'configs' / '__init__.py').write_text('')
    (pkg / '.mim' / 'configs' / 'base' / 'runtime.py').write_text("base_lr = 0.5\n")
    (pkg / '.mim' / 'model-index.yml').write_text('Import: []\n')  # no model zoo
    (pkg / 'configs' / 'runtime.py').write_text("lazy_lr = 0.25\n")
    info = root / 'fakepkg-0.1.dist-info'
    info.mkdir()
    (info / 'METADATA').write_text('Metadata-Version: 2.1\nName: fakepkg\nVersion: 0.1\n')
    (info / 'top_level.txt').write_text('fakepkg\n')
    monkeypatch.syspath_prepend(str(root))
    monkeypatch.setitem(mm_config_utils.MODULE2PACKAGE, 'fakepkg', 'fakepkg')


def test_config_package_paths_without_pkg_resources(tmp_path, monkeypatch):
    _fake_installed_package(tmp_path / 'site', monkeypatch)
    # `_base_ = 'pkg::...'` -> Config._get_cfg_path -> is_installed / get_installed_path
    scoped = tmp_path / 'scoped.py'
    scoped.write_text("_base_ = 'fakepkg::base/runtime.py'\nlr = 2 * _base_.base_lr\n")
    cfg = Config.fromfile(str(scoped))
    assert cfg.base_lr == 0.5 and cfg.lr == 1.0
    # `with read_base(): from pkg.configs... import *` -> Config._parse_lazy_import
    lazy = tmp_path / 'lazy.py'
    lazy.write_text(textwrap.dedent("""\
        from mmengine.config import read_base
        with read_base():
            from fakepkg.configs.runtime import *
        lr = lazy_lr * 4
        """))
    cfg = Config.fromfile(str(lazy))
    assert cfg.lazy_lr == 0.25 and cfg.lr == 1.0


# --- 4. plain imports in configs ----------------------------------------------------

def test_config_with_import_os(tmp_path):
    path = tmp_path / 'import_os.py'
    path.write_text(textwrap.dedent("""\
        import os
        import os.path as osp
        from os.path import join
        import math
        work_dir = os.path.join('a', 'b')
        other = osp.join('c', join('d', 'e'))
        angle = math.pi
        """))
    cfg = Config.fromfile(str(path))
    assert cfg.work_dir == os.path.join('a', 'b')
    assert cfg.other == os.path.join('c', 'd', 'e')
    assert set(cfg.keys()) == {'work_dir', 'other', 'angle'}  # no module/function objects
    dumped = tmp_path / 'dumped.py'
    cfg.dump(str(dumped))
    assert Config.fromfile(str(dumped)).to_dict() == cfg.to_dict()


def test_stdlib_modules_count_as_builtin():
    assert mm_config_utils._is_builtin_module('os')
    assert mm_config_utils._is_builtin_module('os.path')
    assert not mm_config_utils._is_builtin_module('numpy')
    assert not mm_config_utils._is_builtin_module('.relative')


# --- a fresh process: importing smilfit's registries is enough ------------------------

def test_fresh_process_import_smilfit_applies_fixes(tmp_path):
    cfg_file = tmp_path / 'c.py'
    cfg_file.write_text("import os\nwork_dir = os.path.join('a', 'b')\n")
    code = textwrap.dedent(f"""\
        import os, sys, torch
        import smilfit.registry
        # the runner side of mmengine (fsdp...) waits for its first lookup
        heavy = ('mmengine.optim', 'mmengine.model', 'mmengine.runner', 'mmengine.hooks',
                 'torch.distributed.fsdp')
        assert not [m for m in heavy if m in sys.modules], [m for m in heavy if m in sys.modules]
        from smilfit.registry import OPTIMIZERS
        p = torch.zeros(2, requires_grad=True)
        assert type(OPTIMIZERS.build(dict(type='LBFGS', params=[p]))) is torch.optim.LBFGS
        from mmengine.model.wrappers import MMDistributedDataParallel
        import mmengine.runner.runner as mm_runner
        assert getattr(MMDistributedDataParallel.__init__, '_smilfit_compat', False)
        assert getattr(mm_runner.find_latest_checkpoint, '_smilfit_compat', False)
        from mmengine import Config
        from mmengine.utils import is_installed
        assert is_installed('numpy')
        assert Config.fromfile({str(cfg_file)!r}).work_dir == os.path.join('a', 'b')
        print('ok')
        """)
    # this checkout's smilfit, whichever one is installed
    env = subprocess_env()
    res = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True,
                         timeout=60, cwd=str(tmp_path), env=env)
    assert res.returncode == 0 and res.stdout.strip().endswith('ok'), res.stderr[-3000:]


@pytest.mark.parametrize('visible', [None, '0'])
def test_logger_names_a_rank_beyond_the_gpu_count(monkeypatch, visible):
    """Fix 8: a rank whose local rank has no GPU (CPU fitting with 2 ranks on a 1-GPU
    machine) gets a logger named by its local rank, not mmengine's IndexError."""
    import mmengine.logging.logger as mm_logger
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: True)
    monkeypatch.setattr(torch.cuda, 'device_count', lambda: 1)
    monkeypatch.setenv('LOCAL_RANK', '1')
    if visible is None:
        monkeypatch.delenv('CUDA_VISIBLE_DEVICES', raising=False)
    else:
        monkeypatch.setenv('CUDA_VISIBLE_DEVICES', visible)
    assert mm_logger._get_device_id() == 1
    monkeypatch.setenv('LOCAL_RANK', '0')
    assert mm_logger._get_device_id() == 0


# --- 9. loader workers of a finished run -----------------------------------------------

@pytest.mark.parametrize('persistent', [True, False])
def test_a_finished_run_ends_its_loader_workers(tmp_path, persistent):
    """Training with loader workers, then validating: when each returns its workers are
    gone (left to the garbage collector, a runner's workers missed the stop signal and
    were each joined after a 5 s timeout), and the runner can still validate again."""
    import multiprocessing

    from mmengine.evaluator import BaseMetric

    class _Count(BaseMetric):
        def process(self, data_batch, data_samples):
            self.results.append(len(data_samples))

        def compute_metrics(self, results):
            return dict(samples=sum(results))

    loader = dict(dataset=_TinyDataset(), batch_size=2, num_workers=2,
                  persistent_workers=persistent, collate_fn=dict(type='default_collate'))
    runner = Runner(
        model=_TinyModel(), work_dir=str(tmp_path),
        experiment_name=f'compat_workers_{uuid.uuid4().hex}',
        train_dataloader=dict(loader, sampler=dict(type='InfiniteSampler', shuffle=True)),
        val_dataloader=dict(loader, sampler=dict(type='DefaultSampler', shuffle=False)),
        val_evaluator=[_Count()], val_cfg=dict(),
        optim_wrapper=dict(optimizer=dict(type='SGD', lr=0.01)),
        train_cfg=dict(by_epoch=False, max_iters=3, val_interval=3),
        default_hooks=dict(checkpoint=None), default_scope='mmengine')
    runner.train()
    assert multiprocessing.active_children() == []
    assert runner.val() == {'samples': 8}
    assert multiprocessing.active_children() == []
    assert runner.val_dataloader._iterator is None
