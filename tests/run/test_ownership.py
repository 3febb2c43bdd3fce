"""Ownership of folders and durable writes: tuneforge deletes, replaces or resumes only what it wrote.

Every deletion case runs in a ``tmp_path`` sandbox: the home folder is monkeypatched onto a sandbox
folder, the current folder is a sandbox folder, and the filesystem root is only ever asked about
(``claim_output`` / ``remove_owned`` decide and raise; ``shutil.rmtree`` is replaced by a tripwire
so that a wrong decision fails the test instead of deleting anything).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import base_recipe, sentiment_rows, write_jsonl
from tuneforge import api
from tuneforge.cli import main
from tuneforge.run.compress import compress
from tuneforge.errors import UserError
from tuneforge.run.folder import MARKER, RunDir, claim_output, owned_kind, remove_owned
from tuneforge.run.pipeline import save_model
from tuneforge.files import save_tensors_atomic, write_json_atomic, write_jsonl_atomic, write_text_atomic

QUIET = {"echo": lambda *_: None}


def _user_folder(path: Path) -> Path:
    """A folder holding a user's own files, one of them in a subfolder."""
    (path / "notes").mkdir(parents=True)
    (path / "thesis.tex").write_text("years of work")
    (path / "notes" / "todo.txt").write_text("back up")
    return path


def _intact(path: Path) -> bool:
    return (path / "thesis.tex").read_text() == "years of work" and (path / "notes" / "todo.txt").is_file()


def _recipe(tmp_path: Path, tiny_encoder: Path, out: Path | str) -> dict[str, Any]:
    train = tmp_path / "train.jsonl"
    if not train.is_file():
        write_jsonl(train, sentiment_rows(20))
    recipe = base_recipe(tiny_encoder, "classification", train, Path(out), max_steps=2)
    recipe["output"] = str(out)  # as written, so "." and "/" stay as the user typed them
    return recipe


@pytest.fixture()
def tripwire(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Fail loudly instead of deleting: for the cases where a wrong decision would remove a real folder."""
    calls: list[str] = []

    def refuse(path: Any, *args: Any, **kwargs: Any) -> None:
        calls.append(str(path))
        raise AssertionError(f"rmtree({path}) was called")

    monkeypatch.setattr(shutil, "rmtree", refuse)
    return calls


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory: pytest.TempPathFactory, tiny_encoder: Path) -> Path:
    """One tiny finished classification run, shared (read-only) by the tests that need a source run."""
    root = tmp_path_factory.mktemp("finished")
    api.train(_recipe(root, tiny_encoder, root / "run"), **QUIET)
    return root / "run"


# ----------------------------------------------------------------------------- train --overwrite / --resume
def test_overwrite_refuses_a_folder_of_user_files_and_leaves_them(tmp_path: Path, tiny_encoder: Path) -> None:
    user = _user_folder(tmp_path / "mine")
    with pytest.raises(UserError, match="did not write.*--overwrite will not delete it") as err:
        api.train(_recipe(tmp_path, tiny_encoder, user), overwrite=True, **QUIET)
    assert "pick a new or empty folder" in str(err.value)
    assert _intact(user) and sorted(p.name for p in user.iterdir()) == ["notes", "thesis.tex"]


def test_output_dot_is_refused_even_with_overwrite(tmp_path: Path, tiny_encoder: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    work = _user_folder(tmp_path / "work")
    recipe = _recipe(tmp_path, tiny_encoder, ".")
    monkeypatch.chdir(work)
    (work / "recipe.yaml").write_text(yaml.safe_dump(recipe))
    assert main(["train", "recipe.yaml", "--overwrite"]) == 2
    assert _intact(work) and (work / "recipe.yaml").is_file()
    with pytest.raises(UserError, match="it is the current folder"):
        api.train(recipe, overwrite=True, resume=True, **QUIET)


def test_an_ancestor_of_the_current_folder_is_refused(tmp_path: Path, tiny_encoder: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    inner = tmp_path / "project" / "deep"
    inner.mkdir(parents=True)
    monkeypatch.chdir(inner)
    with pytest.raises(UserError, match="it holds the current folder"):
        api.train(_recipe(tmp_path, tiny_encoder, tmp_path / "project"), overwrite=True, **QUIET)
    assert inner.is_dir()


def test_the_home_folder_is_refused(tmp_path: Path, tiny_encoder: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    home = _user_folder(tmp_path / "home" / "alice")
    monkeypatch.setattr(Path, "home", classmethod(lambda cls: home))
    with pytest.raises(UserError, match="it is your home folder"):
        api.train(_recipe(tmp_path, tiny_encoder, home), overwrite=True, **QUIET)
    with pytest.raises(UserError, match="it holds your home folder"):
        claim_output(home.parent, kind="run", overwrite=True)
    with pytest.raises(UserError, match="home folder"):
        remove_owned(home, "run")
    assert _intact(home)


def test_the_filesystem_root_is_refused_and_overwrite_is_not_advised(tripwire: list[str]) -> None:
    for flags in ({}, {"overwrite": True}, {"resume": True}, {"overwrite": True, "resume": True}):
        with pytest.raises(UserError, match="root of the filesystem") as err:
            claim_output(Path("/"), kind="run", **flags)
        assert "--overwrite" not in str(err.value)
    for kind in ("run", "export", "compressed", "sweep"):
        with pytest.raises(UserError, match="root of the filesystem"):
            remove_owned(Path("/"), kind)  # type: ignore[arg-type]
    assert tripwire == []


def test_train_into_the_root_stops_before_any_work(tmp_path: Path, tiny_encoder: Path, tripwire: list[str]) -> None:
    with pytest.raises(UserError, match="root of the filesystem") as err:
        api.train(_recipe(tmp_path, tiny_encoder, "/"), overwrite=True, **QUIET)
    assert "--overwrite" not in str(err.value) and tripwire == []


def test_resume_into_a_folder_that_is_not_a_run_is_refused(tmp_path: Path, tiny_encoder: Path) -> None:
    user = _user_folder(tmp_path / "mine")
    with pytest.raises(UserError, match="did not write.*nothing to resume"):
        api.train(_recipe(tmp_path, tiny_encoder, user), resume=True, **QUIET)
    assert _intact(user) and not (user / "metrics.jsonl").exists() and not (user / MARKER).exists()


def test_overwrite_replaces_a_real_finished_run(tmp_path: Path, tiny_encoder: Path) -> None:
    recipe = _recipe(tmp_path, tiny_encoder, tmp_path / "run")
    api.train(recipe, **QUIET)
    run = RunDir(tmp_path / "run")
    assert owned_kind(run.root) == "run" and json.loads((run.root / MARKER).read_text())["kind"] == "run"
    with pytest.raises(UserError, match="already holds a finished run"):
        api.train(recipe, **QUIET)
    (run.root / MARKER).unlink()  # a run written before the marker existed is still recognised
    (run.root / "stale.txt").write_text("from the old run")
    api.train(recipe, overwrite=True, **QUIET)
    assert run.is_complete() and (run.root / MARKER).is_file() and not (run.root / "stale.txt").exists()


def test_an_empty_existing_folder_may_be_used(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    assert claim_output(tmp_path / "empty", kind="run") == "new"
    assert claim_output(tmp_path / "absent" / "run", kind="run", resume=True) == "new"


def test_a_file_as_output_is_a_user_error(tmp_path: Path, tiny_encoder: Path) -> None:
    (tmp_path / "out.txt").write_text("keep")
    with pytest.raises(UserError, match="out.txt is a file, not a folder"):
        api.train(_recipe(tmp_path, tiny_encoder, tmp_path / "out.txt"), overwrite=True, **QUIET)
    with pytest.raises(UserError, match="which is a file"):
        api.train(_recipe(tmp_path, tiny_encoder, tmp_path / "out.txt" / "run"), **QUIET)
    assert (tmp_path / "out.txt").read_text() == "keep"


NAMES = ["status.json", "recipe.yaml", "report.json", "tuneforge.json", "data.csv", MARKER, "model"]


@settings(max_examples=40, deadline=None, derandomize=True)
@given(st.dictionaries(st.sampled_from(NAMES), st.sampled_from(['{"state": "complete"}', '{"kind": "run"}',
                                                                 "not json", '{"task": "x", "base_model": "m"}']),
                       min_size=1))
def test_only_a_folder_with_a_runs_files_or_marker_is_ever_replaced(files: dict[str, str]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "out"
        folder.mkdir()
        for name, text in files.items():
            (folder / name).write_text(text)
        # a marker without created_by is not one tuneforge wrote; a run written before markers has both files
        legacy = files.get("status.json") == '{"state": "complete"}' and "recipe.yaml" in files
        if legacy:
            assert claim_output(folder, kind="run", overwrite=True) == "replace"
            remove_owned(folder, "run")
            assert not folder.exists()
        else:
            with pytest.raises(UserError):
                claim_output(folder, kind="run", overwrite=True)
            with pytest.raises(UserError):
                remove_owned(folder, "run")
            assert {p.name: p.read_text() for p in folder.iterdir()} == files


def test_remove_owned_deletes_only_its_own_kind_and_never_through_a_link(tmp_path: Path) -> None:
    user = _user_folder(tmp_path / "mine")
    with pytest.raises(UserError, match="did not write"):
        remove_owned(user, "run")
    export = tmp_path / "export"
    write_json_atomic(export / "tuneforge.json", {"task": "classification", "base_model": "m"})
    with pytest.raises(UserError, match="holds a tuneforge export, not a tuneforge run"):
        remove_owned(export, "run")
    link = tmp_path / "link"
    link.symlink_to(export, target_is_directory=True)
    with pytest.raises(UserError, match="symbolic link"):
        remove_owned(link, "export")
    assert _intact(user) and export.is_dir()
    remove_owned(export, "export")
    assert not export.exists()


def test_demo_refuses_a_folder_of_user_files(tmp_path: Path) -> None:
    from tuneforge.run.demo import run_demo

    user = _user_folder(tmp_path / "mine")
    with pytest.raises(UserError, match="did not write"):
        run_demo(user, overwrite=True)
    assert _intact(user)


def test_stages_refuse_a_folder_of_user_files(tmp_path: Path, tiny_encoder: Path) -> None:
    from tuneforge.run.stages import start_composed
    from tuneforge.recipe import recipe_from_dict

    user = _user_folder(tmp_path / "mine")
    recipe = recipe_from_dict(_recipe(tmp_path, tiny_encoder, user))
    for flags in ({"overwrite": True, "resume": False}, {"overwrite": False, "resume": True}):
        with pytest.raises(UserError, match="did not write"):
            start_composed(RunDir(user), recipe, **flags)
    assert _intact(user) and not (user / "status.json").exists()


def test_sweep_refuses_a_folder_of_user_files(tmp_path: Path, tiny_encoder: Path) -> None:
    from tuneforge.run.sweep import sweep

    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(yaml.safe_dump(_recipe(tmp_path, tiny_encoder, tmp_path / "run")))
    space = tmp_path / "space.yaml"
    space.write_text(yaml.safe_dump({"metric": "loss", "params": {"train.lr": {"type": "categorical",
                                                                              "choices": [1e-3]}}}))
    user = _user_folder(tmp_path / "mine")
    with pytest.raises(UserError, match="did not write"):
        sweep(recipe, space, trials=1, output=user, **QUIET)
    assert _intact(user) and not (user / "study.db").exists()
    assert claim_output(tmp_path / "new-sweep", kind="sweep", resume=True) == "new"


# ----------------------------------------------------------------------------- export and compress
def test_export_refuses_a_user_folder_and_replaces_an_earlier_export(finished_run: Path, tmp_path: Path) -> None:
    user = _user_folder(tmp_path / "mine")
    with pytest.raises(UserError, match="did not write.*--overwrite will not delete it"):
        api.export(finished_run, user, overwrite=True)
    assert _intact(user)
    with pytest.raises(UserError, match="holds a tuneforge run, not a tuneforge export"):
        api.export(finished_run, finished_run, overwrite=True)
    out = api.export(finished_run, tmp_path / "hf")
    (out / "extra.txt").write_text("left by the old export")
    with pytest.raises(UserError, match="already holds an export; pass --overwrite"):
        api.export(finished_run, out)
    api.export(finished_run, out, overwrite=True)
    assert (out / "tuneforge.json").is_file() and not (out / "extra.txt").exists()
    assert not (tmp_path / ".hf.tmp").exists()


def test_a_failed_export_leaves_no_temporary_folder(finished_run: Path, tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    import tuneforge.deploy.export as hf_export

    def disk_full(*_: Any, **__: Any) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(hf_export, "write_model_card", disk_full)  # the model card is the export's last file
    with pytest.raises(OSError, match="No space left"):
        api.export(finished_run, tmp_path / "hf")
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_compress_refuses_a_user_folder_even_with_overwrite(finished_run: Path, tmp_path: Path) -> None:
    user = _user_folder(tmp_path / "mine")
    with pytest.raises(UserError, match="did not write"):
        compress(finished_run, {"method": "int8-dynamic"}, user, overwrite=True, **QUIET)
    assert _intact(user)
    with pytest.raises(UserError, match="root of the filesystem"):
        claim_output(Path("/"), kind="compressed", overwrite=True)


# ----------------------------------------------------------------------------- temporary folders, links, fsync
def test_a_failed_model_save_leaves_no_temporary_folder(tmp_path: Path) -> None:
    class Method:
        def trainable_state(self, model: Any) -> dict[str, torch.Tensor]:
            return {"w": torch.arange(4.0)}

        def save_extra(self, model: Any, folder: Path) -> None:
            raise OSError(28, "No space left on device")

    class Tokenizer:
        def save_pretrained(self, folder: Path) -> None:
            (Path(folder) / "tokenizer.json").write_text("{}")

    run = RunDir(tmp_path / "run")
    run.root.mkdir()
    with pytest.raises(OSError, match="No space left"):
        save_model(run, Method(), None, Tokenizer(), None)  # type: ignore[arg-type]
    assert not (run.root / ".model.tmp").exists() and not run.model.exists()


def test_a_symlinked_metrics_log_is_refused(tmp_path: Path) -> None:
    victim = tmp_path / "victim.txt"
    victim.write_text("untouched\n")
    run = RunDir(tmp_path / "run")
    run.root.mkdir()
    run.metrics.symlink_to(victim)
    with pytest.raises(UserError, match="metrics.jsonl is a symbolic link"):
        run.log({"step": 1, "loss": 1.0})
    assert victim.read_text() == "untouched\n"
    run.metrics.unlink()
    run.log({"step": 1, "loss": 1.0})
    assert json.loads(run.metrics.read_text()) == {"step": 1, "loss": 1.0}


def test_atomic_writes_fsync_the_file_and_its_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    synced: list[str] = []
    real = os.fsync

    def counting(fd: int) -> None:
        synced.append("dir" if os.path.isdir(f"/proc/self/fd/{fd}") else "file")
        real(fd)

    monkeypatch.setattr(os, "fsync", counting)
    writes = [lambda: write_text_atomic(tmp_path / "a.txt", "a"),
              lambda: write_json_atomic(tmp_path / "b.json", {"b": 1}),
              lambda: write_jsonl_atomic(tmp_path / "c.jsonl", [{"c": 1}]),
              lambda: save_tensors_atomic(tmp_path / "d.safetensors", {"d": torch.ones(2)}),
              lambda: RunDir(tmp_path).set_status("complete")]
    for write in writes:
        synced.clear()
        write()
        assert synced.count("file") == 1 and synced.count("dir") == 1, synced
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt", "b.json", "c.jsonl", "d.safetensors",
                                                          "status.json"]  # no temporary file left


def test_a_failed_tensor_write_leaves_no_temporary_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def disk_full(tensors: Any, path: str, **_: Any) -> None:
        Path(path).write_bytes(b"half")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("safetensors.torch.save_file", disk_full)  # files.py imports it when it writes
    with pytest.raises(OSError, match="No space left"):
        save_tensors_atomic(tmp_path / "w.safetensors", {"w": torch.ones(2)})
    assert list(tmp_path.iterdir()) == []
