"""Tokenizers: what a token of neural activity is (spikes, bins, patches, VQ codes), behind one interface (base.py)."""
