"""A fit of a recording as training labels: joined sample by sample, failed and poor fits
left out before anything reads them, a camera the fit found far off silenced."""
import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from mmengine.dataset import default_collate

from smilfit.datasets import MultiViewHDF5Dataset, SingleViewHDF5Dataset
from smilfit.datasets.fit_labels import FitLabelsError, load_fit_labels
from smilfit.datasets.hdf5_format import DatasetReader
from smilfit.datasets.synthetic import generate_synthetic_dataset

from ..conftest import demo_fit

FAILED = (1, 4)     # samples marked failed in the fit
POOR = 6            # a sample fitted far worse than the rest
OFF_VIEW = 2        # a camera whose errors are far above the others'


@pytest.fixture(scope='module')
def fitted(tmp_path_factory):
    """A prepared dataset (images) and a fit of it whose samples FAILED failed, POOR is
    poor and whose view OFF_VIEW is far off (edited into the results)."""
    tmp = tmp_path_factory.mktemp('fit_labels')
    cfg, results = demo_fit(tmp)
    edited = tmp / 'edited_fit_results.h5'
    shutil.copy(results, edited)
    with h5py.File(edited, 'r+') as f:
        diverged = f['metrics/diverged'][:]
        diverged[list(FAILED)] = True
        f['metrics/diverged'][...] = diverged
        errors = f['metrics/reprojection_px'][:]
        errors[POOR] = 50 * np.nanmedian(errors)
        f['metrics/reprojection_px'][...] = errors
        points = f['metrics/reprojection_point_px'][:]
        points[:, OFF_VIEW] = 100 * np.nanmedian(points) + 10
        f['metrics/reprojection_point_px'][...] = points
    return cfg.data.path, edited, results


def test_failed_and_poor_fits_never_reach_the_loss(fitted):
    data, results, _ = fitted
    dataset = MultiViewHDF5Dataset(data, fit_results=str(results),
                                   pipeline=[dict(type='PackInputs')])
    rows = [dataset.get_data_info(i)['index'] for i in range(len(dataset))]
    with DatasetReader(data) as reader:
        total = len(reader)
    assert sorted(set(range(total)) - set(rows)) == sorted(FAILED + (POOR,))
    assert dataset.metainfo['fit_left_out'] == {'fit failed': 2,
                                                'error above 3x the median sample': 1}
    # an epoch of a training loader: every sample it yields has a usable fit
    loader = torch.utils.data.DataLoader(dataset, batch_size=3, shuffle=True,
                                         collate_fn=default_collate)
    seen = [int(i) for batch in loader for i in batch['data_samples']['index']]
    assert sorted(seen) == sorted(rows)
    assert not set(seen) & set(FAILED + (POOR,))


def test_samples_carry_the_fit_as_targets(fitted):
    data, results, _ = fitted
    dataset = MultiViewHDF5Dataset(data, fit_results=str(results), load_images=False)
    labels = load_fit_labels(results, dataset.reader)
    sample = dataset.load_sample(0)
    row = sample['index']
    with h5py.File(results) as f:
        fit_row = list(f['samples/index'][:]).index(row)
        assert np.allclose(sample['params']['body_pose'], f['params/body_pose'][fit_row])
        assert np.allclose(sample['keypoints_3d'], f['fitted_keypoints_3d'][fit_row],
                           equal_nan=True)
    # the camera far off the others teaches nothing; the others keep their confidence
    assert (sample['confidence'][OFF_VIEW] == 0).all()
    others = [v for v in range(sample['confidence'].shape[0]) if v != OFF_VIEW]
    assert (sample['confidence'][others] > 0).any()
    assert labels.bad_views[:, OFF_VIEW].all()
    camera = str(dataset.reader.camera_names[0][OFF_VIEW])
    assert labels.silenced == {camera: None}
    # the sample's error leaves that camera out
    assert sample['fit_error_px'] < 50


def test_max_error_ratio_none_keeps_poor_fits(fitted):
    data, results, _ = fitted
    dataset = MultiViewHDF5Dataset(data, fit_results=str(results), load_images=False,
                                   fit_max_error_ratio=None)
    rows = {dataset.get_data_info(i)['index'] for i in range(len(dataset))}
    assert POOR in rows and not rows & set(FAILED)


def test_fit_of_another_recording_is_refused(fitted, tmp_path):
    _, results, _ = fitted
    other = tmp_path / 'other.h5'
    generate_synthetic_dataset(other, num_sessions=1, frames_per_session=3, num_views=3,
                               image_size=32, progress=False, seed=5, masks=False)
    with DatasetReader(other) as reader:
        with pytest.raises(FitLabelsError, match='no sample'):
            load_fit_labels(results, reader)


def test_not_a_fit_is_refused(fitted, tmp_path):
    data, _, _ = fitted
    with DatasetReader(data) as reader:
        with pytest.raises(FitLabelsError, match='not a tools/fit.py results file'):
            load_fit_labels(data, reader)
        with pytest.raises(FileNotFoundError):
            load_fit_labels(tmp_path / 'missing.h5', reader)


def test_a_relative_fit_path_is_read_from_the_working_directory_or_data_root(
        fitted, tmp_path, monkeypatch):
    """A fit's path as typed on a command line (``work_dirs/.../fit_results.h5``) is
    relative to the working directory, even where the dataset has a ``data_root``;
    a path beside the annotation file works too, and neither or both are refused."""
    data, results, _ = fitted
    data_root, ann_file = str(Path(data).parent), Path(data).name
    work = tmp_path / 'work_dirs' / 'mouse_fit'
    work.mkdir(parents=True)
    shutil.copy(results, work / 'fit_results.h5')
    monkeypatch.chdir(tmp_path)

    def dataset(fit_results):
        return MultiViewHDF5Dataset(ann_file, data_root=data_root, load_images=False,
                                    fit_results=fit_results)
    typed = dataset('work_dirs/mouse_fit/fit_results.h5')
    assert Path(typed.metainfo['fit_results']).resolve() == (work / 'fit_results.h5')
    assert typed.metainfo['fit_left_out']['fit failed'] == len(FAILED)
    beside = dataset(results.name)     # the fixture's results sit beside the data
    assert Path(beside.metainfo['fit_results']).resolve() == Path(results).resolve()
    with pytest.raises(FileNotFoundError, match='neither.*working directory.*data_root'):
        dataset('work_dirs/other_fit/fit_results.h5')
    shutil.copy(results, tmp_path / results.name)
    with pytest.raises(ValueError, match='names two files'):
        dataset(results.name)


def test_labels_one_camera_puts_far_off_are_silenced_when_asked(fitted, tmp_path):
    """With ``fit_outlier_labels='camera_keypoints'`` the labels of a keypoint that one
    camera puts far from where the others do get confidence 0 in that camera only (the
    fit report's rule); by default only whole cameras are silenced."""
    data, _, original = fitted
    results = tmp_path / 'one_keypoint_off.h5'
    shutil.copy(original, results)
    view, keypoint = 0, 1
    with h5py.File(results, 'r+') as f:
        points = f['metrics/reprojection_point_px'][:]
        points[:, view, keypoint] = 20 * np.nanmedian(points[:, 1:]) + 5
        f['metrics/reprojection_point_px'][...] = points
    kwargs = dict(fit_results=str(results), load_images=False, fit_max_error_ratio=None)
    silenced = MultiViewHDF5Dataset(data, fit_outlier_labels='camera_keypoints', **kwargs)
    default = MultiViewHDF5Dataset(data, **kwargs)
    labels = silenced.fit_labels
    usable = labels.usable
    expected = np.zeros(labels.bad_labels.shape[1:], bool)
    expected[view, keypoint] = True
    assert (labels.bad_labels[usable] == expected).all()
    assert not default.fit_labels.bad_labels.any()
    names = list(silenced.reader.keypoint_names)
    camera = str(silenced.reader.camera_names[0][view])
    assert silenced.metainfo['fit_silenced'] == {camera: [names[keypoint]]}
    assert default.metainfo['fit_silenced'] == {}
    for i in range(len(silenced)):
        a, b = silenced.load_sample(i), default.load_sample(i)
        assert (a['confidence'][view, keypoint] == 0)
        changed = a['confidence'] != b['confidence']
        assert not changed[np.arange(changed.shape[0]) != view].any()
        assert not changed[view, np.arange(changed.shape[1]) != keypoint].any()
    # the single-view dataset silences the same label in that camera's samples
    single = SingleViewHDF5Dataset(data, fit_outlier_labels='camera_keypoints', **kwargs)
    single_default = SingleViewHDF5Dataset(data, **kwargs)
    seen = 0
    for i in range(len(single)):
        a, b = single.load_sample(i), single_default.load_sample(i)
        changed = a['confidence'][0] != b['confidence'][0]
        if a['view_indices'][0] == view:
            seen += 1
            assert a['confidence'][0, keypoint] == 0
            changed[keypoint] = False
        assert not changed.any()
    assert seen
    with pytest.raises(ValueError, match='fit_outlier_labels'):
        MultiViewHDF5Dataset(data, fit_outlier_labels='keypoints', **kwargs)
