"""CuPy-only fast paths (ElementwiseKernel / RawKernel) that the kernels above call on GPU arrays."""
