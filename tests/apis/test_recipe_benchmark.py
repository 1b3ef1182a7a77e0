"""The real-session benchmark's ``--network-only`` mode, which the GPU-sized recipe runs on
a lent GPU (``benchmarks/cuda.sh OUT recipe``): another recipe's config and crop size
train and score in work dirs of their own, with the fit and the baselines beside them."""
import re

import pytest

from ..conftest import REPO_ROOT, benchmark_module, shared_path


def test_network_only_trains_and_scores_another_recipe(tmp_path, capsys):
    shared_path('data', 'sleap_anipose_minimal_session', 'minimal_session')
    shared_path('models', 'SMILy_Mouse_static_joints.pkl')
    bench = benchmark_module('real_session_regression')
    # another recipe: the CPU one under another name, on 64 px crops, 2 iterations
    config = tmp_path / 'tiny_recipe.py'
    config.write_text(f"_base_ = ['{REPO_ROOT}/configs/regression/mouse_session_resnet18.py']\n")
    out = tmp_path / 'out'
    assert bench.main(['--out-dir', str(out), '--network-only', '--config', str(config),
                       '--crop-size', '64', '--iters', '2', '--threads', '1']) == 0
    printed = capsys.readouterr().out
    assert 'tiny_recipe.py, 64 px crops, 2 iterations, cpu' in printed
    rows = {line[:52].strip(): line[52:].split() for line in printed.splitlines()
            if re.match(r"\([a-e]'?\) ", line)}
    assert set(rows) == {'(a) fit on those frames', '(b) network, real frames, fit as labels',
                         '(e) mean training pose at the triangulated keypoints',
                         "(e') the same with the fit's keypoint offsets"}
    # (b): median, p90, side median, side p90, train seconds, images/s
    assert len(rows['(b) network, real frames, fit as labels']) == 6
    assert (out / 'session_64.h5').is_file()
    assert (out / 'tiny_recipe_net_fit_labels_2' / 'iter_2.pth').is_file()


def test_another_recipe_needs_network_only_and_amp_a_gpu(capsys):
    bench = benchmark_module('real_session_regression')
    with pytest.raises(SystemExit):
        bench.main(['--crop-size', '256'])
    assert '--network-only' in capsys.readouterr().err
    with pytest.raises(SystemExit):
        bench.main(['--network-only', '--amp'])
    assert '--amp needs a GPU' in capsys.readouterr().err


def test_the_benchmarks_read_the_shared_data_where_smilfit_shared_points(tmp_path, monkeypatch,
                                                                         capsys):
    # A lent GPU gets the checkout and nothing beside it: benchmarks/device_bundle.sh
    # copies the data into it, and SMILFIT_SHARED points the benchmarks there.
    import sys
    carried = tmp_path / 'carried'
    monkeypatch.delitem(sys.modules, 'shared_data', raising=False)
    monkeypatch.setenv('SMILFIT_SHARED', str(carried))
    bench = benchmark_module('real_session_regression')
    assert bench.SESSION == carried / 'data' / 'sleap_anipose_minimal_session' / 'minimal_session'
    assert bench.MODEL == carried / 'models' / 'SMILy_Mouse_static_joints.pkl'
    # a folder without the data: the run says where it looked and trains nothing
    assert bench.main(['--out-dir', str(tmp_path / 'out'), '--network-only']) == 0
    assert f'skipped: {bench.SESSION} or {bench.MODEL} is not available' in capsys.readouterr().out
    assert not (tmp_path / 'out').exists()
    # without it, ../shared beside the checkout
    monkeypatch.delitem(sys.modules, 'shared_data')
    monkeypatch.delenv('SMILFIT_SHARED')
    bench = benchmark_module('real_session_regression')
    assert bench.MODEL == REPO_ROOT.parent / 'shared' / 'models' / 'SMILy_Mouse_static_joints.pkl'
