"""The embedded demo mouse and the build_skeleton_model command line."""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import trimesh
from scipy.spatial import cKDTree

from smilfit.body_models.builder import Skeleton
from smilfit.body_models.demo_model import (DEMO_UNITS, DEMO_UP_AXIS, demo_model_data,
                                            demo_radii, demo_skeleton)
from smilfit.cli.build_skeleton_model import main

REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope='module')
def demo():
    return demo_model_data()


def _io():
    """smilfit.body_models.io, or skip while it is not importable."""
    return pytest.importorskip('smilfit.body_models.io')


# ------------------------------------------------------------------ the model
def test_demo_skeleton_is_a_mouse():
    skel = demo_skeleton()
    assert isinstance(skel, Skeleton)
    names, parents, positions = skel
    assert 25 <= len(names) <= 35 and positions.shape == (len(names), 3)
    assert parents[names.index('pelvis')] == -1
    for side in 'LR':
        for leg in (('hip', 'knee', 'hind_paw'), ('shoulder', 'elbow', 'front_paw')):
            chain = [names.index(f'{j}_{side}') for j in leg]
            assert parents[chain[1]] == chain[0] and parents[chain[2]] == chain[1]
    assert {'nose', 'ear_L', 'ear_R', 'tail_6', 'head', 'neck'} <= set(names)
    # Nose ahead (+x), paws near the ground (z = 0, +z up), left legs at +y.
    assert positions[names.index('nose'), 0] == positions[:, 0].max()
    assert positions[names.index('hip_L'), 1] > 0 > positions[names.index('hip_R'), 1]
    assert set(demo_radii()) == set(names)


def test_demo_model_validates_with_modest_size(demo):
    demo.validate()
    assert (demo.units, demo.up_axis, demo.name) == (DEMO_UNITS, DEMO_UP_AXIS, 'demo_mouse')
    assert (DEMO_UNITS, DEMO_UP_AXIS) == ('mm', 'z')
    assert 2000 <= demo.num_vertices <= 5000
    assert demo.num_joints == len(demo_skeleton().joint_names)
    assert demo.num_betas >= 3 and demo.extra['builder']['shape_directions'][:2] == [
        'size', 'thickness']
    assert len(demo.sym_joint_pairs) == 7
    assert {'nose_tip', 'tail_6_tip', 'hind_paw_L_tip'} <= set(demo.keypoints)
    # Paws stand on the ground plane z = 0; the mesh is mm-sized.
    assert demo.v_template[:, 2].min() == pytest.approx(0.0, abs=0.3)
    assert 150 < np.ptp(demo.v_template[:, 0]) < 200


def test_demo_model_is_deterministic(demo):
    # (its build time, about 30 ms, is not asserted: timings belong in benchmarks)
    again = demo_model_data()
    for field in ('v_template', 'faces', 'weights', 'shapedirs', 'J_regressor'):
        np.testing.assert_array_equal(getattr(again, field), getattr(demo, field))


def test_demo_model_is_symmetric(demo):
    # Mirroring y maps the mesh onto itself (as a point set).
    mirrored = demo.v_template * [1, -1, 1]
    dist, _ = cKDTree(demo.v_template).query(mirrored)
    assert dist.max() < 1e-9


def test_demo_faces_point_outward(demo):
    parts = trimesh.Trimesh(demo.v_template, demo.faces, process=False).split(
        only_watertight=False)
    assert len(parts) == demo.extra['builder']['num_tubes']
    for part in parts:
        assert part.is_watertight and part.volume > 0


def test_demo_weights_and_regressor(demo):
    np.testing.assert_allclose(demo.weights.sum(axis=1), 1.0, atol=1e-12)
    assert demo.weights.min() >= 0
    np.testing.assert_allclose(demo.J_regressor @ demo.v_template, demo.J, atol=1e-10)


def test_demo_tail_length_direction(demo):
    names = demo.extra['builder']['shape_directions']
    k = names.index('length:tail_6')
    shaped = demo.J_regressor @ (demo.v_template + demo.shapedirs[:, :, k])
    tip = demo.joint_names.index('tail_6')
    pelvis = demo.joint_names.index('pelvis')
    rest_len = np.linalg.norm(demo.J[tip] - demo.J[pelvis])
    assert np.linalg.norm(shaped[tip] - shaped[pelvis]) == pytest.approx(1.1 * rest_len)
    np.testing.assert_allclose(shaped[demo.joint_names.index('nose')],
                               demo.J[demo.joint_names.index('nose')], atol=1e-10)


# ------------------------------------------------------------ with SMILModel
@pytest.fixture(scope='module')
def body(demo):
    torch = pytest.importorskip('torch')
    try:
        from smilfit.body_models import SMILModel
    except ImportError as err:  # the model class is written in parallel
        pytest.skip(f'SMILModel is not available: {err}')
    return SMILModel(data=demo, dtype=torch.float64)


def _subtree(parents: np.ndarray, j: int) -> np.ndarray:
    mask = np.zeros(len(parents), dtype=bool)
    mask[j] = True
    for _ in parents:
        mask |= (parents >= 0) & mask[np.maximum(parents, 0)]
    return mask


def test_rest_pose_reproduces_the_template(demo, body):
    out = body()
    np.testing.assert_allclose(out.vertices[0].numpy(), demo.v_template, atol=1e-10)
    np.testing.assert_allclose(out.joints[0].numpy(), demo.J, atol=1e-10)


@pytest.mark.parametrize('joint', ['knee_L', 'elbow_R', 'tail_3'])
def test_bending_a_joint_moves_only_its_part(demo, body, joint):
    import torch
    J = demo.num_joints
    j = demo.joint_names.index(joint)
    root = int(np.flatnonzero(demo.parents < 0)[0])
    pose = torch.zeros(1, J - 1, 3, dtype=torch.float64)
    pose[0, j - (j > root)] = torch.tensor([0.3, 0.9, -0.2], dtype=torch.float64)
    moved = (body(body_pose=pose).vertices[0] - body().vertices[0]).norm(dim=-1).numpy()

    below = _subtree(demo.parents, j)
    driven = demo.weights[:, below].sum(axis=1) > 0
    assert moved[driven].max() > 1.0  # mm: the limb really bends
    assert moved[~driven].max() < 1e-9  # nothing else moves at all
    # Vertices far from the bent joint's part stay put.
    part = demo.v_template[driven]
    far = np.min(np.linalg.norm(demo.v_template[:, None] - part[None, ::7], axis=-1), 1) > 5
    assert far.sum() > demo.num_vertices // 2
    assert moved[far].max() < 1e-9
    # The driven vertices all lie on the one tube that holds this joint's ring.
    ring = np.flatnonzero(demo.J_regressor[j])[0]
    mesh = trimesh.Trimesh(demo.v_template, demo.faces, process=False)
    labels = trimesh.graph.connected_component_labels(mesh.face_adjacency, len(mesh.faces))
    vertex_label = np.empty(demo.num_vertices, dtype=int)
    vertex_label[demo.faces.ravel()] = np.repeat(labels, 3)
    if joint != 'tail_3':  # legs are their own tubes
        assert np.all(vertex_label[driven] == vertex_label[ring])


def test_betas_move_regressed_joints(demo, body):
    import torch
    k = demo.extra['builder']['shape_directions'].index('length:hind_paw_L+hind_paw_R')
    beta = torch.zeros(1, demo.num_betas, dtype=torch.float64)
    beta[0, k] = 2.0
    out = body(betas=beta)
    expect = demo.J_regressor @ (demo.v_template + 2.0 * demo.shapedirs[:, :, k])
    np.testing.assert_allclose(out.joints[0].numpy(), expect, atol=1e-10)
    knee, paw = demo.joint_names.index('knee_L'), demo.joint_names.index('hind_paw_L')
    rest = np.linalg.norm(demo.J[paw] - demo.J[knee])
    assert np.linalg.norm(out.joints[0, paw].numpy() - out.joints[0, knee].numpy()) == \
        pytest.approx(1.2 * rest)


# ----------------------------------------------------------------------- CLI
def test_cli_help_documents_the_formats(capsys):
    with pytest.raises(SystemExit) as exc:
        main(['--help'])
    assert exc.value.code == 0
    text = capsys.readouterr().out
    for word in ('name, parent, x, y, z', '.csv', '.json', '--overwrite', '--demo'):
        assert word in text


def test_tools_wrapper_runs_from_the_repo_root():
    result = subprocess.run([sys.executable, 'tools/build_skeleton_model.py', '--help'],
                            cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert 'skeleton file formats' in result.stdout


def test_cli_demo_writes_a_model_that_loads_back(tmp_path, demo, capsys):
    io = _io()
    out = tmp_path / 'mouse.json'
    assert main(['--demo', '-o', str(out)]) == 0
    assert 'wrote' in capsys.readouterr().out
    loaded = io.load_model_data(out)
    np.testing.assert_allclose(loaded.v_template, demo.v_template)
    np.testing.assert_array_equal(loaded.faces, demo.faces)
    np.testing.assert_allclose(loaded.shapedirs, demo.shapedirs)
    assert loaded.joint_names == demo.joint_names and loaded.units == 'mm'
    # No stray temporary files are left next to the output.
    assert [p.name for p in tmp_path.iterdir()] == ['mouse.json']


def test_cli_refuses_to_overwrite(tmp_path, capsys):
    out = tmp_path / 'mouse.json'
    out.write_text('precious')
    assert main(['--demo', '-o', str(out)]) == 1
    assert 'exists' in capsys.readouterr().err and out.read_text() == 'precious'
    _io()
    assert main(['--demo', '-o', str(out), '--overwrite', '--segments', '8']) == 0
    assert out.read_text() != 'precious'


SKELETON_CSV = """# a three-bone arm
name,parent,x,y,z,radius
shoulder,,0,0,0,0.05
elbow,shoulder,0.3,0,0,
wrist,elbow,0.55,0.1,0,0.03
hand,wrist,0.65,0.12,0,0.02
"""


def test_cli_builds_from_csv(tmp_path):
    io = _io()
    src = tmp_path / 'arm.csv'
    src.write_text(SKELETON_CSV)
    out = tmp_path / 'arm.pkl'
    assert main([str(src), '-o', str(out), '--units', 'm', '--num-betas', '3']) == 0
    model = io.load_model_data(out)
    assert model.joint_names == ['shoulder', 'elbow', 'wrist', 'hand']
    assert model.num_betas == 3 and model.units == 'm'
    np.testing.assert_allclose(model.J_regressor @ model.v_template, model.J, atol=1e-9)


def test_cli_builds_from_json(tmp_path):
    io = _io()
    skeleton = {'units': 'cm', 'up_axis': 'z', 'name': 'stick', 'joints': [
        {'name': 'a', 'parent': None, 'position': [0, 0, 0], 'radius': 1.0},
        {'name': 'b', 'parent': 'a', 'x': 10, 'y': 0, 'z': 0},
        {'name': 'c', 'parent': 'b', 'position': [20, 0, 2]}]}
    src = tmp_path / 'stick.json'
    src.write_text(json.dumps(skeleton))
    out = tmp_path / 'stick_model.json'
    assert main([str(src), '-o', str(out), '--tip-keypoints']) == 0
    model = io.load_model_data(out)
    assert (model.units, model.up_axis, model.name) == ('cm', 'z', 'stick')
    assert 'c_tip' in model.keypoints


@pytest.mark.parametrize('content,suffix,message', [
    ('name,parent,x,y,z\na,,0,0,0\nb,a,0,0,0\n', '.csv', "bone 'a' -> 'b' has zero length"),
    ('name,parent,x,y,z\na,,0,0,0\nb,c,1,0,0\n', '.csv', "'b' has unknown parent 'c'"),
    ('a,,0,0\n', '.csv', 'expected name, parent, x, y, z'),
    ('{"joints": [{"name": "a"}]}', '.json', "'a' has no \"position\""),
    ('{"joints": [', '.json', 'error'),
    ('a b c', '.txt', 'unknown skeleton format'),
])
def test_cli_reports_bad_skeleton_files(tmp_path, capsys, content, suffix, message):
    src = tmp_path / f'bad{suffix}'
    src.write_text(content)
    assert main([str(src), '-o', str(tmp_path / 'out.json')]) == 1
    assert message in capsys.readouterr().err
    assert not (tmp_path / 'out.json').exists()


def test_cli_needs_exactly_one_source(tmp_path):
    with pytest.raises(SystemExit):
        main(['-o', str(tmp_path / 'x.json')])
    with pytest.raises(SystemExit):
        main(['--demo', 'skel.csv', '-o', str(tmp_path / 'x.json')])
