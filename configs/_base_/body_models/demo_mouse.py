# The embedded demo mouse: generated in code by smilfit's model builder (no files),
# 27 joints, millimetres, +z up. Used by the demo and by tests.
body_model = dict(type='DemoSMILModel')
