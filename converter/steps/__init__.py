"""Model-rewriting steps that run before conversion (pruning, quantization-aware training)."""
