"""The solver's tests run with uninitialised memory filled with NaN.

``torch.use_deterministic_algorithms(True)`` fills what ``torch.empty`` and its kind
return with NaN, so a solver that reads memory it never wrote gives NaN here every time,
where otherwise it reads whatever earlier work left on the heap: a result that changes
with what ran before in the process. ``warn_only``: the few operations without a
deterministic implementation warn instead of failing.
"""
import pytest
import torch


@pytest.fixture(autouse=True)
def uninitialised_memory_is_nan():
    enabled = torch.are_deterministic_algorithms_enabled()
    warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    torch.use_deterministic_algorithms(True, warn_only=True)
    yield
    torch.use_deterministic_algorithms(enabled, warn_only=warn_only)
