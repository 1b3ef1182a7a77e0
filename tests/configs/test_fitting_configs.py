"""Every fitting config builds its registrant (models from ../shared skip when absent)."""
from pathlib import Path

import pytest
from mmengine.config import Config

from smilfit.registrants import SMILRegistrant
from smilfit.registry import REGISTRANTS
from tests.conftest import REPO_ROOT

CONFIGS = sorted((REPO_ROOT / 'configs' / 'fitting').glob('*.py'))


@pytest.mark.parametrize('path', CONFIGS, ids=lambda p: p.stem)
def test_fitting_config_builds(path: Path, monkeypatch):
    monkeypatch.chdir(REPO_ROOT)
    cfg = Config.fromfile(str(path))
    model_path = cfg.body_model.get('model_path')
    if model_path is not None and not Path(model_path).exists():
        pytest.skip(f'{model_path} is not available')
    assert 'path' in cfg.data
    reg = REGISTRANTS.build(dict(cfg.registrant, body_model=cfg.body_model))
    assert isinstance(reg, SMILRegistrant) and reg.stages
    if 'joint_lookup' in cfg.data:
        from smilfit.apis.fitting import load_joint_lookup
        lookup = load_joint_lookup(cfg.data.joint_lookup)
        missing = sorted(set(lookup) - set(reg.body_model.keypoint_names))
        assert not missing, f'lookup names unknown model keypoints {missing}'


def test_sequence_config_couples_frames(monkeypatch):
    monkeypatch.chdir(REPO_ROOT)
    cfg = Config.fromfile(str(REPO_ROOT / 'configs' / 'fitting' / 'demo_mouse_sequence.py'))
    reg = REGISTRANTS.build(dict(cfg.registrant, body_model=cfg.body_model))
    assert reg.shared == {'betas'}
    assert any(getattr(h, 'couples_samples', False) for h in reg.handlers.values())
