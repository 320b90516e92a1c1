"""``edge-fleet``: fleet operations from the host (inventory, staged rollouts gated by shadow checks). No TensorFlow."""
