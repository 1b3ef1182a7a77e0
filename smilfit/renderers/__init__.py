"""smilfit.renderers (filled in by its issue)."""
