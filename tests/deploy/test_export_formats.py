"""GGUF and ONNX exports load back in independent readers and agree with the PyTorch model."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from deploy_fixtures import cls_run, ext_run, quiet  # noqa: F401  (fixtures)
from tuneforge import api
from tuneforge.cli import main
from tuneforge.errors import UserError
from tuneforge.deploy.formats import permute_qk


def test_permute_qk_is_undone_by_transformers_gguf_loader() -> None:
    from transformers.modeling_gguf_pytorch_utils import LlamaTensorProcessor

    w = np.arange(8 * 4 * 3, dtype=np.float32).reshape(8 * 4, 3)  # 8 heads of dim 4
    back = LlamaTensorProcessor()._reverse_permute_weights(permute_qk(w, 8), 8, 8)
    assert np.array_equal(back, w) and not np.array_equal(permute_qk(w, 8), w)


@pytest.mark.parametrize(("gguf_type", "atol"), [("f32", 1e-5), ("f16", 1e-2), ("q8_0", 5e-2)])
def test_gguf_export_loads_back_in_transformers_with_the_same_logits(gguf_type: str, atol: float, ext_run: Path,
                                                                     tmp_path: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out = api.export(ext_run, tmp_path / "g", format="gguf", gguf_type=gguf_type)
    name = f"model-{gguf_type}.gguf"
    back = AutoModelForCausalLM.from_pretrained(out, gguf_file=name, dtype=torch.float32).eval()
    tokenizer = AutoTokenizer.from_pretrained(out, gguf_file=name)
    loaded = api.load_run(ext_run)
    merged = loaded.method.merge(loaded.model).eval()
    text = "<|im_start|>user\nAcme red mug size 2<|im_end|>\n<|im_start|>assistant\n"
    ids = loaded.task.tokenizer(text, add_special_tokens=False, return_tensors="pt")["input_ids"]
    assert tokenizer(text, add_special_tokens=False)["input_ids"] == ids[0].tolist()
    with torch.no_grad():
        ref, got = merged(input_ids=ids).logits, back(input_ids=ids).logits  # (1, T, V)
    assert torch.allclose(ref, got, atol=atol)
    assert torch.equal(ref.argmax(-1), got.argmax(-1))
    check = json.loads((out / "export_check.json").read_text())
    assert check["passed"] and check["gguf_type"] == gguf_type
    assert (out / "MODEL_CARD.md").is_file() and json.loads((out / "tuneforge.json").read_text())["format"] == "gguf"


def test_q8_0_file_is_smaller_than_f16_which_is_smaller_than_f32(ext_run: Path, tmp_path: Path) -> None:
    sizes = {t: (api.export(ext_run, tmp_path / t, format="gguf", gguf_type=t) / f"model-{t}.gguf").stat().st_size
             for t in ("f32", "f16", "q8_0")}
    assert sizes["q8_0"] < sizes["f16"] < sizes["f32"]


def test_onnx_export_agrees_with_pytorch_in_onnxruntime(cls_run: Path, tmp_path: Path) -> None:
    import onnxruntime as ort

    out = api.export(cls_run, tmp_path / "o", format="onnx")
    session = ort.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"])
    loaded = api.load_run(cls_run)
    texts = ["the red lamp is great", "a much longer text about a broken blue lamp that is awful", "x"]
    batch = loaded.task.tokenizer(texts, padding=True, return_tensors="pt")  # new batch size and length
    meta = json.loads((out / "tuneforge.json").read_text())
    got = session.run(["logits"], {n: batch[n].numpy() for n in meta["inputs"]})[0]
    with torch.no_grad():
        ref = loaded.model(**{n: batch[n] for n in meta["inputs"]}).logits.numpy()
    assert np.allclose(ref, got, atol=1e-4)
    assert json.loads((out / "export_check.json").read_text())["passed"]


def test_formats_refuse_the_wrong_kind_of_run(cls_run: Path, ext_run: Path, tmp_path: Path) -> None:
    with pytest.raises(UserError, match="decoder"):
        api.export(cls_run, tmp_path / "a", format="gguf")
    with pytest.raises(UserError, match="classif"):
        api.export(ext_run, tmp_path / "b", format="onnx")
    assert main(["export", str(cls_run), "-o", str(tmp_path / "c"), "--format", "gguf"]) == 2


def test_quantised_compressed_folder_is_not_exported_as_float(cls_run: Path, tmp_path: Path) -> None:
    from tuneforge.run.compress import compress

    out = compress(cls_run, {"method": "int8-dynamic"}, tmp_path / "c", echo=quiet).out_dir
    for fmt in ("hf", "onnx"):
        with pytest.raises(UserError, match="quantised"):
            api.export(out, tmp_path / f"e-{fmt}", format=fmt)


def test_hf_export_carries_the_model_card(cls_run: Path, tmp_path: Path) -> None:
    out = api.export(cls_run, tmp_path / "hf")
    assert (out / "MODEL_CARD.md").read_text() == (cls_run / "MODEL_CARD.md").read_text()


def test_a_gguf_that_does_not_reproduce_the_model_is_refused(ext_run: Path, tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    import tuneforge.deploy.formats as ef

    monkeypatch.setattr(ef, "permute_qk", lambda w, n: w)  # forget llama.cpp's rotary row order
    with pytest.raises(UserError, match="does not reproduce"):
        api.export(ext_run, tmp_path / "g", format="gguf", gguf_type="f32")
    assert not (tmp_path / "g").exists()
    check = json.loads((tmp_path / ".g.tmp" / "export_check.json").read_text())
    assert not check["passed"] and check["relative_diff"] > 1e-5
