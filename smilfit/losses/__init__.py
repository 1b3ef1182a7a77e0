"""Loss functions (registered in :data:`smilfit.registry.LOSSES`).

Each loss returns a per-sample loss of shape (B,); see the fitting issue.
"""
