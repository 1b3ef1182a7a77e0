"""smilfit's HDF5 dataset format: writer/reader round trip, atomicity, resume, codecs."""
import pickle

import h5py
import numpy as np
import pytest

from smilfit.datasets.hdf5_format import (FORMAT_NAME, SCHEMA_VERSION, DatasetFormatError,
                                          DatasetReader, DatasetWriter, decode_image,
                                          decode_mask, encode_image, encode_mask, partial_path)

C, K = 3, 4
NAMES = ['nose', 'ear_l', 'ear_r', 'tail']


def make_batch(b: int, frame0: int = 0, session: int = 0, seed: int = 0, images: bool = True):
    rng = np.random.default_rng(seed)
    kp = (rng.random((b, C, K, 2)) * 50).astype(np.float32)
    conf = rng.random((b, C, K)).astype(np.float32) + 0.1
    kp[:, 0, 1] = np.nan                       # a missing point in every sample
    conf[:, 0, 1] = 0
    valid = np.ones((b, C), bool)
    valid[:, 2] = False
    batch = dict(
        session=np.full(b, session), frame=np.arange(frame0, frame0 + b),
        instance=np.zeros(b, np.int32), track=np.array(['a'] * b, dtype=object),
        valid=valid, keypoints_2d=kp, confidence=conf,
        visible=np.isfinite(kp).all(-1) & (conf > 0.5),
        K=np.broadcast_to(np.diag([100.0, 100.0, 1.0]), (b, C, 3, 3)).copy(),
        dist=rng.random((b, C, 5)) * 0.01,
        R=np.broadcast_to(np.eye(3), (b, C, 3, 3)).copy(), t=rng.random((b, C, 3)),
        image_size=np.full((b, C, 2), 64, np.int32),
        crop=np.broadcast_to(np.eye(3), (b, C, 3, 3)).copy(),
        keypoints_3d=rng.random((b, K, 3)).astype(np.float32),
        params={'betas': rng.random((b, 5)).astype(np.float32)},
    )
    if images:
        batch['images'] = [[encode_image(rng.integers(0, 255, (32, 40, 3), dtype=np.uint8))
                            if c < 2 else b'' for c in range(C)] for _ in range(b)]
        batch['masks'] = [[encode_mask(rng.random((32, 40)) > 0.5) for _ in range(C)]
                          for _ in range(b)]
    return batch


def write(path, batches, **kwargs):
    with DatasetWriter(path, keypoint_names=NAMES, num_views=C, units='mm', source='test',
                       **kwargs) as w:
        w.add_session('s0', ['a', 'b', 'c'])
        w.add_session('s1', ['a', 'b'])
        for batch in batches:
            w.add_samples(batch)
        w.commit()


def test_round_trip(tmp_path):
    path = tmp_path / 'd.h5'
    b1, b2 = make_batch(20, seed=1), make_batch(13, frame0=20, session=1, seed=2)
    write(path, [b1, b2], attrs={'note': 'hello', 'opts': {'a': 1}},
          params_attrs={'body_model': 'toy'})
    r = DatasetReader(path)
    assert len(r) == 33 and r.num_views == C and r.num_keypoints == K
    assert r.keypoint_names == NAMES and r.session_names == ['s0', 's1']
    assert r.camera_names == [['a', 'b', 'c'], ['a', 'b']]
    assert r.units == 'mm' and r.attrs['note'] == 'hello' and r.attrs['opts'] == '{"a": 1}'
    assert r.attrs['format'] == FORMAT_NAME and r.attrs['schema_version'] == SCHEMA_VERSION
    assert r.params_attrs['body_model'] == 'toy' and r.param_names == ['betas']
    idx = [25, 3, 3, 0, 32]                    # unsorted, repeated
    got = r.read(idx)
    ref = {k: np.concatenate([np.asarray(b1[k]), np.asarray(b2[k])])
           for k in b1 if k not in ('images', 'masks', 'params', 'track')}
    for key, value in ref.items():
        np.testing.assert_allclose(got[key], value[idx].astype(got[key].dtype), rtol=1e-6,
                                   equal_nan=True, err_msg=key)
    assert got['keypoints_2d'].dtype == np.float32 and got['K'].dtype == np.float64
    assert got['session'].dtype == np.int32 and got['frame'].dtype == np.int64
    assert list(got['track']) == ['a'] * 5
    betas = np.concatenate([b1['params']['betas'], b2['params']['betas']])
    np.testing.assert_allclose(got['params']['betas'], betas[idx])
    images = b1['images'] + b2['images']
    assert got['images'] == [images[i] for i in idx]
    assert got['calibrated'].all()             # default
    # images decode; an empty view is None
    decoded = r.read_images(3)
    assert decoded[0].shape == (32, 40, 3) and decoded[2] is None
    masks = r.read_masks(3)
    assert masks[0].shape == (32, 40) and set(np.unique(masks[0])) <= {0, 255}
    # selected keys only
    assert set(r.read([1], keys=['frame', 'valid'])) == {'frame', 'valid'}
    with pytest.raises(IndexError):
        r.read([33])


def test_layout_chunks_and_dtypes(tmp_path):
    path = tmp_path / 'd.h5'
    write(path, [make_batch(40)])
    with h5py.File(path, 'r') as f:
        assert f['views/keypoints_2d'].shape == (40, C, K, 2)
        assert f['views/keypoints_2d'].chunks[0] == 32
        assert f['views/keypoints_2d'].compression == 'lzf'
        assert f['views/images'].compression is None
        assert f['views/K'].dtype == np.float64 and f['views/valid'].dtype == bool
        assert f['views/image_size'].dtype == np.int32
        assert f['keypoints_3d'].dtype == np.float32 and f['params/betas'].shape == (40, 5)
        assert f['sessions/camera_names'].shape == (2, C)
        assert f.attrs['complete'] and f.attrs['num_views'] == C


def test_optional_datasets_fill_earlier_rows(tmp_path):
    path = tmp_path / 'd.h5'
    first = make_batch(4, images=False)
    del first['keypoints_3d'], first['params']
    write(path, [first, make_batch(3, frame0=4, seed=5)])
    r = DatasetReader(path)
    got = r.read(range(7))
    assert np.isnan(got['keypoints_3d'][:4]).all() and np.isfinite(got['keypoints_3d'][4:]).all()
    assert np.isnan(got['params']['betas'][:4]).all()
    assert got['images'][0] == [b''] * C and r.read_images(0) is None
    assert r.read_masks(0) is None and r.read_masks(5) is not None


def test_pure_red_stays_red(tmp_path):
    red = np.zeros((24, 32, 3), np.uint8)
    red[..., 0] = 255
    path = tmp_path / 'd.h5'
    batch = make_batch(1, images=False)
    batch['images'] = [[encode_image(red)] + [b''] * (C - 1)]
    write(path, [batch])
    img = DatasetReader(path).read_images(0)[0]
    assert img.shape == (24, 32, 3)
    assert (img[..., 0] > 240).all() and (img[..., 1] < 15).all() and (img[..., 2] < 15).all()
    # the codec alone, with a gray image and a mask
    gray = decode_image(encode_image(np.full((5, 6), 128, np.uint8)))
    assert gray.shape == (5, 6, 3) and abs(int(gray.mean()) - 128) <= 2
    mask = np.zeros((7, 9), bool)
    mask[2:5, 3:6] = True
    assert np.array_equal(decode_mask(encode_mask(mask)) > 0, mask)


def test_exception_inside_with_leaves_nothing(tmp_path):
    path = tmp_path / 'd.h5'
    with pytest.raises(RuntimeError, match='boom'):
        with DatasetWriter(path, keypoint_names=NAMES, num_views=C) as w:
            w.add_session('s0', ['a'])
            w.add_samples(make_batch(5))
            assert partial_path(path).exists() and not path.exists()
            raise RuntimeError('boom')
    assert not path.exists() and not partial_path(path).exists()
    # leaving without commit also discards the partial file
    with DatasetWriter(path, keypoint_names=NAMES, num_views=C) as w:
        w.add_session('s0', ['a'])
    assert list(tmp_path.iterdir()) == []
    # Ctrl-C
    with pytest.raises(KeyboardInterrupt):
        with DatasetWriter(path, keypoint_names=NAMES, num_views=C) as w:
            raise KeyboardInterrupt
    assert list(tmp_path.iterdir()) == []


def test_existing_file_refused_and_overwrite(tmp_path):
    path = tmp_path / 'd.h5'
    write(path, [make_batch(3)])
    with pytest.raises(FileExistsError, match='already exists'):
        DatasetWriter(path, keypoint_names=NAMES, num_views=C)
    # a failed overwrite keeps the old file
    with pytest.raises(RuntimeError):
        with DatasetWriter(path, keypoint_names=NAMES, num_views=C, overwrite=True):
            raise RuntimeError
    assert len(DatasetReader(path)) == 3
    write(path, [make_batch(5)], overwrite=True)
    assert len(DatasetReader(path)) == 5 and not partial_path(path).exists()


def test_resume_keeps_partial_and_skips_written(tmp_path):
    path = tmp_path / 'd.h5'
    with pytest.raises(KeyboardInterrupt):
        with DatasetWriter(path, keypoint_names=NAMES, num_views=C, resume=True) as w:
            w.add_session('s0', ['a', 'b', 'c'])
            w.add_samples(make_batch(6))
            raise KeyboardInterrupt
    assert partial_path(path).exists() and not path.exists()
    with pytest.raises(DatasetFormatError, match='unfinished'):
        DatasetReader(partial_path(path))
    with DatasetWriter(path, keypoint_names=NAMES, num_views=C, resume=True) as w:
        assert w.add_session('s0', ['a', 'b', 'c']) == 0
        assert w.contains('s0', 5) and not w.contains('s0', 6)
        assert w.add_samples(make_batch(10)) == 4          # frames 0-5 already there
        w.commit()
    r = DatasetReader(path)
    assert len(r) == 10 and list(r.read(range(10))['frame']) == list(range(10))
    # resuming a finished file adds what is missing, the original survives a failure
    with pytest.raises(RuntimeError):
        with DatasetWriter(path, keypoint_names=NAMES, num_views=C, resume=True) as w:
            raise RuntimeError
    assert len(DatasetReader(path)) == 10
    with DatasetWriter(path, keypoint_names=NAMES, num_views=C, resume=True) as w:
        w.add_session('s0', ['a', 'b', 'c'])
        w.add_samples(make_batch(12))
        w.commit()
    assert len(DatasetReader(path)) == 12 and not partial_path(path).exists()
    # incompatible resumes are refused
    with pytest.raises(DatasetFormatError, match='keypoint_names differ'):
        DatasetWriter(path, keypoint_names=NAMES[::-1], num_views=C, resume=True).open()
    assert not partial_path(path).exists()
    with pytest.raises(DatasetFormatError, match='num_views differ'):
        with DatasetWriter(path, keypoint_names=NAMES, num_views=C + 1, resume=True):
            pass
    assert not partial_path(path).exists()
    with pytest.raises(DatasetFormatError, match='cameras'):
        with DatasetWriter(path, keypoint_names=NAMES, num_views=C, resume=True) as w:
            w.add_session('s0', ['x'])


def test_schema_version_and_format_refused(tmp_path):
    path = tmp_path / 'd.h5'
    write(path, [make_batch(2)])
    with h5py.File(path, 'r+') as f:
        f.attrs['schema_version'] = SCHEMA_VERSION + 1
    with pytest.raises(DatasetFormatError, match=f'schema_version {SCHEMA_VERSION + 1} is newer'):
        DatasetReader(path)
    with h5py.File(path, 'r+') as f:
        f.attrs['schema_version'] = SCHEMA_VERSION
        del f.attrs['format']
    with pytest.raises(DatasetFormatError, match="not a smilfit dataset"):
        DatasetReader(path)
    bad = tmp_path / 'not_hdf5.h5'
    bad.write_bytes(b'hello')
    with pytest.raises(DatasetFormatError, match='cannot open'):
        DatasetReader(bad)
    with pytest.raises(DatasetFormatError, match='no such dataset'):
        DatasetReader(tmp_path / 'missing.h5')


def test_writer_validation_errors(tmp_path):
    with DatasetWriter(tmp_path / 'd.h5', keypoint_names=NAMES, num_views=C) as w:
        w.add_session('s0', ['a'])
        batch = make_batch(2)
        with pytest.raises(DatasetFormatError, match="'K' has shape"):
            w.add_samples({**batch, 'K': np.zeros((2, 3, 3))})
        with pytest.raises(DatasetFormatError, match='missing keys'):
            w.add_samples({k: v for k, v in batch.items() if k != 'R'})
        with pytest.raises(DatasetFormatError, match='session index out of range'):
            w.add_samples({**batch, 'session': np.array([0, 3])})
        vis = batch['visible'].copy()
        vis[0, 0, 1] = True                    # a NaN point marked visible
        with pytest.raises(DatasetFormatError, match='visible'):
            w.add_samples({**batch, 'visible': vis})
        conf = batch['confidence'].copy()
        conf[0, 0, 1] = 0.5                    # a NaN point with confidence
        with pytest.raises(DatasetFormatError, match='confidence'):
            w.add_samples({**batch, 'confidence': conf})
        with pytest.raises(DatasetFormatError, match="'images' must be"):
            w.add_samples({**batch, 'images': [[b'']]})
        with pytest.raises(DatasetFormatError, match='cameras but'):
            w.add_session('big', ['a', 'b', 'c', 'd'])
    with pytest.raises(DatasetFormatError, match='reserved'):
        DatasetWriter(tmp_path / 'e.h5', keypoint_names=NAMES, num_views=C,
                      attrs={'format': 'x'})


def test_reader_is_pickle_and_fork_safe(tmp_path):
    path = tmp_path / 'd.h5'
    write(path, [make_batch(8)])
    r = DatasetReader(path)
    first = r.read([1, 2])
    clone = pickle.loads(pickle.dumps(r))     # what a spawned dataloader worker receives
    assert clone._f is None
    np.testing.assert_array_equal(clone.read([1, 2])['frame'], first['frame'])
    r._pid = -1                               # as seen from a forked child: reopen
    old = r._f
    np.testing.assert_array_equal(r.read([1, 2])['frame'], first['frame'])
    assert r._f is not old
    # Cached dataset handles belong to one open file: none of the old file's is reused.
    assert all(node is None or node.file == r._f for node in r._nodes.values())
    r.close()
    assert r._nodes == {}
    np.testing.assert_array_equal(r.read([1, 2])['frame'], first['frame'])  # reopens
    r.close()
    clone.close()
