"""``benchmarks/holdout.py`` and ``holdout_synthetic.py``: the config variants they compare
(``+`` joins them; the config before the animal's own pose prior and the left/right
exchanges is one of them), the rows of their tables, and a synthetic run with the noise
protocol that writes its table."""
import argparse

import pytest

from ..conftest import benchmark_module, mouse_session_config_on_demo_mouse


def test_variants_join_and_revert_the_animal_prior_and_the_exchanges():
    bench = benchmark_module('holdout')
    shipped = mouse_session_config_on_demo_mouse('unused.h5')
    kinds = {h['type']: h for h in shipped.registrant.handlers}
    assert 'AnimalPosePriorHandler' in kinds
    assert kinds['Keypoint2DHandler']['exchange_left_right'] is True
    before = bench.apply_variant(mouse_session_config_on_demo_mouse('unused.h5'),
                                 bench.BEFORE_ANIMAL_PRIOR)
    kinds = {h['type']: h for h in before.registrant.handlers}
    assert 'AnimalPosePriorHandler' not in kinds
    assert kinds['PosePriorHandler']['name'] == 'pose_prior'
    assert kinds['PosePriorHandler']['loss'] == dict(type='PoseL2Prior')
    assert kinds['Keypoint2DHandler']['exchange_left_right'] is False
    assert kinds['Keypoint2DHandler']['studentize'] is False
    assert 'studentize' not in {h['type']: h for h in shipped.registrant.handlers}[
        'Keypoint2DHandler']                            # the handler's default: on
    assert 'MotionPriorHandler' not in kinds
    assert not any(s.get('place_markers') for s in before.registrant.stages)
    assert any(s.get('place_markers') for s in shipped.registrant.stages)
    spread = bench.apply_variant(mouse_session_config_on_demo_mouse('unused.h5'),
                                 'posterior_spread')
    kinds = {h['type']: h for h in spread.registrant.handlers}
    assert kinds['AnimalPosePriorHandler']['posterior_spread'] is True
    assert 'posterior_spread' not in {h['type']: h for h in shipped.registrant.handlers}[
        'AnimalPosePriorHandler']                       # off in the shipped config
    assert bench.variant_name('joint+animal_scale') == 'joint+animal_scale'
    with pytest.raises(argparse.ArgumentTypeError, match='unknown'):
        bench.variant_name('joint+nonsense')


def test_variants_of_the_motion_prior_and_the_last_stage_change_that_alone():
    bench = benchmark_module('holdout')
    shipped = mouse_session_config_on_demo_mouse('unused.h5')
    last = max(i for i, s in enumerate(shipped.registrant.stages) if 'body_pose' in s['fit'])
    names = {h['type']: h['name'] for h in shipped.registrant.handlers}
    root = bench.apply_variant(mouse_session_config_on_demo_mouse('unused.h5'), 'root_motion')
    motion = {h['type']: h for h in root.registrant.handlers}['MotionPriorHandler']
    assert 'body_pose' not in motion['params'] and 'transl' in motion['params']
    assert root.registrant.stages == shipped.registrant.stages
    for variant, handler, weight in (('final_unsmoothed', 'MotionPriorHandler', 0.0),
                                     ('final_data_x2', 'Keypoint2DHandler', 2.0)):
        changed = bench.apply_variant(mouse_session_config_on_demo_mouse('unused.h5'), variant)
        stages, before = changed.registrant.stages, shipped.registrant.stages
        assert stages[last]['loss_weights'][names[handler]] == weight
        # every other stage and the rest of the last one as shipped
        assert [s for i, s in enumerate(stages) if i != last] == [
            s for i, s in enumerate(before) if i != last]
        assert {k: v for k, v in stages[last]['loss_weights'].items()
                if k != names[handler]} == before[last].get('loss_weights', {})
    rounds = bench.apply_variant(mouse_session_config_on_demo_mouse('unused.h5'),
                                 'final_rounds').registrant.stages
    assert rounds[last] == dict(shipped.registrant.stages[last], rounds=2)
    assert shipped.registrant.stages[last].get('rounds', 1) == 1
    assert [s for i, s in enumerate(rounds) if i != last] == [
        s for i, s in enumerate(shipped.registrant.stages) if i != last]
    both = bench.apply_variant(mouse_session_config_on_demo_mouse('unused.h5'),
                               'final_data_x2+no_motion')
    assert 'MotionPriorHandler' not in {h['type'] for h in both.registrant.handlers}
    assert both.registrant.stages[last]['loss_weights'][names['Keypoint2DHandler']] == 2.0
    synthetic = benchmark_module('holdout_synthetic')
    assert all(bench.variant_name(v) == v for v in synthetic.CONFIGS.values()
               if isinstance(v, str))


def test_the_one_floor_variant_floors_every_point_as_points_two_views_see():
    from smilfit.registry import HANDLERS
    bench = benchmark_module('holdout')
    shipped = {h['type']: h for h in mouse_session_config_on_demo_mouse(
        'unused.h5').registrant.handlers}['Keypoint2DHandler']
    one = {h['type']: h for h in bench.apply_variant(mouse_session_config_on_demo_mouse(
        'unused.h5'), 'one_floor').registrant.handlers}['Keypoint2DHandler']
    built, default = HANDLERS.build(dict(one)), HANDLERS.build(dict(shipped))
    assert built.resolved_min_relative_scale == built.min_relative_scale == 0.01
    assert default.resolved_min_relative_scale < default.min_relative_scale


def test_the_floored_total_variant_weighs_labels_as_no_more_precise_than_the_floor():
    from smilfit.registry import HANDLERS
    bench = benchmark_module('holdout')
    variant = {h['type']: h for h in bench.apply_variant(mouse_session_config_on_demo_mouse(
        'unused.h5'), 'floored_total').registrant.handlers}['Keypoint2DHandler']
    shipped = {h['type']: h for h in mouse_session_config_on_demo_mouse(
        'unused.h5').registrant.handlers}['Keypoint2DHandler']
    assert not HANDLERS.build(dict(variant)).keep_measured_total
    assert HANDLERS.build(dict(shipped)).keep_measured_total


def test_the_trunk_unmapped_variant_leaves_only_the_trunk_rows_out_of_the_lookup():
    """The shipped lookup without its trunk and shoulder rows (the fit places those labels);
    the synthetic skin case without a row for its trunk label, as a user unsure of it
    would leave it."""
    from mmengine.config import Config

    from smilfit.body_models.joint_lookup import joint_lookup_dict
    bench = benchmark_module('holdout')
    cfg = Config.fromfile(str(bench.CONFIG))
    shipped = joint_lookup_dict(str(bench.ROOT / cfg.data.joint_lookup))
    bench.apply_variant(cfg, 'trunk_unmapped')
    assert set(bench.TRUNK_LABELS) <= set(shipped.values())
    assert cfg.data.joint_lookup == {m: d for m, d in shipped.items()
                                     if d not in bench.TRUNK_LABELS}
    assert any(s.get('place_unmapped') for s in cfg.registrant.stages)
    synthetic = benchmark_module('holdout_synthetic')
    names = ['spine_2', 'neck', 'pelvis']
    lookup = synthetic._skin_lookup(names, synthetic.SKIN['skin_unmapped'])
    assert 'spine_2' not in {d for d in lookup.values() if d}
    assert lookup['neck'] == 'neck'
    assert synthetic._skin_lookup(names, 'spine_1')['spine_1'] == 'spine_2'


def test_a_run_of_the_skin_cases_leaves_the_other_cases_table_alone(monkeypatch):
    synthetic = benchmark_module('holdout_synthetic')
    written = []
    monkeypatch.setattr(synthetic, 'write_summary', lambda r, a: written.append(('plain', r)))
    monkeypatch.setattr(synthetic, 'write_skin_summary',
                        lambda r, a: written.append(('skin', r)))
    skin, plain = ('skin', 'shipped', {}), ('clean', 'shipped', {})
    synthetic.write_tables([skin], None)
    assert written == [('skin', [skin])]
    written.clear()
    synthetic.write_tables([plain, skin], None)
    assert written == [('plain', [plain]), ('skin', [skin])]


def test_table_rows_compare_every_method_on_the_same_points():
    methods = benchmark_module('holdout_methods')
    block = dict(all=dict(fit_median_px=2.0, fit_p90_px=4.0, dlt_median_px=4.0,
                          dlt_p90_px=10.0),
                 methods=dict(px=dict(points=9, by=dict(fit=dict(median=2.0, p90=4.0),
                                                        DLT=dict(median=4.0, p90=10.0),
                                                        anipose=dict(median=5.0, p90=9.0))),
                              world=dict(points=3, by=dict(fit=dict(median=1.0, p90=2.0),
                                                           DLT=dict(median=1.5, p90=3.0),
                                                           anipose=dict(median=2.0,
                                                                        p90=4.0)))),
                 exchanges=dict(made=5, found=4, wrong=1))
    names = methods.method_names([dict(k={'2': block})])
    assert names == ['fit', 'DLT', 'anipose']
    header, cells = methods.method_header(names), methods.method_cells(block, names)
    assert len(header) == len(cells)
    row = dict(zip(header, cells))
    assert row['anipose px'] == '5.00 (9.00)' and row['fit / DLT (med, p90)'] == '0.50, 0.40'
    assert row['DLT 3D'] == '1.50 (3.00)' and row['L/R swaps found (wrongly)'] == '4 of 5 (1)'
    plain = dict(all=block['all'], methods=dict(px=None, world=None), exchanges=None)
    row = dict(zip(methods.method_header(['fit', 'DLT']),
                   methods.method_cells(plain, ['fit', 'DLT'])))
    assert row['fit px'] == '2.00 (4.00)' and row['fit 3D'] == 'n/a'


def test_the_keypoint_table_has_a_row_per_named_keypoint_where_views_are_held_out(tmp_path):
    """``holdout.py --keypoints``: fit and DLT medians of the keypoints named, per case
    and k; a k that holds nothing out (every view fitted) has no rows; a keypoint the
    report does not score is n/a."""
    bench = benchmark_module('holdout')
    scored = dict(all=dict(points=12), keypoints=dict(
        Neck=dict(fit_median_px=3.0, dlt_median_px=4.0),
        Trunk=dict(fit_median_px=None, dlt_median_px=None)))
    reports = [('all_no_side', dict(k={'2': scored, '3': dict(all=dict(points=0),
                                                             keypoints={})})),
               ('eight_cameras', dict(k={'2': scored}))]
    args = argparse.Namespace(keypoints=['Neck', 'Trunk', 'Tail'], table_suffix='',
                              noise=None, variant='trunk_unmapped', tables=str(tmp_path))
    text = bench.write_keypoint_table(reports, args)
    rows = [line for line in text.splitlines() if line.startswith('| all_no_side')
            or line.startswith('| eight_cameras')]
    assert len(rows) == 6                      # 2 cases x k = 2 x 3 keypoints
    assert '| all_no_side | yes | 2 | Neck | 3.00 | 4.00 | 0.75 |' in rows
    assert '| eight_cameras | no | 2 | Trunk | n/a | n/a | n/a |' in rows
    assert '| all_no_side | yes | 2 | Tail | n/a | n/a | n/a |' in rows
    assert (tmp_path / 'holdout_session_keypoints_trunk_unmapped.md').is_file()


def test_ks_in_place_of_a_cases_own_leave_out_what_holds_nothing_out():
    """``holdout.py --ks``: every k below the case's views runs; k equal to them (every
    view fitted, nothing held out) only with label noise, scored in 3D; more never."""
    case_ks = benchmark_module('holdout').case_ks
    assert case_ks((2, 3, 4, 5, 6, 7, 8, 9), 8, noisy=False) == (2, 3, 4, 5, 6, 7)
    assert case_ks((2, 3, 4, 5, 6, 7, 8, 9), 8, noisy=True) == (2, 3, 4, 5, 6, 7, 8)
    assert case_ks((2, 3), 3, noisy=False) == (2,)
    assert case_ks((2, 3), 3, noisy=True) == (2, 3)


def test_ks_below_two_are_refused(monkeypatch, capsys):
    holdout = benchmark_module('holdout')
    monkeypatch.setattr('sys.argv', ['holdout.py', '--ks', '1', '2'])
    with pytest.raises(SystemExit):
        holdout.main()
    assert 'at least 2 fitting cameras' in capsys.readouterr().err


def test_the_synthetic_benchmark_writes_its_noise_table(tmp_path, monkeypatch):
    bench = benchmark_module('holdout_synthetic')
    argv = ['--cases', 'clean_f5', '--configs', 'shipped', '--subsets', '1', '--ks', '3',
            '--frames', '6', '--peers', 'none', '--noise', '2,0.05,0.2',
            '--out-dir', str(tmp_path / 'out'), '--tables', str(tmp_path / 'tables')]

    def run(*extra):
        monkeypatch.setattr('sys.argv', ['holdout_synthetic.py', *argv, *extra])
        return bench.main()
    assert run() == 0
    table = tmp_path / 'tables' / 'holdout_synthetic_noise.md'
    first = table.read_text()
    assert run() == 0 and table.read_text() == first         # resumed: the same fits
    # fits made by other smilfit code are stale: the rerun stops, --overwrite fits again
    import smilfit.apis.fitting.dataset_fit as dataset_fit
    monkeypatch.setattr(dataset_fit, 'code_identity', lambda: 'another version')
    with pytest.raises(FileExistsError, match='another smilfit code'):
        run()
    assert run('--overwrite') == 0
    lines = table.read_text().splitlines()
    assert lines[0].startswith('<!-- written by `python benchmarks/holdout_synthetic.py '
                               '--cases clean_f5')
    assert lines[2:] == first.splitlines()[2:]                 # the same code's answer
    header = [c.strip() for c in lines[2].strip('|').split('|')]
    assert header[:7] == ['case', 'label noise px', 'config', 'frames', 'k', 'fit px', 'DLT px']
    row = [c.strip() for c in lines[4].strip('|').split('|')]
    assert row[:5] == ['clean_f5', '0.5', 'shipped', '5', '3']
    assert row[-1] != 'n/a'                    # the swaps made, counted against the fit's


def test_a_synthetic_session_is_made_by_one_run_while_the_others_wait(tmp_path, monkeypatch):
    import multiprocessing
    import time

    import smilfit.datasets.synthetic_animals as synthetic_animals
    bench = benchmark_module('holdout_synthetic')
    made = []
    real = synthetic_animals.generate_animal_session

    def counted(*args, **kwargs):
        made.append(1)
        return real(*args, **kwargs)
    monkeypatch.setattr(synthetic_animals, 'generate_animal_session', counted)
    # another run holds the session's lock (it is making the session): this one waits
    lock = tmp_path / 'session_0.5px.lock'
    ready = multiprocessing.get_context('fork').Event()

    def hold():
        with bench._exclusive(lock):
            ready.set()
            time.sleep(1.0)
    other = multiprocessing.get_context('fork').Process(target=hold)
    other.start()
    assert ready.wait(30)
    start = time.monotonic()
    data, truth = bench._session(tmp_path, 6, 0.5, None)
    assert time.monotonic() - start > 0.5                  # it waited for the other
    other.join()
    assert data.exists() and truth.shape[0] == 6 and made == [1]
    # the next run finds the session and its truth: nothing made again
    again, truth_again = bench._session(tmp_path, 6, 0.5, None)
    assert again == data and (truth_again == truth).all() and made == [1]
