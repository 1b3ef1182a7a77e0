"""The real-session benchmark's modes for a lent GPU (``benchmarks/cuda.sh OUT recipe``,
``table``, ``starts``): another recipe's config and crop size train and score in work
dirs of their own, with the fit and the baselines beside them; a time budget sizes the
trainings; the fits from a network's predictions run on each device asked for."""
import re

import pytest

from ..conftest import REPO_ROOT, benchmark_module, shared_path


def test_network_only_trains_and_scores_another_recipe(tmp_path, capsys):
    bench = _session_benchmark()
    # another recipe: the CPU one under another name, on 64 px crops, 2 iterations
    config = tmp_path / 'tiny_recipe.py'
    config.write_text(f"_base_ = ['{REPO_ROOT}/configs/regression/mouse_session_resnet18.py']\n")
    out = tmp_path / 'out'
    assert bench.main(['--out-dir', str(out), '--network-only', '--config', str(config),
                       '--crop-size', '64', '--iters', '2', '--threads', '1',
                       '--tables', str(tmp_path / 'tables')]) == 0
    printed = capsys.readouterr().out
    assert 'tiny_recipe.py, 64 px crops, 2 iterations, cpu' in printed
    rows = _table_rows(printed)
    assert set(rows) == {'(a) fit on those frames', '(b) network, real frames, fit as labels',
                         '(e) mean training pose at the triangulated keypoints',
                         "(e') the same with the fit's keypoint offsets"}
    # (b): median, p90, side median, side p90, train seconds, images/s
    assert len(rows['(b) network, real frames, fit as labels']) == 6
    assert 'Against the targets' not in printed          # no (c) to judge
    assert (out / 'session_64.h5').is_file()
    assert (out / 'tiny_recipe_net_fit_labels_2' / 'iter_2.pth').is_file()
    # the same table in Markdown for the docs, named by the recipe
    table = (tmp_path / 'tables' / 'real_session_held_out_tiny_recipe.md').read_text()
    assert table.startswith('<!-- written by `python benchmarks/real_session_regression.py --out-dir ')
    assert '| (b) network, real frames, fit as labels | ' in table


def _session_benchmark():
    """The benchmark module, where the shared session and mouse model are (else skip)."""
    shared_path('data', 'sleap_anipose_minimal_session', 'minimal_session')
    shared_path('models', 'SMILy_Mouse_static_joints.pkl')
    return benchmark_module('real_session_regression')


def _budgeted_benchmark(monkeypatch):
    """The benchmark module with a probe of 3 iterations (1 left out as warm-up)."""
    bench = _session_benchmark()
    monkeypatch.setattr(bench.session, 'PROBE_ITERS', 3)
    monkeypatch.setattr(bench.session, 'PROBE_WARMUP', 1)
    return bench


def _table_rows(printed: str) -> dict:
    """{method: its columns} of a printed held-out table."""
    return {line[:52].strip(): line[52:].split() for line in printed.splitlines()
            if re.match(r"\([a-e]'?\) ", line)}


def test_a_time_budget_sizes_the_recipe_from_a_probe(tmp_path, capsys, monkeypatch):
    # A lent GPU's lease is minutes: a run that overran it would leave no table.
    bench = _budgeted_benchmark(monkeypatch)
    out = tmp_path / 'out'
    args = ['--out-dir', str(out), '--network-only', '--crop-size', '64', '--iters', '3',
            '--threads', '1']
    assert bench.main(args + ['--time-budget', '100000']) == 0
    printed = capsys.readouterr().out
    assert re.search(r'64 px crops, 3 iterations \(of 3: what 100000 s allowed, at '
                     r'[0-9.]+ s an iteration\)', printed)
    assert (out / 'net_fit_labels_3' / 'iter_3.pth').is_file()
    assert not (out / 'probe').exists()
    # a budget that the set-up alone overruns: an error that says so, no network
    with pytest.raises(SystemExit, match='give it more time'):
        bench.main(args + ['--iters', '5', '--time-budget', '31'])
    assert not (out / 'net_fit_labels_5').exists()


def test_table_only_trains_the_three_networks_of_the_table_within_a_budget(tmp_path, capsys,
                                                                           monkeypatch):
    # The acceptance table of a recipe, (a) to (e'), on a lent GPU's lease: renders
    # first, then (b), (d) and (c) with the iterations the rest allows each.
    bench = _budgeted_benchmark(monkeypatch)
    out = tmp_path / 'out'
    assert bench.main(['--out-dir', str(out), '--table-only', '--crop-size', '64',
                       '--iters', '2', '--renders', '2', '--threads', '1',
                       '--time-budget', '100000']) == 0
    printed = capsys.readouterr().out
    assert re.search(r'64 px crops, 2 iterations \(of 2: what 100000 s allowed each of '
                     r'three, at [0-9.]+ s an iteration\)', printed)
    rows = _table_rows(printed)
    assert set(rows) == {'(a) fit on those frames', '(b) network, real frames, fit as labels',
                         '(c) rendered pretraining, then real', '(d) rendered only',
                         '(e) mean training pose at the triangulated keypoints',
                         "(e') the same with the fit's keypoint offsets"}
    for arm in ('(b) network, real frames, fit as labels', '(c) rendered pretraining, then real',
                '(d) rendered only'):
        assert len(rows[arm]) == 6
    verdict = r'(yes|NO) \(\d+%\)'
    assert re.search(rf'^Against the targets: \(c\) at most half of \(e\): median {verdict}, '
                     rf'p90 {verdict}; \(c\) better than \(b\): median (yes|NO) \([0-9.]+ '
                     r'against [0-9.]+ px\), p90 (yes|NO) ', printed, re.M)
    assert 'by the training seed' not in printed          # the table only
    for work in ('net_fit_labels_2', 'net_rendered_2_2', 'net_rendered_then_real_2'):
        assert (out / work / 'iter_2.pth').is_file()
    # with --seeds, (b) and (c) by training seed after it (seed 0: the table's networks)
    assert bench.main(['--out-dir', str(out), '--table-only', '--crop-size', '64',
                       '--iters', '2', '--renders', '2', '--threads', '1', '--seeds', '0', '3',
                       '--time-budget', '100000', '--tables', str(tmp_path / 'tables')]) == 0
    printed = capsys.readouterr().out
    seeds = re.findall(r'^(0|3|mean)\s+[0-9.]+ / [0-9.]+\s+[0-9.]+ / [0-9.]+$', printed, re.M)
    assert seeds == ['0', '3', 'mean']
    assert re.search(r'^Against the targets \(the means\): \(c\) better than \(b\): median '
                     r'(yes|NO) ', printed, re.M)
    assert re.search(r'^\(c\) better than \(b\) seed by seed: median with [0-2] of 2, p90 '
                     r'with [0-2] of 2$', printed, re.M)
    assert 'by scored camera' in printed
    for work in ('net_fit_labels_2_seed3', 'net_rendered_then_real_2_seed3'):
        assert (out / work / 'iter_2.pth').is_file()
    # the docs' tables (--tables): the held-out table, the seeds' and the cameras'
    tables = tmp_path / 'tables'
    seeds_table = (tables / 'real_session_seeds.md').read_text()
    assert [line.split(' | ')[0] for line in seeds_table.splitlines()[4:]] == \
        ['| 0', '| 3', '| mean']
    cameras = (tables / 'real_session_cameras.md').read_text().splitlines()[4:]
    assert [line.split(' | ')[0] for line in cameras] == ['| back', '| mid', '| top']
    assert '| (c) rendered pretraining, then real | ' in \
        (tables / 'real_session_held_out.md').read_text()


def test_another_recipe_needs_network_only_and_amp_a_gpu(capsys):
    bench = benchmark_module('real_session_regression')
    with pytest.raises(SystemExit):
        bench.main(['--crop-size', '256'])
    assert '--network-only' in capsys.readouterr().err
    with pytest.raises(SystemExit):
        bench.main(['--network-only', '--amp'])
    assert '--amp needs a GPU' in capsys.readouterr().err
    with pytest.raises(SystemExit):
        bench.main(['--time-budget', '600'])
    assert '--time-budget needs --network-only or --table-only' in capsys.readouterr().err
    with pytest.raises(SystemExit):
        bench.main(['--network-only', '--table-only'])
    assert 'choose one' in capsys.readouterr().err


def test_the_benchmarks_read_the_shared_data_where_smilfit_shared_points(tmp_path, monkeypatch,
                                                                         capsys):
    # A lent GPU gets the checkout and nothing beside it: benchmarks/device_bundle.sh
    # copies the data into it, and SMILFIT_SHARED points the benchmarks there.
    import sys
    carried = tmp_path / 'carried'
    monkeypatch.delitem(sys.modules, 'shared_data', raising=False)
    monkeypatch.setenv('SMILFIT_SHARED', str(carried))
    bench = benchmark_module('real_session_regression')
    session = bench.session
    assert session.SESSION == carried / 'data' / 'sleap_anipose_minimal_session' / 'minimal_session'
    assert session.MODEL == carried / 'models' / 'SMILy_Mouse_static_joints.pkl'
    # a folder without the data: the run says where it looked and trains nothing
    assert bench.main(['--out-dir', str(tmp_path / 'out'), '--network-only']) == 0
    assert f'skipped: {session.SESSION} or {session.MODEL} is not available' in \
        capsys.readouterr().out
    assert not (tmp_path / 'out').exists()
    # without it, ../shared beside the checkout
    monkeypatch.delitem(sys.modules, 'shared_data')
    monkeypatch.delenv('SMILFIT_SHARED')
    bench = benchmark_module('real_session_regression')
    assert bench.session.MODEL == \
        REPO_ROOT.parent / 'shared' / 'models' / 'SMILy_Mouse_static_joints.pkl'


def test_starts_only_fits_from_both_starts_on_each_device(tmp_path, capsys):
    # The fits from a network's predictions against the default start, on the CPU and,
    # where lent, a GPU in the same run (benchmarks/cuda.sh OUT starts).
    bench = _session_benchmark()
    out = tmp_path / 'out'
    assert bench.main(['--out-dir', str(out), '--starts-only', '--crop-size', '64',
                       '--iters', '2', '--threads', '1', '--fit-repeats', '1',
                       '--tables', str(tmp_path / 'tables')]) == 0
    printed = capsys.readouterr().out
    assert 'network (b)\'s predictions, on cpu (1 CPU thread)' in printed
    starts = (tmp_path / 'tables' / 'real_session_starts_cpu.md').read_text().splitlines()[4:]
    assert [line.split(' | ')[0] for line in starts] == \
        ['| default start', '| network start', '| network / default']
    reach_table = (tmp_path / 'tables' / 'real_session_time_to_error_cpu.md').read_text()
    assert reach_table.splitlines()[-1].startswith('| network / default |  | ')
    assert (tmp_path / 'tables' / 'real_session_capped_cpu.md').is_file()
    whole, rest = printed.split('The same fits with their last stage capped')
    capped, reach = rest.split('How soon each start reaches the default start\'s held-out error')

    def rows(table):
        return [line.split() for line in table.splitlines()
                if re.match(r'(default|network) start ', line)]
    default, network = rows(whole)
    # LM iterations, per frame, seconds, fitting seconds, median, p90, network starts
    assert len(default) == len(network) == 9
    assert int(default[-1]) == 0 and 0 <= int(network[-1]) <= 120
    # the last stage capped at 1, 2, 3... iterations from each start, each cap one more
    # LM iteration than the one before, until the stage stops on its own
    for start in ('default', 'network'):
        mine = [(int(r[2]), int(r[3])) for r in rows(capped) if r[0] == start]
        assert [cap for cap, _ in mine] == list(range(1, len(mine) + 1))
        assert all(b > a for (_, a), (_, b) in zip(mine, mine[1:]))
    # each start stopped at the first cap that reaches the default start's error (or
    # not stopped: "none"); its LM iterations are those of that capped fit
    reached = rows(reach)
    assert [r[0] for r in reached] == ['default', 'network'] and all(len(r) == 9
                                                                     for r in reached)
    for r in reached:
        assert r[2] == 'none' or int(r[2]) in [int(c[2]) for c in rows(capped)
                                               if c[0] == r[0]]
    share = r'^network/default\s+\d+%\s+\d+%\s+\d+%\s+\d+%$'
    assert re.search(r"^At most half the default start's work to its error: (NO \(never "
                     r"reaches it\)|LM iterations of the batch (yes|NO) )", reach, re.M)
    assert re.search(share, whole, re.M) and re.search(share, reach, re.M)
    # one predictions file per network
    assert (out / 'infer' / 'net_fit_labels_2' / 'iter_2' / 'predictions.h5').is_file()
    assert 'by the training seed' not in printed and '(c) rendered' not in printed


def test_how_soon_a_start_reaches_an_error_is_the_first_cap_within_the_tables_precision():
    bench = benchmark_module('real_session_regression')
    along = [('default start', 1, 25, 0.3, (1.29, 24.0)),
             ('default start', 2, 26, 0.3, (1.28, 23.9)),
             ('default start', 5, 29, 0.3, (1.274, 23.75)),
             ('network start', 1, 7, 0.2, (1.30, 23.5)),
             ('network start', 2, 8, 0.2, (1.27, 23.6)),
             ('network start', 5, 11, 0.2, (1.26, 23.5))]
    target = (1.27, 23.68)
    # both figures within (0.01, 0.1) px of the target or below it
    assert bench.start_fits.first_cap_reaching(along, 'default start', target) == 5
    assert bench.start_fits.first_cap_reaching(along, 'network start', target) == 2
    # the first cap that reaches it, not the best one
    assert bench.start_fits.first_cap_reaching(along, 'network start', (1.30, 23.5)) == 1
    # no cap reaches it: the uncapped fit is the one to time
    assert bench.start_fits.first_cap_reaching(along, 'default start', (1.20, 23.68)) is None
    assert bench.start_fits.first_cap_reaching(along, 'default start', (1.30, 23.0)) is None


def test_the_last_stage_is_capped_at_every_iteration_until_it_stops_on_its_own(
        tmp_path, monkeypatch):
    # The first cap that reaches an error is the iteration that reaches it: no cap is
    # skipped, and the sweep ends where a cap adds no iteration (every larger cap is the
    # same fit) or at the stage's own n_iter.
    bench = benchmark_module('real_session_regression')
    stops = {None: 4, 'predictions.h5': 2}  # the last stage's own iterations, by start
    fitted = []

    def per_frame_fit(work, keypoints, results, init, cap, device='cpu'):
        fitted.append((init, cap))
        steps = 10 + min(cap, stops[init])
        return bench.start_fits.PerFrameFit(tmp_path, 0.1, 0.1, steps, steps / 2, 0)
    monkeypatch.setattr(bench.start_fits, 'per_frame_fit', per_frame_fit)
    monkeypatch.setattr(bench.start_fits, 'network_predictions', lambda *a: 'predictions.h5')
    monkeypatch.setattr(bench.start_fits, 'fit_points', lambda path, keypoints: (None, None, None))
    monkeypatch.setattr(bench.start_fits, 'score', lambda *a: {'scored': (1.0, 2.0)})
    rows = bench.start_fits.fits_along_the_way(tmp_path, None, None, None, None, None)
    assert [(start, cap, steps) for start, cap, steps, _, _ in rows] == \
        [('default start', c, 10 + c) for c in (1, 2, 3, 4)] + \
        [('network start', c, 10 + c) for c in (1, 2)]
    # the cap after the stage stopped was fitted (that is how the sweep knows), no more
    assert fitted == [(None, c) for c in range(1, 6)] + \
        [('predictions.h5', c) for c in range(1, 4)]
    # a stage that never stops on its own is capped up to its n_iter
    stops[None] = 100
    rows = bench.start_fits.fits_along_the_way(tmp_path, None, None, None, None, None)
    assert max(cap for start, cap, *_ in rows if start == 'default start') == \
        bench.start_fits.last_stage_iterations() > 4
    # given caps are fitted as given
    rows = bench.start_fits.fits_along_the_way(tmp_path, None, None, None, None, None, caps=(1, 5))
    assert [cap for _, cap, *_ in rows] == [1, 5, 1, 5]


def test_the_targets_are_judged_figure_by_figure():
    bench = benchmark_module('real_session_regression')
    # (c) exactly half of (e) in the median meets it; equal to (b) is not better
    line = bench.loop.against_targets(b=(4.0, 15.0), c=(4.0, 14.0), e=(8.0, 20.0))
    assert line == ('Against the targets: (c) at most half of (e): median yes (50%), '
                    'p90 NO (70%); (c) better than (b): median NO (4.00 against 4.00 px), '
                    'p90 yes (14.00 against 15.00 px)')
    assert bench.loop.against_targets(b=(5.0, 15.0), c=(4.0, 16.0)) == (
        'Against the targets: (c) better than (b): median yes (4.00 against 5.00 px), '
        'p90 NO (16.00 against 15.00 px)')


def test_half_the_work_is_judged_on_iterations_and_time_to_the_error():
    bench = benchmark_module('real_session_regression')
    target = (1.274, 23.68)
    rows = [('default start', 4, 28, 19.1, (0.36, 0.28), (1.27, 23.77)),
            ('network start', 1, 7, 4.2, (0.185, 0.11), (1.27, 23.66))]
    assert bench.start_fits.half_the_work(rows, target) == (
        "At most half the default start's work to its error: LM iterations of the batch "
        'yes (25%), per frame yes (22%), time end to end NO (51%), fitting alone yes (39%)')
    # a start that never reaches the error has not done it in any share
    rows[1] = ('network start', None, 15, 9.0, (0.25, 0.18), (1.267, 23.80))
    assert bench.start_fits.half_the_work(rows, target) == \
        "At most half the default start's work to its error: NO (never reaches it)"


def test_a_start_that_never_reaches_the_error_is_named_under_the_table(capsys):
    bench = benchmark_module('real_session_regression')
    rows = [('default start', 5, 29, 19.8, (0.36, 0.30), (1.274, 23.68)),
            ('network start', None, 15, 9.0, (0.25, 0.18), (1.267, 23.80))]
    bench.start_fits.print_time_to_error(rows, (1.274, 23.68), 7)
    printed = capsys.readouterr().out
    assert re.search(r'^network start\s+none\s+15\s+9\.0\s', printed, re.M)
    assert 'network start never reaches it' in printed
    assert 'default start never' not in printed
    rows[1] = ('network start', 1, 7, 4.2, (0.18, 0.11), (1.27, 23.66))
    bench.start_fits.print_time_to_error(rows, (1.274, 23.68), 7)
    assert 'never reaches' not in capsys.readouterr().out


# Trains and fits twice (90 s): out of CI, with --run-slow. Its parts run in CI apart:
# --starts-only (test_starts_only_fits_from_both_starts_on_each_device) and --split-seed
# (test_another_split_holds_out_other_blocks_and_trains_without_them).
@pytest.mark.slow
def test_starts_only_fits_from_each_seed_s_network_of_another_split(tmp_path, capsys):
    # The networks of other held-out blocks train on those blocks' training frames, one
    # per training seed, each named as the seed comparison names it.
    from mmengine.config import Config
    bench = _session_benchmark()
    out = tmp_path / 'out'
    assert bench.main(['--out-dir', str(out), '--starts-only', '--split-seed', '1',
                       '--seeds', '0', '2', '--crop-size', '64', '--iters', '2',
                       '--threads', '1', '--fit-repeats', '1',
                       '--tables', str(tmp_path / 'tables')]) == 0
    printed = capsys.readouterr().out
    assert "held-out frames: [('minimal_session', [[36, 47], [72, 83]])]" in printed
    assert [int(s) for s in re.findall(r'^Network \(b\), training seed (\d+)$', printed,
                                       re.M)] == [0, 2]
    assert printed.count('How soon each start reaches') == 2
    for name, seed in (('split1_net_fit_labels_2', 0), ('split1_net_fit_labels_2_seed2', 2)):
        work = out / name
        assert (work / 'iter_2.pth').is_file()
        cfg = Config.fromfile(str(next(work.glob('*.py'))))
        assert cfg.train_dataloader.dataset.seed == 1
        assert cfg.randomness.seed == seed
    # the seeds' shares side by side: one row per seed, each share a percentage (or
    # "never" where the network start does not reach the default start's error)
    shares = (tmp_path / 'tables' / 'real_session_starts_seeds_split1_cpu.md').read_text()
    rows = [[cell.strip() for cell in line.strip('|').split('|')]
            for line in shares.splitlines()[4:]]
    assert [row[0] for row in rows] == ['0', '2']
    for row in rows:
        assert all(re.fullmatch(r'\d+%', cell) for cell in row[1:5])
        assert row[5:8] == ['never', '', ''] or all(re.fullmatch(r'\d+%', c) for c in row[5:8])
        assert re.fullmatch(r'\d+\.\d{3} / \d+\.\d{2}', row[8])
    # the per-split tables of the first seed's network are the development blocks' only
    assert not (tmp_path / 'tables' / 'real_session_starts_cpu.md').exists()


def test_starts_only_refuses_what_it_cannot_do(capsys):
    bench = benchmark_module('real_session_regression')
    with pytest.raises(SystemExit):
        bench.main(['--fit-devices', 'cpu', 'cuda'])
    assert '--fit-devices and --fit-repeats need --starts-only' in capsys.readouterr().err
    with pytest.raises(SystemExit):
        bench.main(['--starts-only', '--table-only'])
    assert 'choose one' in capsys.readouterr().err
    with pytest.raises(SystemExit):
        bench.main(['--starts-only', '--fit-repeats', '0'])
    assert 'at least 1' in capsys.readouterr().err
    with pytest.raises(SystemExit):
        bench.main(['--network-only', '--seeds', '0', '1'])
    assert '--seeds compares (b) with (c)' in capsys.readouterr().err


def test_starts_only_on_a_gpu_needs_one(capsys):
    import torch
    if torch.cuda.is_available():
        pytest.skip('this machine has a CUDA device')
    bench = _session_benchmark()
    with pytest.raises(SystemExit):
        bench.main(['--starts-only', '--fit-devices', 'cpu', 'cuda'])
    assert 'this machine has no CUDA device' in capsys.readouterr().err


def test_another_split_holds_out_other_blocks_and_trains_without_them(tmp_path, capsys):
    # Held-out blocks nobody tuned on: the table, the networks' training split and the
    # baselines' training frames all follow --split-seed.
    bench = _session_benchmark()
    out = tmp_path / 'out'
    assert bench.main(['--out-dir', str(out), '--network-only', '--split-seed', '1',
                       '--crop-size', '64', '--iters', '2', '--threads', '1']) == 0
    printed = capsys.readouterr().out
    assert "held-out frames: [('minimal_session', [[36, 47], [72, 83]])] (24 frames)" in printed
    assert (out / 'split1_net_fit_labels_2' / 'iter_2.pth').is_file()
    crops = out / 'session_64.h5'
    held, trained_on, _, _ = bench.session.held_out_frames(crops, 1)
    assert held.isdisjoint(trained_on)
    from mmengine.registry import DATASETS
    cfg = bench.session.net_config(crops, tmp_path / 'work', 2, 'cpu', split_seed=1)
    train = DATASETS.build(cfg.train_dataloader.dataset)
    frames = {train.get_data_info(i)['frame'] for i in range(len(train))}
    assert frames == {frame for _, frame in trained_on}
    assert not frames & {frame for _, frame in held}


def test_the_full_runs_last_tables_are_printed_and_written(tmp_path, capsys):
    # The cameras-left-out, closer-starts and fit-in-the-loop tables of a full run (hours
    # on a CPU): printed as before and, with --tables, written for the docs.
    loop = benchmark_module('real_session_regression').loop
    tables = tmp_path / 'tables'
    loop.print_fits_by_cameras([(('side',), 0.4, 0.3, 0.5, 80, (1.2, 20.0), (1.3, 21.0))],
                               tables, 'python benchmarks/real_session_regression.py')
    loop.print_fits_from_closer_starts(
        [(0.5, (2.0, 9.0), 3.5, 0.4, 30, 0.5, 0.6, 0.45, (1.27, 23.7))], tables, 'cmd')
    loop.print_loop([('(b) 200 more iterations on the fit', {'scored': (4.1, 15.0)}, '', '')],
                    200, tables, 'cmd')
    printed = capsys.readouterr().out
    assert re.search(r'^side\s+40%\s+30%\s+50%\s+80\s+1.20 / 20.00\s+1.30 / 21.00$',
                     printed, re.M)
    assert re.search(r'^0.5\s+2.00\s+9.00\s+3.5\s+40%\s+30\s+50%\s+60%\s+45%\s+1.27\s+23.70$',
                     printed, re.M)
    assert 'Network (b) trained 200 more iterations' in printed
    assert (tables / 'real_session_starts_by_cameras.md').read_text().splitlines()[-1] == \
        '| side | 40% | 30% | 50% | 80 | 1.20 / 20.00 | 1.30 / 21.00 |'
    assert (tables / 'real_session_closer_starts.md').read_text().splitlines()[-1] == \
        '| 0.5 | 2.00 | 9.00 | 3.5 | 40% | 30 | 50% | 60% | 45% | 1.27 | 23.70 |'
    assert (tables / 'real_session_loop.md').read_text().splitlines()[-1] == \
        '| (b) 200 more iterations on the fit | 4.10 | 15.00 |  |  |'


def test_the_seeds_shares_name_a_network_that_never_reaches_the_error(tmp_path, capsys):
    # One row per seed: the whole fits' shares of the default start's, then the shares
    # to the default start's error, or "never" where the network start does not get
    # within the tables' precision of it (made-up fits; the real ones take minutes).
    starts = benchmark_module('real_session_regression').start_fits
    default = ('default start', 30, 20.0, (1.0, 0.8), (1.27, 23.7), 0)
    whole = [default, ('network start', 15, 8.0, (0.5, 0.4), (1.28, 23.6), 120)]
    reached = [('default start', 4, 28, 19.0, (0.8, 0.6), (1.27, 23.75)),
               ('network start', 1, 7, 4.75, (0.4, 0.24), (1.27, 23.66))]
    missed = [reached[0], ('network start', None, 15, 8.0, (0.5, 0.4), (1.30, 23.9))]
    starts.print_seed_shares([(0, whole, reached), (1, whole, missed)], tmp_path, 'cmd', '_cpu')
    lines = (tmp_path / 'real_session_starts_seeds_cpu.md').read_text().splitlines()
    assert lines[4:] == ['| 0 | 50% | 40% | 50% | 50% | 25% | 40% | 50% | 1.280 / 23.60 |',
                         '| 1 | 50% | 40% | 50% | 50% | never |  |  | 1.280 / 23.60 |']
    assert lines[4] in capsys.readouterr().out
