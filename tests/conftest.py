"""Shared test fixtures: paths to ../shared (skip cleanly where it is absent)."""
import os
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
#: ../shared beside the checkout, or the folder SMILFIT_SHARED names (as for the
#: benchmarks: a lent GPU machine gets a copy inside the checkout, benchmarks/cuda.sh).
SHARED = Path(os.environ['SMILFIT_SHARED']).resolve() if os.environ.get('SMILFIT_SHARED') \
    else REPO_ROOT.parent / 'shared'


def shared_path(*parts: str) -> Path:
    """Path below ../shared (or ``$SMILFIT_SHARED``); skips the calling test when it does
    not exist."""
    path = SHARED.joinpath(*parts)
    if not path.exists():
        pytest.skip(f'../shared/{"/".join(parts)} is not available')
    return path


@pytest.fixture
def stick_model_path() -> Path:
    return shared_path('models', 'SMILy_STICK.pkl')


@pytest.fixture
def mouse_model_path() -> Path:
    return shared_path('models', 'SMILy_Mouse_static_joints.pkl')


def child_env(**variables: str) -> dict:
    """``os.environ`` for a command a test starts (a guide's ``python tools/...``,
    ``tools/dist_train.sh``), with ``variables`` set and the running interpreter's folder
    first on ``PATH``: a bare ``python`` there is this one, also when the tests run as
    ``/path/to/venv/bin/python -m pytest`` without the environment activated."""
    here = os.path.dirname(sys.executable)
    path = [here] + [p for p in os.environ.get('PATH', '').split(os.pathsep) if p and p != here]
    return dict(os.environ, PATH=os.pathsep.join(path), **variables)


def subprocess_env(*first, **variables: str) -> dict:
    """:func:`child_env` for a child Python process that imports this checkout: ``first``
    (default: this checkout) ahead of ``PYTHONPATH``'s own entries, which stay (packages
    found only through them, e.g. wheels carried to a GPU machine, must import there too)."""
    path = [str(p) for p in (first or (REPO_ROOT,))]
    path += [p for p in os.environ.get('PYTHONPATH', '').split(os.pathsep) if p]
    return child_env(PYTHONPATH=os.pathsep.join(path), **variables)


def benchmark_module(name: str):
    """``benchmarks/<name>.py`` imported as a module (the benchmarks are scripts, not a
    package), to test what they compute; the sibling modules it imports (e.g.
    ``benchmarks/shared_data.py``) are imported afresh too, as a new run would."""
    import importlib.util
    folder = REPO_ROOT / 'benchmarks'
    for key, module in list(sys.modules.items()):
        path = getattr(module, '__file__', None)
        if path and Path(path).parent == folder:
            del sys.modules[key]
    spec = importlib.util.spec_from_file_location(f'benchmark_{name}',
                                                  REPO_ROOT / 'benchmarks' / f'{name}.py')
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def record_dataset_fits(monkeypatch, describe) -> list:
    """Run ``smilfit.apis.fitting.fit_dataset`` as usual, appending ``describe(cfg)`` of
    every config it is called with to the list returned (what a benchmark asked for)."""
    import smilfit.apis.fitting as fitting
    fit, seen = fitting.fit_dataset, []

    def recorded(cfg, *args, **kwargs):
        seen.append(describe(cfg))
        return fit(cfg, *args, **kwargs)

    monkeypatch.setattr(fitting, 'fit_dataset', recorded)
    return seen


def demo_fit_config(tmp_path: Path, **data):
    """The demo config on a small synthetic dataset in tmp_path (3 views, 8 frames)."""
    from mmengine.config import Config

    from smilfit.utils import register_all_modules
    register_all_modules()
    cfg = Config.fromfile(str(REPO_ROOT / 'configs' / 'fitting' / 'demo_mouse.py'))
    cfg.data.path = str(tmp_path / 'data.h5')
    cfg.data.synthetic.update(num_sessions=1, frames_per_session=8, num_views=3, masks=False)
    cfg.data.batch_size = 4
    cfg.data.update(data)
    return cfg


def mouse_session_config_on_demo_mouse(data_path, batch_size: int = 64):
    """``configs/fitting/mouse_multiview.py`` with the demo mouse as its body model (no
    shared files needed), fitting the prepared dataset ``data_path``."""
    from mmengine.config import Config
    cfg = Config.fromfile(str(REPO_ROOT / 'configs' / 'fitting' / 'mouse_multiview.py'))
    cfg.body_model = Config.fromfile(
        str(REPO_ROOT / 'configs' / '_base_' / 'body_models' / 'demo_mouse.py')).body_model
    cfg.data = dict(path=str(data_path), batch_size=batch_size)
    return cfg


def refit_with_fixed_skeleton(cfg, first, work_dir: Path) -> Path:
    """``cfg`` fitted again (in ``work_dir``) with animal 0's skeleton from the results
    ``first`` held fixed (``data.skeleton``); its results, checked to store the same
    keypoint definitions as ``first`` (the points the first fit placed)."""
    import h5py

    from smilfit.apis.fitting import fit_dataset
    from smilfit.registrants.marker_placement import KEYPOINT_DEFINITIONS
    cfg = cfg.copy()
    cfg.data['skeleton'] = dict(path=str(first), animal=0, mode='fixed')
    again = fit_dataset(cfg, work_dir, progress=False)
    with h5py.File(first) as f, h5py.File(again) as g:
        assert g.attrs[KEYPOINT_DEFINITIONS] == f.attrs[KEYPOINT_DEFINITIONS]
    return again


def demo_fit(tmp_path: Path, **data):
    """``(cfg, fit_results.h5)``: :func:`demo_fit_config`'s dataset prepared and fitted
    (``tmp_path/work``)."""
    from smilfit.apis.fitting import fit_dataset, prepare_data
    cfg = demo_fit_config(tmp_path, **data)
    prepare_data(cfg, progress=False)
    return cfg, fit_dataset(cfg, tmp_path / 'work', progress=False)


def pytest_addoption(parser):
    parser.addoption('--run-slow', action='store_true', default=False,
                     help='also run tests marked slow (kept out of CI)')


def pytest_collection_modifyitems(config, items):
    import torch
    skip_gpu = pytest.mark.skip(reason='gpu: needs a CUDA device')
    skip_slow = pytest.mark.skip(reason='slow: run with --run-slow')
    for item in items:
        if 'gpu' in item.keywords and not torch.cuda.is_available():
            item.add_marker(skip_gpu)
        if 'slow' in item.keywords and not config.getoption('--run-slow'):
            item.add_marker(skip_slow)


def pytest_configure(config):
    # CI has 2 cores and the tests run small tensor operations, where intra-op threads
    # only add synchronisation (10x slower when another process holds a core). The
    # variable is what a tool run in-process (tools/train.py's main) and every subprocess
    # take as their default.
    os.environ.setdefault('OMP_NUM_THREADS', '1')
    import torch
    torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _each_test_s_runner_loggers_go_with_it():
    """mmengine names a runner's logger after its config and the second it was built, and
    hands out the logger of that name if one exists: a runner of a later test in the same
    second and worker got an earlier test's logger, whose handler writes to that test's
    closed output capture (a 'Logging error' traceback in the later test's output). The
    loggers a test's runners made are forgotten after it."""
    from mmengine.logging import MMLogger
    before = set(MMLogger._instance_dict)
    yield
    for name in set(MMLogger._instance_dict) - before:
        MMLogger._instance_dict.pop(name, None)
