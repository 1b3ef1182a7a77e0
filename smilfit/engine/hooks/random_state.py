"""Save and restore the global random number generators so a resumed run continues exactly.

mmengine's resume restores the model, optimizer, parameter schedulers, message hub and
the data position (the iteration loop replays the dataloader up to the resumed
iteration; samplers are seeded per epoch), but not the global generators of Python,
numpy and torch (CPU and CUDA) that dropout and random augmentation draw from: a
resumed run then draws different numbers than the uninterrupted one.

:class:`RandomStateHook` stores them in every checkpoint (``checkpoint['rng_state']``,
plain lists and tensors, so ``weights_only`` loading takes them) and sets them back at
the point where the uninterrupted run would have had them:

* iteration-based loop: just before the first batch after the replayed ones, i.e. after
  mmengine's "advance dataloader N steps" (which itself draws numbers when the dataset
  augments in the main process);
* epoch-based loop: at the start of the resumed epoch (checkpoints are saved at the end
  of an epoch).

Validation runs between a checkpoint and the next training step; it must not shift
training's random numbers either, so the hook also restores the generators after each
validation to what they were before it.

With several processes the state of rank 0 is saved (mmengine saves checkpoints on
rank 0 only) and every rank gets it back: exact for the default
``randomness.diff_rank_seed=False``, where all ranks draw alike.
"""
import random
import warnings
from typing import Any, Dict, Optional

import numpy as np
import torch
from mmengine.hooks import Hook
from mmengine.runner import IterBasedTrainLoop

from smilfit.registry import HOOKS

CHECKPOINT_KEY = 'rng_state'


def capture_rng_state() -> Dict[str, Any]:
    """The global generators' states as plain lists/ints/tensors (weights_only-safe)."""
    py_version, py_state, py_gauss_next = random.getstate()
    np_state = np.random.get_state(legacy=False)
    return dict(
        python=dict(version=py_version, state=list(py_state), gauss_next=py_gauss_next),
        numpy=dict(key=np_state['state']['key'].tolist(), pos=int(np_state['state']['pos']),
                   has_gauss=int(np_state['has_gauss']), gauss=float(np_state['gauss'])),
        torch=torch.get_rng_state(),
        cuda=torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else None,
    )


def restore_rng_state(state: Dict[str, Any]) -> None:
    """Set the global generators to a :func:`capture_rng_state` result.

    Tensors may come back on the GPU (mmengine loads checkpoints with
    ``map_location=<device>``); torch wants CPU byte tensors.
    """
    python = state['python']
    random.setstate((python['version'], tuple(python['state']), python['gauss_next']))
    np_state = state['numpy']
    np.random.set_state(dict(bit_generator='MT19937',
                             state=dict(key=np.asarray(np_state['key'], dtype=np.uint32),
                                        pos=np_state['pos']),
                             has_gauss=np_state['has_gauss'], gauss=np_state['gauss']))
    torch.set_rng_state(state['torch'].cpu())
    cuda = state.get('cuda')
    if cuda is not None and torch.cuda.is_available():
        if len(cuda) != torch.cuda.device_count():
            warnings.warn(f'checkpoint holds RNG states of {len(cuda)} CUDA devices, this '
                          f'process sees {torch.cuda.device_count()}: CUDA RNG not restored')
        else:
            torch.cuda.set_rng_state_all([s.cpu() for s in cuda])


class _RestoreAfterReplay:
    """Iterator proxy: restores the RNG state when the replayed batches are consumed.

    Put in place of ``IterBasedTrainLoop.dataloader_iterator`` before mmengine replays
    ``replay`` batches; on the next ``next()`` it restores the state, puts the original
    iterator back and gets the batch from it.
    """

    def __init__(self, loop, replay: int, state: Dict[str, Any]) -> None:
        self._loop = loop
        self._iterator = loop.dataloader_iterator
        self._remaining = replay
        self._state = state

    def __iter__(self):
        return self

    def __next__(self):
        if self._remaining > 0:
            self._remaining -= 1
            return next(self._iterator)
        restore_rng_state(self._state)
        self._loop.dataloader_iterator = self._iterator
        return next(self._iterator)

    def __getattr__(self, name):  # anything else is the wrapped iterator's business
        return getattr(self._iterator, name)


@HOOKS.register_module()
class RandomStateHook(Hook):
    """Checkpoints carry the global RNG states; resuming restores them (see module doc).

    ``tools/train.py`` adds this hook to every run. Resuming a checkpoint without
    ``rng_state`` (written without the hook) warns and continues.
    """

    priority = 'VERY_HIGH'

    def __init__(self) -> None:
        self._checkpoint_loaded = False
        self._resumed_state: Optional[Dict[str, Any]] = None
        self._before_val_state: Optional[Dict[str, Any]] = None

    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        checkpoint[CHECKPOINT_KEY] = capture_rng_state()

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        # Also called for `load_from` (fine-tuning): only a resumed run (iter > 0 at
        # before_train_epoch) uses the state.
        self._checkpoint_loaded = True
        self._resumed_state = checkpoint.get(CHECKPOINT_KEY)

    def before_train_epoch(self, runner) -> None:
        loaded, self._checkpoint_loaded = self._checkpoint_loaded, False
        state, self._resumed_state = self._resumed_state, None
        if not loaded or runner.iter == 0:
            return
        loop = runner.train_loop
        iteration_based = isinstance(loop, IterBasedTrainLoop)
        if not iteration_based and runner.iter != runner.epoch * len(runner.train_dataloader):
            runner.logger.warning(
                f'resumed at iteration {runner.iter}, inside epoch {runner.epoch} '
                f'({len(runner.train_dataloader)} batches per epoch): the epoch-based loop '
                'restarts the epoch from its first batch, so this run will not match an '
                'uninterrupted one; resume epoch-based runs from end-of-epoch checkpoints')
        if state is None:
            runner.logger.warning('resumed checkpoint has no rng_state (saved without '
                                  'RandomStateHook): this run will draw different random '
                                  'numbers than an uninterrupted one')
        elif iteration_based:
            # mmengine replays `iter` batches right after this hook: restore after them.
            loop.dataloader_iterator = _RestoreAfterReplay(loop, runner.iter, state)
        else:
            restore_rng_state(state)

    def before_val(self, runner) -> None:
        self._before_val_state = capture_rng_state()

    def after_val(self, runner) -> None:
        if self._before_val_state is not None:
            restore_rng_state(self._before_val_state)
            self._before_val_state = None
