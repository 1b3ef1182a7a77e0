"""write_report: layout, JSON/text content, raw arrays, atomic replacement."""
import ast
import json
from pathlib import Path

import numpy as np
import pytest
from mmengine.evaluator import Evaluator

from smilfit.evaluation import collect_raw, write_report
from smilfit.evaluation.report import format_summary, normalize_raw, split_results

from .test_evaluator import fake_samples

PACKAGE = Path(__file__).resolve().parents[2] / 'smilfit' / 'evaluation'


@pytest.fixture(scope='module')
def evaluated():
    from smilfit.utils import register_all_modules
    register_all_modules()
    evaluator = Evaluator([dict(type='KeypointPCKMetric'),
                           dict(type='MPJPEMetric', units='mm'),
                           dict(type='SilhouetteIoUMetric')])
    evaluator.process(fake_samples())
    metrics = evaluator.evaluate(10)
    return metrics, collect_raw(evaluator)


def test_report_summaries_and_raw_arrays(tmp_path, evaluated):
    metrics, raw = evaluated
    metrics = dict(metrics, **{'kp3d/broken': float('nan')})
    out = write_report(tmp_path / 'report', metrics, raw, camera_names=['top', 'side'],
                       plots=False)
    assert {p.name for p in out.iterdir()} == {'summary.txt', 'summary.json', 'raw'}
    summary = json.loads((out / 'summary.json').read_text())
    assert summary['metrics']['kp3d/mpjpe'] == pytest.approx(metrics['kp3d/mpjpe'])
    assert summary['metrics']['kp3d/broken'] is None                # NaN -> null
    assert summary['non_finite_metrics'] == ['kp3d/broken']
    assert summary['units'] == 'mm' and summary['camera_names'] == ['top', 'side']
    assert summary['joint_names'] == ['joint0', 'joint1', 'joint2', 'joint3']
    errors = np.load(out / summary['raw_files']['kp3d']['errors_pa_mpjpe'])
    np.testing.assert_array_equal(errors, raw['kp3d']['errors_pa_mpjpe'])
    assert np.load(out / 'raw' / 'kp2d' / 'camera_labels.npy').tolist()[0] == ['cam0', 'cam1']
    assert str(np.load(out / 'raw' / 'kp3d' / 'units.npy')) == 'mm'
    text = (out / 'summary.txt').read_text()
    assert '[kp3d]' in text and 'per joint' in text and 'kp3d/pa_mpjpe' in text
    assert not list(tmp_path.glob('.report.tmp-*'))


def test_pck_curve_plot_without_switching_backend(tmp_path):
    import matplotlib
    backend = matplotlib.get_backend()
    thresholds = np.arange(1.0, 51.0)
    raw = {'kp2d': dict(pck_curve_thresholds_px=thresholds, pck_curve=thresholds / 50,
                        pck_curve_per_camera=np.stack([thresholds / 50, thresholds / 60]),
                        camera_names=np.array(['cam0', 'cam1']))}
    out = write_report(tmp_path / 'r', {'kp2d/pck@10px': 0.2}, raw, camera_names=['a', 'b'])
    png = out / 'pck_curve.png'
    assert png.read_bytes()[:8] == b'\x89PNG\r\n\x1a\n' and png.stat().st_size > 5000
    assert json.loads((out / 'summary.json').read_text())['plots'] == ['pck_curve.png']
    assert matplotlib.get_backend() == backend            # never switched globally


@pytest.mark.slow
def test_full_report_plots(tmp_path, evaluated):
    # Slow (every plot, 3-10 s on 2 shared cores): run with --run-slow.
    metrics, raw = evaluated
    out = write_report(tmp_path / 'report', metrics, raw)
    names = {p.name for p in out.iterdir()}
    for expected in ('pck_curve.png', 'error_histograms.png', 'per_joint_kp2d_px.png',
                     'per_joint_kp3d_mpjpe.png', 'per_joint_kp3d_mpjpe_root.png',
                     'per_joint_kp3d_pa_mpjpe.png', 'keypoints_3d_error.png',
                     'per_camera_kp2d_errors_px.png', 'per_camera_silhouette_iou.png'):
        assert expected in names, expected
    for png in out.glob('*.png'):
        assert png.read_bytes()[:8] == b'\x89PNG\r\n\x1a\n' and png.stat().st_size > 2000
    assert set(json.loads((out / 'summary.json').read_text())['plots']) == \
        {p.name for p in out.glob('*.png')}


def test_existing_directories(tmp_path, evaluated):
    metrics, _ = evaluated
    out = write_report(tmp_path / 'r', {'a/x': 1.0}, plots=False)
    with pytest.raises(FileExistsError, match='overwrite=True'):
        write_report(out, {'a/x': 2.0}, plots=False)
    write_report(out, {'a/x': 2.0}, plots=False, overwrite=True)
    assert json.loads((out / 'summary.json').read_text())['metrics'] == {'a/x': 2.0}
    precious = tmp_path / 'precious'
    precious.mkdir()
    (precious / 'data.h5').write_text('keep me')
    with pytest.raises(FileExistsError, match='not a smilfit report'):
        write_report(precious, {'a/x': 1.0}, plots=False, overwrite=True)
    assert (precious / 'data.h5').read_text() == 'keep me'
    assert sorted(p.name for p in tmp_path.iterdir()) == ['precious', 'r']


def test_failure_leaves_nothing_behind(tmp_path):
    with pytest.raises(ValueError, match="'g/bad' has dtype object"):
        write_report(tmp_path / 'r', {'x': 1.0}, {'g': {'ok': np.ones(3),
                                                         'bad': np.array([{}, 1])}})
    with pytest.raises(ValueError, match="results\\['x'\\]"):
        write_report(tmp_path / 'r', {'x': 'high'})
    assert list(tmp_path.iterdir()) == []


def test_summary_tables_and_raw_normalisation():
    results = {'kp2d/pck@10px': 0.5, 'kp2d/per_joint/nose/pck@10px': 1.0,
               'kp2d/per_camera/top/pck@10px': 0.25, 'kp3d/per_joint/nose/mpjpe': 3.0,
               'kp3d/per_joint/tail/mpjpe': 4.5, 'count': 12.0}
    overall, per_camera, per_joint = split_results(results)
    assert overall == {'kp2d/pck@10px': 0.5, 'count': 12.0}
    assert per_camera == {'kp2d/pck@10px': {'top': 0.25}}
    assert per_joint == {'kp2d/pck@10px': {'nose': 1.0},
                         'kp3d/mpjpe': {'nose': 3.0, 'tail': 4.5}}
    text = format_summary(results, 'T', 'mm', joint_names=['tail', 'nose'])
    lines = text.splitlines()
    tail_row = next(line for line in lines if line.startswith('tail'))
    assert tail_row.split() == ['tail', '-', '4.5']                # no PCK value for tail
    assert lines.index(tail_row) < lines.index(next(line for line in lines
                                                    if line.startswith('nose')))
    assert '  count  12' in text
    groups = normalize_raw({'kp2d/errors_px': [1.0, 2.0], 'loose': np.zeros(2)})
    assert set(groups) == {'kp2d', 'raw'} and groups['kp2d']['errors_px'].tolist() == [1, 2]


def test_matplotlib_is_not_imported_at_module_level():
    # `import smilfit` must never import matplotlib (nor pick its backend).
    for path in PACKAGE.rglob('*.py'):
        tree = ast.parse(path.read_text())
        for node in tree.body:
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                modules = [a.name for a in node.names] if isinstance(node, ast.Import) \
                    else [node.module or '']
                assert not any(m.split('.')[0] == 'matplotlib' for m in modules), path


@pytest.mark.slow
def test_import_does_not_load_matplotlib_subprocess():
    import subprocess
    import sys
    code = ('import sys, smilfit, smilfit.evaluation; from smilfit.utils import '
            'register_all_modules; register_all_modules(); '
            'assert "matplotlib" not in sys.modules, "matplotlib imported"')
    subprocess.run([sys.executable, '-c', code], check=True)
