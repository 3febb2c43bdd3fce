"""Fast decoding for decoder models: a key/value cache whose rows leave when they finish and join between steps.

``engine.DecodeBatch`` is the one decode loop; ``tasks/decoding.py`` drives it over length-sorted
buckets for offline prediction, and the server drives it step by step for continuous batching.
"""

from tuneforge.infer.engine import DecodeBatch, Generated, generate_ids
from tuneforge.infer.sampling import Sampling

__all__ = ["DecodeBatch", "Generated", "Sampling", "generate_ids"]
