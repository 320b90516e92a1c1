"""Per-task decoders: model outputs -> immutable records (pycoral's adapters style), pure numpy.

``select.choose`` reads the task from the output signature; ``detect``, ``pose``, ``segment`` and
``embedding`` decode; ``geometry`` maps input coordinates back to the original image.
"""
