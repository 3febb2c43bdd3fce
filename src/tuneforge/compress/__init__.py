"""Model compression: quantisation and pruning of a finished run, measured against the uncompressed model.

``compress(run_dir, {"method": "int8-dynamic"}, out_dir)`` writes a run-like folder that
``tuneforge.api.load_run`` (and so ``evaluate``, ``predict``, ``export``) opens like any run.
"""

from tuneforge.compress.base import COMPRESSORS, CompressConfig, Compressor, get_compressor
from tuneforge.compress.pipeline import CompressResult, compress
from tuneforge.compress.store import is_compressed, load_compressed

__all__ = ["COMPRESSORS", "CompressConfig", "CompressResult", "Compressor", "compress", "get_compressor",
           "is_compressed", "load_compressed"]
