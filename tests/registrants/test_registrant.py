"""SMILRegistrant: stage validation, per-sample fitting, recovery, plugins, tools/fit.py."""
import subprocess
import sys
import textwrap
import warnings

import numpy as np
import pytest
import torch

from smilfit.datasets.synthetic import ring_cameras
from smilfit.registrants import SMILRegistrant, StageConfigError
from smilfit.registry import BODY_MODELS
from tests.conftest import REPO_ROOT

HANDLERS = [dict(type='Keypoint2DHandler', name='kp2d', loss=dict(type='KeypointMSELoss')),
            dict(type='ShapePriorHandler', name='shape_prior', weight=1e-3,
                 loss=dict(type='ShapePriorLoss'))]
STAGES = [dict(name='rigid', fit=['global_orient', 'transl'], n_iter=2,
               optimizer=dict(type='LBFGS', max_iter=30)),
          dict(name='full', fit=['global_orient', 'transl', 'body_pose', 'betas'], n_iter=25,
               optimizer=dict(type='LBFGS', max_iter=50), loss_weights=dict(shape_prior=0.0))]


@pytest.fixture(scope='module')
def model():
    return BODY_MODELS.build(dict(type='DemoSMILModel', dtype=torch.float64))


QUICK_STAGES = [dict(STAGES[0]), dict(STAGES[1], n_iter=3)]


def make_observations(model, batch, seed=0, pose_std=0.3, shape_std=1.0, noise_px=0.0):
    """4 ring cameras; GT poses/shapes; projected model keypoints as observations."""
    g = torch.Generator().manual_seed(seed)
    J, K = model.num_joints, model.num_betas
    truth = dict(global_orient=0.3 * torch.randn(batch, 3, generator=g, dtype=torch.float64),
                 body_pose=pose_std * torch.randn(batch, J - 1, 3, generator=g,
                                                  dtype=torch.float64),
                 betas=shape_std * torch.randn(batch, K, generator=g, dtype=torch.float64),
                 transl=5.0 * torch.randn(batch, 3, generator=g, dtype=torch.float64))
    cams = ring_cameras(4, target=np.zeros(3), up=np.array([0.0, 0.0, 1.0]), distance=400.0,
                        elevations_deg=[20, 30, 25, 35], azimuths_deg=[0, 90, 180, 270],
                        focal=500.0, image_size=(256, 256))
    out = model(**truth, return_vertices=False)
    from smilfit.cameras import project_points
    K_, R_, t_ = (torch.as_tensor(cams[k]) for k in ('K', 'R', 't'))
    uv = project_points(out.keypoints[:, None], K_, R_, t_)  # (B, C, Kp, 2)
    uv = uv + noise_px * torch.randn(uv.shape, generator=g, dtype=torch.float64)
    obs = dict(keypoints_2d=uv, confidence=torch.ones(uv.shape[:3], dtype=torch.float64),
               view_valid=torch.ones(batch, 4, dtype=torch.bool),
               K=K_.expand(batch, -1, -1, -1), R=R_.expand(batch, -1, -1, -1),
               t=t_.expand(batch, -1, -1))
    return obs, truth, out


def build(model, stages=STAGES, handlers=HANDLERS, **kwargs):
    reg = SMILRegistrant(body_model=model, handlers=handlers, stages=stages, **kwargs)
    reg.setup(dict(keypoint_names=model.keypoint_names))
    return reg


@pytest.mark.parametrize('stages,match', [
    ([dict(name='a', fit=['global_orient'], n_itr=3)], "unknown key 'n_itr'.*'n_iter'"),
    ([dict(name='a', fit=['global_orientation'])], "unknown parameter 'global_orientation'"),
    ([dict(name='a', fit=['transl'], loss_weights=dict(kp_2d=1.0))], "unknown handler 'kp_2d'"),
    ([dict(name='a', fit='transl')], 'non-empty list'),
    ([dict(name='a', fit=['transl']), dict(name='a', fit=['transl'])], 'unique'),
    ([], 'at least one stage'),
    ([dict(name='a', fit=['transl'], rounds=0)], "'rounds' must be a positive integer"),
    ([dict(name='a', fit=['transl'], coarse='yes')], "'coarse' must be True or False"),
    ([dict(name='a', fit=['transl'], seed_ftol=0)], "'seed_ftol' must be a number > 0"),
    ([dict(name='a', fit=['transl'], seed_ftol='1e-2')], "'seed_ftol' must be a number > 0"),
])
def test_stage_typos_are_errors(model, stages, match):
    with pytest.raises(StageConfigError, match=match):
        SMILRegistrant(body_model=model, handlers=HANDLERS, stages=stages)


def test_shared_pose_is_refused(model):
    with pytest.raises(ValueError, match='cannot be shared'):
        SMILRegistrant(body_model=model, handlers=HANDLERS, stages=STAGES,
                       shared=dict(body_pose=True))


def test_noise_free_recovery_and_batch_equals_per_frame_loop(model):
    obs, truth, out_true = make_observations(model, batch=3)
    reg = build(model)
    result = reg.fit(obs)
    rest = model().joints_kin[0]
    length = float((rest.max(0).values - rest.min(0).values).norm())
    err = (result.output.joints - out_true.joints).norm(dim=-1).mean(-1) / length
    # The fitting issue's bar: within 0.01 % of the body length, from the rest pose.
    assert float(err.max()) < 1e-4, err
    assert not result.diverged.any()
    assert [h['stage'] for h in result.history] == ['rigid', 'full']
    assert all(h['per_sample'] for h in result.history)
    # Each sample converges as if fitted alone.
    single = build(model).fit({k: v[2:3] for k, v in obs.items()})
    torch.testing.assert_close(single.output.joints[0], result.output.joints[2],
                               rtol=1e-3, atol=1e-3 * length)


def test_initialisation_aligns_rest_pose_to_triangulation(model):
    obs, truth, _ = make_observations(model, batch=3, pose_std=0.0, shape_std=0.0)
    reg = build(model)
    params = reg.initial_params(reg.to_tensors(obs), 3, torch.zeros(3, dtype=torch.long))
    torch.testing.assert_close(params['transl'], truth['transl'], atol=1e-3, rtol=0)
    from smilfit.body_models.rotations import axis_angle_to_matrix
    torch.testing.assert_close(axis_angle_to_matrix(params['global_orient']),
                               axis_angle_to_matrix(truth['global_orient']), atol=1e-5, rtol=0)


def test_a_start_that_gives_the_global_pose_skips_the_alignment(model, monkeypatch):
    """Where ``init_params`` sets every parameter the alignment would (a network's start),
    the alignment is not computed only to be overwritten; where it leaves one out, it is."""
    import smilfit.registrants.registrant as registrant_module
    from smilfit.registrants.initialization import global_pose_from_points
    obs, truth, _ = make_observations(model, batch=3, pose_std=0.0, shape_std=0.0)
    reg = build(model)
    groups = torch.zeros(3, dtype=torch.long)
    aligned = reg.initial_params(reg.to_tensors(obs), 3, groups)
    calls = []
    monkeypatch.setattr(registrant_module, 'global_pose_from_points',
                        lambda *args, **kwargs: calls.append(1) or
                        global_pose_from_points(*args, **kwargs))
    start = dict(global_orient=truth['global_orient'], transl=truth['transl'] + 1.0)
    params = reg.initial_params(reg.to_tensors(obs), 3, groups, start)
    assert calls == []
    torch.testing.assert_close(params['transl'], truth['transl'] + 1.0)
    torch.testing.assert_close(params['global_orient'], truth['global_orient'])
    params = reg.initial_params(reg.to_tensors(obs), 3, groups,
                                dict(global_orient=truth['global_orient']))
    assert calls == [1]
    torch.testing.assert_close(params['transl'], aligned['transl'])


def test_place_on_points_recovers_the_global_pose_of_a_posed_body(model):
    """A pose placed on points the model itself made at a known global pose gets that
    pose back (scale too, where a stage fits it); samples with fewer than 3 points keep
    theirs."""
    from smilfit.body_models.rotations import axis_angle_to_matrix
    obs, truth, out = make_observations(model, batch=3, pose_std=0.3, shape_std=0.0)
    groups = torch.zeros(3, dtype=torch.long)
    scaled = [dict(s, fit=s['fit'] + ['global_log_scale']) for s in QUICK_STAGES]
    for stages, log_scale in ((QUICK_STAGES, 0.0), (scaled, 0.2)):
        reg = build(model, stages=stages)
        params = reg.initial_params(reg.to_tensors(obs), 3, groups)
        params['body_pose'] = truth['body_pose'].clone()
        target = dict(params, global_orient=truth['global_orient'], transl=truth['transl'],
                      global_log_scale=torch.full((3, 1), log_scale, dtype=torch.float64))
        posed = model(**{k: v for k, v in target.items() if k != 'keypoint_offsets'},
                      return_vertices=False)
        points = posed.keypoints.clone()      # the data's keypoints are the model's here
        points[2, 3:] = float('nan')          # sample 2: 3 points left
        points[1, 2:] = float('nan')          # sample 1: 2 points, not enough
        placed = reg.place_on_points(params, points, groups)
        for b in (0, 2):
            torch.testing.assert_close(placed['transl'][b], truth['transl'][b], atol=1e-6,
                                       rtol=0)
            torch.testing.assert_close(axis_angle_to_matrix(placed['global_orient'][b]),
                                       axis_angle_to_matrix(truth['global_orient'][b]),
                                       atol=1e-6, rtol=0)
            torch.testing.assert_close(placed['global_log_scale'][b],
                                       torch.tensor([log_scale], dtype=torch.float64),
                                       atol=1e-6, rtol=0)
        for name in ('global_orient', 'transl', 'global_log_scale'):
            torch.testing.assert_close(placed[name][1], params[name][1])
        torch.testing.assert_close(placed['body_pose'], params['body_pose'])


def test_shared_shape_across_a_group(model):
    obs, truth, _ = make_observations(model, batch=4)
    reg = build(model, stages=QUICK_STAGES, shared=dict(betas=True))
    result = reg.fit(obs, groups=torch.tensor([0, 0, 1, 1]))
    betas = result.params['betas']
    torch.testing.assert_close(betas[0], betas[1])
    assert not torch.allclose(betas[0], betas[2])
    assert not result.history[1]['per_sample']  # a shared parameter couples its group


def test_until_last_shared_stops_after_the_last_stage_fitting_shared_parameters(model):
    """What a skeleton estimate needs: the stages up to the last one fitting a shared
    parameter, with the same shared values as the whole fit (later stages cannot change
    them); without shared parameters every stage runs."""
    obs, _, _ = make_observations(model, batch=4)
    stages = [*QUICK_STAGES, dict(name='pose', fit=['global_orient', 'transl', 'body_pose'],
                                  n_iter=2, optimizer=dict(type='LBFGS'))]
    groups = torch.tensor([0, 0, 1, 1])
    reg = build(model, stages=stages, shared=dict(betas=True))
    whole = reg.fit(obs, groups=groups)
    short = reg.fit(obs, groups=groups, until_last_shared=True)
    assert [r['stage'] for r in short.history] == ['rigid', 'full']
    assert len(whole.history) == len(stages)
    torch.testing.assert_close(short.params['betas'], whole.params['betas'])
    plain = build(model, stages=stages).fit(obs, until_last_shared=True)
    assert len(plain.history) == len(stages)


def test_fixed_parameters_keep_their_values_and_empty_stages_are_skipped(model):
    """fit(fixed=...): an animal's skeleton estimated beforehand is held by every stage;
    a stage that fits only fixed parameters is skipped (recorded in the history)."""
    obs, truth, _ = make_observations(model, batch=4)
    stages = [dict(name='shape', fit=['betas'], n_iter=2, optimizer=dict(type='LBFGS')),
              *QUICK_STAGES]
    reg = build(model, stages=stages, shared=dict(betas=True))
    betas = torch.stack([truth['betas'][0], truth['betas'][2]])
    result = reg.fit(obs, groups=torch.tensor([0, 0, 1, 1]), init_params=dict(betas=betas),
                     fixed=['betas'])
    torch.testing.assert_close(result.params['betas'], betas[[0, 0, 1, 1]])
    assert result.history[0]['skipped'] and result.history[0]['steps'] == 0
    assert [r['stage'] for r in result.history] == ['shape', 'rigid', 'full']
    assert result.history[2]['per_sample']      # betas fixed: the stage is per sample again
    with pytest.raises(KeyError, match='fixed: unknown parameters'):
        reg.fit(obs, fixed=['bettas'])


@pytest.mark.parametrize('optimizer', [dict(type='LevenbergMarquardt'),
                                       dict(type='LBFGS', max_iter=30)])
def test_samples_that_start_near_the_answer_skip_coarse_stages(model, optimizer):
    """fit(near=...): frames started from a network's prediction skip the coarse stages
    (they keep their start exactly), the other frames fit as without them; a stage every
    frame skips is not run."""
    obs, truth, _ = make_observations(model, batch=4)
    stages = [dict(name='rigid', fit=['global_orient', 'transl'], n_iter=20, coarse=True,
                   optimizer=optimizer)]
    reg = build(model, stages=stages)
    start = dict(global_orient=truth['global_orient'] + 0.2, transl=truth['transl'] + 1.0,
                 body_pose=truth['body_pose'], betas=truth['betas'])
    near = torch.tensor([True, False, True, False])
    result = reg.fit(obs, init_params=start, near=near)
    for k in ('global_orient', 'transl'):
        torch.testing.assert_close(result.params[k][near], start[k][near], rtol=0, atol=0)
        assert not torch.allclose(result.params[k][~near], start[k][~near])
    assert result.history[0]['skipped_samples'] == 2
    # the others as if fitted alone (every sample its own problem)
    alone = reg.fit({k: v[~near] for k, v in obs.items()},
                    init_params={k: v[~near] for k, v in start.items()})
    torch.testing.assert_close(result.params['transl'][~near], alone.params['transl'],
                               rtol=1e-6, atol=1e-6)
    everyone = reg.fit(obs, init_params=start, near=torch.ones(4, dtype=torch.bool))
    assert everyone.history[0]['skipped'] == 'every sample starts near the answer'
    torch.testing.assert_close(everyone.params['transl'], start['transl'], rtol=0, atol=0)
    # a stage that is not coarse runs for every frame
    plain = build(model, stages=[dict(stages[0], coarse=False)])
    moved = plain.fit(obs, init_params=start, near=near)
    assert not torch.allclose(moved.params['transl'][near], start['transl'][near])
    with pytest.raises(ValueError, match=r'near: expected \(4,\)'):
        reg.fit(obs, init_params=start, near=torch.ones(3, dtype=torch.bool))


def test_divergent_sample_is_reported_and_others_fit(model):
    obs, _, out_true = make_observations(model, batch=3)
    obs['keypoints_2d'][1, :, :3] = 1e30  # absurd observations for sample 1
    reg = build(model, stages=QUICK_STAGES)
    with warnings.catch_warnings():  # the line search may absorb it or report it
        warnings.simplefilter('ignore')
        result = reg.fit(obs)
    good = [0, 2]
    assert torch.isfinite(result.output.joints[good]).all()
    assert torch.isfinite(result.params['body_pose']).all()


def test_plugin_loss_and_handler_through_custom_imports(tmp_path, monkeypatch, model):
    (tmp_path / 'my_fit_plugin.py').write_text(textwrap.dedent('''
        import torch
        from smilfit.handlers.base import BaseHandler
        from smilfit.registry import HANDLERS, LOSSES

        @LOSSES.register_module()
        class TranslationNormLoss(torch.nn.Module):
            reduction = 'none'
            def forward(self, transl):
                return transl.square().sum(-1)

        @HANDLERS.register_module()
        class TranslationHandler(BaseHandler):
            calls = 0
            def compute(self, output, observations, params):
                type(self).calls += 1
                return self.loss(params['transl'])
    '''))
    monkeypatch.syspath_prepend(str(tmp_path))
    cfg_file = tmp_path / 'cfg.py'
    cfg_file.write_text(textwrap.dedent('''
        custom_imports = dict(imports=['my_fit_plugin'], allow_failed_imports=False)
        handlers = [dict(type='TranslationHandler', name='centre',
                         loss=dict(type='TranslationNormLoss'))]
    '''))
    from mmengine.config import Config
    cfg = Config.fromfile(str(cfg_file))
    reg = build(model, handlers=HANDLERS + list(cfg.handlers),
                stages=[dict(name='t', fit=['transl'], n_iter=1,
                             optimizer=dict(type='LBFGS', max_iter=5))])
    obs, _, _ = make_observations(model, batch=2)
    reg.fit(obs)
    import my_fit_plugin
    assert my_fit_plugin.TranslationHandler.calls > 0


def test_fit_tool_on_demo_config(tmp_path):
    """tools/fit.py end to end: synthetic data generated on first use, results written."""
    import h5py
    cmd = [sys.executable, str(REPO_ROOT / 'tools' / 'fit.py'),
           str(REPO_ROOT / 'configs' / 'fitting' / 'demo_mouse.py'), '--no-progress',
           '--work-dir', str(tmp_path / 'out'), '--cfg-options',
           f'data.path={tmp_path / "synthetic.h5"}', 'data.synthetic.num_sessions=1',
           'data.synthetic.frames_per_session=4', 'data.batch_size=4']
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    with h5py.File(tmp_path / 'out' / 'fit_results.h5') as f:
        assert f['joints'].shape[0] == 4
        assert np.nanmedian(f['metrics/reprojection_px'][:]) < 2.0
    # A second run refuses to overwrite; --resume reuses the finished batches.
    again = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert again.returncode == 1 and 'resume' in again.stderr
    resumed = subprocess.run(cmd + ['--resume'], capture_output=True, text=True, timeout=600,
                             cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]


def test_vertex_offsets_are_fitted_only_when_asked():
    """Offsets move vertices (not joints) and exist only for stages that fit them."""
    from smilfit.body_models import SMILModel, demo_model_data
    model = SMILModel(data=demo_model_data(), dtype=torch.float64)
    target = model(betas=torch.zeros(1, model.num_betas, dtype=torch.float64)).vertices
    shift = torch.zeros_like(target)
    shift[0, :10, 2] = 0.01
    offsets_out = model(vertex_offsets=shift)
    torch.testing.assert_close(offsets_out.vertices, target + shift)
    torch.testing.assert_close(offsets_out.joints, model().joints)
    with pytest.raises(ValueError, match='vertex_offsets'):
        model(vertex_offsets=shift[:, :5])
    reg = SMILRegistrant(body_model=model, init='zeros', handlers=[
        dict(type='Keypoint3DHandler', name='k3', source='joints')], stages=[
        dict(name='s', fit=['transl'], n_iter=2)])
    reg.setup(dict(keypoint_names=model.joint_names))
    obs = dict(keypoints_3d=model().joints)
    assert 'vertex_offsets' not in reg.fit(obs).params
    fitted = reg.fit(obs, init_params=dict(vertex_offsets=shift)).params['vertex_offsets']
    assert fitted.shape == shift.shape


def _one_view_problem(model, batch, headings=8, seed=0):
    """One calibrated camera; each sample stands at one of the multi-start headings (plus
    0.15 rad) some distance in front of it, slightly posed."""
    from smilfit.body_models.quadruped import camera_facing_orientations
    from smilfit.body_models.rotations import axis_angle_to_matrix, matrix_to_axis_angle
    from smilfit.cameras import project_points
    g = torch.Generator().manual_seed(seed)
    cams = ring_cameras(1, target=np.zeros(3), up=np.array([0.0, 0.0, 1.0]), distance=400.0,
                        elevations_deg=[20], azimuths_deg=[30], focal=500.0,
                        image_size=(256, 256))
    K_, R_, t_ = (torch.as_tensor(cams[k])[0] for k in ('K', 'R', 't'))
    which = torch.arange(batch) * 3 % headings
    in_cam = axis_angle_to_matrix(camera_facing_orientations(headings, dtype=torch.float64)
                                  [which] + 0.15 * torch.randn(batch, 3, generator=g,
                                                               dtype=torch.float64))
    J = model.num_joints
    truth = dict(global_orient=matrix_to_axis_angle(R_.T @ in_cam),
                 body_pose=0.1 * torch.randn(batch, J - 1, 3, generator=g, dtype=torch.float64),
                 transl=10.0 * torch.randn(batch, 3, generator=g, dtype=torch.float64))
    out = model(**truth, return_vertices=False)
    uv = project_points(out.keypoints[:, None], K_, R_, t_)
    obs = dict(keypoints_2d=uv, visible=torch.ones(uv.shape[:3], dtype=torch.bool),
               K=K_.expand(batch, 1, 3, 3), R=R_.expand(batch, 1, 3, 3), t=t_.expand(batch, 1, 3))
    return obs, truth


def _angle_to(result, truth):
    """(B,) rotation angle (rad) between fitted and true global orientations."""
    from smilfit.body_models.rotations import axis_angle_to_matrix
    rel = axis_angle_to_matrix(result.params['global_orient']).transpose(-1, -2) @ \
        axis_angle_to_matrix(truth['global_orient'])
    return torch.arccos(((rel.diagonal(dim1=-2, dim2=-1).sum(-1) - 1) / 2).clamp(-1, 1))


def test_multi_start_finds_the_heading_from_one_view(model):
    obs, truth = _one_view_problem(model, 8)
    stages = [dict(STAGES[0], n_iter=4), dict(STAGES[1], n_iter=4)]
    # a robust loss (as real data needs) has no pull from far away: one start is not enough
    handlers = [dict(HANDLERS[0], loss=dict(type='KeypointMSELoss', robust='gmof', sigma=5.0)),
                HANDLERS[1]]
    reg = build(model, stages=stages, handlers=handlers, init='zeros',
                multi_start=dict(num_headings=8, stages=1))
    result = reg.fit(obs)
    uv = reg.handlers['kp2d'].project(result.output, obs, result.params)[0]
    err = (uv - obs['keypoints_2d']).norm(dim=-1).mean((1, 2))
    assert bool((err < 0.5).all()), err                      # pixels, 256 px images
    # the body's facing is the truth's: its rotation is close (the rigid stage from the
    # right heading, not a mirror image)
    assert bool((_angle_to(result, truth) < 0.5).all()), _angle_to(result, truth)
    assert result.history[0]['hypotheses'] == 8 and 'hypotheses' not in result.history[1]
    # one start (the rest pose at the origin) fits the pixels too, but not the 3D facing
    plain = build(model, stages=stages, handlers=handlers, init='zeros').fit(obs)
    assert float(_angle_to(plain, truth).max()) > 1.0, _angle_to(plain, truth)
    # each sample as if alone (the per-sample optimisers' tolerance)
    alone = reg.fit({k: v[2:3] for k, v in obs.items()})
    rest = model().joints_kin[0]
    length = float((rest.max(0).values - rest.min(0).values).norm())
    torch.testing.assert_close(alone.output.joints[0], result.output.joints[2], rtol=1e-3,
                               atol=1e-3 * length)


@pytest.mark.parametrize('kwargs,match', [
    (dict(multi_start=dict(headings=8)), "unknown key.*'headings'"),
    (dict(multi_start=dict(stages=3)), 'between 1 and the number of stages'),
    (dict(multi_start=dict(num_headings=0)), 'num_headings'),
    (dict(multi_start=dict(score='kp')), "'kp' is not a handler"),
    (dict(multi_start=dict(body_extent=-1.0)), 'body_extent'),
    (dict(multi_start={}, shared=dict(betas=True)), 'shared parameters'),
])
def test_multi_start_options_are_checked(model, kwargs, match):
    with pytest.raises(ValueError, match=match):
        build(model, **kwargs)


def test_multi_start_refuses_init_params(model):
    obs, truth = _one_view_problem(model, 1)
    reg = build(model, stages=[STAGES[0]], multi_start={})
    with pytest.raises(ValueError, match='exclude each other'):
        reg.fit(obs, init_params=dict(transl=truth['transl']))


def test_lm_stage_history_losses_are_the_stage_losses(model):
    """The LM runner reports the stage's start and end losses from its own evaluations
    (the first linearisation, the last costs; no extra passes): they equal the
    registrant's loss there."""
    obs, truth, _ = make_observations(model, batch=3, noise_px=1.0)
    stages = [dict(name='lm', fit=['global_orient', 'transl', 'body_pose', 'betas'],
                   n_iter=4, optimizer=dict(type='LevenbergMarquardt'))]
    reg = build(model, stages=stages)
    obs_t = reg.to_tensors(obs)
    start = reg.initial_params(obs_t, 3, torch.zeros(3, dtype=torch.long), None)
    result = reg.fit(obs)
    record = result.history[0]
    active = list(reg.handlers.values())
    with torch.no_grad():
        before = reg.per_sample_losses(start, obs_t, active, False)
        after = reg.per_sample_losses(result.params, obs_t, active, False)
    assert record['mean_loss_start'] == pytest.approx(
        float(torch.stack(list(before.values())).sum(0).mean()), rel=1e-9)
    assert record['mean_loss_end'] == pytest.approx(
        float(torch.stack(list(after.values())).sum(0).mean()), rel=1e-9)
    assert record['mean_loss_end'] < 0.1 * record['mean_loss_start']


def _seed_fits(model, stages, scales=True, **fit_kwargs):
    """History of an LM fit of ``stages`` from a start 0.1 rad and 1 unit off, with
    1 px label noise, the 2D labels' noise scales measured from the residuals or not."""
    obs, truth, _ = make_observations(model, batch=3, noise_px=1.0)
    # (the scales held at one floor everywhere, below which 1 px labels fall: every run's
    # later stages then minimise the same loss, whichever point its first stage left)
    handlers = [dict(HANDLERS[0], scale_from_residuals=scales, resolved_min_relative_scale=0.01,
                     keep_measured_total=False,
                     loss=dict(type='KeypointMSELoss', robust='gmof', sigma=3.0)),
                HANDLERS[1]]
    start = dict(global_orient=truth['global_orient'] + 0.1,
                 body_pose=truth['body_pose'] + 0.1, transl=truth['transl'] + 1.0,
                 betas=truth['betas'])
    result = build(model, stages=stages, handlers=handlers).fit(obs, init_params=start,
                                                                **fit_kwargs)
    return {r['stage']: r for r in result.history}


POSE = ['global_orient', 'transl', 'body_pose']
LM = dict(type='LevenbergMarquardt')


def test_a_stage_that_only_seeds_the_next_ones_noise_scales_stops_at_its_seed_ftol(model):
    """seed_ftol: a stage whose next running stage fits its parameters again and measures
    the noise scales afresh stops at the looser tolerance; anywhere else at ftol."""
    first = dict(name='first', fit=POSE, n_iter=50, optimizer=LM, ftol=1e-12)
    second = dict(name='second', fit=POSE, n_iter=50, optimizer=LM, ftol=1e-12)
    plain = _seed_fits(model, [first, second])
    seeded = _seed_fits(model, [dict(first, seed_ftol=1e-2), second])
    assert 'seeds' not in plain['first']
    assert seeded['first']['seeds'] == 'second'
    assert seeded['first']['unit_steps'] < plain['first']['unit_steps']
    # the seeding stage stopped where an accepted step gained less than 1 %
    assert seeded['first']['mean_loss_end'] > plain['first']['mean_loss_end']
    # the stage it seeds converges as tightly as before
    assert seeded['second']['mean_loss_end'] == pytest.approx(plain['second']['mean_loss_end'],
                                                              rel=1e-3)
    # a skeleton-like stage between them that fits only fixed parameters is skipped: the
    # first still seeds the second
    between = dict(name='between', fit=['betas'], n_iter=5, optimizer=LM, ftol=1e-12)
    crossed = _seed_fits(model, [dict(first, seed_ftol=1e-2), between, second],
                         fixed=['betas'])
    assert crossed['first']['seeds'] == 'second'
    assert crossed['first']['unit_steps'] == seeded['first']['unit_steps']
    # ... but where it runs, the first stage's answer feeds it, and ftol holds
    ran = _seed_fits(model, [dict(first, seed_ftol=1e-2), between, second])
    assert 'seeds' not in ran['first']
    assert ran['first']['unit_steps'] == plain['first']['unit_steps']


def test_a_stage_seeds_the_next_that_fits_its_parameters_and_more(model):
    """A rigid alignment before a pose stage: the pose stage fits the global pose again."""
    rigid = dict(name='rigid', fit=['global_orient', 'transl'], n_iter=50, optimizer=LM,
                 ftol=1e-12)
    pose = dict(name='pose', fit=POSE, n_iter=50, optimizer=LM, ftol=1e-12)
    plain = _seed_fits(model, [rigid, pose])
    seeded = _seed_fits(model, [dict(rigid, seed_ftol=1e-2), pose])
    assert seeded['rigid']['seeds'] == 'pose'
    assert seeded['rigid']['unit_steps'] < plain['rigid']['unit_steps']
    assert seeded['pose']['mean_loss_end'] == pytest.approx(plain['pose']['mean_loss_end'],
                                                            rel=1e-3)


@pytest.mark.parametrize('what', ['not all of its parameters', 'no noise scales',
                                  'last stage'])
def test_seed_ftol_is_not_used_where_the_next_stage_does_not_start_afresh(model, what):
    first = dict(name='first', fit=POSE, n_iter=50, optimizer=LM, ftol=1e-12)
    # (a next stage without body_pose would keep the first stage's body pose)
    second = dict(name='second', fit=POSE[:2] if what == 'not all of its parameters' else POSE,
                  n_iter=50, optimizer=LM, ftol=1e-12)
    stages = [first] if what == 'last stage' else [first, second]
    scales = what != 'no noise scales'
    plain = _seed_fits(model, stages, scales=scales)
    seeded = _seed_fits(model, [dict(first, seed_ftol=1e-2)] + stages[1:], scales=scales)
    assert 'seeds' not in seeded['first']
    assert seeded['first']['unit_steps'] == plain['first']['unit_steps']
