"""BodyModelData.validate(): one test per kind of error, each naming the field.

``tiny_model_data`` (a valid 3-joint, 5-vertex model) and ``assert_model_data_equal``
are reused by the model file tests.
"""
import dataclasses
from typing import Any, Callable

import numpy as np
import pytest

from smilfit.body_models.model_data import BodyModelData, ModelValidationError


def tiny_model_data(**overrides: Any) -> BodyModelData:
    """A valid model: a square pyramid (5 vertices, 6 faces) on a 3-joint chain, K = 2."""
    v = np.array([[0, 0, 0], [1, 0, 0], [1, 1, 0], [0, 1, 0], [0.5, 0.5, 1]], dtype=np.float64)
    faces = np.array([[0, 2, 1], [0, 3, 2], [0, 1, 4], [1, 2, 4], [2, 3, 4], [3, 0, 4]],
                     dtype=np.int64)
    weights = np.array([[1, 0, 0], [0.5, 0.5, 0], [0, 1, 0], [0, 0.25, 0.75], [0, 0, 1]],
                       dtype=np.float32)
    parents = np.array([-1, 0, 1], dtype=np.int64)
    J_regressor = np.zeros((3, 5), dtype=np.float32)
    J_regressor[0, [0, 1]] = 0.5
    J_regressor[1, 2] = 1.0
    J_regressor[2, [3, 4]] = [0.25, 0.75]
    rng = np.random.default_rng(0)
    fields = dict(
        v_template=v, faces=faces, weights=weights, parents=parents,
        joint_names=['root', 'mid', 'tip'],
        shapedirs=rng.normal(size=(5, 3, 2)) * 0.01,
        posedirs=np.zeros((5, 3, 0)),
        J_regressor=J_regressor,
        J=(J_regressor.astype(np.float64) @ v).astype(np.float32),
    )
    fields.update(overrides)
    return BodyModelData(**fields)


def assert_model_data_equal(a: BodyModelData, b: BodyModelData) -> None:
    """Field by field: arrays with identical dtype, shape and values (NaN == NaN)."""
    for field in dataclasses.fields(BodyModelData):
        x, y = getattr(a, field.name), getattr(b, field.name)
        assert_deep_equal(x, y, field.name)


def assert_deep_equal(x: Any, y: Any, where: str = 'value') -> None:
    """Exact equality of nested containers: types, key order, array dtype/shape/values."""
    assert type(x) is type(y), f'{where}: {type(x).__name__} != {type(y).__name__}'
    if isinstance(x, np.ndarray):
        assert x.dtype == y.dtype, f'{where}: dtype {x.dtype} != {y.dtype}'
        assert x.shape == y.shape, f'{where}: shape {x.shape} != {y.shape}'
        assert np.array_equal(x, y, equal_nan=x.dtype.kind in 'fc'), f'{where}: values differ'
    elif isinstance(x, dict):
        assert list(x) == list(y), f'{where}: keys {list(x)} != {list(y)}'
        for k in x:
            assert_deep_equal(x[k], y[k], f'{where}[{k!r}]')
    elif isinstance(x, (list, tuple)):
        assert len(x) == len(y), f'{where}: length {len(x)} != {len(y)}'
        for i, (u, v) in enumerate(zip(x, y)):
            assert_deep_equal(u, v, f'{where}[{i}]')
    elif isinstance(x, float) and np.isnan(x):
        assert np.isnan(y), where
    else:
        assert x == y, f'{where}: {x!r} != {y!r}'


def expect_error(data: BodyModelData, *words: str) -> None:
    with pytest.raises(ModelValidationError) as info:
        data.validate()
    for word in words:
        assert word in str(info.value), f'{word!r} not in {info.value}'


def modified(change: Callable[[BodyModelData], None]) -> BodyModelData:
    data = tiny_model_data()
    change(data)
    return data


def test_tiny_model_is_valid():
    data = tiny_model_data()
    assert data.validate() is data
    assert (data.num_vertices, data.num_faces, data.num_joints, data.num_betas) == (5, 6, 3, 2)


# ------------------------------------------------------------------ shapes
@pytest.mark.parametrize('field, bad', [
    ('v_template', np.zeros((5, 2))),
    ('faces', np.zeros((6, 4), dtype=np.int64)),
    ('weights', np.full((5, 2), 0.5, dtype=np.float32)),
    ('shapedirs', np.zeros((4, 3, 2))),
    ('posedirs', np.zeros((5, 3))),
    ('J_regressor', np.zeros((3, 4), dtype=np.float32)),
    ('J', np.zeros((2, 3))),
    ('scaledirs', np.zeros((2, 3, 2))),
    ('transdirs', np.zeros((2, 4, 3))),
    ('shape_mean', np.zeros(3)),
    ('shape_cov', np.eye(3)),
    ('joint_limits', np.zeros((3, 3))),
    ('sym_joint_pairs', np.zeros((1, 3), dtype=np.int64)),
])
def test_wrong_shape_names_field(field, bad):
    expect_error(tiny_model_data(**{field: bad}), repr(field))


def test_wrong_posedirs_count_names_field():
    expect_error(tiny_model_data(posedirs=np.zeros((5, 3, 5))), "'posedirs'", '9 * (J - 1)')


def test_not_an_array_names_field():
    expect_error(tiny_model_data(v_template=[[0, 0, 0]]), "'v_template'", 'numpy array')


def test_empty_mesh():
    expect_error(modified(lambda d: setattr(d, 'v_template', np.zeros((0, 3)))), 'v_template')


# ----------------------------------------------------------------- weights
def test_weight_rows_must_sum_to_one():
    data = tiny_model_data()
    data.weights[3] = [0, 0.25, 0.5]
    expect_error(data, "'weights'", 'sum to 1', 'vertex 3')


def test_negative_weights():
    data = tiny_model_data()
    data.weights[1] = [1.5, -0.5, 0]
    expect_error(data, "'weights'", 'negative')


# ---------------------------------------------------------------- skeleton
def test_kintree_cycle():
    expect_error(tiny_model_data(parents=np.array([-1, 2, 1])), "'parents'", 'cycle')


def test_kintree_two_roots():
    expect_error(tiny_model_data(parents=np.array([-1, -1, 1])), "'parents'", 'one root')


def test_kintree_no_root():
    expect_error(tiny_model_data(parents=np.array([2, 0, 1])), "'parents'", 'one root')


def test_kintree_self_parent():
    expect_error(tiny_model_data(parents=np.array([-1, 1, 1])), "'parents'", 'own parent')


def test_kintree_parent_out_of_range():
    expect_error(tiny_model_data(parents=np.array([-1, 0, 7])), "'parents'", 'out of range')


def test_parents_must_be_integers():
    expect_error(tiny_model_data(parents=np.array([-1.0, 0.0, 1.0])), "'parents'", 'integer')


def test_joint_name_count_mismatch():
    expect_error(tiny_model_data(joint_names=['root', 'mid']), "'joint_names'", '2 names for 3')


def test_joint_names_must_be_strings():
    expect_error(tiny_model_data(joint_names=['root', 3, 'tip']), "'joint_names'", 'strings')
    expect_error(tiny_model_data(joint_names=['root', '', 'tip']), "'joint_names'", 'strings')


def test_duplicate_joint_names():
    expect_error(tiny_model_data(joint_names=['root', 'mid', 'mid']), "'joint_names'", 'duplicate')


# ------------------------------------------------------------- finiteness
@pytest.mark.parametrize('field, value', [
    ('v_template', np.nan), ('shapedirs', np.inf), ('J', -np.inf), ('weights', np.nan),
    ('J_regressor', np.inf), ('shape_cov', np.nan)])
def test_nan_inf_names_field(field, value):
    data = tiny_model_data(shape_cov=np.eye(2))
    arr = getattr(data, field)
    arr.flat[0] = value
    expect_error(data, repr(field), 'NaN/inf')


# ------------------------------------------------------------------- faces
def test_faces_out_of_range():
    data = tiny_model_data()
    data.faces[2, 1] = 5
    expect_error(data, "'faces'", 'out of range', 'max 5')


def test_faces_negative():
    data = tiny_model_data()
    data.faces[0, 0] = -1
    expect_error(data, "'faces'", 'out of range')


def test_faces_must_be_integers():
    expect_error(tiny_model_data(faces=tiny_model_data().faces.astype(np.float64)), "'faces'",
                 'integer')


# ---------------------------------------------------------- optional parts
def test_shape_cov_not_symmetric():
    cov = np.array([[1.0, 0.5], [0.0, 1.0]])
    expect_error(tiny_model_data(shape_cov=cov), "'shape_cov'", 'symmetric')


def test_joint_limits_inf_and_order():
    lim = np.full((3, 3, 2), np.nan)
    lim[1, 0] = [-np.inf, 1.0]
    expect_error(tiny_model_data(joint_limits=lim), "'joint_limits'", 'NaN, not inf')
    lim[1, 0] = [1.0, -1.0]
    expect_error(tiny_model_data(joint_limits=lim), "'joint_limits'", 'minimum')


def test_sym_verts_out_of_range():
    expect_error(tiny_model_data(sym_verts=np.array([0, 9])), "'sym_verts'", 'out of range')


def test_sym_joint_pairs_out_of_range():
    expect_error(tiny_model_data(sym_joint_pairs=np.array([[1, 3]])), "'sym_joint_pairs'",
                 'out of range')


@pytest.mark.parametrize('spec, words', [
    ({'joint': 'nose'}, ['nose']),
    ({'vertex': 5}, ['out of range']),
    ({'vertices': [0, 1], 'weights': [0.5, 0.6]}, ['sum to 1']),
    ({'joint': 'mid', 'vertex': 1}, ['exactly one']),
])
def test_bad_keypoint_names_keypoint(spec, words):
    expect_error(tiny_model_data(keypoints={'kp': spec}), "keypoints['kp']", *words)


def test_units_and_up_axis():
    expect_error(tiny_model_data(units='inch'), "'units'")
    expect_error(tiny_model_data(up_axis='up'), "'up_axis'")


def test_trans_factor_must_be_finite():
    expect_error(tiny_model_data(trans_factor=float('nan')), "'trans_factor'")
