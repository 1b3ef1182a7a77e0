"""Rendered samples of the fitted animal in the recording's own rig: the background
without the animal, the animal's colours from the real crops, poses around the fits, and
samples whose labels, cameras and parameters agree with each other."""
import json

import cv2
import numpy as np
import pytest
import torch
from scipy.ndimage import distance_transform_edt

from smilfit.datasets.hdf5_format import DatasetReader, decode_image, decode_mask
from smilfit.datasets.ingest_images import box_affine
from smilfit.datasets.rig_renders import (RigRenderError, RigRenderOptions, _nan_median,
                                          animal_mask, draw_poses, foreground,
                                          generate_rig_renders, median_backgrounds, shade,
                                          source_box, vertex_colours)
from smilfit.datasets.synthetic import build_body_model, look_at
from smilfit.renderers.zbuffer import rasterize

from ..conftest import REPO_ROOT, shared_path

LOOKUP = REPO_ROOT / 'configs' / 'fitting' / 'mouse_joint_lookup.csv'
FIT_CONFIG = REPO_ROOT / 'configs' / 'fitting' / 'mouse_multiview.py'
FRAMES = 40     # frames of the shared session fitted for the end-to-end test


def test_nan_median_matches_numpy():
    rng = np.random.default_rng(0)
    for n in (7, 8):
        x = rng.random((n, 5, 4)).astype(np.float32)
        x[x < 0.3] = np.nan
        x[:, 0, 0] = np.nan
        with np.errstate(all='ignore'), pytest.warns(RuntimeWarning):
            expected = np.nanmedian(x, axis=0)
        assert np.allclose(_nan_median(x), expected, equal_nan=True)


def test_source_box_inverts_the_crop_affine():
    for box, size in (((10, -20, 300, 300), 128), ((-5, 7, 64, 64), 64),
                      ((400, 300, 97, 97), 256)):
        assert source_box(box_affine(box, (size, size)), size) == box


def _write_video(path, frames):
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*'MJPG'), 10,
                             (frames.shape[2], frames.shape[1]))
    for f in frames:
        writer.write(cv2.cvtColor(f, cv2.COLOR_RGB2BGR))
    writer.release()


def test_background_leaves_out_a_resting_animal(tmp_path):
    """An animal resting in one place for most of the video stays in a plain median; the
    median without it recovers the floor, and a place it never leaves is filled from
    around it, not left white."""
    rng = np.random.default_rng(1)
    H, W, F = 48, 64, 20
    floor = np.repeat(rng.integers(20, 90, (H, W, 1), dtype=np.uint8), 3, axis=2)
    frames = np.repeat(floor[None], F, 0).copy()
    masks = np.zeros((F, H, W), bool)
    for f in range(F):
        x0 = 10 if f < 15 else 40            # resting at x 10..22, then elsewhere
        masks[f, 10:22, x0:x0 + 12] = True
        masks[f, 30:40, 30:40] = True         # a place it covers in every frame
    frames[masks] = 250
    video = tmp_path / 'cam.avi'
    _write_video(video, frames)
    plain = median_backgrounds([str(video)], np.arange(F))[0].astype(float)
    free = median_backgrounds([str(video)], np.arange(F), [masks])[0].astype(float)
    resting = (slice(10, 22), slice(10, 22))
    assert np.abs(plain[resting] - floor[resting]).mean() > 100   # the white animal
    assert np.abs(free[resting] - floor[resting]).mean() < 12     # the floor
    assert free[30:40, 30:40].max() < 150                          # filled, not white
    with pytest.raises(RigRenderError, match='does not exist'):
        median_backgrounds([str(tmp_path / 'missing.mp4')], np.arange(3))


def test_animal_mask_covers_the_points_and_their_surroundings():
    points = np.array([[20.0, 20.0], [40.0, 20.0], [np.nan, np.nan]])
    mask = animal_mask(points, (64, 48), dilate=0.1)       # radius 2 px
    assert mask[20, 20] and mask[20, 40] and mask[22, 20] and not mask[20, 30]
    assert not mask[30, 30]


def _mesh_and_camera(size=96):
    model = build_body_model(None)
    with torch.no_grad():
        verts = model().vertices[0].numpy()
    faces = model.faces.numpy()
    centre = verts.mean(0)
    length = float((verts.max(0) - verts.min(0)).max())
    R, t = look_at(centre + np.array([0.3, 2.0, 0.6]) * length, centre, np.array([0, 0, 1.0]))
    K = np.array([[1.6 * size, 0, size / 2], [0, 1.6 * size, size / 2], [0, 0, 1.0]])
    return verts, faces, dict(K=K, R=R, t=t, dist=np.zeros(5)), length


def test_vertex_colours_recover_the_colours_a_mesh_was_rendered_with():
    verts, faces, cam, length = _mesh_and_camera()
    span = verts.max(0) - verts.min(0)
    truth = 60.0 + 150.0 * (verts - verts.min(0)) / span       # a colour gradient
    size = 96
    raster = rasterize(verts, faces, cam['K'], cam['R'], cam['t'], height=size, width=size)
    image = shade(raster, faces, truth, np.zeros_like(verts), ambient=1.0)
    image = np.clip(np.rint(image), 0, 255).astype(np.uint8)   # black background
    background = np.zeros_like(image)
    assert (foreground(image, background) == raster.mask.numpy()).mean() > 0.99
    colours = vertex_colours(verts[None], faces, [image], [dict(cam, sample=0)],
                             tol=0.02 * length, backgrounds=[background])
    from smilfit.cameras.projection import project_points_numpy
    from smilfit.datasets.synthetic import keypoint_visibility
    uv, depth = project_points_numpy(verts, cam['K'], cam['R'], cam['t'])
    seen = keypoint_visibility(uv, depth, raster.depth.numpy(), 0.02 * length)
    assert seen.mean() > 0.2
    # a visible vertex gets the colour rendered at its pixel (the gradient across a pixel)
    assert np.median(np.abs(colours[seen] - truth[seen])) < 6.0
    # unseen vertices get the mean of the seen ones
    assert np.allclose(colours[~seen], colours[seen].mean(0))
    # a background that equals the image: nothing is the animal, every vertex the default
    none = vertex_colours(verts[None], faces, [image], [dict(cam, sample=0)],
                          tol=0.02 * length, backgrounds=[image])
    assert np.allclose(none, 128.0)


def _fitted_frames(F=6, seed=0):
    rng = np.random.default_rng(seed)
    orient = rng.normal(0, 1.0, (F, 3))
    return dict(global_orient=orient, body_pose=rng.normal(0, 0.2, (F, 4, 3)),
                global_log_scale=np.full((F, 1), 2.0)), rng.normal(0, 10, (F, 3))


def test_drawn_poses_keep_each_fitted_frames_up_axis_and_move_along_the_floor():
    fitted, roots = _fitted_frames()
    up = np.array([0.0, 0.0, 1.0])
    rot = np.stack([cv2.Rodrigues(r.reshape(3, 1))[0] for r in fitted['global_orient']])
    ups = rot @ up
    opts = RigRenderOptions(pose_spread=0.0, shift_std=0.2)
    drawn = draw_poses(np.random.default_rng(0), fitted, up, roots, 50.0, 400, opts)
    # no pose noise: every body pose is a fitted one
    d = np.abs(drawn['body_pose'][:, None] - fitted['body_pose'][None]).max(axis=(2, 3))
    assert (d.min(1) < 1e-12).all()
    # turned about the body's own up axis: the up axis is a fitted frame's
    new_up = drawn['global_orient'] @ up
    assert (np.abs(new_up[:, None] - ups[None]).max(-1).min(1) < 1e-9).all()
    # headings are spread (not the fitted orientations)
    same = np.abs(drawn['global_orient'][:, None] - rot[None]).max(axis=(2, 3)).min(1)
    assert np.median(same) > 0.1
    # roots: a fitted root shifted by ~0.2 body lengths, never along the body's up axis
    shift = drawn['root'][:, None] - roots[None]
    nearest = np.linalg.norm(shift, axis=-1).argmin(1)
    offset = shift[np.arange(400), nearest]
    assert 5.0 < np.sqrt((offset ** 2).sum(-1).mean() / 2) < 15.0     # 0.2 x 50 per axis
    assert drawn['global_log_scale'].shape == (400, 1)
    # pose noise: pose_spread times the fitted poses' spread, per component
    two = dict(fitted, global_orient=fitted['global_orient'][:2],
               global_log_scale=fitted['global_log_scale'][:2],
               body_pose=np.stack([np.full((4, 3), -1.0), np.full((4, 3), 1.0)]))
    noisy = draw_poses(np.random.default_rng(0), two, up, roots[:2], 50.0, 4000,
                       RigRenderOptions(pose_spread=0.3))
    source = np.where(noisy['body_pose'].mean(axis=(1, 2)) > 0, 1.0, -1.0)
    resid = noisy['body_pose'] - source[:, None, None]
    assert np.allclose(resid.std(0), 0.3, rtol=0.1)      # the fitted spread is 1 here
    # a zero heading range keeps the fitted orientations
    kept = draw_poses(np.random.default_rng(0), fitted, up, roots, 50.0, 50,
                      RigRenderOptions(heading_range_deg=0.0))
    assert (np.abs(kept['global_orient'][:, None] - rot[None]).max(axis=(2, 3)).min(1)
            < 1e-9).all()


def test_options_are_checked():
    with pytest.raises(ValueError, match='num_samples'):
        RigRenderOptions(num_samples=0)
    with pytest.raises(ValueError, match='heading_range_deg'):
        RigRenderOptions(heading_range_deg=400)


def test_the_tool_defaults_are_the_options_defaults():
    """tools/render_rig.py without options renders what RigRenderOptions() renders."""
    from smilfit.cli.render_rig import build_parser
    args = build_parser().parse_args(['config.py', 'fit_results.h5', 'out.h5'])
    defaults = RigRenderOptions()
    for option, field in (('num_samples', 'num_samples'), ('pose_spread', 'pose_spread'),
                          ('heading_range', 'heading_range_deg'), ('shift_std', 'shift_std'),
                          ('background_frames', 'background_frames'), ('seed', 'seed')):
        assert getattr(args, option) == getattr(defaults, field), option


# ------------------------------------------------------------------- on a real recording
@pytest.fixture(scope='module')
def session(tmp_path_factory):
    """The shared session's first FRAMES frames: 128 px crops and a fit of them."""
    source = shared_path('data', 'sleap_anipose_minimal_session', 'minimal_session')
    model_path = shared_path('models', 'SMILy_Mouse_static_joints.pkl')
    from mmengine.config import Config

    from smilfit.apis.fitting import fit_dataset, prepare_data
    from smilfit.cli.preprocess_sleap import main as preprocess
    tmp = tmp_path_factory.mktemp('rig_renders')
    crops = tmp / 'session_128.h5'
    assert preprocess([str(source), str(crops), '--crop-mode', 'bbox_crop', '--target-size',
                       '128', '--max-frames', str(FRAMES), '--no-progress']) == 0
    cfg = Config.fromfile(str(FIT_CONFIG))
    cfg.body_model.model_path = str(model_path)
    cfg.data.sleap = dict(input=str(source), max_frames=FRAMES)
    cfg.data.path = str(tmp / 'session_keypoints.h5')
    cfg.data.joint_lookup = str(LOOKUP)
    prepare_data(cfg, progress=False)
    results = fit_dataset(cfg, tmp / 'fit', progress=False)
    body_model = dict(type='SMILModel', model_path=str(model_path), propagate_scaling=False,
                      reference_compat=False)
    return crops, results, body_model, tmp


def _render(session, out, rows, num=6, workers=1, **options):
    crops, results, body_model, _ = session
    opts = RigRenderOptions(num_samples=num, background_frames=12, colour_frames=8,
                            **options)
    return generate_rig_renders(out, dataset=crops, fit_results=results,
                                body_model=body_model, joint_lookup=str(LOOKUP), rows=rows,
                                options=opts, progress=False, workers=workers)


def test_rendered_samples_agree_with_their_cameras_and_parameters(session):
    crops, results, body_model, tmp = session
    rows = list(range(0, 30))
    path = _render(session, tmp / 'renders.h5', rows)
    model = build_body_model(body_model)
    with DatasetReader(crops) as real, DatasetReader(path) as rendered:
        assert list(rendered.keypoint_names) == list(real.keypoint_names)
        assert list(rendered.camera_names[0]) == list(real.camera_names[0])
        assert rendered.units == real.units
        made = json.loads(rendered.attrs['rendered_from'])
        assert set(made['rows']) <= set(rows)          # nothing of the other frames
        data = rendered.read(np.arange(len(rendered)),
                             keys=['keypoints_2d', 'keypoints_3d', 'K', 'R', 't', 'dist',
                                   'valid', 'visible', 'image_size', 'params'])
        assert len(rendered) == 6 and data['valid'].sum(1).min() >= 3
        assert (data['image_size'][data['valid']] == 128).all()
        from smilfit.cameras.projection import project_points_numpy
        for i in range(6):
            for c in np.flatnonzero(data['valid'][i]):
                uv = project_points_numpy(data['keypoints_3d'][i], data['K'][i, c],
                                          data['R'][i, c], data['t'][i, c],
                                          data['dist'][i, c])[0]
                assert np.allclose(uv, data['keypoints_2d'][i, c], atol=1e-3, equal_nan=True)
                vis = data['visible'][i, c]
                inside = (data['keypoints_2d'][i, c] >= 0) & (data['keypoints_2d'][i, c] < 128)
                assert inside[vis].all()
                mask = decode_mask(rendered.h5["views/masks"][i, c]) > 0
                image = decode_image(rendered.h5['views/images'][i, c])
                assert image.shape == (128, 128, 3) and 0.02 < mask.mean() < 0.8
                # Visible: on the animal's silhouette, or within a pixel or two of its edge
                # (a keypoint is a point inside the body; its pixel may round off the mask).
                off_animal = distance_transform_edt(~mask)
                px = np.rint(data['keypoints_2d'][i, c][vis]).astype(int)
                assert (off_animal[px[:, 1], px[:, 0]] <= 2.0).all()
        # the parameters, with the animal's fitted skeleton, pose the rendered keypoints
        import h5py
        with h5py.File(results) as f:
            animal = {k: torch.as_tensor(f[f'params/{k}'][:1]).repeat(6, *(
                [1] * (f[f'params/{k}'].ndim - 1))) for k in ('bone_trans', 'betas',
                                                               'log_scale') if f'params/{k}' in f}
        params = {k: torch.as_tensor(v, dtype=torch.float64) for k, v in data['params'].items()}
        assert set(params) == {'global_orient', 'body_pose', 'transl', 'global_log_scale'}
        with torch.no_grad():
            posed = model(**params, **{k: v.double() for k, v in animal.items()},
                          return_vertices=False)
        from smilfit.body_models.joint_lookup import joint_lookup_dict
        from smilfit.body_models.keypoint_naming import lookup_model_names, match_keypoints
        match = match_keypoints(list(model.keypoint_names), list(real.keypoint_names),
                                joint_lookup_dict(str(LOOKUP)),
                                lookup_names=lookup_model_names(model))
        kp = posed.keypoints[:, match.model_index].numpy()
        assert np.allclose(kp, data['keypoints_3d'][:, match.data_index.numpy()], atol=1e-2)
    # deterministic given the seed, however many samples are rendered at once
    again = _render(session, tmp / 'again.h5', rows, workers=3)
    with DatasetReader(path) as a, DatasetReader(again) as b:
        keys = ['keypoints_2d', 'visible', 'K', 'valid']
        first, second = a.read(np.arange(6), keys=keys), b.read(np.arange(6), keys=keys)
        for key in keys:
            assert np.array_equal(first[key], second[key], equal_nan=True)
        for name in ('views/images', 'views/masks'):
            assert [bytes(x) for x in a.h5[name][:].ravel()] == \
                [bytes(x) for x in b.h5[name][:].ravel()]


def test_renders_need_a_crop_session_with_videos_and_usable_fits(session, tmp_path):
    crops, results, body_model, tmp = session
    with pytest.raises(RigRenderError, match='usable fit'):
        _render(session, tmp_path / 'none.h5', rows=[])
    keypoints_only = tmp / 'session_keypoints.h5'
    with pytest.raises(RigRenderError, match='bbox_crop'):
        generate_rig_renders(tmp_path / 'x.h5', dataset=keypoints_only, fit_results=results,
                             body_model=body_model, joint_lookup=str(LOOKUP),
                             options=RigRenderOptions(num_samples=1), progress=False)
    assert not (tmp_path / 'x.h5').exists() and not (tmp_path / 'none.h5').exists()


def test_render_rig_tool_renders_the_training_split_of_a_config(session, tmp_path, capsys):
    crops, results, body_model, tmp = session
    from smilfit.cli.render_rig import main
    out = tmp_path / 'renders.h5'
    argv = [str(REPO_ROOT / 'configs' / 'regression' / 'mouse_session_resnet18.py'),
            str(results), str(out), '--num-samples', '3', '--background-frames', '8',
            '--no-progress', '--cfg-options',
            f'model.body_model.model_path={body_model["model_path"]}',
            f'model.joint_lookup={LOOKUP}', f'train_dataloader.dataset.data_root={crops.parent}',
            f'train_dataloader.dataset.ann_file={crops.name}']
    assert main(argv) == 0
    printed = capsys.readouterr().out
    from smilfit.cli.render_rig import training_rows
    from mmengine.config import Config
    cfg = Config.fromfile(argv[0])
    cfg.train_dataloader.dataset.update(data_root=str(crops.parent), ann_file=crops.name)
    _, train_rows = training_rows(cfg.train_dataloader.dataset)
    with DatasetReader(out) as r:
        assert len(r) == 3
        made = json.loads(r.attrs['rendered_from'])['rows']
    assert set(made) <= set(train_rows) and len(train_rows) < FRAMES   # blocks held out
    assert f'{len(train_rows)} training samples' in printed
    # an existing output is not replaced without --overwrite
    assert main(argv) == 1
    assert 'exists' in capsys.readouterr().err
