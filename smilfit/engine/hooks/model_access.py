"""Reach the user's model through mmengine's model wrappers (DDP, FSDP, ...)."""
import torch.nn as nn
from mmengine.model import is_model_wrapper


def unwrap_model(model: nn.Module) -> nn.Module:
    """The model a hook should read or change: ``model.module`` when wrapped.

    Hooks must change the wrapped module's attributes (loss weights, ...), which every
    rank holds; the wrapper itself only forwards. Training still calls the wrapper's
    ``train_step`` so DDP averages the gradients.
    """
    return model.module if is_model_wrapper(model) else model
