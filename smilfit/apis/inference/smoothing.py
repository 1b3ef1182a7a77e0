"""Temporal smoothing of predicted cameras: :class:`CameraSmoother` (causal, per instance
slot, state carried across chunks)."""
from __future__ import annotations

from typing import Dict, Mapping, Tuple

import numpy as np

from .common import InferenceError


class CameraSmoother:
    """Causal exponential smoothing of predicted cameras, per instance slot.

    ``K`` and ``t`` (source pixels) become ``s = alpha s_prev + (1 - alpha) x``; the
    state is kept between chunks (and saved in them, so a resumed run continues it).
    """

    def __init__(self, alpha: float) -> None:
        if not 0.0 <= alpha < 1.0:
            raise InferenceError(f'camera smoothing must be in [0, 1), got {alpha}')
        self.alpha = float(alpha)
        self.state: Dict[int, Tuple[np.ndarray, np.ndarray]] = {}

    def __call__(self, slot: int, K: np.ndarray, t: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        prev = self.state.get(int(slot))
        if prev is not None and self.alpha > 0:
            K = self.alpha * prev[0] + (1 - self.alpha) * K
            t = self.alpha * prev[1] + (1 - self.alpha) * t
        self.state[int(slot)] = (K, t)
        return K, t

    def to_arrays(self) -> Dict[str, np.ndarray]:
        slots = sorted(self.state)
        if not slots:
            return {}
        return dict(smooth_slots=np.array(slots, np.int64),
                    smooth_K=np.stack([self.state[s][0] for s in slots]),
                    smooth_t=np.stack([self.state[s][1] for s in slots]))

    def load(self, arrays: Mapping[str, np.ndarray]) -> None:
        if 'smooth_slots' in arrays:
            self.state = {int(s): (arrays['smooth_K'][i], arrays['smooth_t'][i])
                          for i, s in enumerate(arrays['smooth_slots'])}
