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
