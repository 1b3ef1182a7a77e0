# A dog-like quadruped grown by smilfit's model builder (no model files): 36 joints
# (spine, neck, head, jaw, ears, eyes, 4 legs with paws, tail), metres, +z up, 11 shape
# directions (size, thickness, bone-group lengths). See smilfit/body_models/quadruped.py.
body_model = dict(type='QuadrupedSMILModel')
