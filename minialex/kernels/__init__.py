"""Pure array kernels, one layer a file: NumPy or CuPy in, same module out, no autograd.

Each file holds a layer's forward and backward side by side. A forward returns
what the backward needs (CS231n's ``(out, cache)``); a backward takes the
upstream gradient and that cache.
"""
