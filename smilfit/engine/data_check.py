"""Check a runner's data against its model before anything runs.

A body model whose keypoints are not the data's (another animal's model, a config naming
other keypoints) would otherwise surface as an index error deep in the first hook or step
that indexes the data with the model's keypoint match (the rig-units measurement, a
loss). :func:`check_runner_data` builds the runner's data loops (the same loop objects
``runner.train()`` and ``runner.test()`` go on to use) and asks the model to check each
dataset's keypoint names (``BodyRegressor.check_data``), before any hook runs.
"""
from __future__ import annotations

from typing import Sequence

from .hooks.model_access import unwrap_model

__all__ = ['check_runner_data']


def _describe(loop: str, dataset) -> str:
    path = getattr(dataset, 'ann_file', None) or getattr(dataset, 'path', None)
    return f'the {loop} data' + (f' ({path})' if path else '')


def check_runner_data(runner, loops: Sequence[str] = ('train', 'val')) -> None:
    """Check the datasets of ``runner``'s ``loops`` (``'train'``, ``'val'``, ``'test'``;
    loops the config leaves out are skipped) against its model.

    Models without ``check_data`` and datasets whose ``metainfo`` names no keypoints are
    not checked.

    Raises:
        smilfit.models.regressors.keypoints.DataKeypointsError: a dataset's keypoints are
            not the model's; one line naming both.
    """
    model = unwrap_model(runner.model)
    if not hasattr(model, 'check_data'):
        return
    for loop in loops:
        if getattr(runner, f'_{loop}_loop', None) is None:
            continue
        dataset = getattr(runner, f'{loop}_loop').dataloader.dataset
        names = getattr(dataset, 'metainfo', {}).get('keypoint_names')
        if names is not None:
            model.check_data(list(names), _describe(loop, dataset))
