"""Thread counts of the tools: training takes the usable cores (shared among a launcher's
processes) unless told otherwise, and more than one thread waits passively (for
tools/fit.py: tests/tools/test_cli_errors.py)."""
import os

import pytest

from smilfit.cli import threads


@pytest.fixture
def four_cores(monkeypatch):
    monkeypatch.setattr(threads, 'usable_cores', lambda: 4)
    monkeypatch.delenv('OMP_NUM_THREADS', raising=False)
    monkeypatch.delenv('LOCAL_WORLD_SIZE', raising=False)


def test_training_takes_the_usable_cores(four_cores):
    assert threads.training_threads(None) == 4


def test_a_launchers_processes_share_the_cores(four_cores, monkeypatch):
    monkeypatch.setenv('LOCAL_WORLD_SIZE', '2')
    assert threads.training_threads(None) == 2
    monkeypatch.setenv('LOCAL_WORLD_SIZE', '8')
    assert threads.training_threads(None) == 1


def test_the_users_choice_wins(four_cores, monkeypatch):
    monkeypatch.setenv('OMP_NUM_THREADS', '3')
    assert threads.training_threads(None) == 3
    assert threads.training_threads(2) == 2
    with pytest.raises(ValueError, match='--threads must be >= 1'):
        threads.training_threads(0)


def test_usable_cores_follow_the_affinity_mask():
    if not hasattr(os, 'sched_getaffinity'):
        pytest.skip('no affinity masks on this platform')
    assert threads.usable_cores() == len(os.sched_getaffinity(0))


def test_train_tool_sets_its_threads(tmp_path, monkeypatch, capsys):
    """tools/train.py applies --threads (and the passive wait) before anything else, also
    when the config then turns out to be missing."""
    import torch

    from smilfit.cli.train import main
    monkeypatch.delenv('OMP_WAIT_POLICY', raising=False)
    before = torch.get_num_threads()
    try:
        assert main([str(tmp_path / 'absent.py'), '--threads', '2']) == 1
        assert torch.get_num_threads() == 2
        assert os.environ.get('OMP_WAIT_POLICY') == 'PASSIVE'
        assert main([str(tmp_path / 'absent.py'), '--threads', '0']) == 1
        assert '--threads must be >= 1' in capsys.readouterr().err
    finally:
        torch.set_num_threads(before)
