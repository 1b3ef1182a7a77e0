"""smilfit.visualization (filled in by its issue)."""
