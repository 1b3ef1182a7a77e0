"""CUDA tests (every module is marked ``gpu``: skipped without a CUDA device).

Each test runs a path on the GPU and compares it with the same computation on the CPU,
so that a tensor created on the wrong device (an error on CUDA) or a CUDA-only numeric
difference fails here rather than in a user's run.
"""
