"""The task guide "The network on your own recording" (docs/real_recordings.md) works as
written: its bash blocks run in order on the shared 4-camera session, from a checkout's
layout (``configs/``, ``tools/`` and ``../shared`` where the guide expects them), with
relative paths as the guide types them, and leave the files the guide says they leave.

Only the sizes are cut down (training iterations, rendered samples, the fit-in-the-loop
iterations, the videos' frames) and the interactive viewer writes a page instead of
serving one: every command, option and path is the guide's own."""
from __future__ import annotations

import json
import re
import subprocess

import pytest

from ..conftest import REPO_ROOT, SHARED, child_env, shared_path
from .page_blocks import bash_blocks

GUIDE = REPO_ROOT / 'docs' / 'real_recordings.md'
ITERS = 4
#: Frames of the videos the video inference commands run on (of 120).
VIDEO_FRAMES = 12
#: Options added to every training command of the guide: a few iterations, one
#: validation and one checkpoint at the end.
FEW_ITERATIONS = (f'train_cfg.max_iters={ITERS} train_cfg.val_interval={ITERS} '
                  f'default_hooks.checkpoint.interval={ITERS}')


def runnable(script: str) -> str:
    """The guide's commands, cut down to a test's size (the module docstring)."""
    script = script.replace('\\\n', ' ')
    lines = []
    for line in script.splitlines():
        if line.startswith('python tools/train.py'):
            line += (' ' if '--cfg-options' in line else ' --cfg-options ') + FEW_ITERATIONS
        words = line.split()
        if words[:2] == ['python', 'tools/infer.py'] and not words[3].endswith('.h5'):
            line += f' --frames 0:{VIDEO_FRAMES}'      # the videos: their first frames
        view = re.fullmatch(r'python tools/view.py (\S+)', line.strip())
        if view:
            line = f'{line} --export {view.group(1)}/scene.html'
        lines.append(line)
    script = '\n'.join(lines)
    for written, small in (('iter_400.pth', f'iter_{ITERS}.pth'),
                           ('--num-samples 2000', '--num-samples 8'),
                           ('--iters 200', '--iters 2')):
        assert written in script, written    # the guide still says what this test cuts
        script = script.replace(written, small)
    return script


def test_every_step_of_the_guide_has_a_command():
    script = '\n'.join(bash_blocks(GUIDE.read_text()))
    for tool in ('fit.py', 'train.py', 'render_rig.py', 'test.py',
                 'infer.py', 'view.py', 'fit_in_the_loop.py'):
        assert f'python tools/{tool}' in script, tool
    assert 'fit_results=work_dirs/mouse_fit/fit_results.h5' in script


# About six minutes, a sixth of the suite's work on two cores: out of CI, with --run-slow.
# In CI each of its commands is parsed by its tool (tests/docs/test_page_commands.py) and
# its steps run on the same session in tests of their own (fit, training on the fit's
# labels, rendering the rig, inference, fit in the loop; the viewer on its own scenes).
@pytest.mark.slow
def test_the_guide_runs_as_written_on_the_shared_session(tmp_path):
    shared_path('data', 'sleap_anipose_minimal_session', 'minimal_session')
    shared_path('models', 'SMILy_Mouse_static_joints.pkl')
    # A checkout's layout: the guide's relative paths (data/, work_dirs/, ../shared) land
    # in the test's folder, not in this checkout.
    root = tmp_path / 'smilfit'
    root.mkdir()
    for name in ('configs', 'tools'):
        (root / name).symlink_to(REPO_ROOT / name)
    (tmp_path / 'shared').symlink_to(SHARED.resolve())
    script = runnable('\n'.join(bash_blocks(GUIDE.read_text())))
    run = subprocess.run(['bash', '-euo', 'pipefail', '-c', script], cwd=root,
                         capture_output=True, text=True, timeout=1200,
                         env=child_env(OMP_NUM_THREADS='1'))
    assert run.returncode == 0, (run.stdout[-3000:], run.stderr[-3000:])

    work = root / 'work_dirs'
    network = work / 'mouse_session_resnet18' / f'iter_{ITERS}.pth'
    for path in (root / 'data' / 'mouse_session' / 'minimal_session_128.h5',
                 root / 'data' / 'mouse_session' / 'minimal_session_128_renders.h5',
                 work / 'mouse_fit' / 'fit_results.h5',
                 work / 'mouse_session_resnet18_rendered' / f'iter_{ITERS}.pth', network,
                 work / 'mouse_fit_net' / 'fit_results.h5', work / 'mouse_loop' / 'rounds.json'):
        assert path.is_file(), path
    for infer in ('mouse', 'mouse_videos', 'mouse_videos_boxes'):
        for name in ('predictions.h5', 'predictions.slp', 'scene.html'):
            assert (work / 'infer' / infer / name).is_file(), (infer, name)
    # step 4's report: held-out frames, the rig's cameras by name, 3D errors in millimetres
    report = network.parent / 'test_report'
    summary = json.loads((report / 'summary.json').read_text())
    assert summary['units'] == 'mm' and summary['pixels'] == 'source'
    assert {k.split('/')[2] for k in summary['metrics']
            if k.startswith('reproj/per_camera/')} == {'back', 'mid', 'side', 'top'}
    info = json.loads((report / 'run_info.json').read_text())
    assert info['split_by'] == 'time' and info['frames']['minimal_session']
    # step 2's training log says what it trains and validates on
    log = run.stdout + run.stderr
    assert ("validating on 24 samples (split 'val' by time): minimal_session frames 12-23, "
            '96-107') in log
    assert ("training on 88 samples (split 'train' by time): minimal_session frames 0-9, "
            '26-93, 110-119; labels from the fit work_dirs/mouse_fit/fit_results.h5') in log
    # and that the miscalibrated camera's labels teach nothing
    assert 'none left out; labels silenced: side (every keypoint)' in log
    # step 6's fit says how many frames started from the network (a network of a few
    # iterations may win none of them)
    assert 'samples started from the network' in run.stdout
    rounds = json.loads((work / 'mouse_loop' / 'rounds.json').read_text())
    assert len(rounds['rounds']) == 2


def test_the_cut_down_script_keeps_every_command():
    """The test's script differs from the guide only in the sizes and the viewer's page."""
    written = '\n'.join(bash_blocks(GUIDE.read_text())).replace('\\\n', ' ')
    script = runnable('\n'.join(bash_blocks(GUIDE.read_text())))
    tools = re.compile(r'python tools/(\w+)\.py')
    assert tools.findall(script) == tools.findall(written)
    assert script.count(FEW_ITERATIONS) == written.count('python tools/train.py') == 3
    assert script.count(f'--frames 0:{VIDEO_FRAMES}') == 2     # both runs on the videos
    assert not re.search(r'iter_400|--num-samples 2000|--iters 200', script)
