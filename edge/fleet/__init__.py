"""``edge-fleet``: fleet operations from the host (inventory now; staged rollouts later). No TensorFlow."""
