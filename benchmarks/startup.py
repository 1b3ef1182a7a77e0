"""Start-up time of the command-line tools: wall seconds of ``tools/X.py --help``.

    python benchmarks/startup.py [--repeats 3]

Prints a table (median of the repeats). ``--help`` imports no torch
(tests/tools/test_entry_points.py guards that); the first run after a fresh install also
pays for Python's bytecode compilation, hence the median. The last row is what
``tools/fit.py`` imports before it starts fitting (torch, the fitting packages; no mmengine
runner side, also guarded by a test).
"""
import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# What tools/fit.py imports before its first fitting step (smilfit.cli.fit.main and _run).
FIT_IMPORTS = ('from smilfit.cli import fit\n'
               'from smilfit.utils import register_all_modules\n'
               'from smilfit.utils.setup_env import FITTING_PACKAGES\n'
               'register_all_modules(packages=FITTING_PACKAGES)\n'
               'import smilfit.apis.fitting\n')


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--repeats', type=int, default=3)
    args = parser.parse_args()
    print(f"{'tool':<34} {'--help (s)':>10}")
    for tool in sorted((ROOT / 'tools').glob('*.py')):
        times = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            subprocess.run([sys.executable, str(tool), '--help'], check=True,
                           stdout=subprocess.DEVNULL)
            times.append(time.perf_counter() - start)
        print(f"{'tools/' + tool.name:<34} {statistics.median(times):>10.2f}")
    times = []
    for _ in range(args.repeats):
        start = time.perf_counter()
        subprocess.run([sys.executable, '-c', FIT_IMPORTS], check=True, cwd=str(ROOT))
        times.append(time.perf_counter() - start)
    print(f"{'fit imports before fitting':<34} {statistics.median(times):>10.2f}")


if __name__ == '__main__':
    main()
