"""smilfit.evaluation (filled in by its issue)."""
