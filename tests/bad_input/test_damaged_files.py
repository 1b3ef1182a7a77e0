"""Damaged files smilfit wrote itself (a prepared dataset, fit results): truncated or with
bytes changed, they give one line naming the file, never a traceback from inside h5py, and
never numbers that differ from what was written."""
import random
import shutil

import numpy as np
import pytest

from smilfit.datasets.hdf5.files import DamagedFileError
from smilfit.errors import SmilfitUserError

from ..conftest import demo_fit
from ..datasets.test_hdf5_files import flip_byte_in_chunk


@pytest.fixture(scope='module')
def fitted(tmp_path_factory):
    """``(cfg, fit_results.h5)`` of the demo config on 8 synthetic frames."""
    return demo_fit(tmp_path_factory.mktemp('damaged'))


def _one_line_naming(err: BaseException, path) -> bool:
    return str(path) in str(err) and '\n' not in str(err)


def test_fitting_a_dataset_with_a_changed_byte_names_it(fitted, tmp_path):
    from smilfit.apis.fitting import fit_dataset
    cfg, _ = fitted
    damaged = tmp_path / 'data.h5'
    shutil.copy(cfg.data.path, damaged)
    flip_byte_in_chunk(damaged, 'views/keypoints_2d')
    cfg = cfg.copy()
    cfg.data.path = str(damaged)
    with pytest.raises(DamagedFileError) as err:
        fit_dataset(cfg, tmp_path / 'work', progress=False)
    assert _one_line_naming(err.value, damaged)
    assert not (tmp_path / 'work' / 'fit_results.h5').exists()


def test_the_viewer_on_truncated_fit_results_prints_one_line(fitted, tmp_path, capsys):
    from smilfit.cli.view import main
    _, results = fitted
    work = tmp_path / 'work'
    work.mkdir()
    data = results.read_bytes()
    (work / 'fit_results.h5').write_bytes(data[:len(data) // 2])
    assert main([str(work), '--export', str(tmp_path / 'v.html'), '--no-images']) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(work / 'fit_results.h5') in err, err
    assert 'truncated' in err
    assert not (tmp_path / 'v.html').exists()


def test_fit_results_with_a_changed_number_fail_their_checksum(fitted, tmp_path):
    from smilfit.visualization.fit_run import load_fit_run
    _, results = fitted
    work = tmp_path / 'work'
    work.mkdir()
    shutil.copy(results, work / 'fit_results.h5')
    flip_byte_in_chunk(work / 'fit_results.h5', 'params/body_pose')
    with pytest.raises(DamagedFileError) as err:
        load_fit_run(work)
    assert _one_line_naming(err.value, work / 'fit_results.h5')


def test_fit_results_with_random_damage_read_right_or_say_so(fitted, tmp_path):
    """1,000 seeded draws of 1-10 random bytes changed anywhere in the file: every read
    gives what was written, or one line naming the file (or its work dir). (Written in
    HDF5's original format, whose metadata carry no checksums, about 1 in 250 draws read
    back changed numbers without an error.)"""
    from smilfit.visualization.fit_run import load_fit_run
    _, results = fitted
    work = tmp_path / 'work'
    work.mkdir()
    target = work / 'fit_results.h5'
    written = load_fit_run(results.parent)
    raw = results.read_bytes()
    outcomes = {'same': 0, 'error': 0}
    for seed in range(1000):
        rng = random.Random(seed)
        data = bytearray(raw)
        for _ in range(rng.randint(1, 10)):
            data[rng.randrange(len(data))] = rng.randrange(256)
        target.write_bytes(bytes(data))
        try:
            run = load_fit_run(work)
        except (SmilfitUserError, ValueError) as err:
            # (a damaged stored config is named as the fit config of the work dir)
            assert _one_line_naming(err, work), (seed, err)
            outcomes['error'] += 1
            continue
        for group in ('params', 'samples', 'metrics'):
            got, want = getattr(run, group), getattr(written, group)
            assert got.keys() == want.keys(), (seed, group)
            for key in want:
                np.testing.assert_array_equal(got[key], want[key], err_msg=f'{seed} {key}')
        outcomes['same'] += 1
    assert outcomes['error'] > 0, outcomes
