"""Served feedback joined to the request log by answer id, as pairwise and binary preference rows."""

from __future__ import annotations

from pathlib import Path

import pytest

from tuneforge.data.feedback import feedback_from_log, served_feedback
from tuneforge.errors import DataError, UserError

LOG = [{"id": "a", "inputs": ["q1"], "outputs": ["answer a"]},
       {"id": "b", "inputs": ["q2"], "outputs": ["good b"]},
       {"id": "c", "inputs": ["q2"], "outputs": ["bad c"]},
       {"endpoint": "/v1/feedback", "status": 200}]                  # the feedback requests themselves, no id


def test_pairwise_from_a_preferred_answer_and_from_opposite_ratings_of_one_prompt() -> None:
    fb = [{"id": "a", "rating": "good"}, {"id": "a", "preferred": "better a"},   # the last word on an answer wins
          {"id": "b", "rating": "good"}, {"id": "c", "rating": "bad"}, {"id": "zz", "rating": "bad"}]
    out = served_feedback(LOG, fb, "pairwise")
    assert [(r["prompt"], r["chosen"], r["rejected"]) for r in out.rows] == [
        ("q1", "better a", "answer a"), ("q2", "good b", "bad c")]
    assert out.unmatched == ["zz"] and out.feedback == 4 and out.unused == 1  # c is inside b's pair


def test_binary_rows_and_errors(tmp_path: Path) -> None:
    out = served_feedback(LOG, [{"id": "a", "preferred": "better a"}, {"id": "c", "rating": "bad"}], "binary")
    assert [(r["completion"], r["label"]) for r in out.rows] == [("better a", "good"), ("answer a", "bad"),
                                                                 ("bad c", "bad")]
    with pytest.raises(UserError, match="choose one of"):
        served_feedback(LOG, [], "ranking")
    log = tmp_path / "r.jsonl"
    log.write_text('{"id": "a", "inputs": ["q"], "outputs": ["x"]}\n')
    with pytest.raises(UserError, match="no such file"):
        feedback_from_log(log, tmp_path / "o.jsonl")
    (tmp_path / "r.feedback.jsonl").write_text('{"id": "other", "rating": "good"}\n')
    with pytest.raises(DataError, match="none usable"):
        feedback_from_log(log, tmp_path / "o.jsonl")
