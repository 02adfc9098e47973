"""mini-decoders: transformers for brain decoding, from scratch, side by side."""

__version__ = "0.1.0"
