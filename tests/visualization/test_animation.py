"""Animation files reload bit for bit; stale, mixed-up or corrupted pairs are refused."""
import json

import numpy as np
import pytest
import torch

from smilfit.visualization.animation import (AnimationFormatError, load_animation,
                                             save_animation)


def _params(T=5):
    rng = np.random.default_rng(1)
    return dict(global_orient=rng.normal(size=(T, 3)).astype(np.float32),
                body_pose=torch.randn(T, 26, 3, dtype=torch.float64),
                betas=rng.normal(size=(T, 9)).astype(np.float32),
                frame=np.arange(T, dtype=np.int64) * 3,
                diverged=np.array([True, False, False, True, False])[:T])


def test_round_trip_is_exact(tmp_path):
    params = _params()
    meta = dict(session='mouse_01', cameras=['a', 'b'], nested=dict(x=1.5, ok=True, n=None))
    npz, js = save_animation(tmp_path / 'anim' / 'fit', params, meta, fps=30,
                             body_model='models/mouse.pkl')
    assert npz.name == 'fit.npz' and js.name == 'fit.json'
    for path in (tmp_path / 'anim' / 'fit', npz, js):            # any of the three names
        anim = load_animation(path)
        assert anim.meta == meta and anim.fps == 30.0 and anim.num_frames == 5
        assert anim.body_model == 'models/mouse.pkl'
        assert set(anim.params) == set(params)
        for name, value in params.items():
            value = value.numpy() if isinstance(value, torch.Tensor) else value
            assert anim.params[name].dtype == value.dtype
            assert anim.params[name].tobytes() == value.tobytes()    # bitwise
    header = json.loads(js.read_text())
    assert header['params']['body_pose'] == dict(shape=[5, 26, 3], dtype='<f8')
    assert sorted(p.name for p in (tmp_path / 'anim').iterdir()) == ['fit.json', 'fit.npz']


def test_corrupted_or_mixed_up_pairs_are_refused(tmp_path):
    save_animation(tmp_path / 'a', _params(), fps=25)
    save_animation(tmp_path / 'b', _params(T=4))
    # Swapping in another animation's .npz: checksum mismatch.
    (tmp_path / 'a.npz').write_bytes((tmp_path / 'b.npz').read_bytes())
    with pytest.raises(AnimationFormatError, match='checksum'):
        load_animation(tmp_path / 'a')
    # Without the checksum the shapes still disagree with the description.
    with pytest.raises(AnimationFormatError, match='in the .npz but'):
        load_animation(tmp_path / 'a', verify=False)
    # Truncated file.
    data = (tmp_path / 'b.npz').read_bytes()
    (tmp_path / 'b.npz').write_bytes(data[:len(data) // 2])
    with pytest.raises(AnimationFormatError):
        load_animation(tmp_path / 'b', verify=False)
    (tmp_path / 'b.json').write_text('{"format": "something else"}')
    with pytest.raises(AnimationFormatError, match='not a smilfit-animation'):
        load_animation(tmp_path / 'b')
    with pytest.raises(AnimationFormatError, match='no such file'):
        load_animation(tmp_path / 'missing')


def test_bad_input_is_refused(tmp_path):
    with pytest.raises(ValueError, match='number of frames'):
        save_animation(tmp_path / 'x', dict(a=np.zeros((3, 2)), b=np.zeros((4, 2))))
    with pytest.raises(TypeError, match='only numeric'):
        save_animation(tmp_path / 'x', dict(a=np.array(['s', 't'])))
    with pytest.raises(TypeError, match=r"meta\['when'\] is a tuple"):
        save_animation(tmp_path / 'x', dict(a=np.zeros(2)), dict(when=(1, 2)))
    with pytest.raises(TypeError, match='not valid JSON'):
        save_animation(tmp_path / 'x', dict(a=np.zeros(2)), dict(v=float('nan')))
    with pytest.raises(ValueError, match='identifiers'):
        save_animation(tmp_path / 'x', {'a b': np.zeros(2)})
    assert list(tmp_path.iterdir()) == []
