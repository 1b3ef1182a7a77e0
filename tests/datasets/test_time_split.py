"""Holding out frames of one recording by contiguous time blocks."""
import numpy as np
import pytest

from smilfit.datasets import MultiViewHDF5Dataset
from smilfit.datasets.multiview_dataset import split_frames_by_time
from smilfit.datasets.synthetic import generate_synthetic_dataset


def test_blocks_are_contiguous_disjoint_and_cover_the_session():
    frames = np.arange(100, 220)
    masks, runs = split_frames_by_time(frames, blocks=10, ratios=(0.8, 0.2, 0.0), seed=1)
    assert [int(masks[s].sum()) for s in ('train', 'val', 'test')] == [96, 24, 0]
    assert not (masks['train'] & masks['val']).any()
    assert (masks['train'] | masks['val']).all()
    assert len(runs['val']) == 2 and runs['test'] == []
    for first, last in runs['val']:
        assert last - first == 11           # 12 consecutive frames
        assert masks['val'][(frames >= first) & (frames <= last)].all()
    # deterministic, and the seed picks other blocks
    again, _ = split_frames_by_time(frames, 10, (0.8, 0.2, 0.0), seed=1)
    assert all(np.array_equal(masks[s], again[s]) for s in masks)
    other = [split_frames_by_time(frames, 10, (0.8, 0.2, 0.0), seed=s)[1]['val']
             for s in range(2, 8)]
    assert any(r != runs['val'] for r in other)


def test_gap_keeps_near_copies_of_held_out_frames_out_of_training():
    frames = np.arange(120)
    masks, runs = split_frames_by_time(frames, 10, (0.8, 0.2, 0.0), seed=0, gap=3)
    held = frames[masks['val']]
    train = frames[masks['train']]
    assert np.abs(train[:, None] - held[None]).min() > 3
    assert int(masks['val'].sum()) == 24      # the held-out blocks stay whole
    assert 96 - 3 * 4 <= int(masks['train'].sum()) < 96


def test_animals_of_one_frame_go_to_the_same_split():
    frames = np.repeat(np.arange(40), 2)      # two animals per frame
    masks, _ = split_frames_by_time(frames, 5, (0.6, 0.2, 0.2), seed=0)
    for split in masks:
        chosen = frames[masks[split]]
        assert np.array_equal(np.unique(chosen, return_counts=True)[1] % 2,
                              np.zeros(len(np.unique(chosen)), int))


def test_fewer_frames_than_blocks():
    masks, runs = split_frames_by_time(np.arange(4), 10, (0.5, 0.5, 0.0))
    assert int(masks['train'].sum()) == 2 and int(masks['val'].sum()) == 2


@pytest.mark.parametrize('blocks, gap', [(0, 0), (3, -1)])
def test_bad_block_settings_are_refused(blocks, gap):
    with pytest.raises(ValueError, match='time_'):
        split_frames_by_time(np.arange(10), blocks, (0.8, 0.2, 0.0), gap=gap)


@pytest.fixture(scope='module')
def two_sessions(tmp_path_factory):
    path = tmp_path_factory.mktemp('time_split') / 'two.h5'
    generate_synthetic_dataset(path, num_sessions=2, frames_per_session=20, num_views=2,
                               image_size=32, progress=False, seed=0)
    return path


def test_dataset_splits_every_session_by_time(two_sessions):
    common = dict(ann_file=str(two_sessions), split_by='time', time_blocks=5,
                  split_ratios=(0.6, 0.2, 0.2), load_images=False)
    sets = {}
    for split in ('train', 'val', 'test'):
        ds = MultiViewHDF5Dataset(split=split, **common)
        items = {(ds.get_data_info(i)['session_index'], ds.get_data_info(i)['frame'])
                 for i in range(len(ds))}
        sets[split] = items
        assert {s for s, _ in items} == {0, 1}     # every session in every split
        named = ds.metainfo['split_frames'][split]
        for session_index, frame in items:
            name = ds.reader.session_names[session_index]
            assert any(a <= frame <= b for a, b in named[name])
        assert ds.metainfo['split_by'] == 'time'
    assert not (sets['train'] & sets['val']) and not (sets['train'] & sets['test'])
    assert not (sets['val'] & sets['test'])
    assert sum(len(v) for v in sets.values()) == 40


def test_dataset_time_split_settings_are_checked(two_sessions):
    with pytest.raises(ValueError, match='split_by'):
        MultiViewHDF5Dataset(ann_file=str(two_sessions), split_by='frames')
    with pytest.raises(ValueError, match='split_sessions'):
        MultiViewHDF5Dataset(ann_file=str(two_sessions), split_by='time',
                             split_sessions=dict(train=['a']))
