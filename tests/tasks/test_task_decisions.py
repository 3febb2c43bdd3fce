"""Each task's own decisions, asked of the task itself: placeholder inputs, request layouts, served answers,
the stratify key, distillation targets and what the model card says. Nothing outside tasks/ names a task."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from transformers import PreTrainedTokenizerBase

from conftest import write_jsonl
from tuneforge.data.readers import Record
from tuneforge.errors import ConfigError, DataError, UserError
from tuneforge.models.loading import load_tokenizer
from tuneforge.recipe import recipe_from_dict
from tuneforge.serve.schemas import task_response_model
from tuneforge.tasks import TASKS, Example, Task, get_task
from tuneforge.tasks.base import last_user_message
from tuneforge.tasks.classification import Classified
from tuneforge.tasks.extraction import Extracted


@pytest.fixture(scope="module")
def tok(tiny_decoder: Path) -> PreTrainedTokenizerBase:
    return load_tokenizer(tiny_decoder)


def make_task(tok: PreTrainedTokenizerBase, tmp_path: Path, task: str, **sections: Any) -> Task:
    train = write_jsonl(tmp_path / "train.jsonl", [{"text": "x"}])
    recipe = recipe_from_dict({"task": task, "model": "tiny", "method": {"name": "full"},
                               "data": {"train": str(train), **sections.pop("data", {})}, **sections})
    return get_task(recipe, tok, "decoder")


def rows(*fields: dict[str, Any]) -> list[Record]:
    return [Record(source="request", line=i + 1, fields=f) for i, f in enumerate(fields)]


def classifier(tok: PreTrainedTokenizerBase, tmp_path: Path) -> Task:
    task = make_task(tok, tmp_path, "classification")
    task.fit_schema([Example("a", "good", "pos"), Example("b", "bad", "neg")])
    return task


# ----------------------------------------------------------------------------- inputs to predict on
def test_classification_predicts_with_its_first_label_as_placeholder(tok: PreTrainedTokenizerBase,
                                                                     tmp_path: Path) -> None:
    task = classifier(tok, tmp_path)
    [example] = task.parse_for_prediction(rows({"text": "fine"}), "the request")
    assert example.text == "fine" and example.target == task.schema["labels"][0]
    with pytest.raises(DataError, match="1 bad row.*nothing was predicted"):
        task.parse_for_prediction(rows({"text": "  "}), "the request")


def test_extraction_predicts_with_an_empty_object_as_placeholder(tok: PreTrainedTokenizerBase, tmp_path: Path) -> None:
    task = make_task(tok, tmp_path, "extraction")
    [example] = task.parse_for_prediction(rows({"text": "Acme red mug"}), "input.jsonl")
    assert example.text == "Acme red mug" and example.target == {}


def test_generation_fills_the_missing_answer_of_each_layout(tok: PreTrainedTokenizerBase, tmp_path: Path) -> None:
    task = make_task(tok, tmp_path, "generation", data={"format": "prompt_completion"})
    [plain] = task.parse_for_prediction(rows({"prompt": "say hi"}), "x")
    assert plain.messages[-1] == {"role": "user", "content": "say hi"} and plain.target == "-"
    chat = make_task(tok, tmp_path, "generation", data={"format": "messages"})
    [conv] = chat.parse_for_prediction(rows({"messages": [{"role": "user", "content": "say hi"}]}), "x")
    assert conv.messages == [{"role": "user", "content": "say hi"}] and conv.target == "-"
    alpaca = make_task(tok, tmp_path, "generation", data={"format": "alpaca"})
    [inst] = alpaca.parse_for_prediction(rows({"instruction": "say hi"}), "x")
    assert inst.text == "say hi" and inst.target == "-"


def test_language_modeling_reads_the_text_alone(tok: PreTrainedTokenizerBase, tmp_path: Path) -> None:
    task = make_task(tok, tmp_path, "language_modeling")
    [doc] = task.parse_for_prediction(rows({"text": "some domain text"}), "x")
    assert doc.text == "some domain text" and doc.target is None
    with pytest.raises(DataError, match="nothing was predicted"):
        task.parse_for_prediction(rows({"other": 1}), "x")


def test_rl_predicts_on_its_inner_tasks_rows(tok: PreTrainedTokenizerBase, tmp_path: Path) -> None:
    task = make_task(tok, tmp_path, "rl", rl={"task": "extraction", "beta": 0})
    [example] = task.parse_for_prediction(rows({"text": "Acme red mug"}), "x")
    assert example.target == {}
    assert task.input_fields("t") == {"text": "t"}


def test_preference_scores_a_prompt_and_completion(tok: PreTrainedTokenizerBase, tmp_path: Path) -> None:
    task = make_task(tok, tmp_path, "preference", preference={"loss": "simpo"})
    [example] = task.parse_for_prediction(rows({"prompt": "q", "completion": "a"}), "x")
    assert example.target.responses == ["a"] and example.target.kind == "single"


# ----------------------------------------------------------------------------- requests and served answers
def test_request_layouts_follow_the_training_rows(tok: PreTrainedTokenizerBase, tmp_path: Path) -> None:
    chat = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "first"},
            {"role": "assistant", "content": "ok"}, {"role": "user", "content": "second"}]
    cls = classifier(tok, tmp_path)
    assert cls.input_fields("t") == {"text": "t"} and cls.chat_fields(chat) == {"text": "second"}
    messages = make_task(tok, tmp_path, "generation", data={"format": "messages"})
    assert messages.input_fields("t") == {"messages": [{"role": "user", "content": "t"}]}
    assert messages.chat_fields(chat) == {"messages": chat}
    alpaca = make_task(tok, tmp_path, "generation", data={"format": "alpaca"})
    assert alpaca.input_fields("t") == {"instruction": "t"} and alpaca.chat_fields(chat) == {"instruction": "second"}
    plain = make_task(tok, tmp_path, "generation", data={"format": "prompt_completion"})
    assert plain.input_fields("t") == {"prompt": "t"}
    with pytest.raises(UserError, match="at least one non-empty user message"):
        last_user_message([{"role": "user", "content": " "}])


def test_only_classification_answers_with_a_label_on_its_own_route(tok: PreTrainedTokenizerBase,
                                                                   tmp_path: Path) -> None:
    cls = classifier(tok, tmp_path)
    pred = {"prediction": "pos", "confidence": 0.9, "probabilities": {"pos": 0.9, "neg": 0.1}}
    assert cls.predicts_labels and cls.serve_route == "/v1/classify" and cls.answer_text(pred) == "pos"
    assert Classified(**cls.serve_result(pred)).label == "pos"
    response = task_response_model(cls.serve_route, Classified)
    assert response.__name__ == "ClassifyResponse"
    assert response(model="m", results=[cls.serve_result(pred)]).model_dump()["results"][0]["confidence"] == 0.9
    assert [name for name in TASKS.names() if TASKS.get(name).predicts_labels] == ["classification"]


def test_extraction_serves_its_object_and_answers_with_the_raw_json(tok: PreTrainedTokenizerBase,
                                                                    tmp_path: Path) -> None:
    task = make_task(tok, tmp_path, "extraction")
    pred = {"prediction": {"colour": "red"}, "raw": '{"colour": "red"}'}
    assert task.serve_route == "/v1/extract" and task.answer_text(pred) == '{"colour": "red"}'
    assert Extracted(**task.serve_result(pred)).fields == {"colour": "red"}
    generation = make_task(tok, tmp_path, "generation")
    assert generation.serve_route is None and generation.answer_text({"prediction": "hi"}) == "hi"


# ----------------------------------------------------------------------------- splitting and distillation
def test_classification_stratifies_by_label_and_others_do_not(tok: PreTrainedTokenizerBase, tmp_path: Path) -> None:
    key = classifier(tok, tmp_path).stratify_key()
    assert key is not None and key(Record(source="s", line=1, fields={"text": "t", "label": 1})) == "1"
    assert make_task(tok, tmp_path, "generation").stratify_key() is None


def test_distillation_targets(tok: PreTrainedTokenizerBase, tmp_path: Path) -> None:
    cls = classifier(tok, tmp_path)
    examples = [Example("a", "good", "pos")]
    kept, soft = cls.distill_targets(examples, [{"prediction": "neg", "probabilities": {"pos": 0.25, "neg": 0.75}}])
    assert kept == examples and soft == [[0.75, 0.25]]  # in the order of the labels: neg, pos
    other = classifier(tok, tmp_path)
    other.schema = {"labels": ["a", "b"]}
    with pytest.raises(ConfigError, match="teacher's labels"):
        cls.check_teacher(other)
    gen = make_task(tok, tmp_path, "generation")
    pairs = [Example("a", "q1", "ref1"), Example("b", "q2", "ref2")]
    relabelled, none = gen.distill_targets(pairs, [{"prediction": "teacher1"}, {"prediction": None}])
    assert [e.target for e in relabelled] == ["teacher1", "ref2"] and none is None
    with pytest.raises(ConfigError, match="raw text, not from a teacher"):
        make_task(tok, tmp_path, "language_modeling").check_distill()


# ----------------------------------------------------------------------------- the model card
def test_model_card_decisions() -> None:
    cls, ext, gen = TASKS.get("classification"), TASKS.get("extraction"), TASKS.get("generation")
    assert "2 labels (`a`, `b`)" in cls.card_purpose({"labels": ["a", "b"]}) and cls.slice_noun == "classes"
    assert "`brand`" in ext.card_purpose({"fields": ["brand"]}) and ext.slice_noun == "fields"
    data = {"label_field": "label", "target_field": "attributes"}
    assert cls.reference_field(data) == "label" and ext.reference_field(data) == "attributes"
    assert gen.reference_field(data) is None and TASKS.get("language_modeling").reference_field(data) is None
    assert cls.is_wrong(1, "2") and not cls.is_wrong(1, "1")
    assert ext.is_wrong({"a": 1}, None) and not ext.is_wrong({"a": "x"}, {"a": " X "})
    assert TASKS.get("rl").answers_task({"task": "rl", "rl": {"task": "generation"}}) is gen
    assert TASKS.get("rl").answers_task({"task": "rl", "rl": None}) is ext  # rl.task's default
    assert cls.answers_task({"task": "classification"}) is cls
