"""The data's keypoints as a regressor sees them: their count, and the observations of the
keypoints matched to the body model.

A regressor is set up for the data's N keypoint names (``keypoint_names``) and matches the
body model's keypoints to them (``keypoint_match``: ``model_index`` and ``data_index`` (M,)
of the M matched pairs; :func:`smilfit.body_models.keypoint_naming.match_keypoints`).
:func:`check_keypoint_count` stops a batch with another keypoint count before it indexes out
of range deep in a loss; :func:`matched_observations` gathers the 2D observations of the
matched keypoints with their weights; :func:`setup_keypoints` matches the keypoints and sets
the regressor's handlers up for the data.
"""
from __future__ import annotations

from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import torch
from torch import nn

from smilfit.errors import SmilfitUserError
from smilfit.body_models.keypoint_naming import lookup_model_names, match_keypoints
from smilfit.body_models.joint_lookup import joint_lookup_dict

from .decoding import view_tensor

#: Batch fields with a keypoint axis (second to last).
KEYPOINT_FIELDS = ('keypoints_2d', 'keypoints_3d')


class KeypointCountError(SmilfitUserError, ValueError):
    """The data's keypoint count differs from the keypoints the model was set up for."""


def check_keypoint_count(data_samples: Mapping[str, Any], keypoint_names: Sequence[str],
                         model_keypoint_names: Sequence[str]) -> None:
    """The batch's ``keypoints_2d`` (..., N, 2) and ``keypoints_3d`` (..., N, 3) must have
    N = ``len(keypoint_names)`` keypoints.

    Raises:
        KeypointCountError: the counts differ; names the field and both counts and says
            how to set the model's keypoint names (``model_keypoint_names``: the body
            model's, to tell whether the model's names are its default).
    """
    for key in KEYPOINT_FIELDS:
        value = data_samples.get(key) if isinstance(data_samples, Mapping) else None
        if value is None or not hasattr(value, 'shape'):
            continue
        count = value.shape[-2]
        if count != len(keypoint_names):
            names = list(keypoint_names)
            whose = "the body model's keypoints" if names == list(
                model_keypoint_names) else 'model.keypoint_names'
            raise KeypointCountError(
                f'the data has {count} keypoints ({key}) but the model is set up for '
                f'{len(names)} ({whose}: {", ".join(names[:6])}'
                f'{", ..." if len(names) > 6 else ""}); set '
                "model.keypoint_names to the dataset's keypoint names (and "
                'model.joint_lookup to map them to the body model)')


class DataKeypointsError(KeypointCountError):
    """The data's keypoints (count, names or order) are not the ones the model was set up
    for: found before any step indexes the data with the model's keypoint match."""


def _names(names: Sequence[str], shown: int = 6) -> str:
    names = list(names)
    return ', '.join(names[:shown]) + (', ...' if len(names) > shown else '')


def check_data_keypoints(keypoint_names: Sequence[str], data_keypoint_names: Sequence[str],
                         body_model_keypoint_names: Sequence[str], data: str) -> None:
    """The data's keypoints must be the model's data keypoints, in order.

    Args:
        keypoint_names: the data keypoint names the model was set up for (its
            ``keypoint_names``: the body model's own unless the config names others).
        data_keypoint_names: the keypoint names ``data`` holds.
        body_model_keypoint_names: the body model's keypoints (to say which setting to
            change).
        data: what the data is, for the message (e.g. ``the train data (a.h5)``).

    Raises:
        DataKeypointsError: in one line naming both sides and what to set.
    """
    want, have = list(keypoint_names), list(data_keypoint_names)
    if want == have:
        return
    default = want == list(body_model_keypoint_names)
    whose = ("the body model's keypoints" if default else 'model.keypoint_names')
    how = ("set model.keypoint_names to the data's keypoint names and model.joint_lookup "
           'to map them to the body model' if default else
           "set model.keypoint_names to the data's keypoint names")
    order = ' (the same names in another order)' if sorted(want) == sorted(have) else ''
    raise DataKeypointsError(
        f'{data} has {len(have)} keypoints ({_names(have)}) but the model is set up for '
        f'{len(want)} ({whose}: {_names(want)}){order}: {how}')


def matched_observations(data_samples: Mapping[str, Any], match, B: int, C: int
                         ) -> Tuple[torch.Tensor, torch.Tensor]:
    """The 2D observations of the matched keypoints and their weights.

    Args:
        data_samples: the batch: ``keypoints_2d`` (B, C, N, 2) pixels (NaN missing), and
            optionally ``confidence`` and ``visible`` (B, C, N) and ``view_valid`` (B, C)
            (squeezed single view accepted).
        match: the keypoint match (``data_index`` (M,)).
        B, C: samples and view slots.

    Returns:
        ``(points2d (B, C, M, 2), weights (B, C, M))``: the weight is the product of
        confidence, visibility and view validity (1 where absent).
    """
    kp = view_tensor(data_samples, 'keypoints_2d', B, C, 2)
    index = match.data_index.to(kp.device)
    kp = kp.index_select(2, index)
    w = torch.ones(kp.shape[:3], dtype=kp.dtype, device=kp.device)
    for key in ('confidence', 'visible'):
        x = view_tensor(data_samples, key, B, C, 1)
        if x is not None:
            w = w * x.index_select(2, index).to(kp.dtype)
    vv = view_tensor(data_samples, 'view_valid', B, C, 0)
    if vv is not None:
        w = w * vv.to(kp.dtype)[..., None]
    return kp, w



def setup_keypoints(body_model: nn.Module, handlers: Mapping[str, nn.Module],
                    keypoint_names: Optional[Sequence[str]] = None,
                    joint_lookup: Union[None, str, Mapping[str, Optional[str]]] = None
                    ) -> Tuple[List[str], Optional[Dict[str, Optional[str]]], Any]:
    """Match the body model's keypoints to the data's by name and set every handler up
    for the data.

    Args:
        keypoint_names: the data's keypoint names (default: the body model's).
        joint_lookup: model keypoint name -> data keypoint name, or the path of a lookup
            CSV (:mod:`smilfit.body_models.joint_lookup`).

    Returns:
        ``(keypoint_names, joint_lookup, keypoint_match)`` as the regressor holds them.
    """
    model_names = list(body_model.keypoint_names)
    names = list(model_names if keypoint_names is None else keypoint_names)
    lookup = joint_lookup_dict(joint_lookup)
    match = match_keypoints(model_names, names, lookup,
                            lookup_names=lookup_model_names(body_model))
    data_info = dict(keypoint_names=names)
    if lookup is not None:
        data_info['joint_lookup'] = lookup
    for handler in handlers.values():
        handler.setup(body_model, data_info)
    return names, lookup, match


__all__ = ['KEYPOINT_FIELDS', 'KeypointCountError', 'DataKeypointsError',
           'check_data_keypoints', 'check_keypoint_count',
           'matched_observations', 'setup_keypoints']
