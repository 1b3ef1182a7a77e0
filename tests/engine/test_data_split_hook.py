"""DataSplitHook: a training run's log says which frames of which sessions it trains and
validates on, and what a fit used as labels left out."""
from types import SimpleNamespace

import numpy as np

from smilfit.datasets import MultiViewHDF5Dataset
from smilfit.datasets.synthetic import generate_synthetic_dataset
from smilfit.engine.hooks import DataSplitHook, data_split
from smilfit.engine.hooks.data_split import describe_dataset, frame_ranges, frame_runs


def test_frames_read_as_a_person_writes_them():
    assert frame_runs(np.array([5, 0, 1, 2, 2, 9, 10, 12])) == [[0, 2], [5, 5], [9, 10],
                                                                [12, 12]]
    assert frame_runs(np.array([], int)) == []
    assert frame_ranges([[0, 9], [12, 12], [26, 93]]) == '0-9, 12, 26-93'


def test_the_log_names_the_frames_each_split_holds(tmp_path, monkeypatch):
    path = tmp_path / 'two.h5'
    generate_synthetic_dataset(path, num_sessions=2, frames_per_session=20, num_views=2,
                               image_size=32, progress=False, seed=0, masks=False)
    split = dict(split_by='time', time_blocks=5, split_ratios=(0.8, 0.2, 0.0), time_gap=1,
                 load_images=False)
    train = MultiViewHDF5Dataset(str(path), split='train', **split)
    val = MultiViewHDF5Dataset(str(path), split='val', **split)
    trained = describe_dataset('training', train)
    held = describe_dataset('validating', val)
    assert trained.startswith(f"training on {len(train)} samples (split 'train' by time): ")
    for name in train.metainfo['session_names']:
        for dataset, line in ((train, trained), (val, held)):
            index = train.metainfo['session_names'].index(name)
            frames = [dataset.get_data_info(i)['frame'] for i in range(len(dataset))
                      if dataset.get_data_info(i)['session_index'] == index]
            # the samples' own frames: the gap frames beside a held-out block are not
            # named as trained on
            assert f'{name} frames {frame_ranges(frame_runs(np.array(frames)))}' in line
    runner = SimpleNamespace(train_dataloader=SimpleNamespace(dataset=train),
                             val_loop=object(), val_dataloader=SimpleNamespace(dataset=val))
    logged = []
    monkeypatch.setattr(data_split, 'print_log', lambda msg, **kw: logged.append(msg))
    DataSplitHook().before_train(runner)
    assert logged == [f'DataSplitHook: {trained}', f'DataSplitHook: {held}']


def test_many_stretches_are_summarised():
    infos = [dict(session_index=0, frame=f) for f in range(0, 40, 2)]
    dataset = _Items(dict(session_names=['s']), infos)
    assert describe_dataset('training', dataset) == \
        'training on 20 samples: s 20 frames in 20 stretches from 0 to 38'


def test_a_fit_as_labels_says_what_it_left_out():
    meta = dict(split='train', split_by='time', fit_results='work_dirs/fit/fit_results.h5',
                fit_left_out={'fit failed': 2, 'error above 3x the median sample': 0})
    assert describe_dataset('training', _Items(meta, [])).endswith(
        'labels from the fit work_dirs/fit/fit_results.h5, left out: 2 (fit failed)')
    meta['fit_left_out'] = {}
    assert describe_dataset('training', _Items(meta, [])).endswith('none left out')


def test_a_fit_as_labels_says_which_labels_it_silences():
    meta = dict(fit_results='fit_results.h5', fit_left_out={},
                fit_silenced={'side': None, 'back': ['Nose', 'Tail_0']})
    assert describe_dataset('training', _Items(meta, [])).endswith(
        'none left out; labels silenced: side (every keypoint); back Nose, Tail_0')


class _Items:
    """A dataset's metainfo and items (``get_data_info``)."""

    def __init__(self, metainfo, infos):
        self.metainfo, self.infos = metainfo, infos

    def __len__(self):
        return len(self.infos)

    def get_data_info(self, i):
        return self.infos[i]
