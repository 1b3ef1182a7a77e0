"""Prediction-like label errors (benchmarks/holdout.py --noise): each kind of error is drawn
as asked, per view, seeded; a swapped instance carries its visibility and confidence
with its labels; the noisy copy of a dataset is written whole or not at all."""
import json

import h5py
import numpy as np
import pytest

from smilfit.body_models.keypoint_naming import left_right_order, left_right_pairs
from smilfit.datasets.label_noise import (LabelNoise, swap_left_right,
                                          write_noisy_dataset)

PAIRS = np.array([[1, 2], [3, 4]])


def _labels(n=4000, c=3, k=5, seed=0):
    return np.random.default_rng(seed).uniform(0, 500, (n, c, k, 2))


def test_parse_reads_sigma_outliers_swaps_and_refuses_the_rest():
    assert LabelNoise.parse('3,0.05,0.03', seed=2) == LabelNoise(3.0, 0.05, 0.03, seed=2)
    assert LabelNoise.parse('1.5') == LabelNoise(1.5)
    for bad, match in (('3,,0.1', 'SIGMA'), ('a,b', 'numbers'), ('1,2,3,4', 'SIGMA'),
                       ('-1', 'sigma'), ('3,1.5', 'outliers'), ('3,0,-0.1', 'swaps')):
        with pytest.raises(ValueError, match=match):
            LabelNoise.parse(bad)
    assert '5 % outliers (20-60 px), 3 % left/right swaps' in LabelNoise(3, .05, .03).describe()


def test_each_kind_of_error_is_drawn_as_asked():
    clean = _labels()
    noisy, record = LabelNoise(2.0, 0.05, 0.1, seed=1).apply(clean, PAIRS)
    swapped, far = record['swapped'], record['outliers']
    # Binomial shares: n = 12000 instances / 60000 points, bounds of about 5 sigma
    assert abs(swapped.mean() - 0.1) < 0.015 and abs(far.mean() - 0.05) < 0.005
    unswapped = swap_left_right(clean, swapped, PAIRS)        # undoes the exchange
    err = np.linalg.norm(noisy - unswapped, axis=-1)
    gauss = (noisy - unswapped)[~far]
    assert abs(gauss.std() - 2.0) < 0.05 and abs(gauss.mean()) < 0.05
    assert err[far].min() > 20 - 5 * 2.0 and err[far].max() < 60 + 5 * 2.0
    # a swapped instance's left label sits on its right keypoint
    b, c = np.argwhere(swapped)[0]
    assert np.linalg.norm(noisy[b, c, 1] - clean[b, c, 2]) < 70
    # seeded: the same seed the same labels, another seed others
    again, _ = LabelNoise(2.0, 0.05, 0.1, seed=1).apply(clean, PAIRS)
    other, _ = LabelNoise(2.0, 0.05, 0.1, seed=2).apply(clean, PAIRS)
    np.testing.assert_array_equal(again, noisy)
    assert not np.allclose(other, noisy)


def test_missing_labels_stay_missing_and_are_never_outliers():
    clean = _labels(n=500)
    clean[:, :, 0] = np.nan
    noisy, record = LabelNoise(1.0, 0.5).apply(clean, None)
    assert np.isnan(noisy[:, :, 0]).all() and not record['outliers'][:, :, 0].any()
    assert np.isfinite(noisy[:, :, 1:]).all()


def test_swaps_need_left_right_pairs():
    with pytest.raises(ValueError, match='left/right keypoint pairs'):
        LabelNoise(1.0, 0.0, 0.1).apply(_labels(n=3), None)
    assert left_right_pairs(['nose', 'ear_L', 'ear_R']).tolist() == [[1, 2]]
    assert left_right_pairs(['a', 'b', 'c'], symmetries=[(0, 2)]).tolist() == [[0, 2]]
    assert left_right_pairs(['nose', 'tail']).shape == (0, 2)



def test_the_left_right_order_exchanges_each_pair_and_keeps_the_rest():
    order = left_right_order(5, [(1, 2), (3, 4)])
    assert order.tolist() == [0, 2, 1, 4, 3]
    assert (order[order] == np.arange(5)).all()                  # its own inverse
    assert left_right_order(3, np.zeros((0, 2), np.int64)).tolist() == [0, 1, 2]
    with pytest.raises(ValueError, match='outside 3 keypoints'):
        left_right_order(3, [(1, 3)])

def _dataset(path, n=50):
    rng = np.random.default_rng(0)
    with h5py.File(path, 'w') as f:
        f['keypoint_names'] = np.array([b'nose', b'ear_L', b'ear_R'])
        f['views/keypoints_2d'] = rng.uniform(0, 100, (n, 2, 3, 2)).astype(np.float32)
        vis = np.ones((n, 2, 3), bool)
        vis[:, :, 1] = False                               # the left ear is never seen
        f['views/visible'] = vis
        f['views/confidence'] = np.where(vis, 0.9, 0.0).astype(np.float32)
        f['other'] = np.arange(5)


def _read_names_only(monkeypatch):
    """The dataset reader replaced by one of the keypoint names alone: :func:`_dataset`
    writes no full dataset."""
    import smilfit.datasets.hdf5.reader as reader_module

    class Reader:
        def __init__(self, path):
            with h5py.File(path, 'r') as f:
                self.keypoint_names = [n.decode() for n in f['keypoint_names'][()]]
            self.skeleton_symmetries = []
    monkeypatch.setattr(reader_module, 'DatasetReader', Reader)


def test_noisy_copy_swaps_visibility_with_labels_and_keeps_the_rest(tmp_path, monkeypatch):
    _read_names_only(monkeypatch)
    src, dst = tmp_path / 'clean.h5', tmp_path / 'out' / 'noisy.h5'
    _dataset(src)
    noise = LabelNoise(0.5, 0.0, 0.5, seed=3)
    record = write_noisy_dataset(src, dst, noise, attrs=dict(note='x'))
    with h5py.File(src, 'r') as a, h5py.File(dst, 'r') as b:
        swapped = record['swapped']
        assert 0 < swapped.sum() < swapped.size
        vis = b['views/visible'][()]
        assert (vis[..., 2] == ~swapped).all() and (vis[..., 1] == swapped).all()
        assert ((b['views/confidence'][()] > 0) == vis).all()
        np.testing.assert_array_equal(a['other'][()], b['other'][()])
        assert json.loads(b.attrs['label_noise'])['swaps'] == 0.5 and b.attrs['note'] == 'x'
        np.testing.assert_array_equal(b['label_noise/swapped'][()], swapped)
        np.testing.assert_array_equal(b['label_noise/outliers'][()], record['outliers'])
        moved = np.abs(b['views/keypoints_2d'][()] - a['views/keypoints_2d'][()])
        assert moved[~swapped][..., 0, :].max() < 5 * 0.5       # the nose: noise only
    assert sorted(p.name for p in dst.parent.iterdir()) == ['noisy.h5']   # no partial file


def test_a_failed_write_leaves_no_file(tmp_path, monkeypatch):
    import smilfit.datasets.hdf5.reader as reader_module

    class Reader:
        def __init__(self, path):
            self.keypoint_names, self.skeleton_symmetries = ['a', 'b', 'c'], []
    monkeypatch.setattr(reader_module, 'DatasetReader', Reader)
    src, dst = tmp_path / 'clean.h5', tmp_path / 'noisy.h5'
    _dataset(src)
    with pytest.raises(ValueError, match='left/right'):       # no pairs among a, b, c
        write_noisy_dataset(src, dst, LabelNoise(1.0, 0.0, 0.2))
    assert sorted(p.name for p in tmp_path.iterdir()) == ['clean.h5']


def test_two_writers_of_one_noisy_copy_each_publish_a_whole_file(tmp_path, monkeypatch):
    # a second process writes the same copy while the first is copying (two held-out
    # runs with one output folder): each writes a temporary file of its own
    import smilfit.datasets.label_noise as label_noise
    _read_names_only(monkeypatch)
    src, dst = tmp_path / 'clean.h5', tmp_path / 'noisy.h5'
    _dataset(src)
    noise = LabelNoise(0.5, 0.0, 0.5, seed=3)
    copy = label_noise.shutil.copyfile
    inner, started = [], []

    def copy_while_another_writes(a, b):
        out = copy(a, b)
        if not started:
            started.append(True)
            inner.append(write_noisy_dataset(src, dst, noise))
        return out
    monkeypatch.setattr(label_noise.shutil, 'copyfile', copy_while_another_writes)
    outer = write_noisy_dataset(src, dst, noise)
    np.testing.assert_array_equal(outer['swapped'], inner[0]['swapped'])
    with h5py.File(dst, 'r') as f:
        np.testing.assert_array_equal(f['label_noise/swapped'][()], outer['swapped'])
    assert sorted(p.name for p in tmp_path.iterdir()) == ['clean.h5', 'noisy.h5']
