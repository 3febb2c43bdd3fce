"""The CPU speed layer: fused kernels, compact activations, heap and allocator."""
