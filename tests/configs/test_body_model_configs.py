"""Every body-model base config builds (shared models skip when ../shared is absent)."""
from pathlib import Path

import pytest
from mmengine import Config

from smilfit.body_models import SMILModel
from smilfit.registry import BODY_MODELS
from tests.conftest import REPO_ROOT

CONFIGS = sorted((REPO_ROOT / 'configs' / '_base_' / 'body_models').glob('*.py'))


@pytest.mark.parametrize('path', CONFIGS, ids=lambda p: p.stem)
def test_body_model_config_builds(path: Path, monkeypatch):
    monkeypatch.chdir(REPO_ROOT)  # model paths in configs are relative to the checkout
    cfg = Config.fromfile(str(path))
    model_path = cfg.body_model.get('model_path')
    if model_path is not None and not Path(model_path).exists():
        pytest.skip(f'{model_path} is not available')
    model = BODY_MODELS.build(cfg.body_model)
    assert isinstance(model, SMILModel)
    out = model(return_vertices=False)
    assert out.joints.shape == (1, model.num_joints, 3)


def test_demo_model_factory_passes_options():
    model = BODY_MODELS.build(dict(type='DemoSMILModel', builder_options=dict(segments=8),
                                   propagate_scaling=True))
    assert model.propagate_scaling
    assert model.num_vertices < BODY_MODELS.build(dict(type='DemoSMILModel')).num_vertices
