"""export_fit_visuals and tools/visualize.py on a fitting run whose results are the ground
truth of a synthetic dataset (so every fitted keypoint lands on its observation)."""
import json

import h5py
import imageio.v2 as iio
import numpy as np
import pytest
import torch
import trimesh

from smilfit.cli.visualize import main as visualize_main
from smilfit.cli.visualize import parse_frames
from smilfit.visualization import export_fit_visuals, load_animation

#: float32 results of the same parameters agree to a few ulps of their values, not to an
#: absolute 1e-5: the body model times two skinning paths and keeps the faster per batch
#: size, and the two round differently (mesh values of tens of millimetres).
FLOAT32_ROUNDING = dict(rtol=4e-6, atol=1e-5)

T = 3


@pytest.fixture(scope='module')
def work_dir(tmp_path_factory):
    """A work dir as tools/fit.py leaves it, with the dataset's true parameters."""
    from smilfit.datasets import DatasetReader, generate_synthetic_dataset

    root = tmp_path_factory.mktemp('run')
    data = root / 'data.h5'
    generate_synthetic_dataset(data, num_sessions=1, frames_per_session=T, num_views=2,
                               image_size=64, seed=0, progress=False)
    reader = DatasetReader(data)
    batch = reader.read(np.arange(T))
    (root / 'chunks').mkdir()
    config = dict(data=dict(path=str(data), batch_size=8),
                  registrant=dict(type='SMILRegistrant', body_model=dict(type='DemoSMILModel'),
                                  handlers=[dict(type='Keypoint2DHandler', name='kp2d',
                                                 loss=dict(type='KeypointMSELoss'))],
                                  stages=[dict(name='only', fit=['transl'], n_iter=1)]))
    (root / 'chunks' / 'config.json').write_text(json.dumps(config))
    with h5py.File(root / 'fit_results.h5', 'w') as f:
        f.attrs['format'] = 'smilfit-fit-results'
        f.attrs['dataset'] = str(data)
        f.attrs['stages'] = json.dumps(['only'])
        strings = h5py.string_dtype('utf-8')
        f.create_dataset('data_keypoint_names', data=np.array(reader.keypoint_names,
                                                              dtype=object), dtype=strings)
        for name, value in batch['params'].items():
            f.create_dataset(f'params/{name}', data=value.astype(np.float32))
        f.create_dataset('samples/index', data=np.arange(T))
        f.create_dataset('samples/session', data=batch['session'])
        f.create_dataset('samples/frame', data=batch['frame'])
        f.create_dataset('losses/kp2d', data=np.array([3.0, 2.0, 1.0], np.float32))
    reader.close()
    return root, batch


def test_export_fit_visuals_writes_everything(work_dir, tmp_path):
    root, batch = work_dir
    written = export_fit_visuals(root, out_dir=tmp_path, meshes=True, mesh_format='ply',
                                 plots=False, progress=False)
    assert [p.name for p in written['video']] == ['synthetic_0000.mp4']
    assert written['plots'] == []
    # The animation holds the fitted parameters exactly, in frame order.
    anim = load_animation(tmp_path / 'synthetic_0000_params')
    for name, value in batch['params'].items():
        np.testing.assert_array_equal(anim.params[name], value.astype(np.float32))
    np.testing.assert_array_equal(anim.params['frame'], batch['frame'])
    assert anim.body_model == dict(type='DemoSMILModel') and anim.fps == 25.0
    # Meshes are the body model's vertices for those parameters.
    from smilfit.body_models import build_demo_smil_model
    model = build_demo_smil_model()
    out = model(**{k: torch.as_tensor(v, dtype=torch.float32).float()
                   for k, v in batch['params'].items()})
    assert len(written['meshes']) == T
    mesh = trimesh.load(written['meshes'][1], process=False, force='mesh')
    np.testing.assert_allclose(mesh.vertices, out.vertices[1].numpy(), **FLOAT32_ROUNDING)
    # The video: T frames; fitted keypoints sit on their observations, so the discs of
    # the visible ones are green (zero error), not red.
    with iio.get_reader(str(written['video'][0])) as video:
        frames = np.stack([frame for frame in video])
    assert frames.shape[0] == T
    uv = batch['keypoints_2d'][0, 0][batch['visible'][0, 0]]
    banner = 18
    colours = frames[0, banner + np.rint(uv[:, 1]).astype(int),
                     np.rint(uv[:, 0]).astype(int)].astype(float)
    assert len(uv) > 5
    assert np.median(colours[:, 1] - colours[:, 0]) > 30


def test_plots_from_a_work_dir(work_dir, tmp_path):
    root, _ = work_dir
    written = export_fit_visuals(root, out_dir=tmp_path, video=False, animation=False,
                                 progress=False)
    assert sorted(p.name for p in written['plots']) == [
        'final_losses.png', 'per_joint_errors.png',
        'reprojection_per_camera_synthetic_0000.png']
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        p.name for p in written['plots'])
    assert all(p.read_bytes()[:4] == b'\x89PNG' for p in written['plots'])


def test_frame_and_session_selection(work_dir, tmp_path):
    root, batch = work_dir
    frames = batch['frame']
    written = export_fit_visuals(root, out_dir=tmp_path, plots=False, video=False,
                                 sessions=['synthetic_0000'],
                                 frames=(int(frames[1]), None), progress=False)
    anim = load_animation(written['animation'][0])
    np.testing.assert_array_equal(anim.params['frame'], frames[1:])
    with pytest.raises(ValueError, match='no fitted sample'):
        export_fit_visuals(root, out_dir=tmp_path, frames=(10 ** 6, None), progress=False)
    with pytest.raises(ValueError, match='unknown session'):
        export_fit_visuals(root, out_dir=tmp_path, sessions=['nope'], progress=False)


def test_cli(work_dir, tmp_path, capsys):
    root, _ = work_dir
    assert visualize_main([str(root), '--out-dir', str(tmp_path), '--animation',
                           '--no-progress']) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ['synthetic_0000_params.json',
                                                          'synthetic_0000_params.npz']
    assert visualize_main([str(tmp_path / 'nothing')]) == 1
    assert 'no fitting results' in capsys.readouterr().err
    assert parse_frames('3:7') == (3, 7) and parse_frames(':7') == (None, 7)
    assert parse_frames('4') == (4, 5)
    with pytest.raises(SystemExit):
        visualize_main(['--help'])


def test_model_outputs_use_every_fitted_input_and_the_handlers_offsets():
    """The visuals re-pose the model from the stored parameters: the global scale and the
    vertex offsets are inputs too, and joint-frame keypoint offsets turn with the body."""
    from smilfit.body_models import build_demo_smil_model
    from smilfit.registry import HANDLERS
    from smilfit.visualization.fit_run import model_outputs
    model = build_demo_smil_model()
    g = np.random.default_rng(0)
    S, J, Kp = 3, model.num_joints, len(model.keypoint_names)
    params = dict(global_orient=0.3 * g.standard_normal((S, 3)),
                  body_pose=0.2 * g.standard_normal((S, J - 1, 3)),
                  global_log_scale=np.log([[2.0], [0.5], [3.0]]),
                  vertex_offsets=0.01 * g.standard_normal((S, model.num_vertices, 3)),
                  keypoint_offsets=0.2 * g.standard_normal((S, Kp, 3)))
    params = {k: v.astype(np.float32) for k, v in params.items()}
    handler = HANDLERS.build(dict(type='Keypoint2DHandler', name='kp2d', offsets_frame='joint'))
    handler.setup(model, dict(keypoint_names=model.keypoint_names))
    rows = np.array([2, 0])
    verts, kps, joints, points = model_outputs(model, params, rows, handler, chunk=1)
    t = {k: torch.as_tensor(v[rows]) for k, v in params.items()}
    out = model(**{k: v for k, v in t.items() if k != 'keypoint_offsets'})
    np.testing.assert_allclose(verts, out.vertices.numpy(), **FLOAT32_ROUNDING)
    np.testing.assert_allclose(joints, out.joints.numpy(), **FLOAT32_ROUNDING)
    np.testing.assert_allclose(points, handler.points(out, t).numpy(), **FLOAT32_ROUNDING)
    assert np.abs(points - kps).max() > 0.1


def test_dataset_with_other_keypoints_is_refused(work_dir, tmp_path):
    """--dataset naming data with other keypoints than the fit's: an error naming both
    lists, not an overlay that matches whatever names happen to agree."""
    from smilfit.datasets.hdf5_format import DatasetReader, DatasetWriter
    root, _ = work_dir
    with DatasetReader(root / 'data.h5') as reader:
        names = list(reader.keypoint_names)
    other = tmp_path / 'other.h5'
    with DatasetWriter(other, keypoint_names=names[:1] + [f'x{i}' for i in range(14)],
                       num_views=2) as w:
        w.add_session('s', ['a', 'b'])
        w.commit()
    with pytest.raises(ValueError, match=r'other.h5 has the keypoints .* but the fit in .* '
                       r'was made on data with'):
        export_fit_visuals(root, out_dir=tmp_path / 'v', dataset=other, video=False,
                           meshes=False, animation=True, plots=False, progress=False)
