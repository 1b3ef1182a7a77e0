"""benchmarks/chain_cuts.py: which frames are at a cut of the motion prior's chains, and
the table of the 3D error there and the time, against uncut chains."""
import numpy as np
import pytest

from ..conftest import benchmark_module, record_dataset_fits


def test_frames_at_cuts_are_those_near_a_cut_inside_a_batch():
    bench = benchmark_module('chain_cuts')
    near = bench.cut_frames(64, 32, 8)
    # cuts at frames 8, 16, 24 of each 32-frame batch (0 and 32 are the batch's edges)
    expected = np.zeros(64, bool)
    for start in (0, 32):
        for cut in (8, 16, 24):
            expected[start + cut - 2:start + cut + 2] = True
    np.testing.assert_array_equal(near, expected)
    # uncut chains, or chains as long as the batch, have no cuts besides the batch's edges
    assert not bench.cut_frames(64, 32, 0).any()
    assert not bench.cut_frames(64, 32, 32).any()


# 16 frames an animal are too few pairs to tell a video by: the handler says so
@pytest.mark.filterwarnings('ignore:handler .motion.. the chains of consecutive frames')
def test_the_chain_cuts_benchmark_fits_each_length_and_writes_its_table(tmp_path,
                                                                       monkeypatch):
    bench = benchmark_module('chain_cuts')
    seen = record_dataset_fits(monkeypatch, lambda cfg: [
        h.get('chain_frames', 'default') for h in cfg.registrant.handlers
        if h['type'] == 'MotionPriorHandler'])
    argv = ['--frames', '16', '--batch-size', '32', '--chain-frames', '6', '0', '--noise', '1',
            '--tables', str(tmp_path)]
    assert bench.main(argv) == 0
    assert seen == [[None], [6]]                  # uncut first (the base), then as asked
    lines = (tmp_path / 'chain_cuts.md').read_text().splitlines()
    assert lines[0].startswith('<!-- written by `python benchmarks/chain_cuts.py --frames 16')
    rows = [[cell.strip() for cell in line.strip('|').split('|')] for line in lines[4:]]
    assert [row[0] for row in rows] == ['uncut (16)', '6']
    assert rows[0][6] == '1.00' and rows[0][2] == '' and rows[0][4] == '0'
    # cuts at frames 6 and 12 of the 16-frame chain: frames 4-7 and 10-13, two animals
    assert rows[1][4] == '16'
    for row in rows:
        assert 0.0 < float(row[1]) < 10.0                 # % of the body length
    assert all(0.0 < float(cell) < 10.0 for cell in rows[1][2:4])


def test_the_chain_cuts_benchmark_rejects_a_chain_of_one_frame():
    bench = benchmark_module('chain_cuts')
    with pytest.raises(SystemExit):
        bench.main(['--chain-frames', '1'])
