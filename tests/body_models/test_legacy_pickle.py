"""Legacy model pickles: the allow-list unpickler, chumpy/sparse stubs, exact round trips."""
import io
import os
import pickle
import struct
import subprocess
import sys
import types
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse

from smilfit.body_models.io import (LegacyModelError, UnsafePickleError, load_model_data,
                                    model_data_to_legacy_dict, read_legacy_pickle,
                                    save_model_data)
from smilfit.body_models.io.legacy_pickle import legacy_dict_to_model_data
from smilfit.body_models.model_data import ModelValidationError

from .test_validation import assert_deep_equal, assert_model_data_equal, tiny_model_data


# --------------------------------------------------------------- malicious
class _Evil:
    """Unpickling an instance calls ``func(*args)``: the classic pickle exploit."""

    def __init__(self, func, *args):
        self.func, self.args = func, args

    def __reduce__(self):
        return self.func, self.args


def _write(tmp_path: Path, payload: bytes, name: str = 'evil.pkl') -> Path:
    path = tmp_path / name
    path.write_bytes(payload)
    return path


def _assert_refused(path: Path, name: str) -> None:
    with pytest.raises(UnsafePickleError) as info:
        read_legacy_pickle(path)
    assert name in str(info.value)
    assert str(path) in str(info.value)
    assert isinstance(info.value, pickle.UnpicklingError)


@pytest.mark.parametrize('protocol', [0, 2, 4, 5])
def test_os_system_is_refused_and_never_run(tmp_path, protocol):
    marker = tmp_path / 'MARKER'
    payload = pickle.dumps({'v_template': _Evil(os.system, f'touch {marker}')}, protocol)
    path = _write(tmp_path, payload)
    _assert_refused(path, f'{os.system.__module__}.system')
    assert not marker.exists()


def test_handwritten_protocol0_posix_system(tmp_path):
    marker = tmp_path / 'MARKER'
    payload = b"cposix\nsystem\n(S'touch " + str(marker).encode() + b"'\ntR."
    path = _write(tmp_path, payload)
    _assert_refused(path, 'posix.system')
    assert not marker.exists()
    # The same stream with the harmless prefix of a real model dict in front.
    payload = b"(dp0\nS'f'\np1\ncposix\nsystem\np2\n(S'touch " + str(marker).encode() \
        + b"'\ntRp3\ns."
    _assert_refused(_write(tmp_path, payload, 'evil2.pkl'), 'posix.system')
    assert not marker.exists()


@pytest.mark.parametrize('protocol', [2, 5])
def test_builtins_eval_is_refused(tmp_path, protocol):
    marker = tmp_path / 'MARKER'
    code = f'open({str(marker)!r}, "w").close()'
    path = _write(tmp_path, pickle.dumps([np.zeros(3), _Evil(eval, code)], protocol))
    _assert_refused(path, 'builtins.eval')
    assert not marker.exists()


def test_subprocess_popen_is_refused(tmp_path):
    marker = tmp_path / 'MARKER'
    payload = pickle.dumps(_Evil(subprocess.Popen, ['touch', str(marker)]), 2)
    _assert_refused(_write(tmp_path, payload), 'subprocess.Popen')
    assert not marker.exists()


@pytest.mark.parametrize('payload, name', [
    # numpy is allowed only for array reconstruction, not e.g. numpy.load.
    (b"cnumpy\nload\n(S'x.npy'\ntR.", 'numpy.load'),
    (b"cbuiltins\ngetattr\n(cbuiltins\nobject\nS'__subclasses__'\ntR.", 'builtins.getattr'),
    # copy_reg._reconstructor may only build the inert chumpy/sparse stubs.
    (b"ccopy_reg\n_reconstructor\n(c__builtin__\nset\nc__builtin__\nobject\nNtR.",
     'copy_reg._reconstructor'),
    # _codecs.encode only for latin-1 (Python 3 bytes at protocol 2).
    (b"c_codecs\nencode\n(S'x'\nS'zlib_codec'\ntR.", '_codecs.encode'),
    # numpy array reconstruction only for plain ndarrays.
    (b"cnumpy.core.multiarray\n_reconstruct\n(c__builtin__\nset\n(I0\ntS'b'\ntR.",
     '_reconstruct'),
])
def test_other_refusals(tmp_path, payload, name):
    _assert_refused(_write(tmp_path, payload), name)


def test_persistent_ids_are_refused(tmp_path):
    _assert_refused(_write(tmp_path, b'Pfoo\n.'), 'persistent id')


# ------------------------------------------------- chumpy + sparse, crafted
class _FakeCh:
    """Pickles like ``chumpy.ch.Ch``: a terminal node holding its value under ``x``."""

    def __init__(self, x):
        self.x = x
        self._dirty_vars = set()
        self.dterms = ('x',)


class _FakeAdd:
    """Pickles like ``chumpy.ch_ops.add``: a derived expression without a stored value."""

    def __init__(self, a, b):
        self.a, self.b = a, b


@contextmanager
def fake_chumpy():
    """Make the fake classes picklable as chumpy.* only while dumping (chumpy is absent)."""
    saved = {name: sys.modules.get(name) for name in ('chumpy', 'chumpy.ch', 'chumpy.ch_ops')}
    ch_mod, ops_mod = types.ModuleType('chumpy.ch'), types.ModuleType('chumpy.ch_ops')
    classes = ((_FakeCh, ch_mod, 'Ch'), (_FakeAdd, ops_mod, 'add'))
    originals = [(cls, cls.__module__, cls.__qualname__, cls.__name__) for cls, _, _ in classes]
    for cls, mod, name in classes:
        cls.__module__, cls.__qualname__, cls.__name__ = mod.__name__, name, name
        setattr(mod, name, cls)
    sys.modules.update({'chumpy': types.ModuleType('chumpy'), 'chumpy.ch': ch_mod,
                        'chumpy.ch_ops': ops_mod})
    try:
        yield
    finally:
        for cls, module, qualname, name in originals:
            cls.__module__, cls.__qualname__, cls.__name__ = module, qualname, name
        for name, mod in saved.items():
            if mod is None:
                sys.modules.pop(name, None)
            else:  # pragma: no cover - chumpy really installed
                sys.modules[name] = mod


def _legacy_arrays():
    """A small legacy model dict (pure numpy) plus its sparse regressor."""
    data = tiny_model_data()
    legacy = model_data_to_legacy_dict(data)
    return legacy, scipy.sparse.csc_matrix(legacy['J_regressor'])


class _Py2Pickler(pickle._Pickler):
    """Writes what Python 2 + numpy 1 wrote: `str` opcodes, numpy.core paths, copy_reg."""

    dispatch = dict(pickle._Pickler.dispatch)
    _numpy1 = {id(np._core.multiarray._reconstruct): b'numpy.core.multiarray\n_reconstruct\n',
               id(np._core.multiarray.scalar): b'numpy.core.multiarray\nscalar\n'} \
        if hasattr(np, '_core') else {}

    def save_py2_str(self, obj):
        raw = obj.encode('latin1') if isinstance(obj, str) else bytes(obj)
        if len(raw) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(raw)]) + raw)
        else:
            self.write(pickle.BINSTRING + struct.pack('<i', len(raw)) + raw)
        self.memoize(obj)

    dispatch[bytes] = save_py2_str
    dispatch[str] = save_py2_str

    def save_global(self, obj, name=None):
        if id(obj) in self._numpy1:
            self.write(pickle.GLOBAL + self._numpy1[id(obj)])
            self.memoize(obj)
        else:
            super().save_global(obj, name)


def _dump(obj, protocol: int, py2: bool = False) -> bytes:
    buf = io.BytesIO()
    (_Py2Pickler if py2 else pickle.Pickler)(buf, protocol=protocol).dump(obj)
    return buf.getvalue()


@pytest.mark.parametrize('protocol, py2', [(0, False), (2, False), (5, False), (0, True),
                                           (2, True)])
def test_chumpy_and_sparse_without_chumpy(tmp_path, protocol, py2):
    legacy, sparse = _legacy_arrays()
    with fake_chumpy():
        crafted = dict(legacy, v_template=_FakeCh(legacy['v_template']),
                       shapedirs=_FakeCh(legacy['shapedirs']),
                       J_regressor=sparse, weights=_FakeCh(legacy['weights']))
        payload = _dump(crafted, protocol, py2)
    assert 'chumpy' not in sys.modules
    assert b'chumpy.ch' in payload and b'csc_matrix' in payload
    path = _write(tmp_path, payload, 'chumpy_model.pkl')
    loaded = read_legacy_pickle(path)
    assert 'chumpy' not in sys.modules  # never imported while loading
    assert_deep_equal(loaded, legacy)
    data = load_model_data(path)
    assert data.extra['legacy']['converted']['J_regressor'].endswith('csc_matrix')
    assert data.extra['legacy']['converted']['shapedirs'] == 'chumpy.ch.Ch'
    np.testing.assert_array_equal(data.J_regressor, legacy['J_regressor'])


def test_chumpy_expression_without_value_names_key(tmp_path):
    legacy, _ = _legacy_arrays()
    with fake_chumpy():
        expr = _FakeAdd(_FakeCh(legacy['shapedirs']), _FakeCh(legacy['shapedirs']))
        payload = _dump(dict(legacy, shapedirs=expr), 2)
    with pytest.raises(LegacyModelError) as info:
        read_legacy_pickle(_write(tmp_path, payload))
    assert "'shapedirs'" in str(info.value) and 'chumpy.ch_ops.add' in str(info.value)


@pytest.mark.parametrize('fmt', ['csc', 'csr', 'coo'])
@pytest.mark.parametrize('kind', ['matrix', 'array'])
def test_sparse_formats(tmp_path, fmt, kind):
    dense = np.zeros((4, 6), dtype=np.float32)
    dense[0, 1], dense[3, 5], dense[2, 0] = 1.5, -2.0, 0.25
    mat = getattr(scipy.sparse, f'{fmt}_{kind}')(dense)
    path = _write(tmp_path, pickle.dumps({'R': mat}, 2))
    out = read_legacy_pickle(path)['R']
    assert type(out) is np.ndarray and out.dtype == np.float32
    np.testing.assert_array_equal(out, dense)


def test_sparse_old_module_path(tmp_path):
    """scipy < 1.8 pickled csc_matrix as scipy.sparse.csc.csc_matrix."""
    dense = np.arange(12, dtype=np.float64).reshape(3, 4) % 3
    payload = pickle.dumps({'J_regressor': scipy.sparse.csc_matrix(dense)}, 0)
    module = scipy.sparse.csc_matrix.__module__.encode()
    assert b'c' + module + b'\ncsc_matrix\n' in payload
    payload = payload.replace(module + b'\ncsc_matrix\n', b'scipy.sparse.csc\ncsc_matrix\n')
    out = read_legacy_pickle(_write(tmp_path, payload))['J_regressor']
    np.testing.assert_array_equal(out, dense)


def test_numpy1_and_numpy2_module_paths(tmp_path):
    arr = np.arange(6, dtype=np.int32).reshape(2, 3)
    scalar = np.float32(2.5)
    for name, payload in (('np2.pkl', pickle.dumps({'a': arr, 's': scalar}, 2)),
                          ('np1.pkl', _dump({'a': arr, 's': scalar}, 2, py2=True))):
        out = read_legacy_pickle(_write(tmp_path, payload, name))
        assert_deep_equal(out, {'a': arr, 's': scalar}, name)
    assert b'numpy.core.multiarray' in _dump(arr, 2, py2=True)


def test_top_level_must_be_a_dict(tmp_path):
    with pytest.raises(LegacyModelError, match='dict'):
        read_legacy_pickle(_write(tmp_path, pickle.dumps([np.zeros(3)], 2)))


def test_missing_file_names_it(tmp_path):
    with pytest.raises(FileNotFoundError, match='nope.pkl'):
        read_legacy_pickle(tmp_path / 'nope.pkl')


# ------------------------------------------------------- dict <-> model data
def test_uint32_root_parent_and_generated_names(tmp_path):
    legacy, _ = _legacy_arrays()
    kintree = np.array([[4294967295, 0, 1], [0, 1, 2]], dtype=np.int64)
    d = {k: v for k, v in legacy.items() if k not in ('J_names', 'kintree_table')}
    d['kintree_table'] = kintree
    data = legacy_dict_to_model_data(d).validate()
    assert data.parents.tolist() == [-1, 0, 1] and data.parents.dtype == np.int64
    assert data.joint_names == ['joint_0', 'joint_1', 'joint_2']
    assert_deep_equal(model_data_to_legacy_dict(data), d)
    d['kintree_table'] = kintree.astype(np.uint32)
    out = model_data_to_legacy_dict(legacy_dict_to_model_data(d))
    assert out['kintree_table'].dtype == np.uint32 and out['kintree_table'][0, 0] == 4294967295


def test_unknown_keys_and_empty_values_round_trip():
    legacy, _ = _legacy_arrays()
    d = dict(legacy)
    d.update(posedirs=np.zeros((0,)), scaledirs=[], transdirs=[], static_joint_locs=True,
             vert_sym_idxs=np.arange(3), note='made by hand', flags=(1, 2.5, None),
             J_names=('a', 'b', 'c'))
    data = legacy_dict_to_model_data(d, name='hand').validate()
    assert data.scaledirs is None and data.posedirs.shape == (5, 3, 0)
    assert data.extra['note'] == 'made by hand'
    assert_deep_equal(model_data_to_legacy_dict(data), d)


def test_missing_J_is_regressed_and_not_written_back():
    legacy, _ = _legacy_arrays()
    d = {k: v for k, v in legacy.items() if k != 'J'}
    data = legacy_dict_to_model_data(d)
    np.testing.assert_allclose(data.J, legacy['J_regressor'] @ legacy['v_template'])
    assert_deep_equal(model_data_to_legacy_dict(data), d)


def test_unsupported_skinning_is_refused():
    legacy, _ = _legacy_arrays()
    with pytest.raises(ModelValidationError, match="'bs_style'"):
        legacy_dict_to_model_data(dict(legacy, bs_style='dqbs'))


def test_model_data_without_legacy_history(tmp_path):
    """A model built in memory gets a canonical legacy dict and reads back identically."""
    data = tiny_model_data(units='m', up_axis='z', name='pyramid',
                           keypoints={'tip': {'joint': 'tip'}, 'apex': {'vertex': 4}},
                           sym_joint_pairs=np.array([[1, 2]]), trans_factor=0.02,
                           shape_cov=np.eye(2), shape_mean=np.zeros(2))
    path = tmp_path / 'pyramid.pkl'
    save_model_data(data, path)
    back = load_model_data(path)
    back.extra.pop('legacy')
    assert_model_data_equal(back, data)


# --------------------------------------------------------------- real models
def test_real_stick_model(stick_model_path):
    data = load_model_data(stick_model_path)
    assert (data.num_vertices, data.num_faces, data.num_joints, data.num_betas) == \
        (3020, 6019, 55, 5)
    assert data.J_regressor.shape == (55, 3020) and not data.static_joint_locs
    assert data.scaledirs.shape == data.transdirs.shape == (5, 55, 3)
    assert data.shape_cov.shape == (5, 5) and data.shape_mean.shape == (5,)
    assert data.sym_verts.ndim == 1 and len(data.joint_names) == 55
    assert data.faces.dtype == np.int64 and data.parents[0] == -1
    assert_deep_equal(model_data_to_legacy_dict(data), read_legacy_pickle(stick_model_path))


def test_real_mouse_model(mouse_model_path):
    data = load_model_data(mouse_model_path)
    assert (data.num_vertices, data.num_faces, data.num_joints, data.num_betas) == \
        (11263, 17420, 31, 3)
    assert data.static_joint_locs and data.J.shape == (31, 3)
    assert not data.J_regressor.any()
    assert data.scaledirs is None and data.transdirs is None
    assert_deep_equal(model_data_to_legacy_dict(data), read_legacy_pickle(mouse_model_path))


def test_real_model_pickle_rewrite_is_exact(stick_model_path, tmp_path):
    out = tmp_path / 'stick.pkl'
    save_model_data(load_model_data(stick_model_path), out)
    assert_deep_equal(read_legacy_pickle(out), read_legacy_pickle(stick_model_path))
    # Written with numpy-1 module paths so numpy 1.x installs can read it too.
    assert b'numpy._core' not in out.read_bytes()
