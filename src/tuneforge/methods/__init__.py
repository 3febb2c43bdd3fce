"""Built-in fine-tuning methods; importing this package registers them (and their recipe sections) in ``METHODS``."""

from tuneforge.methods import discriminative, freeze, full, gradual, ia3, layer_freeze, lora, prompt  # noqa: F401
from tuneforge.methods.base import METHODS, Method, count_parameters, get_method

__all__ = ["METHODS", "Method", "count_parameters", "get_method"]
