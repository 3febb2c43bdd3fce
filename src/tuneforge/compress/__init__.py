"""Model compression: quantisation and pruning, each a ``Compressor`` registered in ``COMPRESSORS``.

Importing the package registers the built-in methods (``prune``, ``quantize``); the base module never
imports its plug-ins. ``tuneforge compress`` itself (load a finished run, compress, measure, write a
run-like folder) is run bookkeeping: :func:`tuneforge.run.compress.compress`.
"""

from tuneforge.compress import prune, quantize
from tuneforge.compress.base import COMPRESSORS, CompressConfig, Compressor, get_compressor
from tuneforge.compress.store import is_compressed

__all__ = ["COMPRESSORS", "CompressConfig", "Compressor", "get_compressor", "is_compressed", "prune", "quantize"]
