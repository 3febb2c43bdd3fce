"""Built-in fine-tuning methods; importing this package registers them in ``METHODS``."""

from tuneforge.methods import freeze, full, lora  # noqa: F401
from tuneforge.methods.base import METHODS, Method, count_parameters, get_method

__all__ = ["METHODS", "Method", "count_parameters", "get_method"]
