"""Tests of smilfit.losses (one module per loss module)."""
