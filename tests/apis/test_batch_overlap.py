"""Batches of a video fitted with their neighbours' frames as context (``data.overlap``):
frames at a batch's edge are smoothed as in one long batch, and only the batch's own
samples are written."""
from types import SimpleNamespace

import h5py
import numpy as np
import pytest
import torch
from mmengine.config import Config

from smilfit.apis.fitting import FittingConfigError, fit_dataset
from smilfit.apis.fitting.config import check_data_config
from smilfit.apis.fitting.dataset_fit import batch_overlap
from smilfit.datasets.synthetic_animals import generate_animal_session

from ..conftest import REPO_ROOT


def _config(path, batch_size, **data):
    """``animal_skeletons.py`` with the motion prior after its coarse stages (as
    ``mouse_multiview.py`` has it)."""
    cfg = Config.fromfile(str(REPO_ROOT / 'configs' / 'fitting' / 'animal_skeletons.py'))
    cfg.data = dict(cfg.data, path=str(path), batch_size=batch_size, **data)
    cfg.registrant.handlers = list(cfg.registrant.handlers) + [
        dict(type='MotionPriorHandler', name='motion')]
    cfg.registrant.stages = [
        dict(s, loss_weights=dict(motion=0.0)) if s['name'] in ('rigid', 'pose') else s
        for s in cfg.registrant.stages]
    return cfg


@pytest.fixture(scope='module')
def video(tmp_path_factory):
    """Two animals' 30-frame videos (interleaved: 60 samples), 1 px label noise."""
    tmp = tmp_path_factory.mktemp('overlap')
    truth = generate_animal_session(tmp / 'video.h5', num_animals=2, frames=30,
                                    pose_correlation=0.98, noise_px=1.0)
    torch.set_num_threads(1)
    return SimpleNamespace(tmp=tmp, length=truth['length'])


def _read(path):
    with h5py.File(path) as f:
        return f['joints'][:], f['losses/motion'][:], f['samples/frame'][:]


def test_a_batch_fitted_with_every_frame_as_context_is_the_one_long_batch(video):
    one = _read(fit_dataset(_config(video.tmp / 'video.h5', 60), video.tmp / 'one',
                            progress=False))
    # batches of 20 samples (10 frames of each animal), each with 60 on either side:
    # every batch fits the whole video and keeps its own 20 samples
    context = _read(fit_dataset(_config(video.tmp / 'video.h5', 20, overlap=60),
                                video.tmp / 'context', progress=False))
    alone = _read(fit_dataset(_config(video.tmp / 'video.h5', 20, overlap=0),
                              video.tmp / 'alone', progress=False))
    for fit in (context, alone):
        np.testing.assert_array_equal(fit[2], one[2])       # every sample once, in order
    np.testing.assert_allclose(context[0], one[0], atol=1e-5 * video.length)
    np.testing.assert_allclose(context[1], one[1], rtol=1e-3, atol=1e-6)
    # without context, a batch's first frame of each animal has no link before it
    edges = np.array([20, 21, 40, 41])
    assert (alone[1][edges] == 0).all() and (one[1][edges] > 0).all()
    assert np.abs(alone[0][edges] - one[0][edges]).max() > 1e-4 * video.length


def test_the_overlap_is_off_by_default_and_checked():
    assert batch_overlap(dict(batch_size=256)) == 0
    assert batch_overlap(dict(batch_size=256, overlap=5)) == 5
    for bad in (-1, 2.5, True, '8'):
        with pytest.raises(FittingConfigError, match='data.overlap'):
            check_data_config(dict(path='x.h5', overlap=bad))


def test_the_overlap_benchmark_writes_its_table(tmp_path):
    """benchmarks/batch_overlap.py on a short video: one row per overlap, errors finite
    and small against the body length, the first row's time the unit."""
    from ..conftest import benchmark_module
    bench = benchmark_module('batch_overlap')
    argv = ['--frames', '16', '--batch-frames', '8', '--overlaps', '0', '2', '--noise', '1',
            '--tables', str(tmp_path)]
    assert bench.main(argv) == 0
    lines = (tmp_path / 'batch_overlap.md').read_text().splitlines()
    assert lines[0].startswith('<!-- written by `python benchmarks/batch_overlap.py --frames 16')
    rows = [[cell.strip() for cell in line.strip('|').split('|')] for line in lines[4:]]
    assert [row[0] for row in rows] == ['0', '2'] and rows[0][5] == '1.00'
    for row in rows:
        assert all(0.0 < float(cell) < 10.0 for cell in row[1:4])   # % of the body length
