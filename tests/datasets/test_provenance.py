"""A dataset made by tools/preprocess_sleap.py records where it came from, as one that
tools/fit.py prepares from ``data.sleap`` does: a fitting config pointed at it (``data.path``)
fits it when it asks for the same session, and refuses it when it asks for other samples."""
from __future__ import annotations

import shutil

import pytest

from smilfit.apis.fitting import StaleDataError, prepare_data
from smilfit.cli.preprocess_sleap import main as preprocess
from smilfit.datasets.provenance import read_source
from smilfit.utils.digest import file_sha256

from ..apis.test_sleap_round_trip import make_sleap_session
from ..conftest import REPO_ROOT, shared_path


@pytest.fixture(scope='module')
def prepared(tmp_path_factory):
    """(session folder, dataset made by the tool with images and crops)."""
    tmp = tmp_path_factory.mktemp('provenance')
    session, _ = make_sleap_session(tmp, num_views=2, frames=4)
    out = tmp / 'prepared.h5'
    assert preprocess([str(session), str(out), '--crop-mode', 'bbox_crop',
                       '--target-size', '64', '--no-progress']) == 0
    return session, out


def test_the_tool_records_its_source_and_options(prepared):
    session, out = prepared
    record = read_source(out)
    assert record['kind'] == 'sleap' and record['input'] == str(session.resolve())
    assert record['options']['crop_mode'] == 'bbox_crop'
    assert record['options']['target_size'] == 64
    assert record['options']['images'] is True
    assert 'workers' not in record['options']      # how the run went is not the source
    assert {f[0] for f in record['files']} >= {'calibration.toml', 'cam0/cam0.slp'}
    for name, size, mtime, digest in record['files']:      # each file's content digest
        assert digest == file_sha256(session / name)


def test_the_tools_dataset_fits_from_a_copy_of_the_session(prepared, tmp_path, capsys):
    """Sessions move between a laptop, a cluster and a lab share: a byte-identical copy is
    the same input."""
    session, out = prepared
    copy = tmp_path / 'elsewhere' / session.name
    shutil.copytree(session, copy, copy_function=shutil.copyfile)   # new times
    before = out.stat().st_mtime_ns
    prepare_data(dict(data=dict(path=str(out), sleap=dict(input=str(copy)))), progress=False)
    assert out.stat().st_mtime_ns == before
    assert 'the same files at another path' in capsys.readouterr().err


def test_a_config_asking_for_the_same_session_fits_the_tools_dataset(prepared):
    session, out = prepared
    before = out.stat().st_mtime_ns
    prepare_data(dict(data=dict(path=str(out), sleap=dict(input=str(session)))),
                 progress=False)
    assert out.stat().st_mtime_ns == before          # accepted as it is, not redone


@pytest.mark.parametrize('asked, message', [
    (dict(frame_skip=2), r'options changed \(frame_skip: 1 -> 2\)'),
    (dict(confidence_threshold=0.5), r'confidence_threshold: 0\.0 -> 0\.5'),
    # a storage option counts where the config sets it
    (dict(crop_mode='default'), r"crop_mode: 'bbox_crop' -> 'default'"),
])
def test_a_config_asking_for_other_samples_refuses_the_tools_dataset(prepared, asked,
                                                                     message):
    session, out = prepared
    before = out.read_bytes()
    with pytest.raises(StaleDataError, match=message):
        prepare_data(dict(data=dict(path=str(out), sleap=dict(input=str(session), **asked))),
                     progress=False)
    assert out.read_bytes() == before


def test_a_changed_session_refuses_the_tools_dataset(tmp_path):
    session, _ = make_sleap_session(tmp_path, num_views=2, frames=3)
    out = tmp_path / 'prepared.h5'
    assert preprocess([str(session), str(out), '--no-images', '--no-progress']) == 0
    with open(session / 'cam1' / 'cam1.slp', 'ab') as f:    # relabelled after preparing
        f.write(b'\0')
    with pytest.raises(StaleDataError, match=r'input files changed \(1: cam1/cam1.slp\)'):
        prepare_data(dict(data=dict(path=str(out), sleap=dict(input=str(session)))),
                     progress=False)


def test_the_mouse_config_fits_a_dataset_the_tool_made_from_its_session(tmp_path):
    """The shipped multi-camera config says a tools/preprocess_sleap.py dataset works with
    data.path set to it: the source check accepts it."""
    from mmengine.config import Config
    session = shared_path('data', 'sleap_anipose_minimal_session', 'minimal_session')
    out = tmp_path / 'session.h5'
    assert preprocess([str(session), str(out), '--crop-mode', 'bbox_crop',
                       '--target-size', '32', '--jpeg-quality', '50', '--no-progress']) == 0
    cfg = Config.fromfile(str(REPO_ROOT / 'configs' / 'fitting' / 'mouse_multiview.py'))
    cfg.data.path = str(out)
    cfg.data.sleap.input = str(session)
    prepare_data(cfg, progress=False)
