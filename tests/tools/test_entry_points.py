"""Every command-line tool has a tools/ wrapper and a console script."""
import re

from ..conftest import REPO_ROOT


def test_every_cli_module_has_a_wrapper_and_a_console_script():
    setup = (REPO_ROOT / 'setup.py').read_text()
    scripts = dict(re.findall(r"'(smilfit-[\w-]+)=smilfit\.cli\.(\w+):main'", setup))
    modules = sorted(p.stem for p in (REPO_ROOT / 'smilfit' / 'cli').glob('*.py')
                     if p.stem not in ('__init__', 'errors') and 'def main(' in p.read_text())
    assert sorted(set(scripts.values())) == modules
    wrappers = {p.stem for p in (REPO_ROOT / 'tools').glob('*.py')}
    missing = [m for m in modules if m not in wrappers and f'{m}_dataset' not in wrappers]
    assert not missing, missing


TOOLS = sorted(p for p in (REPO_ROOT / 'tools').glob('*.py'))


def test_cli_modules_import_no_torch():
    """`--help` answers at once: the command-line modules import torch only in main()
    (importing torch and mmengine's runner takes seconds). `benchmarks/startup.py` times it."""
    import subprocess
    import sys
    modules = [f'smilfit.cli.{p.stem}' for p in (REPO_ROOT / 'smilfit' / 'cli').glob('*.py')
               if p.stem != '__init__']
    code = ('import sys\n' + ''.join(f'import {m}\n' for m in modules)
            + "heavy = [m for m in ('torch', 'mmengine.runner', 'cv2') if m in sys.modules]\n"
            + 'print(heavy)\n')
    out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True,
                         timeout=120, cwd=str(REPO_ROOT))
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == '[]'


def test_fitting_imports_no_mmengine_runner_side():
    """tools/fit.py starts fitting without mmengine's model/optimizer/runner modules, which
    import torch.distributed.fsdp (about 1 s): what it imports before fitting, run in a
    fresh process."""
    import subprocess
    import sys
    code = ('import sys\n'
            'from smilfit.cli import fit\n'
            'from smilfit.utils import register_all_modules\n'
            'from smilfit.utils.setup_env import FITTING_PACKAGES\n'
            'register_all_modules(packages=FITTING_PACKAGES)\n'
            'import smilfit.apis.fitting\n'
            "heavy = ('mmengine.optim', 'mmengine.model', 'mmengine.runner', "
            "'mmengine.hooks', 'torch.distributed.fsdp', 'timm')\n"
            'print([m for m in heavy if m in sys.modules])\n')
    out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True,
                         timeout=120, cwd=str(REPO_ROOT))
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == '[]'


def test_every_tool_answers_help():
    import subprocess
    import sys
    for tool in TOOLS:
        out = subprocess.run([sys.executable, str(tool), '--help'], capture_output=True,
                             text=True, timeout=120)
        assert out.returncode == 0, (tool.name, out.stderr[-2000:])
        # the usage line names the tool as users call it
        assert out.stdout.startswith(f'usage: tools/{tool.name} '), out.stdout[:80]


def test_restated_constants_agree_with_their_sources():
    from smilfit.body_models.io import SUPPORTED_EXTENSIONS
    from smilfit.cli import convert_model, preprocess_sleap
    from smilfit.datasets.ingest_images import CROP_MODES
    assert preprocess_sleap.CROP_MODES == CROP_MODES
    assert convert_model.SUPPORTED_EXTENSIONS == SUPPORTED_EXTENSIONS


BENCHMARKS = sorted(p for p in (REPO_ROOT / 'benchmarks').glob('*.py')
                    if "__name__ == '__main__'" in p.read_text())


def test_every_benchmark_answers_help():
    """Each benchmark script prints its help and exits 0 (a help text with a bare ``%``
    made argparse raise instead). One child process runs them in turn (most import torch
    first: one import for all); a script that starts itself again (``os.exec*``, to set
    its threads) gets a process of its own."""
    import json
    import subprocess
    import sys
    assert len(BENCHMARKS) >= 10
    child = (
        'import contextlib, io, json, runpy, sys\n'
        'results = {}\n'
        'for path in sys.argv[1:]:\n'
        '    sys.argv = [path, "--help"]\n'
        '    out = io.StringIO()\n'
        '    try:\n'
        '        with contextlib.redirect_stdout(out):\n'
        '            runpy.run_path(path, run_name="__main__")\n'
        '        code = "returned without exiting"\n'
        '    except SystemExit as stop:\n'
        '        code = stop.code or 0\n'
        '    except Exception as error:\n'
        '        code = repr(error)\n'
        '    results[path] = [code, out.getvalue()[:80]]\n'
        'print(json.dumps(results))\n')
    alone = [p for p in BENCHMARKS if 'os.exec' in p.read_text()]
    groups = [[p for p in BENCHMARKS if p not in alone]] + [[p] for p in alone]
    runs = [subprocess.Popen([sys.executable, '-c', child, *map(str, group)],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             cwd=str(REPO_ROOT)) for group in groups]
    results = {}
    for run in runs:
        out, err = run.communicate(timeout=300)
        if out.strip() and out.strip().splitlines()[-1].startswith('{'):
            results.update(json.loads(out.strip().splitlines()[-1]))
        else:   # a script that started itself again prints its own help
            assert run.returncode == 0, err[-2000:]
            assert out.startswith('usage: '), out[:80]
            results[run.args[-1]] = [0, out[:80]]
    assert sorted(results) == sorted(map(str, BENCHMARKS))
    for path, (code, out) in results.items():
        assert code == 0 and out.startswith('usage: '), (path, code, out)
