"""Shared blocks, each defined once: attention, rotary time, feed-forward, PerceiverIO blocks, positions,
growing vocabularies, a learned temporal kernel, the vector quantiser and the Poisson loss."""
