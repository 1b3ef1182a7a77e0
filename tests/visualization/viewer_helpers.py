"""Shared by the viewer tests: a small fit's work dir, and headless Chromium."""
from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Callable, Optional, Sequence, Tuple

import numpy as np

from ..conftest import demo_fit_config

#: Chromium's software WebGL (no GPU in CI): ANGLE on SwiftShader. Every host name but
#: 127.0.0.1 fails to resolve: the pages must work with no network.
CHROMIUM_FLAGS = ('--headless', '--no-sandbox', '--use-angle=swiftshader',
                  '--enable-unsafe-swiftshader', '--disable-dev-shm-usage',
                  '--hide-scrollbars', '--mute-audio', '--no-first-run',
                  '--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1')


def make_fit(root: Path, frames: int = 6, views: int = 3) -> Path:
    """tools/fit.py's work dir of the demo config on a small synthetic dataset (~5 s)."""
    from smilfit.apis.fitting import fit_dataset, prepare_data
    cfg = demo_fit_config(root)
    cfg.data.synthetic.update(frames_per_session=frames, num_views=views)
    cfg.data.batch_size = frames
    prepare_data(cfg, progress=False)
    work_dir = root / 'fit'
    fit_dataset(cfg, work_dir, progress=False)
    return work_dir


def find_chromium() -> Optional[str]:
    for name in ('chromium', 'chromium-browser', 'google-chrome', 'chrome'):
        path = shutil.which(name)
        if path:
            return path
    return None


def screenshot(url: str, out: Path, size: Tuple[int, int] = (1200, 500),
               budget_ms: int = 3000, timeout_s: float = 60.0) -> np.ndarray:
    """Load ``url`` in headless Chromium and return the screenshot as (H, W, 3) uint8."""
    import imageio.v3 as iio
    browser = find_chromium()
    assert browser is not None
    with tempfile.TemporaryDirectory() as profile:   # never share a profile between runs
        cmd = [browser, *CHROMIUM_FLAGS, f'--user-data-dir={profile}',
               f'--window-size={size[0]},{size[1]}', f'--virtual-time-budget={budget_ms}',
               f'--screenshot={out}', url]
        run = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s)
    assert out.is_file(), run.stderr[-2000:]
    return np.asarray(iio.imread(out))[..., :3]


def live_screenshot(url: str, out: Path, shows: Callable[[np.ndarray], bool],
                    size: Tuple[int, int] = (1200, 500),
                    budgets_ms: Sequence[int] = (3000, 6000, 12000)) -> np.ndarray:
    """:func:`screenshot` of a live server's page, taken again with a longer budget while
    it does not yet ``shows`` what the server sent: the scene reaches the page over a
    websocket in real time, which Chromium's virtual time does not wait for, so on a
    loaded machine a message can land after the first budget. The last screenshot is
    returned whatever it shows (the caller's assertions judge it)."""
    for budget in budgets_ms:
        image = screenshot(url, out, size, budget_ms=budget)
        if shows(image):
            break
    return image
