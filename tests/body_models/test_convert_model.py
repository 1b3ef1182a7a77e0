"""tools/convert_model.py: round trips, overwrite protection, no partial output."""
import os
import pickle
import subprocess
import sys

import pytest

from smilfit.body_models.io import load_model_data, read_legacy_pickle, save_model_data
from smilfit.cli.convert_model import main

from ..conftest import REPO_ROOT
from .test_validation import assert_deep_equal, assert_model_data_equal, tiny_model_data


def run_tool(*args: str) -> subprocess.CompletedProcess:
    """``python tools/convert_model.py ARGS`` from the repository root."""
    return subprocess.run([sys.executable, 'tools/convert_model.py', *map(str, args)],
                          cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)


def test_stick_round_trip_via_tool(stick_model_path, tmp_path):
    as_json, as_pkl = tmp_path / 'stick.json', tmp_path / 'stick.pkl'
    res = run_tool(stick_model_path, as_json)
    assert res.returncode == 0, res.stderr
    assert 'V=3020 F=6019 J=55 K=5' in res.stdout and len(res.stdout.splitlines()) == 1
    res = run_tool(as_json, as_pkl)
    assert res.returncode == 0, res.stderr
    assert_deep_equal(read_legacy_pickle(as_pkl), read_legacy_pickle(stick_model_path))


def test_help():
    res = run_tool('--help')
    assert res.returncode == 0 and '--overwrite' in res.stdout and '.pkl' in res.stdout


def test_main_converts_and_prints_summary(tmp_path, capsys):
    src, dst = tmp_path / 'tiny.json', tmp_path / 'tiny.pkl'
    save_model_data(tiny_model_data(name='tiny'), src)
    assert main([str(src), str(dst)]) == 0
    assert capsys.readouterr().out.strip().endswith('V=5 F=6 J=3 K=2')
    back = load_model_data(dst)
    back.extra.pop('legacy')
    assert_model_data_equal(back, tiny_model_data(name='tiny'))


def test_refuses_to_overwrite_without_flag(tmp_path, capsys):
    src, dst = tmp_path / 'tiny.json', tmp_path / 'out.pkl'
    save_model_data(tiny_model_data(), src)
    dst.write_bytes(b'keep me')
    assert main([str(src), str(dst)]) != 0
    err = capsys.readouterr().err
    assert 'already exists' in err and '--overwrite' in err and 'Traceback' not in err
    assert dst.read_bytes() == b'keep me'
    assert main([str(src), str(dst), '--overwrite']) == 0
    assert load_model_data(dst).num_joints == 3


class _Evil:
    def __reduce__(self):
        return os.system, ('echo pwned',)


def test_malicious_input_leaves_no_output(tmp_path):
    evil = tmp_path / 'evil.pkl'
    evil.write_bytes(pickle.dumps({'v_template': _Evil()}, 2))
    out = tmp_path / 'out.json'
    res = run_tool(evil, out)
    assert res.returncode != 0
    assert 'refusing to load' in res.stderr and 'system' in res.stderr
    assert 'Traceback' not in res.stderr and 'pwned' not in res.stdout
    assert sorted(p.name for p in tmp_path.iterdir()) == ['evil.pkl']


def test_invalid_model_leaves_no_output(tmp_path, capsys):
    src = tmp_path / 'bad.json'
    save_model_data(tiny_model_data(), src)
    src.write_text(src.read_text().replace('"parent": "root"', '"parent": "tip"'))
    assert main([str(src), str(tmp_path / 'out.pkl')]) != 0
    err = capsys.readouterr().err
    assert "'parents'" in err and 'cycle' in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ['bad.json']


@pytest.mark.parametrize('args, words', [
    (['missing.pkl', 'out.json'], ['missing.pkl', 'not found']),
    (['in.json', 'out.obj'], ['out.obj', '.json']),
])
def test_expected_errors_are_one_line(tmp_path, capsys, args, words):
    save_model_data(tiny_model_data(), tmp_path / 'in.json')
    assert main([str(tmp_path / a) for a in args]) != 0
    err = capsys.readouterr().err
    assert err.startswith('convert_model: error:') and len(err.strip().splitlines()) == 1
    for word in words:
        assert word in err
