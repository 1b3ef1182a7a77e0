"""Bad input: checkpoints and model files from elsewhere.

A table a reader can scan: each row is one bad file, what the user runs it through, and the
message they get. Nothing in these files may execute; no message may advise
``weights_only=False``.
"""
import os
import pickle
import random
import re
import zipfile
from pathlib import Path

import pytest
import torch

from smilfit.engine.checkpoint_io import CheckpointError, load_checkpoint_file
from smilfit.engine.config_data import ConfigDataError, config_from_data, config_to_data


@pytest.fixture
def isolated_default_scope(monkeypatch):
    """Runners set mmengine's current default scope; restore it after the test."""
    from collections import OrderedDict

    from mmengine.registry import DefaultScope
    monkeypatch.setattr(DefaultScope, '_instance_dict', OrderedDict(DefaultScope._instance_dict))


class _Payload:
    """Pickles to a call of os.system: loading it with a plain unpickler would run it."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f'touch {self.marker}',))


def _payload_text(marker: Path) -> str:
    # A Python config that creates the marker when executed.
    return f"import pathlib\npathlib.Path({str(marker)!r}).write_text('ran')\nmodel = dict(type='X')\n"


def _make(kind: str, path: Path, marker: Path) -> Path:
    """Write one bad checkpoint of ``kind`` to ``path``."""
    if kind == 'missing':
        return path
    if kind == 'directory':
        path.mkdir()
    elif kind == 'empty':
        path.write_bytes(b'')
    elif kind == 'garbage':
        path.write_bytes(bytes(range(256)) * 16)
    elif kind == 'random_bytes':
        path.write_bytes(random.Random(0).randbytes(4096))
    elif kind == 'truncated':
        torch.save(dict(state_dict=dict(w=torch.zeros(1000))), path)
        path.write_bytes(path.read_bytes()[:2000])
    elif kind == 'pickled_payload':
        torch.save(dict(meta=dict(x=_Payload(marker))), path)
    elif kind == 'plain_pickle_payload':
        path.write_bytes(pickle.dumps(_Payload(marker)))
    elif kind == 'not_a_dict':
        torch.save([torch.zeros(2)], path)
    return path


# kind, exception, message fragment
LOAD_CASES = [
    ('missing', FileNotFoundError, 'does not exist'),
    ('directory', CheckpointError, 'is a directory'),
    ('empty', CheckpointError, 'is empty'),
    ('garbage', CheckpointError, 'not a PyTorch checkpoint'),
    ('random_bytes', CheckpointError, 'truncated or not a PyTorch checkpoint'),
    ('truncated', CheckpointError, 'truncated or not a PyTorch checkpoint'),
    ('pickled_payload', CheckpointError, 'holds an object of type posix.system'),
    ('plain_pickle_payload', CheckpointError, 'not a PyTorch checkpoint'),
    ('not_a_dict', CheckpointError, 'holds a list, not a checkpoint dict'),
]


@pytest.mark.parametrize('kind, error, message', LOAD_CASES, ids=[c[0] for c in LOAD_CASES])
def test_bad_checkpoint_files(tmp_path, kind, error, message):
    marker = tmp_path / 'PAYLOAD_RAN'
    path = _make(kind, tmp_path / 'model.pth', marker)
    with pytest.raises(error, match=message) as info:
        load_checkpoint_file(path)
    text = str(info.value)
    assert str(path) in text
    assert 'weights_only=False' not in text and 'weights_only` set to `False' not in text
    assert info.value.__cause__ is None or not isinstance(info.value.__cause__, Exception) \
        or 'weights_only' not in str(info.value.__cause__)
    assert not marker.exists()


def _checkpoint_with_config_text(path: Path, marker: Path) -> Path:
    """A checkpoint as older smilfit and mmengine wrote it: the config as Python text."""
    text = _payload_text(marker)
    torch.save(dict(meta=dict(cfg=text, smilfit=dict(config=text, version='0')),
                    state_dict=dict(w=torch.zeros(1))), path)
    return path


def _run_on_checkpoint(tool: str, ckpt: Path, tmp_path: Path) -> int:
    """``tools/test.py CKPT`` or ``tools/infer.py CKPT FRAMES``: the exit code."""
    if tool == 'test':
        from smilfit.cli.test import main
        return main([str(ckpt), '--out-dir', str(tmp_path / 'report'), '--no-progress'])
    from smilfit.cli.infer import main
    video = tmp_path / 'frames'
    video.mkdir()
    return main([str(ckpt), str(video), '--out-dir', str(tmp_path / 'out'), '--no-progress'])


@pytest.mark.parametrize('tool', ['test', 'infer'])
def test_config_text_in_a_checkpoint_is_never_executed(tmp_path, tool, capsys):
    """tools/test.py CKPT and tools/infer.py CKPT refuse a checkpoint whose config is
    Python text, and the payload in that text does not run."""
    marker = tmp_path / 'PAYLOAD_RAN'
    ckpt = _checkpoint_with_config_text(tmp_path / 'evil.pth', marker)
    rc = _run_on_checkpoint(tool, ckpt, tmp_path)
    err = capsys.readouterr().err
    assert rc == 1
    assert not marker.exists()
    assert 'does not execute' in err and 'pass the config file' in err
    assert 'Traceback' not in err


def test_config_data_round_trip_and_plugins(tmp_path):
    cfg = dict(model=dict(type='MultiViewRegressor', sizes=(1, 2), names=['a'], opt=None,
                          lr=1e-3, schedule={0: 1.0, 5: 0.5}),
               custom_imports=dict(imports=['smilfit.models']))
    data = config_to_data(cfg)
    path = tmp_path / 'c.pth'
    torch.save(dict(meta=dict(smilfit=dict(config_data=data))), path)
    loaded = load_checkpoint_file(path)['meta']['smilfit']['config_data']
    rebuilt = config_from_data(loaded)
    assert rebuilt.model.sizes == (1, 2) and rebuilt.model.lr == 1e-3
    assert rebuilt.model.schedule == {0: 1.0, 5: 0.5}
    assert 'custom_imports' not in rebuilt  # smilfit's own modules are registered anyway


# What a stored config may not hold: entry, message fragment
CONFIG_DATA_CASES = [
    (dict(model=dict(type=torch.nn.Linear)), 'model.type is a type'),
    (dict(hook=lambda: None), 'hook is a function'),
    ({(1, 2): 'a'}, r'has the key \(1, 2\)'),
]


@pytest.mark.parametrize('cfg, message', CONFIG_DATA_CASES, ids=['class', 'function', 'tuple-key'])
def test_config_that_cannot_be_stored_as_data(cfg, message):
    with pytest.raises(ConfigDataError, match=message):
        config_to_data(cfg)


@pytest.mark.parametrize('tool', ['test', 'infer'])
def test_a_checkpoint_naming_an_importable_function_runs_nothing(tmp_path, tool, capsys):
    """mmengine's registries import and call any dotted name they do not know
    (type='subprocess.run' would run a command while the model is built): a stored
    config naming anything but a registered component is refused before anything is
    built."""
    marker = tmp_path / 'PAYLOAD_RAN'
    data = dict(model=dict(type='subprocess.run', args=['touch', str(marker)]))
    ckpt = tmp_path / 'evil.pth'
    torch.save(dict(meta=dict(smilfit=dict(config_data=data)),
                    state_dict=dict(w=torch.zeros(1))), ckpt)
    rc = _run_on_checkpoint(tool, ckpt, tmp_path)
    err = capsys.readouterr().err
    assert rc == 1
    assert not marker.exists()
    assert "model.type = 'subprocess.run' names no registered" in err
    assert 'Traceback' not in err


@pytest.mark.parametrize('name', ['os.system', 'builtins.exec', 'antigravity',
                                  'smilfit.subprocess.run', 'mmengine.os.system', 3])
def test_stored_config_types_must_be_registered(name):
    data = dict(model=dict(type='MultiViewRegressor',
                           head=dict(type='MLPHead', losses=[dict(type=name)])))
    with pytest.raises(ConfigDataError, match=r'model.head.losses\[0\].type = .* names no '
                       'registered'):
        config_from_data(data, source='ckpt.pth')
    for registered in ('LevenbergMarquardt', 'smilfit.MultiViewRegressor', 'AdamW',
                       'mmengine.IterBasedTrainLoop'):
        data['model']['head']['losses'][0]['type'] = registered
        config_from_data(data, source='ckpt.pth')


def test_stored_config_importing_foreign_plugins_is_refused():
    data = dict(model=dict(type='X'), custom_imports=dict(imports=['my_lab.evil']))
    with pytest.raises(ConfigDataError, match=r"plugin module\(s\) \['my_lab.evil'\].*pass the "
                       'config file'):
        config_from_data(data, source='ckpt.pth')


def _good_model_bytes(ext: str, folder: Path) -> bytes:
    from smilfit.body_models.demo_model import demo_model_data
    from smilfit.body_models.io import save_model_data
    path = folder / f'good{ext}'
    if not path.exists():
        save_model_data(demo_model_data(segments=6, rings=2), path)
    return path.read_bytes()


def _make_model(kind: str, ext: str, path: Path, marker: Path) -> Path:
    """Write one bad model file of ``kind`` to ``path`` (extension ``ext``)."""
    if kind == 'truncated':
        good = _good_model_bytes(ext, path.parent)
        path.write_bytes(good[:len(good) // 3])
    elif kind == 'payload':
        path.write_bytes(pickle.dumps(_Payload(marker), protocol=2))
    elif kind == 'garbage':
        noise = random.Random(0).randbytes(64)
        path.write_bytes(b'\x80\x02' + noise if ext == '.pkl' else noise)
    elif kind == 'length_beyond_memory':
        # a string whose length field says 2**64 - 1 bytes (beyond the address space)
        path.write_bytes(b'\x80\x04\x8d' + (2 ** 64 - 1).to_bytes(8, 'little') + b'x')
    elif kind == 'length_beyond_file':
        # a bytearray whose length field says 2**62 bytes (no machine can allocate it)
        path.write_bytes(b'\x80\x05\x96' + (2 ** 62).to_bytes(8, 'little') + b'x')
    elif kind == 'nested' and ext == '.pkl':
        depth = 100_000                       # {'a': [[[...]]]}: lists within lists
        path.write_bytes(b'\x80\x02}X\x01\x00\x00\x00a' + b']' * depth
                         + b'a' * (depth - 1) + b's.')
    elif kind == 'nested':
        path.write_text('[' * 100_000 + ']' * 100_000)
    elif kind == 'directory':
        path.mkdir()
    return path


# Model files (load_model_data, what every tool and config uses):
# kind, extension, exception type name, message fragment
MODEL_CASES = [
    ('truncated', '.pkl', 'LegacyModelError', 'truncated or corrupt'),
    ('payload', '.pkl', 'UnsafePickleError', 'refusing to load global posix.system'),
    ('garbage', '.pkl', 'LegacyModelError', 'not a readable model pickle'),
    ('length_beyond_memory', '.pkl', 'LegacyModelError', 'not a readable model pickle'),
    ('length_beyond_file', '.pkl', 'LegacyModelError', 'not a readable model pickle'),
    ('nested', '.pkl', 'LegacyModelError', 'nested too deeply'),
    ('nested', '.json', 'ModelFormatError', 'nested too deeply'),
    ('truncated', '.json', 'ModelFormatError', 'not valid JSON'),
    ('garbage', '.json', 'ModelFormatError', "codec can't decode"),
    ('truncated', '.json.gz', 'ModelFormatError', 'truncated or not a gzip file'),
    ('garbage', '.json.gz', 'ModelFormatError', 'truncated or not a gzip file'),
    ('directory', '.pkl', 'IsADirectoryError', 'is a directory'),
]


@pytest.mark.parametrize('kind, ext, error, message', MODEL_CASES,
                         ids=[f'{c[0]}{c[1]}' for c in MODEL_CASES])
def test_bad_model_files(tmp_path, kind, ext, error, message):
    from smilfit.body_models.io import load_model_data
    from smilfit.cli.errors import RUN_ERRORS
    marker = tmp_path / 'PAYLOAD_RAN'
    path = _make_model(kind, ext, tmp_path / f'model{ext}', marker)
    with pytest.raises(Exception) as info:
        load_model_data(path)
    assert type(info.value).__name__ == error
    assert message in str(info.value) and str(path) in str(info.value)
    assert '\n' not in str(info.value)  # one line
    assert isinstance(info.value, RUN_ERRORS)  # a tool reports it in one line, even mid-run
    assert not marker.exists()


def test_truncated_shared_model_pickle_names_the_file(tmp_path, stick_model_path):
    """A real model pickle cut short (an interrupted download): not pickle's bare 'pickle
    data was truncated' but the file and what is wrong."""
    from smilfit.body_models.io import LegacyModelError, load_legacy_model
    path = tmp_path / 'model.pkl'
    path.write_bytes(stick_model_path.read_bytes()[:5000])
    with pytest.raises(LegacyModelError, match='truncated or corrupt') as info:
        load_legacy_model(path)
    assert str(info.value).startswith(f'{path}: ')


# Model files given to the model tools: tool, argv (MODEL = the bad file, X.y = a file in
# the test's folder), the line printed starts with
MODEL_TOOL_CASES = [
    ('convert_model', ['MODEL', 'OUT.json'], 'convert_model: error:'),
    ('make_synthetic', ['OUT.h5', '--model', 'MODEL', '--quiet'], 'error:'),
    ('build_model', ['MODEL', 'REG.obj', '-o', 'OUT.json', '--no-progress'],
     'build_model: error:'),
]


@pytest.mark.parametrize('tool, argv, prefix', MODEL_TOOL_CASES,
                         ids=[c[0] for c in MODEL_TOOL_CASES])
def test_model_tools_report_a_refused_model_file_in_one_line(tmp_path, capsys, tool, argv,
                                                              prefix):
    import importlib
    marker = tmp_path / 'PAYLOAD_RAN'
    model = _make_model('payload', '.pkl', tmp_path / 'model.pkl', marker)
    (tmp_path / 'REG.obj').write_text('v 0 0 0\n')
    argv = [str(model) if a == 'MODEL' else str(tmp_path / a) if '.' in a else a
            for a in argv]
    rc = importlib.import_module(f'smilfit.cli.{tool}').main(argv)
    err = capsys.readouterr().err
    assert rc != 0 and not marker.exists()
    assert err.startswith(prefix) and err.count('\n') == 1
    assert f'{model}: refusing to load global posix.system' in err


def test_fit_tool_reports_a_refused_model_file_in_one_line(tmp_path, capsys):
    """A model pickle with a payload given to tools/fit.py: one error line, no traceback,
    nothing executed."""
    from smilfit.cli.fit import main
    marker = tmp_path / 'PAYLOAD_RAN'
    model = tmp_path / 'model.pkl'
    model.write_bytes(pickle.dumps(_Payload(marker), protocol=2))
    cfg = tmp_path / 'cfg.py'
    demo = Path(__file__).resolve().parents[2] / 'configs' / 'fitting' / 'demo_mouse.py'
    cfg.write_text(f"_base_ = [{str(demo)!r}]\nbody_model = dict(_delete_=True, "
                   f"type='SMILModel', model_path={str(model)!r})\n"
                   f"data = dict(path={str(tmp_path / 'data.h5')!r})\n")
    rc = main([str(cfg), '--work-dir', str(tmp_path / 'work'), '--no-progress'])
    err = capsys.readouterr().err
    assert rc == 1 and not marker.exists()
    assert err.startswith('fit: error:') and 'refusing to load' in err
    assert 'Traceback' not in err


def test_zip_check_used_by_resume_detects_truncation(tmp_path):
    path = tmp_path / 'a.pth'
    torch.save(dict(w=torch.zeros(100)), path)
    assert zipfile.is_zipfile(path)
    path.write_bytes(path.read_bytes()[:300])
    assert not zipfile.is_zipfile(path)


def test_training_data_with_another_keypoint_count_is_named(tmp_path):
    """A dataset whose keypoint count differs from the model's keypoint names: a clear
    error before any loss indexes out of range."""
    from mmengine.config import Config

    from smilfit.registry import MODELS
    from smilfit.utils import register_all_modules
    register_all_modules()
    root = Path(__file__).resolve().parents[2] / 'configs' / '_base_' / 'models'
    cfg = Config.fromfile(str(root / 'single_view_resnet.py')).model
    cfg.backbone = dict(type='TimmBackbone', model_name='test_resnet')
    cfg.head.update(dim=32, depth=1, num_heads=4)
    model = MODELS.build(cfg)
    K = len(model.keypoint_names)
    samples = dict(keypoints_2d=torch.zeros(1, K + 3, 2), visible=torch.ones(1, K + 3))
    from smilfit.models.regressors.base import KeypointCountError
    with pytest.raises(KeypointCountError, match=rf'the data has {K + 3} keypoints '
                       rf"\(keypoints_2d\) but the model is set up for {K} \(the body model's "
                       'keypoints: .*set model.keypoint_names'):
        model.loss(torch.zeros(1, 3, 64, 64), samples)


# --- tools/train.py: bad --resume / load_from checkpoints, a body model that does not fit
# the data. One error line each, never a traceback or PyTorch's weights_only advice.

# kind of checkpoint, how it reaches the runner, message fragment
TRAIN_CHECKPOINT_CASES = [
    ('pickled_payload', '--resume', 'holds an object of type posix.system'),
    ('pickled_payload', 'load_from', 'holds an object of type posix.system'),
    ('truncated', '--resume', 'truncated or not a PyTorch checkpoint'),
    ('random_bytes', 'load_from', 'truncated or not a PyTorch checkpoint'),
    ('not_a_dict', 'load_from', 'holds a list, not a checkpoint dict'),
]


@pytest.mark.parametrize('kind, how, message', TRAIN_CHECKPOINT_CASES,
                         ids=[f'{c[0]}-{c[1]}' for c in TRAIN_CHECKPOINT_CASES])
def test_train_tool_with_a_bad_checkpoint(tmp_path, capsys, isolated_default_scope, kind,
                                          how, message):
    marker = tmp_path / 'PAYLOAD_RAN'
    ckpt = _make(kind, tmp_path / 'bad.pth', marker)
    option = ['--resume', str(ckpt)] if how == '--resume' else []
    extra = [f'load_from={ckpt}'] if how == 'load_from' else []
    from tests.engine.test_train_tool import unique_name, write_config

    from smilfit.cli.train import main
    cfg = write_config(tmp_path / 'toy.py', '')
    rc = main([str(cfg), '--work-dir', str(tmp_path / 'work'), *option, '--cfg-options',
               f'experiment_name={unique_name()}', 'train_cfg.max_epochs=1', *extra])
    err = capsys.readouterr().err
    assert rc == 1 and not marker.exists()
    assert f'train: error: {ckpt}' in err and message in err
    assert 'Traceback' not in err and 'weights_only' not in err


def test_url_checkpoints_are_loaded_safely(tmp_path, monkeypatch):
    """``load_from='https://...'`` (and torchvision://, open-mmlab://) downloads to torch
    hub's cache and loads with weights_only=True: torch.hub's own loader would unpickle
    with weights_only=False and run a payload."""
    from mmengine.runner.checkpoint import CheckpointLoader
    import smilfit.engine.hooks  # noqa: F401  (applies every engine.compat fix, the loaders' too)
    marker = tmp_path / 'PAYLOAD_RAN'
    cache = tmp_path / 'hub' / 'checkpoints'
    cache.mkdir(parents=True)
    _make('pickled_payload', cache / 'evil.pth', marker)  # as if downloaded already
    monkeypatch.setattr(torch.hub, 'get_dir', lambda: str(tmp_path / 'hub'))
    with pytest.raises(CheckpointError, match='holds an object of type posix.system'):
        CheckpointLoader.load_checkpoint('https://example.invalid/models/evil.pth')
    assert not marker.exists()
    torch.save(dict(state_dict=dict(w=torch.ones(2))), cache / 'good.pth')
    loaded = CheckpointLoader.load_checkpoint('https://example.invalid/models/good.pth')
    assert torch.equal(loaded['state_dict']['w'], torch.ones(2))


@pytest.fixture
def demo_data_and_a_model_without_its_tips(tmp_path):
    """(data of the demo mouse with its 35 keypoints, the demo mouse without its 8 tip
    keypoints (27), a regression config of that model on that data)."""
    from smilfit.body_models.demo_model import demo_model_data
    from smilfit.body_models.io import save_model_data
    from smilfit.datasets.synthetic import generate_synthetic_dataset
    h5 = tmp_path / 'data.h5'
    generate_synthetic_dataset(h5, num_sessions=2, frames_per_session=2, num_views=2,
                               image_size=64, progress=False, seed=3)
    model = tmp_path / 'no_tips.json'
    save_model_data(demo_model_data(tip_keypoints=False), model)
    base = Path(__file__).resolve().parents[2] / 'configs' / 'regression' / \
        'synthetic_multiview_resnet18.py'
    split = "split_ratios=(0.5, 0.5, 0.0)"
    cfg = tmp_path / 'cfg.py'
    cfg.write_text(f"""_base_ = [{str(base)!r}]
data = None
model = dict(body_model=dict(_delete_=True, type='SMILModel', model_path={str(model)!r}),
             backbone=dict(model_name='test_resnet'), neck=dict(dim=32, depth=1),
             head=dict(dim=32, depth=1))
train_dataloader = dict(batch_size=2, dataset=dict(ann_file={str(h5)!r}, {split}))
val_dataloader = dict(dataset=dict(ann_file={str(h5)!r}, {split}))
test_dataloader = val_dataloader
train_cfg = dict(max_iters=2, val_interval=100)
param_scheduler = []
""")
    return h5, model, cfg


#: What the message names: the data's side (35 keypoints, the first of them) and the
#: model's (27, the body model's).
BOTH_SIDES = (r'has 35 keypoints \(pelvis, spine_1, .*\) but the model is set up for 27 '
              r"\(the body model's keypoints: pelvis, .*\): set model.keypoint_names")


def _one_line_error(capsys, tool, rc):
    err = capsys.readouterr().err
    assert rc == 1 and 'Traceback' not in err, err[-2000:]
    lines = [line for line in err.splitlines() if line.startswith(f'{tool}: error:')]
    assert len(lines) == 1, err[-2000:]
    return lines[0]


def test_train_tool_with_a_body_model_that_does_not_fit_the_data(
        tmp_path, capsys, isolated_default_scope, demo_data_and_a_model_without_its_tips,
        monkeypatch):
    """tools/train.py with a body model of 27 keypoints on data of 35 (the demo mouse
    without and with its tip keypoints): one line naming both sides before any hook runs
    (the rig-units hook would index the data with the model's keypoints first)."""
    from smilfit.cli.train import main
    from smilfit.engine.hooks.rig_units import RigUnitsHook

    def must_not_run(*args, **kwargs):
        raise AssertionError('a hook ran before the data were checked')
    monkeypatch.setattr(RigUnitsHook, 'before_train', must_not_run)
    h5, _, cfg = demo_data_and_a_model_without_its_tips
    rc = main([str(cfg), '--work-dir', str(tmp_path / 'work')])
    line = _one_line_error(capsys, 'train', rc)
    assert re.search(rf'train: error: the train data \({re.escape(str(h5))}\) {BOTH_SIDES}',
                     line), line
    assert not list((tmp_path / 'work').glob('*.pth'))


def _checkpoint_of_the_data(tmp_path, h5):
    """A checkpoint as tools/train.py writes it for a model trained on ``h5``: its dataset
    metadata names the data's keypoints (one stand-in weight: nothing gets that far)."""
    from smilfit.datasets.hdf5_format import DatasetReader
    with DatasetReader(h5) as reader:
        names = list(reader.keypoint_names)
    path = tmp_path / 'trained.pth'
    torch.save(dict(state_dict=dict(w=torch.zeros(1)),
                    meta=dict(dataset_meta=dict(keypoint_names=names))), path)
    return path


def test_test_tool_with_a_body_model_that_does_not_fit_the_data(
        tmp_path, capsys, isolated_default_scope, demo_data_and_a_model_without_its_tips):
    from smilfit.cli.test import main
    h5, _, cfg = demo_data_and_a_model_without_its_tips
    rc = main([str(cfg), str(_checkpoint_of_the_data(tmp_path, h5)), '--work-dir',
               str(tmp_path / 'work'), '--no-plots'])
    line = _one_line_error(capsys, 'test', rc)
    assert re.search(rf'test: error: the test data \({re.escape(str(h5))}\) {BOTH_SIDES}',
                     line), line


def test_infer_tool_with_a_body_model_that_does_not_fit_its_checkpoint(
        tmp_path, capsys, isolated_default_scope, demo_data_and_a_model_without_its_tips):
    """A body model other than the one trained (the config's, or cfg_options') would take
    the weights that fit and predict nonsense: refused before any frame is read."""
    from smilfit.cli.infer import main
    h5, _, cfg = demo_data_and_a_model_without_its_tips
    ckpt = _checkpoint_of_the_data(tmp_path, h5)
    rc = main([str(ckpt), str(h5), '--config', str(cfg), '--out-dir', str(tmp_path / 'out'),
               '--no-progress'])
    line = _one_line_error(capsys, 'infer', rc)
    assert re.search(rf"infer: error: the checkpoint's training data \({re.escape(str(ckpt))}"
                     rf'\) {BOTH_SIDES}', line), line
    assert not (tmp_path / 'out').exists()


def test_fit_tool_with_a_body_model_that_does_not_fit_the_data(
        tmp_path, capsys, demo_data_and_a_model_without_its_tips):
    """A fit matches the model's keypoints to the data's by name (data keypoints without a
    model keypoint are left out); a model none of whose names the data has is one line
    naming both lists."""
    import dataclasses

    from smilfit.body_models.demo_model import demo_model_data
    from smilfit.body_models.io import save_model_data
    from smilfit.cli.fit import main
    h5, _, _ = demo_data_and_a_model_without_its_tips
    data = demo_model_data(tip_keypoints=False)
    other = dataclasses.replace(
        data, joint_names=[f'{n}_x' for n in data.joint_names],
        keypoints={f'{k}_x': dict(joint=f'{v["joint"]}_x') for k, v in data.keypoints.items()})
    model = tmp_path / 'other_names.json'
    save_model_data(other, model)
    config = Path(__file__).resolve().parents[2] / 'configs' / 'fitting' / 'demo_mouse.py'
    rc = main([str(config), '--work-dir', str(tmp_path / 'work'), '--no-progress',
               '--no-visualize', '--cfg-options', f'data.path={h5}', 'data.synthetic=None',
               'body_model.type=SMILModel', f'body_model.model_path={model}'])
    line = _one_line_error(capsys, 'fit', rc)
    assert re.search(r'fit: error: no model keypoints matched a data keypoint .*model '
                     r"keypoints: \['pelvis_x', .*data keypoints: \['pelvis', ", line), line
    assert not (tmp_path / 'work' / 'fit_results.h5').exists()


def test_data_keypoints_in_another_order_are_refused():
    """The model indexes the data by position: the same names in another order would
    silently pair the wrong points."""
    from smilfit.models.regressors.keypoints import DataKeypointsError, check_data_keypoints
    check_data_keypoints(['a', 'b'], ['a', 'b'], ['a', 'b'], 'the data')
    with pytest.raises(DataKeypointsError, match=r'the same names in another order'):
        check_data_keypoints(['a', 'b'], ['b', 'a'], ['a', 'b'], 'the data')
    with pytest.raises(DataKeypointsError,
                       match=r'the data has 1 keypoints \(c\) but the model is set up for 2 '
                             r'\(model.keypoint_names: a, b\)'):
        check_data_keypoints(['a', 'b'], ['c'], ['x', 'y'], 'the data')


# Local backbone weights (model.backbone.checkpoint=...): kind, file name, message fragment
BACKBONE_CASES = [
    ('truncated', 'w.safetensors', 'is truncated or not a safetensors file'),
    ('random_bytes', 'w.safetensors', 'is truncated or not a safetensors file'),
    ('pickled_payload', 'w.pth', 'holds an object of type posix.system'),
    ('truncated', 'w.pth', 'truncated or not a PyTorch checkpoint'),
]


@pytest.mark.parametrize('kind, name, message', BACKBONE_CASES,
                         ids=[f'{c[0]}-{c[1]}' for c in BACKBONE_CASES])
def test_bad_backbone_weights(tmp_path, kind, name, message):
    from smilfit.models.backbones import TimmBackbone
    marker = tmp_path / 'PAYLOAD_RAN'
    path = tmp_path / name
    if name.endswith('.safetensors') and kind == 'truncated':
        from safetensors.torch import save_file
        save_file(dict(w=torch.zeros(1000)), str(path))
        path.write_bytes(path.read_bytes()[:200])
    else:
        _make(kind, path, marker)
    with pytest.raises(CheckpointError, match=message) as info:
        TimmBackbone(model_name='test_resnet', checkpoint=str(path))
    assert str(path) in str(info.value) and not marker.exists()


def test_random_bytes_as_a_model_pickle_always_give_a_one_line_error(tmp_path):
    """Whatever a corrupt model pickle holds (here 1500 seeded draws of random bytes after
    the usual pickle headers), loading it ends in an error a tool reports in one line with
    the file's name, never a crash from inside the unpickler."""
    from smilfit.body_models.io import load_model_data
    from smilfit.cli.errors import RUN_ERRORS
    rng = random.Random(0)
    path = tmp_path / 'model.pkl'
    raised = set()
    for _ in range(1500):
        prefix = rng.choice([b'', b'\x80\x02', b'\x80\x04', b'\x80\x05', b'}q\x00('])
        path.write_bytes(prefix + rng.randbytes(rng.choice([8, 64, 512])))
        with pytest.raises(RUN_ERRORS) as info:
            load_model_data(path)
        assert str(path) in str(info.value) and '\n' not in str(info.value)
        raised.add(type(info.value).__name__)
    assert 'LegacyModelError' in raised
