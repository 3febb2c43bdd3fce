"""OpenAI chat rows: every assistant turn trained unless ``weight: 0``, content parts, developer and tool roles,
tool calls rendered by the chat template, and a loss mask that covers exactly the trained answers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tuneforge.data.readers import read_records
from tuneforge.errors import DataError
from tuneforge.models.loading import load_tokenizer
from tuneforge.recipe import recipe_from_dict
from tuneforge.tasks.base import IGNORE, get_task

#: a Qwen2.5-style ChatML template that knows tools: tool calls as <tool_call> JSON, tool answers as user turns
TOOL_TEMPLATE = (
    "{%- if tools %}<|im_start|>system\nTools: {% for t in tools %}{{ t | tojson }}{% endfor %}<|im_end|>\n{%- endif %}"
    "{%- for m in messages %}"
    "{%- if m.role == 'tool' %}<|im_start|>user\n<tool_response>{{ m.content }}</tool_response><|im_end|>\n"
    "{%- elif m.role == 'assistant' %}<|im_start|>assistant\n{{ m.content }}"
    "{%- for c in m.tool_calls or [] %}<tool_call>{\"name\": \"{{ c.function.name }}\", \"arguments\": "
    "{{ c.function.arguments | tojson }}}</tool_call>{%- endfor %}<|im_end|>\n"
    "{%- else %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{%- endif %}{%- endfor %}"
    "{%- if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def _task_and_examples(tmp_path: Path, tiny_decoder: Path, rows: list[dict], template: str | None = None):
    data = tmp_path / "d.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    recipe = recipe_from_dict({"task": "generation", "model": str(tiny_decoder), "data": {"train": str(data)},
                               "train": {"max_length": 512}})
    tokenizer = load_tokenizer(tiny_decoder)
    if template is not None:
        tokenizer.chat_template = template
    task = get_task(recipe, tokenizer, "decoder")
    return task, task.parse(read_records(data), "the train data")


def _trained_text(task, example) -> list[str]:
    """The decoded runs of labelled tokens: what the model is taught to say."""
    enc = task.encode(example)
    runs, current = [], []
    for token, label in zip(enc.input_ids, enc.labels):
        if label != IGNORE:
            assert label == token
            current.append(token)
        elif current:
            runs, current = [*runs, current], []
    runs += [current] if current else []
    assert enc.n_answer == sum(len(r) for r in runs)
    return [task.tokenizer.decode(r) for r in runs]


def test_every_assistant_turn_is_trained_and_weight_zero_is_not(tmp_path: Path, tiny_decoder: Path) -> None:
    row = {"messages": [{"role": "developer", "content": "Be brief."},
                        {"role": "user", "content": [{"type": "text", "text": "Hi"}, {"type": "text", "text": "there"}]},
                        {"role": "assistant", "content": "Hello", "weight": 0},
                        {"role": "user", "content": "2+2?"},
                        {"role": "assistant", "content": "4"},
                        {"role": "user", "content": "And 3+3?"},
                        {"role": "assistant", "content": [{"type": "text", "text": "6"}]}]}
    task, [ex] = _task_and_examples(tmp_path, tiny_decoder, [row])
    assert ex.target == "6"
    assert ex.messages[0] == {"role": "system", "content": "Be brief."}  # developer is the system role
    assert ex.messages[1]["content"] == "Hi\nthere"
    assert _trained_text(task, ex) == ["4<|im_end|>", "6<|im_end|>"]
    enc = task.encode(ex)
    rendered = task.tokenizer.apply_chat_template(ex.conversation.messages, tokenize=False)
    assert task.tokenizer.decode(enc.input_ids) == rendered.rstrip("\n")  # the template's text, token for token


def test_a_one_answer_row_is_encoded_as_before(tmp_path: Path, tiny_decoder: Path) -> None:
    row = {"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}]}
    task, [ex] = _task_and_examples(tmp_path, tiny_decoder, [row])
    assert ex.conversation is None
    assert _trained_text(task, ex) == ["Hello<|im_end|>"]


def test_tool_calls_are_rendered_by_the_template_and_trained(tmp_path: Path, tiny_decoder: Path) -> None:
    tools = [{"type": "function", "function": {"name": "add", "parameters": {"type": "object"}}}]
    row = {"tools": tools, "messages": [
        {"role": "user", "content": "What is 2+3?"},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "c1", "type": "function", "function": {"name": "add", "arguments": "{\"a\": 2, \"b\": 3}"}}]},
        {"role": "tool", "tool_call_id": "c1", "content": "5"},
        {"role": "assistant", "content": "It is 5."}]}
    task, [ex] = _task_and_examples(tmp_path, tiny_decoder, [row], TOOL_TEMPLATE)
    assert ex.conversation.messages[1]["tool_calls"][0]["function"]["arguments"] == {"a": 2, "b": 3}
    trained = _trained_text(task, ex)
    assert trained == ['<tool_call>{"name": "add", "arguments": {"a": 2, "b": 3}}</tool_call><|im_end|>',
                       "It is 5.<|im_end|>"]
    text = task.tokenizer.decode(task.encode(ex).input_ids)
    assert text.startswith('<|im_start|>system\nTools: {"type": "function"')  # the row's tools reach the template
    assert "<tool_response>5</tool_response>" in text


def test_a_template_without_turn_ends_still_teaches_the_stop_token(tmp_path: Path, tiny_decoder: Path) -> None:
    row = {"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"},
                        {"role": "user", "content": "Bye"}, {"role": "assistant", "content": "Ciao"}]}
    plain = ("{% for m in messages %}{{ m.role }}: {{ m.content }}\n{% endfor %}"
             "{% if add_generation_prompt %}assistant: {% endif %}")
    task, [ex] = _task_and_examples(tmp_path, tiny_decoder, [row], plain)
    assert _trained_text(task, ex) == ["Hello<|im_end|>", "Ciao<|im_end|>"]


@pytest.mark.parametrize(("row", "message"), [
    ({"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b", "weight": 0}]},
     "every assistant message in 'messages' has weight 0"),
    ({"messages": [{"role": "user", "content": "a", "weight": 1}, {"role": "assistant", "content": "b"}]},
     r"messages\[0\]: weight must be 0 or 1, and only on assistant messages"),
    ({"messages": [{"role": "user", "content": [{"type": "image_url"}]}, {"role": "assistant", "content": "b"}]},
     r"messages\[0\]: content must be a string or a list of \{type: text, text\} parts"),
    ({"messages": [{"role": "user", "content": "a"},
                   {"role": "assistant", "content": None, "tool_calls": [{"function": {"name": "f", "arguments": "{"}}]}]},
     r"messages\[1\]: tool_calls must be a list"),
    ({"messages": [{"role": "robot", "content": "a"}, {"role": "assistant", "content": "b"}]},
     r"messages\[0\] must be an object with role in \['assistant', 'developer', 'system', 'tool', 'user'\]"),
])
def test_bad_rows_name_their_problem(tmp_path: Path, tiny_decoder: Path, row: dict, message: str) -> None:
    with pytest.raises(DataError, match=message):
        _task_and_examples(tmp_path, tiny_decoder, [row])
