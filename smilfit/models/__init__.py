"""smilfit.models (filled in by its issue)."""
