"""One input through the model: decode and preprocess, invoke, postprocess."""
