"""Bad input: tools/fit.py and fit_dataset with typos, stale or broken data, interrupted
and changed runs. Each test names the case; the messages are asserted."""
import json
import subprocess
import sys
import warnings
from pathlib import Path

import h5py
import numpy as np
import pytest

from smilfit.apis.fitting import (QUALITY_JSON, AllSamplesFailedError, FittingConfigError,
                                  StaleDataError, fit_dataset, prepare_data)
from smilfit.datasets.provenance import read_source

from ..conftest import REPO_ROOT, demo_fit_config

DEMO = REPO_ROOT / 'configs' / 'fitting' / 'demo_mouse.py'


@pytest.fixture
def cfg(tmp_path):
    cfg = demo_fit_config(tmp_path)
    prepare_data(cfg, progress=False)
    return cfg


def _fit(cfg, work_dir, **kwargs):
    return fit_dataset(cfg, work_dir, progress=False, **kwargs)


# --- config typos ---------------------------------------------------------------------

@pytest.mark.parametrize('drop, message', [('registrant', 'the config needs a registrant'),
                                            ('body_model', 'no body_model: set body_model')])
def test_a_config_without_registrant_or_body_model_is_refused(tmp_path, cfg, drop, message):
    cfg.pop(drop)
    with pytest.raises(FittingConfigError, match=message):
        _fit(cfg, tmp_path / 'work')
    assert not (tmp_path / 'work').exists()


def test_data_key_typo_names_the_key_and_the_closest_one(tmp_path, cfg):
    cfg.data['batch_sise'] = 2
    with pytest.raises(FittingConfigError, match=r"unknown key data.batch_sise \(did you mean "
                       r"'batch_size'\?\); data takes path, batch_size"):
        _fit(cfg, tmp_path / 'work')
    assert not (tmp_path / 'work').exists()  # nothing written for a run that cannot start


def test_handler_keyword_typo_names_handler_and_keyword(tmp_path, cfg):
    handler = cfg.registrant.handlers[0]
    handler['sigmaa'] = 10.0
    with pytest.raises(TypeError, match=rf"handler {handler['name']!r}.*'sigmaa'"):
        _fit(cfg, tmp_path / 'work')
    assert not (tmp_path / 'work').exists()


LOOKUP_CASES = [  # lookup, message fragment
    ({'nose': 'Nsoe', 'head': 'head'}, r"nose -> Nsoe \(did you mean 'nose'\?\)"),
    ({'skul': 'skull_x'}, r'skul -> skull_x: neither name exists'),
    ({'nose': 'Snout', 'head': 'Skull'}, r'nose -> Snout; head -> Skull'),  # not in the data
]


@pytest.mark.parametrize('lookup, message', LOOKUP_CASES, ids=['data-typo', 'both-typo',
                                                               'foreign-names'])
def test_joint_lookup_typos_are_errors(tmp_path, cfg, lookup, message):
    cfg.data.joint_lookup = lookup
    with pytest.raises(ValueError, match=message) as info:
        _fit(cfg, tmp_path / 'work')
    assert 'Data keypoints: [' in str(info.value)
    assert not (tmp_path / 'work').exists()


# --- stale prepared data --------------------------------------------------------------

def test_changed_synthetic_options_are_refused_not_fitted(tmp_path, cfg):
    before = read_source(cfg.data.path)
    assert before['kind'] == 'synthetic'
    size = Path(cfg.data.path).stat().st_size
    cfg.data.synthetic.frames_per_session = 6
    with pytest.raises(StaleDataError, match=r'does not hold what data.synthetic asks for '
                       r'\(options changed\). Delete it to prepare it again'):
        prepare_data(cfg, progress=False)
    assert Path(cfg.data.path).stat().st_size == size  # the user's file is untouched
    Path(cfg.data.path).unlink()
    prepare_data(cfg, progress=False)
    with h5py.File(cfg.data.path) as f:
        assert f['samples/frame'].shape[0] == 6
    assert read_source(cfg.data.path)['options']['frames_per_session'] == 6
    cfg.data.synthetic = None  # fit the file as it is, whatever made it
    prepare_data(cfg, progress=False)


def test_missing_sleap_input_is_an_error_even_with_a_prepared_file(tmp_path, cfg):
    cfg.data.sleap = dict(input=str(tmp_path / 'no_such_session'))
    with pytest.raises(FileNotFoundError, match='data.sleap.input .*no_such_session does '
                       'not exist'):
        prepare_data(cfg, progress=False)


def test_changed_sleap_input_files_are_detected(tmp_path):
    from smilfit.datasets.provenance import expected_source, source_changes
    session = tmp_path / 'session'
    session.mkdir()
    (session / 'labels.slp').write_bytes(b'v1')
    before = expected_source(dict(sleap=dict(input=str(session))))
    (session / 'labels.slp').write_bytes(b'v2 longer')
    after = expected_source(dict(sleap=dict(input=str(session))))
    assert source_changes(before, after) == ['input files changed (1: labels.slp)']
    assert source_changes(after, after) == []
    assert source_changes(None, after) == ['the file records no source']


# --- resume and reruns ----------------------------------------------------------------

def test_resume_with_changed_data_is_refused(tmp_path, cfg):
    work = tmp_path / 'work'
    _fit(cfg, work)
    _fit(cfg, work, resume=True)  # same config and data: fine
    with h5py.File(cfg.data.path, 'a') as f:  # the dataset changes under the run
        f['views/keypoints_2d'][0] += 1.0
    with pytest.raises(FileExistsError, match='written from another dataset file; its '
                       'batches cannot be resumed: use --overwrite'):
        _fit(cfg, work, resume=True)
    cfg.registrant.stages[0]['n_iter'] = 3
    with pytest.raises(FileExistsError, match='registrant config and dataset file'):
        _fit(cfg, work, resume=True)
    _fit(cfg, work, overwrite=True)


def test_resume_with_other_smilfit_code_is_refused(tmp_path, cfg, monkeypatch):
    """A change of code (a handler's default) changes the answer, not the config: the
    batches another version fitted are not mixed with new ones."""
    import smilfit.apis.fitting.dataset_fit as dataset_fit
    from smilfit.apis.fitting.config import code_identity
    work = tmp_path / 'work'
    _fit(cfg, work)
    assert len(code_identity()) == 16 and code_identity() == code_identity()
    monkeypatch.setattr(dataset_fit, 'code_identity', lambda: 'another version')
    with pytest.raises(FileExistsError, match='written from another smilfit code; its '
                       'batches cannot be resumed: use --overwrite'):
        _fit(cfg, work, resume=True)
    _fit(cfg, work, overwrite=True)
    _fit(cfg, work, resume=True)     # the same code again: fine


def test_resume_fits_a_damaged_batch_file_again(tmp_path, cfg):
    """A batch file cut short since it was written (a copied work dir, a failing disk) is
    not trusted on --resume: its batch is fitted again, with a warning naming it, and the
    results equal the first run's."""
    work = tmp_path / 'work'
    first = _fit(cfg, work)
    with h5py.File(first, 'r') as f:
        poses = f['params/body_pose'][()]
    chunk = work / 'chunks' / 'batch_00001.npz'
    data = chunk.read_bytes()
    chunk.write_bytes(data[:len(data) // 2])
    first.unlink()
    with pytest.warns(UserWarning, match='batch_00001.npz cannot be read whole; fitting its '
                                         'batch again'):
        again = _fit(cfg, work, resume=True)
    with h5py.File(again, 'r') as f:
        np.testing.assert_allclose(f['params/body_pose'][()], poses, atol=1e-6)


def test_a_damaged_skeleton_file_is_estimated_again(tmp_path):
    from smilfit.apis.animals import skeleton_matches
    from smilfit.utils.atomic import load_npz_whole, save_npz
    path = tmp_path / 'skeletons.npz'
    save_npz(path, dict(stamp=np.array('abc'), param_bone_trans=np.zeros((1, 3, 3))))
    assert skeleton_matches(path, 'abc') and not skeleton_matches(path, 'other')
    data = path.read_bytes()
    path.write_bytes(data[:len(data) - 40])
    assert load_npz_whole(path) is None and not skeleton_matches(path, 'abc')
    assert not skeleton_matches(tmp_path / 'absent.npz', 'abc')


def test_a_run_that_wrote_no_result_can_be_rerun(tmp_path, cfg):
    work = tmp_path / 'work'
    (work / 'chunks').mkdir(parents=True)
    (work / 'chunks' / 'config.json').write_text('{"left": "by a failed run"}')
    assert _fit(cfg, work).is_file()  # no --overwrite needed
    with pytest.raises(FileExistsError, match='already holds fitting results'):
        _fit(cfg, work)


# --- broken samples -------------------------------------------------------------------

def test_nan_camera_drops_that_view_and_fits_the_rest(tmp_path, cfg):
    with h5py.File(cfg.data.path, 'a') as f:
        t = f['views/t'][:]
        t[[1, 5], 2] = np.nan  # camera 2 of samples 1 and 5
        f['views/t'][:] = t
    with pytest.warns(UserWarning, match=r'non-finite camera parameters; these views are left '
                      r'out of the fit: sample 1 camera \w+'):
        results = _fit(cfg, tmp_path / 'work')
    with h5py.File(results) as f:
        bad = f['metrics/bad_camera_views'][:]
        assert bad.sum() == 2 and bad[1, 2] and bad[5, 2]
        assert not f['metrics/diverged'][:].any()
        assert np.isfinite(f['joints'][:]).all()
        px = f['metrics/reprojection_px'][:]
    assert np.isnan(px[[1, 5], 2]).all() and np.nanmax(px) < 2.0  # the rest fits well


def test_every_sample_failing_is_an_error_not_a_result(tmp_path, cfg):
    with h5py.File(cfg.data.path, 'a') as f:
        f['views/keypoints_2d'][:] = np.float32(1e30)  # overflows every loss
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        with pytest.raises(AllSamplesFailedError, match='every one of the 8 samples failed'):
            _fit(cfg, tmp_path / 'work')


def test_one_failed_batch_does_not_end_the_run(tmp_path, cfg):
    """Every sample of the first batch diverges: they are reported as failed, the other
    batches are fitted and the results written."""
    cfg.data.batch_size = 4
    with h5py.File(cfg.data.path, 'a') as f:
        kp = f['views/keypoints_2d'][:]
        kp[:4] = np.float32(1e30)
        f['views/keypoints_2d'][:] = kp
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        results = _fit(cfg, tmp_path / 'work')
    with h5py.File(results) as f:
        failed = f['metrics/diverged'][:]
        px = f['metrics/reprojection_px'][:]
    assert failed[:4].all() and not failed[4:].any()
    assert np.nanmax(px[4:]) < 2.0


# --- results that say how good they are ----------------------------------------------

def test_quality_table_names_a_miscalibrated_camera_and_only_it(tmp_path):
    """4 cameras, one calibration wrong by a sideways shift (as when a calibration file
    holds another camera's extrinsics): the robust fit follows the three that agree and
    the table names the fourth."""
    cfg = demo_fit_config(tmp_path)
    cfg.data.synthetic.num_views = 4
    prepare_data(cfg, progress=False)
    clean = json.loads((_fit(cfg, tmp_path / 'clean').parent / QUALITY_JSON).read_text())
    assert clean['outlier_cameras'] == [] and clean['outlier_keypoints'] == []
    assert set(clean['cameras']) == {'cam_0', 'cam_1', 'cam_2', 'cam_3'}
    with h5py.File(cfg.data.path, 'a') as f:
        t = f['views/t'][:]
        t[:, 1, 0] += 0.5 * np.abs(t[:, 1, 2])  # camera 1 shifted sideways
        f['views/t'][:] = t
    report = json.loads((_fit(cfg, tmp_path / 'bad').parent / QUALITY_JSON).read_text())
    assert report['outlier_cameras'] == ['cam_1'], report['cameras']
    assert report['outlier_keypoints'] == []


def test_fit_tool_writes_a_log_and_prints_the_table_without_future_warnings(tmp_path):
    """One subprocess (a fresh interpreter: torch warns once per process): the log file
    holds what was printed, the table is printed, no FutureWarning is raised."""
    cfg_file = tmp_path / 'cfg.py'
    cfg_file.write_text(f"_base_ = [{str(DEMO)!r}]\n"
                        f"data = dict(path={str(tmp_path / 'data.h5')!r}, batch_size=4, "
                        "synthetic=dict(num_sessions=1, frames_per_session=4, num_views=2, "
                        "masks=False))\nvisualize = None\n")
    work = tmp_path / 'work'
    run = subprocess.run([sys.executable, '-W', 'error::FutureWarning',
                          str(REPO_ROOT / 'tools' / 'fit.py'), str(cfg_file), '--work-dir',
                          str(work), '--no-progress', '--no-slp'],
                         capture_output=True, text=True, timeout=300, cwd=str(tmp_path))
    assert run.returncode == 0, run.stderr[-3000:]
    assert 'Reprojection error per camera' in run.stdout
    logs = list(work.glob('fit_*.log'))
    assert len(logs) == 1
    text = logs[0].read_text()
    assert 'Reprojection error per camera' in text and 'wrote' in text
    assert 'FutureWarning' not in run.stderr


def test_a_waiting_rank_retries_while_rank_0_writes_the_dataset(tmp_path, cfg, monkeypatch):
    """Under a launcher the other ranks wait for rank 0's dataset: a file that is not
    readable yet (cut short mid-write) is waited on, not an error, until it is complete."""
    import shutil
    import threading

    from smilfit.apis.fitting import prepare_data_once
    done = Path(cfg.data.path)
    waiting = tmp_path / 'shared' / 'data.h5'
    waiting.parent.mkdir()
    waiting.write_bytes(done.read_bytes()[:1000])      # what rank 0 has written so far
    cfg.data.path = str(waiting)
    # rank 0's record says it was made for this path; copy it over when "finished"
    from smilfit.datasets.provenance import expected_source, write_source
    finished = tmp_path / 'finished.h5'
    shutil.copy(done, finished)
    write_source(finished, expected_source(cfg.data, cfg.get('body_model')))
    monkeypatch.setenv('RANK', '1')
    timer = threading.Timer(1.5, lambda: shutil.copy(finished, waiting))
    timer.start()
    try:
        prepare_data_once(cfg, progress=False, timeout_s=30)
    finally:
        timer.cancel()
    assert waiting.read_bytes() == finished.read_bytes()
