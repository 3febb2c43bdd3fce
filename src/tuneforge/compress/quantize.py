"""Post-training quantisation for CPU inference: no data and no training needed.

* ``int8-dynamic``: ``torch.ao.quantization.quantize_dynamic``. Every ``nn.Linear`` stores int8
  weights (one scale per output channel); activations are quantised on the fly per batch, and
  the matmuls run in int8 (fbgemm/x86 kernels). torch 2.13 still ships it but marks eager-mode
  quantisation deprecated in favour of torchao; the warning is silenced here because it is the
  one CPU int8-activation path that works on stock torch today.
* ``weight-int8`` and ``weight-int4``: torchao's weight-only configs (``Int8WeightOnlyConfig``,
  ``IntxWeightOnlyConfig(weight_dtype=torch.int4)`` with per-group scales). Activations stay
  float. On CPU, torchao 0.18's packed int4 layouts (``Int4WeightOnlyConfig``) all refuse to run
  (they need the ``mslk`` kernels, CUDA or bfloat16 tile packing), so int4 uses the "unpacked"
  layout: int4 values in int8 storage. Its quality is that of 4-bit weights, but its size on
  disk is that of int8; the report shows both honestly.

Quantised weights are written as safetensors: int8 data plus scales for ``int8-dynamic``
(``torch`` has no safetensors support for quantised tensors), and torchao's own
``flatten_tensor_state_dict`` format for the torchao tensor subclasses.
"""

from __future__ import annotations

import json
import warnings
from typing import Any

import torch
from torch import nn

from tuneforge.compress.base import COMPRESSORS, Compressor, Context, load_float_state, untie


def _quantize_dynamic(model: nn.Module) -> nn.Module:
    from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the deprecation notice of eager-mode quantisation
        return quantize_dynamic(model, {nn.Linear: per_channel_dynamic_qconfig}, dtype=torch.qint8, inplace=True)


def _dynamic_linears(model: nn.Module) -> dict[str, nn.Module]:
    from torch.ao.nn.quantized.dynamic import Linear as DynamicLinear

    return {n: m for n, m in model.named_modules() if isinstance(m, DynamicLinear)}


@COMPRESSORS.register("int8-dynamic")
class Int8Dynamic(Compressor):
    """int8 weights and dynamically quantised int8 activations in every linear layer."""

    quantised = True

    def apply(self, model: nn.Module, ctx: Context) -> nn.Module:
        return _quantize_dynamic(model)

    def state(self, model: nn.Module) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
        linears = _dynamic_linears(model)
        prefixes = tuple(f"{n}." for n in linears)
        floats = {k: v for k, v in model.state_dict().items()
                  if isinstance(v, torch.Tensor) and not k.startswith(prefixes)}
        tensors, tied = untie(floats)
        for name, module in linears.items():
            weight, bias = module._packed_params._weight_bias()
            tensors[f"{name}.qweight"] = weight.int_repr()  # (out, in) int8
            tensors[f"{name}.qscales"] = weight.q_per_channel_scales().float()  # (out,)
            tensors[f"{name}.qzeros"] = weight.q_per_channel_zero_points()  # (out,)
            if bias is not None:
                tensors[f"{name}.bias"] = bias.detach()
        return tensors, {"tied": json.dumps(tied), "dynamic_linears": json.dumps(sorted(linears))}

    def load(self, model: nn.Module, tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> None:
        """Float layers load first into the float skeleton; then it is quantised and gets the saved int8 weights.

        (A quantised linear's own ``load_state_dict`` wants torch's pickled packed parameters.)
        """
        saved = json.loads(metadata["dynamic_linears"])
        prefixes = tuple(f"{n}." for n in saved)
        load_float_state(model, {k: v for k, v in tensors.items() if not k.startswith(prefixes)}, metadata,
                         owned=prefixes)
        linears = _dynamic_linears(_quantize_dynamic(model))
        if sorted(linears) != saved:
            raise ValueError(f"quantised layers differ from the saved ones: {sorted(set(saved) ^ set(linears))[:3]}")
        for name, module in linears.items():
            qweight = torch._make_per_channel_quantized_tensor(
                tensors[f"{name}.qweight"], tensors[f"{name}.qscales"].double(), tensors[f"{name}.qzeros"], 0)
            module.set_weight_bias(qweight, tensors.get(f"{name}.bias"))

    def summary(self, model: nn.Module) -> dict[str, Any]:
        return {"quantised_linear_layers": len(_dynamic_linears(model)), "weights": "int8 per output channel",
                "activations": "int8, quantised per batch at run time"}


class _TorchAo(Compressor):
    """Weight-only quantisation through torchao's ``quantize_`` and its safetensors format."""

    quantised = True

    def _config(self) -> Any:
        raise NotImplementedError

    def _fits(self, module: nn.Module, fqn: str) -> bool:
        return isinstance(module, nn.Linear)

    def _quantize(self, model: nn.Module) -> nn.Module:
        from torchao.quantization import quantize_

        quantize_(model, self._config(), filter_fn=self._fits)
        return model

    def apply(self, model: nn.Module, ctx: Context) -> nn.Module:
        return self._quantize(model)

    def skeleton(self, model: nn.Module) -> nn.Module:
        return self._quantize(model)

    def state(self, model: nn.Module) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
        from torchao.prototype.safetensors.safetensors_support import flatten_tensor_state_dict

        kept, tied = untie(model.state_dict())
        tensors, metadata = flatten_tensor_state_dict(kept)
        return tensors, {**metadata, "tied": json.dumps(tied)}

    def load(self, model: nn.Module, tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> None:
        from torchao.prototype.safetensors.safetensors_support import unflatten_tensor_state_dict

        state, leftover = unflatten_tensor_state_dict(tensors, metadata)
        if leftover:
            raise ValueError(f"unexpected tensors in the compressed weights: {sorted(leftover)[:3]}")
        load_float_state(model, state, metadata, assign=True)

    def summary(self, model: nn.Module) -> dict[str, Any]:
        kinds: dict[str, int] = {}
        for module in model.modules():
            if isinstance(module, nn.Linear):
                kind = type(module.weight).__name__
                kinds[kind] = kinds.get(kind, 0) + 1
        return {"linear_weight_types": kinds, "activations": "float (weight-only quantisation)"}


def _torchao_quiet() -> None:
    """torchao logs failed loads of its CUDA-only extensions at import; they are irrelevant on CPU."""
    import logging

    logging.getLogger("torchao").setLevel(logging.ERROR)


@COMPRESSORS.register("weight-int8")
class WeightInt8(_TorchAo):
    """int8 weights, one scale per output channel; float activations."""

    def _config(self) -> Any:
        _torchao_quiet()
        from torchao.quantization import Int8WeightOnlyConfig

        return Int8WeightOnlyConfig()


@COMPRESSORS.register("weight-int4")
class WeightInt4(_TorchAo):
    """int4 weights with one scale per ``group_size`` input weights (stored unpacked, one per byte)."""

    def _config(self) -> Any:
        _torchao_quiet()
        from torchao.quantization import IntxWeightOnlyConfig
        from torchao.quantization.granularity import PerGroup

        return IntxWeightOnlyConfig(weight_dtype=torch.int4, granularity=PerGroup(self.cfg.group_size))

    def _fits(self, module: nn.Module, fqn: str) -> bool:
        # a group must not straddle rows: layers whose width is not a multiple stay float
        return isinstance(module, nn.Linear) and module.in_features % self.cfg.group_size == 0
