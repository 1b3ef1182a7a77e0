"""MultiViewHDF5Dataset / SingleViewHDF5Dataset: session splits, sample layout, view
selection, lazy loading, workers, and the dataset configs."""
import copy
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from mmengine import Config
from mmengine.registry import DefaultScope
from mmengine.runner import Runner

from smilfit.datasets import (DatasetWriter, MultiViewHDF5Dataset, SingleViewHDF5Dataset,
                              generate_synthetic_dataset, split_sessions_by_ratio)
from smilfit.datasets.hdf5_format import encode_image, encode_mask
from smilfit.registry import DATASETS
from tests.conftest import REPO_ROOT, shared_path

C, K = 3, 4
SIZES = [(32, 24), (32, 24), (40, 30)]          # view 2 has another image size
NUM_SESSIONS, FRAMES = 7, 2


def _valid(i):
    """Sample i: views valid in a pattern; sample 1 has a single valid view."""
    if i == 1:
        return np.array([False, True, False])
    v = np.ones(C, bool)
    if i % 3 == 2:
        v[0] = False
    return v


@pytest.fixture(scope='module')
def custom_file(tmp_path_factory):
    """7 sessions x 2 frames x 3 views of random data, some views invalid, mixed sizes."""
    path = tmp_path_factory.mktemp('ds') / 'custom.h5'
    rng = np.random.default_rng(0)
    n = NUM_SESSIONS * FRAMES
    with DatasetWriter(path, keypoint_names=[f'k{i}' for i in range(K)], num_views=C,
                       units='mm') as w:
        for s in range(NUM_SESSIONS):
            w.add_session(f'sess{s}', ['a', 'b', 'c'])
        valid = np.stack([_valid(i) for i in range(n)])
        kp = rng.uniform(2, 20, (n, C, K, 2)).astype(np.float32)
        kp[~valid] = np.nan
        conf = np.where(valid[..., None], 1.0, 0.0) * np.ones((n, C, K))
        images, masks = [], []
        for i in range(n):
            images.append([encode_image(np.full((h, wd, 3), 10 * i + c, np.uint8))
                           if valid[i, c] else b'' for c, (wd, h) in enumerate(SIZES)])
            masks.append([encode_mask(np.ones((h, wd), bool)) if valid[i, c] else b''
                          for c, (wd, h) in enumerate(SIZES)])
        w.add_samples(dict(
            session=np.repeat(np.arange(NUM_SESSIONS), FRAMES), frame=np.tile(np.arange(FRAMES),
                                                                          NUM_SESSIONS),
            valid=valid, keypoints_2d=kp, confidence=conf,
            K=np.broadcast_to(np.eye(3), (n, C, 3, 3)), R=np.broadcast_to(np.eye(3), (n, C, 3, 3)),
            t=np.zeros((n, C, 3)), image_size=np.broadcast_to(np.array(SIZES), (n, C, 2)),
            images=images, masks=masks, keypoints_3d=rng.normal(size=(n, K, 3)),
            params=dict(betas=rng.normal(size=(n, 2)))))
        w.commit()
    return path


def test_split_sessions_by_ratio():
    names = [f's{i}' for i in range(10)]
    split = split_sessions_by_ratio(names, (0.8, 0.1, 0.1), seed=0)
    assert [len(split[k]) for k in ('train', 'val', 'test')] == [8, 1, 1]
    assert sorted(sum(split.values(), [])) == sorted(names)
    assert split == split_sessions_by_ratio(list(reversed(names)), (0.8, 0.1, 0.1), seed=0)
    assert any(split_sessions_by_ratio(names, (0.8, 0.1, 0.1), seed=s) != split
               for s in range(1, 5))
    three = split_sessions_by_ratio(['a', 'b', 'c'], (0.8, 0.1, 0.1), seed=1)
    assert [len(three[k]) for k in ('train', 'val', 'test')] == [1, 1, 1]
    assert split_sessions_by_ratio(['a', 'b'], (1, 0, 0))['train'] == ['a', 'b']
    with pytest.raises(ValueError):
        split_sessions_by_ratio(names, (0.5, -0.1, 0.6))


def test_splits_are_by_session_and_deterministic(custom_file):
    datasets = {s: MultiViewHDF5Dataset(str(custom_file), split=s, seed=3, load_images=False)
                for s in ('train', 'val', 'test')}
    sessions = {s: {ds.get_data_info(i)['session_index'] for i in range(len(ds))}
                for s, ds in datasets.items()}
    assert not sessions['train'] & sessions['val']
    assert not sessions['train'] & sessions['test']
    assert not sessions['val'] & sessions['test']
    assert set.union(*sessions.values()) == set(range(NUM_SESSIONS))
    assert sum(len(ds) for ds in datasets.values()) == NUM_SESSIONS * FRAMES
    for s, ds in datasets.items():
        names = {ds[i]['session'] for i in range(len(ds))}
        assert names == set(ds.metainfo['session_names'])
    again = MultiViewHDF5Dataset(str(custom_file), split='train', seed=3, load_images=False)
    assert again.metainfo['session_names'] == datasets['train'].metainfo['session_names']
    everything = MultiViewHDF5Dataset(str(custom_file), load_images=False)
    assert len(everything) == NUM_SESSIONS * FRAMES


def test_explicit_split_sessions(custom_file):
    spec = dict(train=['sess0', 'sess1', 'sess2'], val=['sess3'], test=['sess4', 'sess5'])
    ds = MultiViewHDF5Dataset(str(custom_file), split='test', split_sessions=spec,
                              load_images=False)
    assert len(ds) == 2 * FRAMES and ds.metainfo['session_names'] == ['sess4', 'sess5']
    with pytest.raises(ValueError, match='unknown sessions'):
        MultiViewHDF5Dataset(str(custom_file), split='val', split_sessions=dict(val=['nope']))
    with pytest.raises(ValueError, match='both'):
        MultiViewHDF5Dataset(str(custom_file), split='val',
                             split_sessions=dict(train=['sess0'], val=['sess0']))
    with pytest.raises(ValueError, match='split'):
        MultiViewHDF5Dataset(str(custom_file), split='training')


def test_multiview_sample_layout(custom_file):
    ds = MultiViewHDF5Dataset(str(custom_file))
    s = ds[2]                                        # view 0 invalid, view 2 larger
    assert s['view_valid'].tolist() == [False, True, True]
    assert isinstance(s['images'], list) and len(s['images']) == C
    assert s['images'][2].shape == (30, 40, 3) and s['images'][1].shape == (24, 32, 3)
    assert np.all(s['images'][0] == 0)               # an invalid view without an image
    assert int(s['images'][1][0, 0, 0]) == pytest.approx(21, abs=2)
    assert s['masks'][1].dtype == bool and s['masks'][1].all()
    assert s['mask_valid'].tolist() == [False, True, True] and not s['masks'][0].any()
    assert s['keypoints_2d'].shape == (C, K, 2) and np.isnan(s['keypoints_2d'][0]).all()
    assert s['params']['betas'].shape == (2,) and s['keypoints_3d'].shape == (K, 3)
    assert s['session'] == 'sess1' and s['frame'] == 0 and s['index'] == 2
    assert s['camera_names'] == ['a', 'b', 'c'] and s['keypoint_names'] == ['k0', 'k1', 'k2',
                                                                            'k3']
    assert s['view_indices'].tolist() == [0, 1, 2] and s['single_view'] is False
    no_images = MultiViewHDF5Dataset(str(custom_file), load_images=False, load_masks=False)[2]
    assert 'images' not in no_images and 'masks' not in no_images


def test_max_views_selects_valid_views_and_pads(custom_file):
    ds = MultiViewHDF5Dataset(str(custom_file), max_views=2, test_mode=True,
                              pipeline=[dict(type='ResizeViews', size=16)])
    s = ds[0]                                        # all valid: the first two in test mode
    assert s['view_indices'].tolist() == [0, 1] and s['view_valid'].all()
    s = ds[1]                                        # one valid view: padded
    assert s['view_indices'].tolist() == [1, -1]
    assert s['view_valid'].tolist() == [True, False]
    assert np.isnan(s['keypoints_2d'][1]).all() and not s['visible'][1].any()
    assert s['images'].shape == (2, 16, 16, 3) and np.all(s['images'][1] == 0)
    assert s['mask_valid'].tolist() == [True, False] and not s['masks'][1].any()
    train = MultiViewHDF5Dataset(str(custom_file), max_views=2)
    seen = set()
    for _ in range(30):
        v = train[0]['view_indices']
        assert len(v) == 2 and v[0] < v[1]
        seen.add(tuple(v))
    assert len(seen) > 1                             # random subsets in training


def test_single_view_items(custom_file):
    ds = SingleViewHDF5Dataset(str(custom_file), pipeline=[dict(type='PackInputs')])
    n_valid = sum(_valid(i).sum() for i in range(NUM_SESSIONS * FRAMES))
    assert len(ds) == n_valid
    raw = ds.load_sample(0)
    assert raw['single_view'] and raw['keypoints_2d'].shape == (1, K, 2)
    assert raw['view_indices'].tolist() == [0] and raw['view_valid'].tolist() == [True]
    views = [ds.get_data_info(i)['view'] for i in range(len(ds))]
    assert views[:4] == [0, 1, 2, 1]                 # sample 0: all views; sample 1: view 1
    packed = ds[3]
    assert packed['inputs'].shape == (3, 24, 32)
    assert packed['data_samples']['K'].shape == (3, 3)


def test_lazy_small_index_pickle_and_workers(custom_file):
    ds = MultiViewHDF5Dataset(str(custom_file), lazy_init=True, max_views=3,
                              pipeline=[dict(type='ResizeViews', size=16),
                                        dict(type='PackInputs')])
    assert not ds._fully_initialized
    ds.full_init()
    info = ds.get_data_info(0)
    assert set(info) == {'index', 'session_index', 'frame', 'instance', 'sample_idx'}
    assert len(ds.data_bytes) < 200 * len(ds)        # a few dozen bytes per item
    ds[0]                                            # opens the file in this process
    clone = pickle.loads(pickle.dumps(ds))
    assert clone[1]['data_samples']['frame'] == 1
    subset = ds.get_subset([0, 1])
    assert len(subset) == 2 and copy.deepcopy(ds)[0]['inputs'].shape == (3, 3, 16, 16)
    loader = torch.utils.data.DataLoader(ds, batch_size=4, num_workers=2,
                                         collate_fn=_collate,
                                         multiprocessing_context='fork')
    batches = list(loader)
    assert sum(len(b['inputs']) for b in batches) == len(ds)
    assert batches[0]['inputs'].shape == (4, 3, 3, 16, 16)
    assert batches[0]['data_samples']['view_valid'].shape == (4, 3)


def _collate(batch):
    from mmengine.dataset import default_collate
    return default_collate(batch)


# --------------------------------------------------------------------------- configs
CONFIG_DIR = REPO_ROOT / 'configs' / '_base_' / 'datasets'


def _build_loaders(cfg, names, root: Path, ann_file: str):
    out = {}
    with DefaultScope.overwrite_default_scope('smilfit'):
        for name in names:
            loader_cfg = copy.deepcopy(cfg[name])
            loader_cfg.dataset.data_root = str(root)
            loader_cfg.dataset.ann_file = ann_file
            loader_cfg.num_workers = 0
            loader_cfg.pop('persistent_workers', None)
            assert isinstance(DATASETS.build(loader_cfg.dataset), MultiViewHDF5Dataset)
            out[name] = Runner.build_dataloader(loader_cfg)
    return out


def test_synthetic_multiview_config_builds(tmp_path):
    cfg = Config.fromfile(str(CONFIG_DIR / 'synthetic_multiview.py'))
    generate_synthetic_dataset(tmp_path / 'synth.h5', progress=False, num_sessions=3,
                               frames_per_session=2, num_views=4, image_size=64, seed=0)
    loaders = _build_loaders(cfg, ('train_dataloader', 'val_dataloader', 'test_dataloader'),
                             tmp_path, 'synth.h5')
    sessions = []
    for name, loader in loaders.items():
        sessions.append(set(loader.dataset.metainfo['session_names']))
        batch = next(iter(loader))
        assert batch['inputs'].shape == (2, 4, 3, 256, 256)
        assert batch['data_samples']['keypoints_2d'].shape == (2, 4, 35, 2)
    assert not (sessions[0] & sessions[1]) and not (sessions[0] & sessions[2])


def test_mouse_session_config_builds(tmp_path, monkeypatch):
    cfg = Config.fromfile(str(CONFIG_DIR / 'mouse_session.py'))
    monkeypatch.chdir(REPO_ROOT)
    default = Path(cfg.test_dataloader.dataset.data_root) / cfg.test_dataloader.dataset.ann_file
    if default.exists():
        root, ann = default.parent.resolve(), default.name
    else:
        # Ingest four frames of the shared session instead (keypoints and cameras only).
        session = shared_path('data', 'sleap_anipose_minimal_session', 'minimal_session')
        from smilfit.datasets.ingest_sleap import ingest_sleap
        ingest_sleap(session, tmp_path / 'mouse.h5', max_frames=4, images=False,
                     progress=False)
        root, ann = tmp_path, 'mouse.h5'
    loader = _build_loaders(cfg, ('test_dataloader',), root, ann)['test_dataloader']
    batch = next(iter(loader))
    samples = batch['data_samples']
    assert samples['keypoints_2d'].shape[1:] == (4, 15, 2)
    assert samples['K'].shape[1:] == (4, 3, 3) and 'inputs' not in batch
