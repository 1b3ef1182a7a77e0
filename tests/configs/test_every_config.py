"""Every config under configs/ loads with mmengine and builds its main components.

Leaves (every ``.py`` outside ``configs/_base_``): a fitting, registration or benchmark
config builds its body model and registrant; a training config builds its network (with
timm's tiny test backbone), optimizer wrapper and parameter schedulers. The dataset, metric
and hook types a config names must be registered, and the config, stored as data (with a
checkpoint or a fit), names registered components only. Every file of the one base tree
``configs/_base_`` loads on its own. Loading comes first, before any skip (models from
../shared skip when absent): a config whose ``_base_`` file is missing, moved or renamed
fails to load and so fails here.
"""
import copy
from pathlib import Path

import pytest
from mmengine.config import Config
from mmengine.optim import build_optim_wrapper
from mmengine.registry import DefaultScope

from smilfit.engine.config_data import check_component_types, config_to_data
from smilfit.registrants import SMILRegistrant
from smilfit.registry import (DATASETS, HOOKS, METRICS, MODELS, PARAM_SCHEDULERS,
                              REGISTRANTS)
from smilfit.utils import register_all_modules
from tests.conftest import REPO_ROOT, child_env

CONFIG_ROOT = REPO_ROOT / 'configs'
BASE_ROOT = CONFIG_ROOT / '_base_'


def _is_base(path: Path) -> bool:
    return '_base_' in path.relative_to(CONFIG_ROOT).parts


LEAVES = sorted(p for p in CONFIG_ROOT.rglob('*.py') if not _is_base(p))
BASES = sorted(p for p in CONFIG_ROOT.rglob('*.py') if _is_base(p))


def _id(path: Path) -> str:
    return str(path.relative_to(CONFIG_ROOT).with_suffix(''))


def _skip_without_model_file(body_model) -> None:
    model_path = body_model.get('model_path')
    if model_path is not None and not Path(model_path).exists():
        pytest.skip(f'{model_path} is not available')


def _build_registrant(cfg: Config) -> SMILRegistrant:
    _skip_without_model_file(cfg.body_model)
    assert 'path' in cfg.data or 'scan_dir' in cfg.data, 'data.path or data.scan_dir'
    reg = REGISTRANTS.build(dict(cfg.registrant, body_model=cfg.body_model))
    assert isinstance(reg, SMILRegistrant) and reg.stages
    if 'joint_lookup' in cfg.data:
        from smilfit.apis.fitting import load_joint_lookup
        lookup = load_joint_lookup(cfg.data.joint_lookup)
        missing = sorted(set(lookup) - set(reg.body_model.keypoint_names))
        assert not missing, f'lookup names unknown model keypoints {missing}'
    return reg


def _build_training(cfg: Config) -> None:
    """The network with a tiny backbone of the same family, its optimizer and schedules."""
    model_cfg = copy.deepcopy(cfg.model)
    _skip_without_model_file(model_cfg.body_model)
    vit = 'vit' in model_cfg.backbone.model_name
    model_cfg.backbone = dict(type='TimmBackbone', model_name='test_vit' if vit else
                              'test_resnet', model_kwargs=dict(img_size=64) if vit else {})
    model_cfg.head.update(dim=32, depth=1, num_heads=4)
    if model_cfg.get('neck'):
        model_cfg.neck.update(dim=32, depth=1, num_heads=4)
    model = MODELS.build(model_cfg)
    assert 'train_dataloader' in cfg and 'train_cfg' in cfg
    with DefaultScope.overwrite_default_scope('smilfit'):
        wrapper = build_optim_wrapper(model, copy.deepcopy(cfg.optim_wrapper))
        for scheduler in cfg.get('param_scheduler') or []:
            PARAM_SCHEDULERS.build(dict(scheduler, optimizer=wrapper))


def _check_registered_types(cfg: Config) -> None:
    for name in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        if cfg.get(name):
            kind = cfg[name].dataset.type
            assert DATASETS.get(kind) is not None, f'{name}: unknown dataset {kind!r}'
    for name in ('val_evaluator', 'test_evaluator'):
        evaluators = cfg.get(name) or []
        for metric in evaluators if isinstance(evaluators, (list, tuple)) else [evaluators]:
            assert METRICS.get(metric.type) is not None, f'{name}: unknown {metric.type!r}'
    hooks = list((cfg.get('default_hooks') or {}).values()) + list(cfg.get('custom_hooks') or [])
    for hook in hooks:
        assert HOOKS.get(hook.type) is not None, f'unknown hook {hook.type!r}'


@pytest.mark.parametrize('path', LEAVES, ids=_id)
def test_config_builds(path: Path, monkeypatch):
    monkeypatch.chdir(REPO_ROOT)  # model and data paths in configs are relative to it
    register_all_modules()
    cfg = Config.fromfile(str(path))
    kinds = [k for k in ('registrant', 'model') if k in cfg]
    assert len(kinds) == 1, f'expected a registrant (fitting) or a model (training): {kinds}'
    _check_registered_types(cfg)
    # stored with a checkpoint or a fit, the config reads back as data: every type it
    # names is a registered component
    check_component_types(config_to_data(cfg), str(path))
    if 'registrant' in cfg:
        _build_registrant(cfg)
    else:
        _build_training(cfg)


@pytest.mark.parametrize('path', BASES, ids=_id)
def test_base_config_loads(path: Path):
    assert Config.fromfile(str(path))


def test_one_base_tree():
    """Shared pieces live in configs/_base_ only; leaves are grouped by task."""
    assert [d for d in CONFIG_ROOT.rglob('_base_') if d.is_dir()] == [BASE_ROOT]
    assert {p.parent.name for p in LEAVES} == {'benchmark', 'fitting', 'registration',
                                               'regression'}
    assert {p.parent.relative_to(BASE_ROOT).parts[0] for p in BASES if p.parent != BASE_ROOT} \
        == {'body_models', 'datasets', 'fitting', 'models', 'registration', 'schedules'}


def test_a_config_with_a_missing_base_fails(tmp_path):
    """What makes a leaf inheriting a moved or renamed base fail above."""
    leaf = tmp_path / 'leaf.py'
    missing = BASE_ROOT / 'body_models' / 'no_such_model.py'
    leaf.write_text(f"_base_ = [{str(BASE_ROOT / 'default_runtime.py')!r}, {str(missing)!r}]\n")
    with pytest.raises(FileNotFoundError, match='no_such_model.py'):
        Config.fromfile(str(leaf))


def test_sequence_config_couples_frames(monkeypatch):
    monkeypatch.chdir(REPO_ROOT)
    cfg = Config.fromfile(str(REPO_ROOT / 'configs' / 'fitting' / 'demo_mouse_sequence.py'))
    reg = REGISTRANTS.build(dict(cfg.registrant, body_model=cfg.body_model))
    assert reg.shared == {'betas'}
    assert any(getattr(h, 'couples_samples', False) for h in reg.handlers.values())


def test_sequence_config_fits_its_demo_end_to_end(tmp_path):
    """The shipped sequence config runs as the README says, every stage by
    Levenberg-Marquardt: the per-frame ones frame by frame, the last over each session's
    chain of frames and its shared shape; from the demo's exact labels it recovers the
    shape and every pose."""
    import subprocess
    import sys
    out = subprocess.run(
        [sys.executable, 'tools/fit.py', 'configs/fitting/demo_mouse_sequence.py',
         '--work-dir', str(tmp_path / 'fit'), '--no-progress', '--no-visualize',
         '--cfg-options', f'data.path={tmp_path / "demo.h5"}'],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=600,
        env=child_env(OMP_NUM_THREADS='1'))
    assert out.returncode == 0, out.stderr[-2000:]
    assert '0 of 128 samples failed' in out.stdout
    # its data are a video, long enough for the motion prior to tell
    assert 'not smoothed as a video' not in out.stderr
    assert 'too short to tell' not in out.stderr
    import h5py
    import json
    with h5py.File(tmp_path / 'fit' / 'fit_results.h5') as f:
        history = json.loads(f.attrs['loss_history'])
    sequence = [r for r in history if r['stage'] == 'sequence']
    assert sequence and all(r['per_sample'] is False for r in sequence)
    # exact labels in four views: the shape and every pose are recovered. The per-frame
    # stages fit the poses under the mean shape; one round of the last stage, with the
    # animal's pose prior centred on those poses, left the 90th percentile at 0.4 % of
    # the body length
    import numpy as np

    from smilfit.datasets.synthetic import build_body_model
    from smilfit.datasets.synthetic_animals import body_length
    with h5py.File(tmp_path / 'fit' / 'fit_results.h5') as fit, \
            h5py.File(tmp_path / 'demo.h5') as truth:
        names = [n.decode() for n in truth['keypoint_names'][()]]
        index = [names.index(n.decode()) for n in fit['keypoint_names'][()]]
        error = np.linalg.norm(fit['keypoints'][()] - truth['keypoints_3d'][()][:, index], axis=-1)
    error = 100 * error / body_length(build_body_model(None))
    assert np.percentile(error, 90) < 0.1
