"""Private compiled kernels (Numba ``@njit(cache=True)``) over flat arrays.

Kernels never validate their inputs: the public Python layer converts and
checks everything once (C-contiguous float64 / int64 arrays, one signature per
kernel), preallocates the outputs, and turns the integer status codes that the
kernels return into exceptions. Nothing here is public API.
"""
