"""smilfit.cli.errors: which errors the tools print as one line, and which keep their
traceback."""
import os
import pickle

import pytest

from smilfit.cli.errors import (RUN_ERRORS, USER_ERRORS, SmilfitUserError, run_main,
                                user_errors)


class _LabError(SmilfitUserError, ValueError):
    """How another module declares a user error."""


def test_user_errors_prints_one_line_and_exits_1(capsys):
    with pytest.raises(SystemExit) as info:
        with user_errors('mytool'):
            raise _LabError('data.h5: field "confidence" has 3 views, the cameras 4')
    assert info.value.code == 1
    assert capsys.readouterr().err == \
        'mytool: error: data.h5: field "confidence" has 3 views, the cameras 4\n'


def test_key_errors_print_without_quotes(capsys):
    with pytest.raises(SystemExit):
        with user_errors('mytool'):
            raise KeyError("no key 'x' in data")
    assert capsys.readouterr().err == "mytool: error: no key 'x' in data\n"


def test_other_errors_keep_their_traceback():
    with pytest.raises(ZeroDivisionError):
        with user_errors('mytool'):
            1 / 0
    # Inside a long run only smilfit's own and file errors are the user's.
    with pytest.raises(ValueError):
        with user_errors('mytool', RUN_ERRORS):
            raise ValueError('a bug deep in a training step')


def test_run_main_returns_the_exit_code(capsys):
    def main(argv):
        if argv == ['bad']:
            raise FileNotFoundError('config bad does not exist')
        return 0

    assert run_main('mytool', main, []) == 0
    assert run_main('mytool', main, ['bad']) == 1
    assert capsys.readouterr().err == 'mytool: error: config bad does not exist\n'


def test_load_errors_are_user_errors():
    from smilfit.body_models.io import (LegacyModelError, ModelFormatError,
                                        ModelValidationError, UnsafePickleError)
    from smilfit.engine.checkpoint_io import CheckpointError
    from smilfit.engine.config_data import ConfigDataError
    from smilfit.models.regressors.base import KeypointCountError
    for cls in (CheckpointError, ConfigDataError, UnsafePickleError, LegacyModelError,
                ModelValidationError, ModelFormatError, KeypointCountError):
        assert issubclass(cls, SmilfitUserError) and issubclass(cls, RUN_ERRORS)
    assert issubclass(UnsafePickleError, pickle.UnpicklingError)  # callers catching it
    assert issubclass(CheckpointError, ValueError) and ValueError in USER_ERRORS


@pytest.mark.parametrize('threads, preset, expected', [('2', None, 'PASSIVE'),
                                                       ('2', 'ACTIVE', 'ACTIVE'),
                                                       ('1', None, None)])
def test_fit_threads_wait_passively(tmp_path, monkeypatch, threads, preset, expected):
    """More than one fitting thread: OpenMP waits passively (spinning threads made fits 5x
    slower next to a busy process), unless the user chose a policy."""
    from smilfit.cli.fit import main as fit_main
    if preset is None:
        monkeypatch.delenv('OMP_WAIT_POLICY', raising=False)
    else:
        monkeypatch.setenv('OMP_WAIT_POLICY', preset)
    assert fit_main([str(tmp_path / 'absent.py'), '--threads', threads]) == 1
    assert os.environ.get('OMP_WAIT_POLICY') == expected


def test_an_option_typo_from_the_command_line_is_one_line(tmp_path):
    """A handler keyword misspelt in --cfg-options is found while the registrant is built,
    deep inside the fit: the tool still prints one line naming it, no traceback."""
    import subprocess
    import sys

    from ..conftest import REPO_ROOT, child_env
    proc = subprocess.run(
        [sys.executable, str(REPO_ROOT / 'tools' / 'fit.py'),
         str(REPO_ROOT / 'configs' / 'fitting' / 'demo_mouse.py'), '--no-progress',
         '--work-dir', str(tmp_path / 'work'), '--cfg-options',
         f'data.path={tmp_path / "data.h5"}', 'data.synthetic.num_sessions=1',
         'data.synthetic.frames_per_session=2', 'data.synthetic.num_views=2',
         'registrant.handlers.0.sigmaa=3'],
        capture_output=True, text=True, cwd=tmp_path, timeout=300,
        env=child_env(OMP_NUM_THREADS='1'))
    assert proc.returncode == 1, proc.stderr
    assert 'Traceback' not in proc.stderr
    errors = [line for line in proc.stderr.splitlines() if 'error' in line]
    assert len(errors) == 1 and errors[0].startswith(
        "fit: error: handler 'kp2d' (Keypoint2DHandler) has no option 'sigmaa' (did you "
        "mean 'loss.sigma'?); it takes name, loss, weight, ")
