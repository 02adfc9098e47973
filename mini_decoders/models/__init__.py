"""Models: the classic baselines and the transformers, each a Decoder; registry.py is the one list of them."""
