"""Checkpoints survive a kill mid-write (engine.compat fix 6): the previous checkpoint is
kept until the new one is complete, last_checkpoint names a complete file, --resume works."""
import os
from pathlib import Path

import pytest
import torch
from mmengine.registry import DefaultScope
from collections import OrderedDict

import smilfit.utils.atomic as atomic
from smilfit.cli import train as train_cli
from smilfit.engine.compat import find_latest_checkpoint

from .test_train_tool import unique_name, write_config


@pytest.fixture(autouse=True)
def _isolated_default_scope(monkeypatch):
    monkeypatch.setattr(DefaultScope, '_instance_dict', OrderedDict())


class _Killed(BaseException):
    """Stands for SIGKILL arriving during the write (nothing after it runs)."""


def _train(cfg_file, work_dir, epochs, *options):
    args = train_cli.build_parser().parse_args(
        [str(cfg_file), '--work-dir', str(work_dir), *options, '--cfg-options',
         f'experiment_name={unique_name()}', f'train_cfg.max_epochs={epochs}',
         'default_hooks.checkpoint.max_keep_ckpts=1'])
    train_cli.build_runner(train_cli.build_config(args)).train()


def test_kill_during_checkpoint_write_keeps_the_previous_one(tmp_path, monkeypatch):
    cfg = write_config(tmp_path / 'toy.py', '')
    work = tmp_path / 'work'
    _train(cfg, work, 1)
    assert (work / 'epoch_1.pth').is_file()

    real_replace = os.replace

    def killed_while_writing_epoch_2(src, dst):
        if str(dst).endswith('epoch_2.pth'):
            raise _Killed
        return real_replace(src, dst)

    monkeypatch.setattr(atomic.os, 'replace', killed_while_writing_epoch_2)
    with pytest.raises(_Killed):
        _train(cfg, work, 2, '--resume')
    monkeypatch.setattr(atomic.os, 'replace', real_replace)
    # The old checkpoint is still there and named; no partial file under a real name.
    assert (work / 'epoch_1.pth').is_file() and not (work / 'epoch_2.pth').exists()
    assert Path((work / 'last_checkpoint').read_text()).name == 'epoch_1.pth'
    assert torch.load(work / 'epoch_1.pth')['meta']['epoch'] == 1
    assert not [p for p in work.iterdir() if p.name.endswith('.tmp')]
    # Resuming continues from epoch 1 and only then drops it (max_keep_ckpts=1).
    _train(cfg, work, 2, '--resume')
    assert torch.load(work / 'epoch_2.pth')['meta']['epoch'] == 2
    assert not (work / 'epoch_1.pth').exists()


def test_resume_falls_back_to_the_newest_complete_checkpoint(tmp_path):
    work = tmp_path
    torch.save(dict(meta=dict(epoch=1)), work / 'epoch_1.pth')
    torch.save(dict(meta=dict(epoch=2)), work / 'epoch_2.pth')
    os.utime(work / 'epoch_1.pth', (1, 1))
    (work / 'epoch_3.pth').write_bytes((work / 'epoch_2.pth').read_bytes()[:100])  # truncated
    (work / 'last_checkpoint').write_text(str(work / 'epoch_4.pth'))  # deleted file
    assert find_latest_checkpoint(str(work)) == str(work / 'epoch_2.pth')
    (work / 'last_checkpoint').write_text(str(work / 'epoch_1.pth'))
    assert find_latest_checkpoint(str(work)) == str(work / 'epoch_1.pth')
    for p in work.glob('*.pth'):
        p.unlink()
    assert find_latest_checkpoint(str(work)) is None


_KILLED_RUN = '''
import os, signal, sys
sys.path.insert(0, {repo!r})
import smilfit.engine.compat as compat
from smilfit.cli import train

real_atomic_open = compat.atomic_open


class _HalfThenKill:
    """The checkpoint file: half of epoch_2 reaches the disk, then SIGKILL."""
    def __init__(self, f):
        self.f = f
    def write(self, data):
        self.f.write(data[:len(data) // 2])
        self.f.flush()
        os.fsync(self.f.fileno())
        os.kill(os.getpid(), signal.SIGKILL)


class _Ctx:
    def __init__(self, path, mode):
        self.path, self.ctx = path, real_atomic_open(path, mode)
    def __enter__(self):
        f = self.ctx.__enter__()
        return _HalfThenKill(f) if str(self.path).endswith('epoch_2.pth') else f
    def __exit__(self, *exc):
        return self.ctx.__exit__(*exc)


compat.atomic_open = _Ctx
sys.exit(train.main({argv!r}))
'''


def test_sigkill_mid_write_then_resume(tmp_path):
    """A real ``kill -9`` while epoch_2.pth is half written: epoch_1.pth is intact and
    still named by last_checkpoint, and ``--resume`` finishes the run."""
    import signal
    import subprocess
    import sys

    from tests.conftest import REPO_ROOT, subprocess_env
    cfg = write_config(tmp_path / 'toy.py', '')
    work = tmp_path / 'work'
    argv = [str(cfg), '--work-dir', str(work), '--cfg-options',
            f'experiment_name={unique_name()}', 'train_cfg.max_epochs=2',
            'default_hooks.checkpoint.max_keep_ckpts=1']
    env = subprocess_env(OMP_NUM_THREADS='1')
    run = subprocess.run([sys.executable, '-c', _KILLED_RUN.format(repo=str(REPO_ROOT),
                                                                   argv=argv)],
                         env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert run.returncode == -signal.SIGKILL, run.stderr[-2000:]
    partial = [p for p in work.iterdir() if p.name.startswith('.epoch_2.pth.')]
    assert partial and partial[0].stat().st_size > 0  # the kill came mid-write
    assert not (work / 'epoch_2.pth').exists()
    assert Path((work / 'last_checkpoint').read_text()).name == 'epoch_1.pth'
    assert torch.load(work / 'epoch_1.pth')['meta']['epoch'] == 1
    assert find_latest_checkpoint(str(work)) == str(work / 'epoch_1.pth')
    _train(cfg, work, 2, '--resume')
    assert torch.load(work / 'epoch_2.pth')['meta']['epoch'] == 2
    assert not (work / 'epoch_1.pth').exists()
    assert not partial[0].exists()  # the killed writer's partial file is removed


def test_resume_with_only_truncated_checkpoints_is_an_error(tmp_path, capsys):
    """--resume never silently starts from scratch over checkpoints it cannot read."""
    cfg = write_config(tmp_path / 'toy.py', '')
    work = tmp_path / 'work'
    work.mkdir()
    torch.save(dict(meta=dict(epoch=1)), work / 'epoch_1.pth')
    (work / 'epoch_1.pth').write_bytes((work / 'epoch_1.pth').read_bytes()[:100])
    (work / 'last_checkpoint').write_text(str(work / 'epoch_1.pth'))
    rc = train_cli.main([str(cfg), '--work-dir', str(work), '--resume', '--cfg-options',
                         f'experiment_name={unique_name()}'])
    err = capsys.readouterr().err
    assert rc == 1
    assert f'train: error: --resume: no complete checkpoint in {work} (epoch_1.pth ' \
        'truncated or unreadable)' in err
    assert (work / 'epoch_1.pth').stat().st_size == 100  # left alone
