"""smilfit's JSON model format: exact round trips and clear errors for malformed files."""
import copy
import gzip
import json
import re

import numpy as np
import pytest

from smilfit.body_models.io import (FORMAT_VERSION, ModelFormatError, load_model_data,
                                    model_data_from_json_dict, model_data_to_json_dict,
                                    model_data_to_legacy_dict, read_legacy_pickle,
                                    save_model_data)
from smilfit.body_models.model_data import ModelValidationError

from ..conftest import REPO_ROOT
from .test_validation import assert_deep_equal, assert_model_data_equal, tiny_model_data


def full_model_data():
    """The tiny model with every optional field set, and awkward values in ``extra``."""
    limits = np.full((3, 3, 2), np.nan)
    limits[1] = [[-0.5, 0.5], [np.nan, 1.25], [-np.pi, np.nan]]
    return tiny_model_data(
        scaledirs=np.arange(18, dtype=np.float32).reshape(2, 3, 3) / 7,
        transdirs=np.linspace(-1, 1, 18).reshape(2, 3, 3),
        trans_factor=0.02, shape_mean=np.array([0.1, -0.2]),
        shape_cov=np.array([[2.0, 0.1], [0.1, 1.0 / 3]]), joint_limits=limits,
        sym_verts=np.array([4], dtype=np.int32), sym_joint_pairs=np.array([[1, 2]]),
        keypoints={'apex': {'vertex': 4}, 'tip': {'joint': 'tip'},
                   'base': {'vertices': [0, 1, 2, 3], 'weights': [0.25] * 4}},
        units='mm', up_axis='-z', name='pyramid',
        static_joint_locs=True, posedirs=np.arange(270, dtype=np.float64).reshape(5, 3, 18) / 100,
        extra={'note': 'hi', 'nan': float('nan'), 'tuple': (1, 'a', None), 'raw': b'\x00\xff',
               'arr16': np.array([[1.5, -0.0]], dtype=np.float16),
               'bad': np.array([np.inf, np.nan, -np.inf, 1e-300]),
               'u8': np.array([2 ** 64 - 1], dtype=np.uint64), 'names': np.array(['ab', 'c']),
               'scalar': np.float32(0.1), 'f64': np.float64(0.3), 'str_': np.str_('s'),
               'flag': np.bool_(True), 'big_endian': np.arange(3, dtype='>i4'),
               'nested': {'list': [np.int8(3), [True, False]]}, 'empty': np.zeros((0, 4))})


def _round_trip(data, tmp_path, name='model.json'):
    path = tmp_path / name
    save_model_data(data, path)
    return load_model_data(path), path


@pytest.mark.parametrize('name', ['model.json', 'model.json.gz'])
def test_round_trip_is_exact(tmp_path, name):
    data = full_model_data().validate()
    back, path = _round_trip(data, tmp_path, name)
    assert_model_data_equal(back, data)
    if name.endswith('.gz'):
        assert gzip.decompress(path.read_bytes()).startswith(b'{')


def test_float32_precision_survives(tmp_path):
    rng = np.random.default_rng(1)
    data = tiny_model_data()
    data.weights = rng.dirichlet(np.ones(3), size=5).astype(np.float32)
    data.shapedirs = rng.normal(size=(5, 3, 2)).astype(np.float32) * np.float32(1e-7)
    back, _ = _round_trip(data, tmp_path)
    assert back.weights.dtype == np.float32 and back.shapedirs.dtype == np.float32
    assert back.weights.tobytes() == data.weights.tobytes()
    assert back.shapedirs.tobytes() == data.shapedirs.tobytes()


def test_negative_zero_weights_survive(tmp_path):
    data = tiny_model_data()
    data.weights[0, 2] = -0.0
    back, _ = _round_trip(data, tmp_path)
    assert back.weights.tobytes() == data.weights.tobytes()


def test_file_is_readable(tmp_path):
    _, path = _round_trip(full_model_data(), tmp_path)
    text = path.read_text()
    doc = json.loads(text)
    assert doc['format'] == 'smilfit-model' and doc['format_version'] == FORMAT_VERSION
    joints = doc['skeleton']['joints']
    assert [j['parent'] for j in joints] == [None, 'root', 'mid']
    assert joints[1]['limits'] == [[-0.5, 0.5], [None, 1.25], [-np.pi, None]]
    assert doc['skinning_weights']['per_vertex'][3] == [[1, 0.25], [2, 0.75]]
    assert doc['joint_regressor']['per_joint'][1] == [[2, 1.0]]
    assert doc['shapedirs']['shape'] == [2, 5, 3]
    assert doc['symmetry']['sym_joint_pairs'] == [['mid', 'tip']]
    # One vertex per line.
    assert '\n        [0.5, 0.5, 1.0]\n' in text


# ------------------------------------------------------------------ real models
@pytest.mark.parametrize('fixture', ['stick_model_path', 'mouse_model_path'])
def test_real_model_pkl_json_pkl_exact(request, tmp_path, fixture):
    src = request.getfixturevalue(fixture)
    data = load_model_data(src)
    back, _ = _round_trip(data, tmp_path, src.stem + '.json')
    assert_model_data_equal(back, data)
    out = tmp_path / (src.stem + '.pkl')
    save_model_data(back, out)
    assert_deep_equal(read_legacy_pickle(out), read_legacy_pickle(src))
    assert_deep_equal(model_data_to_legacy_dict(back), read_legacy_pickle(src))


# ------------------------------------------------------------- documentation
def test_docs_example_loads(tmp_path):
    text = (REPO_ROOT / 'docs' / 'model_format.md').read_text()
    example = re.search(r'```json\n(.*?)```', text, re.S).group(1)
    path = tmp_path / 'example.json'
    path.write_text(example)
    data = load_model_data(path)
    assert data.num_joints == 2 and data.num_vertices == 4 and data.num_betas == 1
    assert data.joint_limits is not None and np.isnan(data.joint_limits[0]).all()


# ------------------------------------------------------------------- errors
def _doc():
    return model_data_to_json_dict(full_model_data())


def _expect(doc, *words, exc=ModelFormatError):
    with pytest.raises(exc) as info:
        model_data_from_json_dict(doc, source='test.json').validate()
    for word in words:
        assert word in str(info.value), f'{word!r} not in {info.value}'


def _edit(change):
    doc = copy.deepcopy(_doc())
    change(doc)
    return doc


def test_wrong_format():
    _expect(_edit(lambda d: d.update(format='smpl')), "'format'", 'smilfit-model')


def test_newer_format_version():
    _expect(_edit(lambda d: d.update(format_version=FORMAT_VERSION + 1)), "'format_version'",
            'upgrade')


def test_bad_format_version():
    _expect(_edit(lambda d: d.update(format_version='1')), "'format_version'")


@pytest.mark.parametrize('field', ['mesh', 'skeleton', 'skinning_weights', 'format_version'])
def test_missing_required_field(field):
    _expect(_edit(lambda d: d.pop(field)), repr(field), 'missing')


def test_missing_nested_field():
    _expect(_edit(lambda d: d['mesh'].pop('faces')), "'mesh.faces'", 'missing')
    _expect(_edit(lambda d: d['skeleton']['joints'][2].pop('position')),
            "'skeleton.joints[2].position'", 'missing')


def test_joint_regressor_required_without_static_joints():
    def change(d):
        d['skeleton']['static_joint_locs'] = False
        d.pop('joint_regressor')
    _expect(_edit(change), "'joint_regressor'", 'missing')


def test_unknown_fields_are_reported():
    _expect(_edit(lambda d: d.update(skining_weights={})), "'skining_weights'", 'unknown')
    _expect(_edit(lambda d: d['skeleton']['joints'][0].update(colour='red')),
            "'skeleton.joints[0]'", 'colour')


def test_unknown_parent_name():
    _expect(_edit(lambda d: d['skeleton']['joints'][2].update(parent='elbow')),
            "'skeleton.joints[2].parent'", 'elbow')


def test_duplicate_joint_name():
    _expect(_edit(lambda d: d['skeleton']['joints'][2].update(name='mid')),
            "'skeleton.joints[2].name'", 'duplicate')


def test_bad_joint_limits():
    _expect(_edit(lambda d: d['skeleton']['joints'][1].update(limits=[[0, 1]])),
            "'skeleton.joints[1].limits'")


def test_ragged_and_mistyped_arrays():
    _expect(_edit(lambda d: d['mesh']['vertices']['data'][1].pop()), "'mesh.vertices'",
            'unequal length')
    _expect(_edit(lambda d: d['mesh']['faces']['data'][0].__setitem__(0, 1.5)),
            "'mesh.faces'", 'integers')
    _expect(_edit(lambda d: d['mesh']['vertices']['data'][0].__setitem__(0, '1.5')),
            "'mesh.vertices'")
    _expect(_edit(lambda d: d['mesh']['vertices'].update(shape=[4, 3])), "'mesh.vertices'",
            'shape')
    _expect(_edit(lambda d: d['mesh']['vertices'].update(dtype='float128')),
            "'mesh.vertices.dtype'")
    _expect(_edit(lambda d: d['mesh']['faces'].update(dtype='int8', data=[[0, 1, 300]])),
            "'mesh.faces'", 'out of range')


def test_bad_sparse_entries():
    _expect(_edit(lambda d: d['skinning_weights']['per_vertex'][0].append([0, 0.5])),
            "'skinning_weights.per_vertex[0]'", 'twice')
    _expect(_edit(lambda d: d['skinning_weights']['per_vertex'][1].__setitem__(0, [7, 0.5])),
            "'skinning_weights.per_vertex[1]'", 'joint index 7')
    _expect(_edit(lambda d: d['skinning_weights']['per_vertex'].pop()),
            "'skinning_weights.per_vertex'", '5 rows')
    _expect(_edit(lambda d: d['joint_regressor']['per_joint'][1].__setitem__(0, [2, 1, 0])),
            "'joint_regressor.per_joint'", 'pair')


def test_bad_symmetry_pair():
    _expect(_edit(lambda d: d['symmetry'].update(sym_joint_pairs=[['mid', 'paw']])),
            "'symmetry.sym_joint_pairs[0]'", 'paw')


def test_validation_still_applies():
    """Structurally fine, semantically wrong: validate() names the model field."""
    _expect(_edit(lambda d: d['skinning_weights']['per_vertex'][0].__setitem__(0, [0, 0.5])),
            "'weights'", 'sum to 1', exc=ModelValidationError)


def test_extra_rejects_unstorable_values():
    data = tiny_model_data(extra={'obj': object()})
    with pytest.raises(ModelFormatError, match=r"extra\.obj"):
        model_data_to_json_dict(data)
    data = tiny_model_data(extra={'d': {1: 'int key'}})
    with pytest.raises(ModelFormatError, match='string'):
        model_data_to_json_dict(data)


def test_nonstandard_json_constants_are_refused(tmp_path):
    path = tmp_path / 'nan.json'
    save_model_data(tiny_model_data(), path)
    path.write_text(path.read_text().replace('"trans_factor": 0.01', '"trans_factor": NaN'))
    with pytest.raises(ModelFormatError, match='NaN'):
        load_model_data(path)


def test_invalid_json_names_file(tmp_path):
    path = tmp_path / 'broken.json'
    path.write_text('{"format": ')
    with pytest.raises(ModelFormatError, match='broken.json'):
        load_model_data(path)


# ------------------------------------------------------------ dispatching
def test_unknown_extension(tmp_path):
    with pytest.raises(ValueError) as info:
        load_model_data(tmp_path / 'model.npz')
    assert 'model.npz' in str(info.value) and '.json' in str(info.value) \
        and '.pkl' in str(info.value)
    with pytest.raises(ValueError, match='model.obj'):
        save_model_data(tiny_model_data(), tmp_path / 'model.obj')


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match='absent.json'):
        load_model_data(tmp_path / 'absent.json')


def test_invalid_data_is_not_written(tmp_path):
    data = tiny_model_data()
    data.faces[0, 0] = 99
    with pytest.raises(ModelValidationError, match='faces'):
        save_model_data(data, tmp_path / 'bad.json')
    assert list(tmp_path.iterdir()) == []


def test_failed_write_leaves_no_partial_file(tmp_path):
    path = tmp_path / 'out.json'
    path.write_text('previous content')
    data = tiny_model_data(extra={'obj': object()})  # valid model, unstorable extra
    with pytest.raises(ModelFormatError):
        save_model_data(data, path)
    assert path.read_text() == 'previous content'
    assert [p.name for p in tmp_path.iterdir()] == ['out.json']
