from pathlib import Path

import pytest

from tuneforge.errors import ConfigError
import yaml

from tuneforge.methods.lora import LoraMethod
from tuneforge.recipe import load_recipe, parse_overrides, recipe_from_dict

MINIMAL = """\
task: classification
model: minilm-l6
method: {{name: full}}
data:
  train: {train}
  text_field: text
  label_field: label
train: {{epochs: 3, lr: 1.0e-4, batch_size: 32, seed: 0}}
output: runs/my-run
"""


def write(tmp_path: Path, text: str) -> Path:
    (tmp_path / "train.jsonl").write_text('{"text": "a", "label": "x"}\n')
    path = tmp_path / "recipe.yaml"
    path.write_text(text)
    return path


def test_minimal_recipe_from_the_issue_validates(tmp_path: Path) -> None:
    recipe = load_recipe(write(tmp_path, MINIMAL.format(train="train.jsonl")))
    assert recipe.task == "classification" and recipe.train.epochs == 3 and recipe.method.name == "full"
    assert recipe.data.train == (tmp_path / "train.jsonl").resolve()  # found beside the recipe


def test_unknown_key_names_its_path_and_file(tmp_path: Path) -> None:
    path = write(tmp_path, MINIMAL.format(train="train.jsonl").replace("lr:", "learning_rate:"))
    with pytest.raises(ConfigError) as err:
        load_recipe(path)
    assert str(path) in str(err.value) and "train.learning_rate: unknown key" in str(err.value)


def test_wrong_type_names_its_path(tmp_path: Path) -> None:
    path = write(tmp_path, MINIMAL.format(train="train.jsonl").replace("batch_size: 32", "batch_size: lots"))
    with pytest.raises(ConfigError, match="train.batch_size"):
        load_recipe(path)


def test_missing_data_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="data.train: file not found: nope.jsonl"):
        load_recipe(write(tmp_path, MINIMAL.format(train="nope.jsonl")))


def test_method_keys_live_with_their_method(tmp_path: Path) -> None:
    text = MINIMAL.format(train="train.jsonl").replace("{name: full}", "{name: lora, r: 4, alpha: 8}")
    recipe = load_recipe(write(tmp_path, text))
    assert isinstance(recipe.method, LoraMethod) and recipe.method.r == 4
    with pytest.raises(ConfigError, match="method.full.r"):
        load_recipe(write(tmp_path, MINIMAL.format(train="train.jsonl").replace("{name: full}", "{name: full, r: 4}")))


def test_overrides_merge_into_the_recipe(tmp_path: Path) -> None:
    recipe = load_recipe(write(tmp_path, MINIMAL.format(train="train.jsonl")), ["train.lr=0.5", "method.name=lora"])
    assert recipe.train.lr == 0.5 and recipe.method.name == "lora"
    assert parse_overrides(["a.b.c=[1, 2]"]) == {"a": {"b": {"c": [1, 2]}}}


def test_bad_yaml_reports_the_line(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"recipe.yaml:\d+: not valid YAML"):
        load_recipe(write(tmp_path, "task: classification\nmodel: [unclosed\n"))


@pytest.mark.parametrize("path", sorted((Path(__file__).parents[2] / "examples").glob("*.yaml")), ids=lambda p: p.name)
def test_every_example_recipe_is_valid(path: Path) -> None:
    """Structure only: the data they point at (../shared) may be absent on a fresh clone."""
    raw = yaml.safe_load(path.read_text())
    if "model" not in raw:
        pytest.skip("not a recipe (a sweep search space)")
    recipe = recipe_from_dict(raw, source=str(path), check_files=False)
    assert recipe.output
