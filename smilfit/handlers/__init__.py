"""Loss handlers (registered in :data:`smilfit.registry.HANDLERS`): observation/prior -> loss."""
