"""Fault injection on tiny runs: kills (inside checkpoint writes too), damaged checkpoints, a full disk.

Every faulted run is compared with one uninterrupted run of the same recipe: a resume must end on
bit-identical weights and a metrics.jsonl with every step exactly once, or the run must stop with a
message (exit 2), marked failed, with no temporary folder left.

A kill -9 runs no cleanup; it is simulated in-process (fast, seeded) by raising KeyboardInterrupt at
the chosen point and then putting back the half-written ``.tmp-*`` folder exactly as it was on disk
at that moment, which is what a killed process leaves.
"""

from __future__ import annotations

import errno
import json
import random
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from safetensors.torch import load_file

from conftest import base_recipe, product_rows, write_jsonl
from tuneforge import api
from tuneforge.cli import main
from tuneforge.errors import UserError
from tuneforge.run.folder import RunDir
from tuneforge.train import checkpoint, loop

QUIET: dict[str, Any] = {"echo": lambda *_: None}
STEPS, EVERY = 6, 2  # checkpoints at steps 2, 4 and 6


def recipe(train: Path, out: Path, tiny_decoder: Path) -> dict[str, Any]:
    r = base_recipe(tiny_decoder, "extraction", train, out, max_steps=STEPS, eval_every=EVERY, lr=1e-3)
    r["eval"]["base"] = False
    r["data"]["split"] = {"validation": 0.15, "test": 0.1}
    r["train"]["keep_checkpoints"] = 2  # a previous checkpoint to fall back to
    return r


@pytest.fixture(scope="module")
def train_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_jsonl(tmp_path_factory.mktemp("faults-data") / "train.jsonl", product_rows(24))


@pytest.fixture(scope="module")
def straight(tmp_path_factory: pytest.TempPathFactory, train_file: Path, tiny_decoder: Path) -> Path:
    """The uninterrupted run every faulted run must end equal to."""
    out = tmp_path_factory.mktemp("faults-straight") / "run"
    api.train(recipe(train_file, out, tiny_decoder), **QUIET)
    return out


@pytest.fixture()
def make(tmp_path: Path, train_file: Path, tiny_decoder: Path) -> Callable[[], dict[str, Any]]:
    return lambda: recipe(train_file, tmp_path / "run", tiny_decoder)


def weights(run_dir: Path) -> dict[str, torch.Tensor]:
    return load_file(str(run_dir / "model" / "trainable.safetensors"))


def records(run_dir: Path) -> list[dict[str, Any]]:
    return [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]


def assert_same_as_straight(run_dir: Path, straight: Path) -> None:
    """Bit-identical weights; every logged step and validation exactly once, with the uninterrupted values."""
    a, b = weights(straight), weights(run_dir)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    got, want = records(run_dir), records(straight)
    assert [(r["step"], r.get("event")) for r in got] == [(r["step"], r.get("event")) for r in want]
    assert [r.get("loss") for r in got] == [r.get("loss") for r in want]
    assert RunDir(run_dir).is_complete()
    assert not list(run_dir.rglob(".tmp*")), "a temporary file or folder was left behind"


# ----------------------------------------------------------------------------- (a) kills at chosen points
class Killed(KeyboardInterrupt):
    """Stands for a kill -9 (no cleanup runs after it)."""


class Kill:
    """``die(run_dir)`` raises Killed after copying the run's ``.tmp-*`` folders aside; ``leave_as_killed``
    puts them back, so the folder is as a killed process left it, half-written files included."""

    def __init__(self) -> None:
        self.stash: list[tuple[Path, Path]] = []

    def die(self, run_dir: Path) -> None:
        for tmp in (run_dir / "checkpoints").glob(".tmp-*"):
            aside = tmp.with_name("aside" + tmp.name)
            shutil.copytree(tmp, aside)
            self.stash.append((aside, tmp))
        raise Killed

    def leave_as_killed(self) -> None:
        for aside, tmp in self.stash:
            shutil.rmtree(tmp, ignore_errors=True)
            aside.rename(tmp)
        self.stash.clear()


def _kill_points() -> list[tuple[str, int]]:
    """(where, which occurrence): every place in a step and a checkpoint write, at seeded random occurrences."""
    rng = random.Random(18)
    return [("step", rng.randint(2, STEPS)), ("step", rng.randint(2, STEPS)),
            ("trainable half-written", 2), ("optimizer half-written", 2), ("before manifest", rng.randint(1, 3)),
            ("before rename", 2), ("after rename", rng.randint(1, 2))]


@pytest.mark.parametrize(("where", "occurrence"), _kill_points(), ids=lambda v: str(v))
def test_a_kill_anywhere_resumes_to_the_same_weights(make: Callable[[], dict[str, Any]], straight: Path,
                                                      monkeypatch: pytest.MonkeyPatch,
                                                      where: str, occurrence: int) -> None:
    r = make()
    run_dir = Path(r["output"])
    kill, seen = Kill(), {"n": 0}

    def due() -> bool:
        seen["n"] += 1
        return seen["n"] == occurrence

    real_save, real_manifest, real_replace, real_prune = (checkpoint.save_file, checkpoint._write_manifest,
                                                          checkpoint.os.replace, loop.prune_checkpoints)
    real_step = loop._one_step
    if where == "step":
        monkeypatch.setattr(loop, "_one_step", lambda *a, **k: kill.die(run_dir) if due() else real_step(*a, **k))
    elif where.endswith("half-written"):
        name = checkpoint.TRAINABLE if where.startswith("trainable") else checkpoint.OPTIMIZER_TENSORS

        def save(tensors: dict[str, torch.Tensor], path: str) -> None:
            real_save(tensors, path)
            if Path(path).name == name and due():
                data = Path(path).read_bytes()
                Path(path).write_bytes(data[: len(data) // 2])  # the kill came mid-write
                kill.die(run_dir)

        monkeypatch.setattr(checkpoint, "save_file", save)
    elif where == "before manifest":
        monkeypatch.setattr(checkpoint, "_write_manifest",
                            lambda folder: kill.die(run_dir) if due() else real_manifest(folder))
    elif where == "before rename":
        def replace(src: Any, dst: Any) -> None:
            if Path(src).name.startswith(".tmp-step") and due():
                kill.die(run_dir)
            real_replace(src, dst)

        monkeypatch.setattr(checkpoint.os, "replace", replace)
    else:  # the new checkpoint is in place, the old ones not yet pruned
        monkeypatch.setattr(loop, "prune_checkpoints", lambda *a, **k: kill.die(run_dir) if due()
                            else real_prune(*a, **k))

    with pytest.raises(Killed):
        api.train(r, **QUIET)
    monkeypatch.undo()
    kill.leave_as_killed()
    assert not RunDir(run_dir).is_complete()
    api.train(r, resume=True, **QUIET)
    assert_same_as_straight(run_dir, straight)


def test_a_kill_leaves_its_half_written_folder_which_the_resume_removes(
        make: Callable[[], dict[str, Any]], straight: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The simulation is faithful: the killed write's folder is there (as after a kill -9) until the resume."""
    r = make()
    run_dir = Path(r["output"])
    kill, real_manifest = Kill(), checkpoint._write_manifest

    def manifest(folder: Path) -> None:
        if folder.name == ".tmp-step-000004":
            kill.die(run_dir)
        real_manifest(folder)

    monkeypatch.setattr(checkpoint, "_write_manifest", manifest)
    with pytest.raises(Killed):
        api.train(r, **QUIET)
    monkeypatch.undo()
    kill.leave_as_killed()
    assert (run_dir / "checkpoints" / ".tmp-step-000004" / checkpoint.TRAINABLE).is_file()
    assert sorted(p.name for p in (run_dir / "checkpoints").glob("step-*")) == ["step-000002"]
    api.train(r, resume=True, **QUIET)
    assert_same_as_straight(run_dir, straight)


# ----------------------------------------------------------------------------- (b) damaged newest checkpoint
def _killed_in_step(r: dict[str, Any], monkeypatch: pytest.MonkeyPatch, step: int) -> Path:
    """Run ``r`` and kill it during training step ``step``; return its checkpoints folder."""
    real_step, calls = loop._one_step, {"n": 0}

    def dies(*args: Any, **kwargs: Any) -> Any:
        calls["n"] += 1
        if calls["n"] == step:
            raise KeyboardInterrupt
        return real_step(*args, **kwargs)

    with monkeypatch.context() as m:
        m.setattr(loop, "_one_step", dies)
        with pytest.raises(KeyboardInterrupt):
            api.train(r, **QUIET)
    return Path(r["output"]) / "checkpoints"


def _killed_after_step_4(r: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> Path:
    """A run killed in step 5: checkpoints step-2 and step-4, metrics up to step 4."""
    ckpts = _killed_in_step(r, monkeypatch, 5)
    assert sorted(p.name for p in ckpts.glob("step-*")) == ["step-000002", "step-000004"]
    return ckpts


def truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def flip_a_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01  # one bit, the size unchanged: only the hash can tell
    path.write_bytes(bytes(data))


def delete(path: Path) -> None:
    path.unlink()


FILES = [checkpoint.TRAINABLE, checkpoint.OPTIMIZER_TENSORS, checkpoint.OPTIMIZER_JSON, checkpoint.STATE,
         checkpoint.MANIFEST]
DAMAGE = {"truncated": (truncate, "bytes where"), "one bit flipped": (flip_a_byte, "sha256"),
          "deleted": (delete, "missing")}


@pytest.mark.parametrize("damage", list(DAMAGE))
@pytest.mark.parametrize("name", FILES)
def test_b_a_damaged_newest_checkpoint_is_skipped_and_the_previous_one_resumed(
        make: Callable[[], dict[str, Any]], straight: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str], name: str, damage: str) -> None:
    r = make()
    ckpts = _killed_after_step_4(r, monkeypatch)
    spoil, why = DAMAGE[damage]
    spoil(ckpts / "step-000004" / name)

    def no_pickle(*_: Any, **__: Any) -> Any:
        raise AssertionError("torch.load was called: a checkpoint must never be unpickled")

    monkeypatch.setattr(torch, "load", no_pickle)
    capsys.readouterr()
    api.train(r, resume=True, **QUIET)
    out = capsys.readouterr().out
    assert "skipping checkpoint step-000004:" in out and "resuming from step-000002" in out
    skipped = next(line for line in out.splitlines() if "skipping checkpoint" in line)
    if name == checkpoint.MANIFEST:  # damaged, it is unreadable, or a hash in it no longer matches its file
        assert ("manifest.json" in skipped) if damage != "one bit flipped" else ("sha256" in skipped)
    else:
        assert name in skipped and why in skipped
    assert_same_as_straight(Path(r["output"]), straight)


def test_b_a_planted_pickle_is_never_loaded(make: Callable[[], dict[str, Any]], straight: Path,
                                            monkeypatch: pytest.MonkeyPatch,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    """An ``optimizer.pt`` (the old format, or planted) makes its checkpoint unusable, never a torch.load."""
    r = make()
    ckpts = _killed_after_step_4(r, monkeypatch)
    torch.save({"optimizer": {}}, ckpts / "step-000004" / "optimizer.pt")
    monkeypatch.setattr(torch, "load", lambda *a, **k: pytest.fail("torch.load was called"))
    capsys.readouterr()
    api.train(r, resume=True, **QUIET)
    skipped = "skipping checkpoint step-000004: it was written by an older tuneforge (optimizer.pt"
    assert skipped in capsys.readouterr().out
    assert_same_as_straight(Path(r["output"]), straight)


def test_b_no_checkpoint_verifies_is_a_message_with_exit_2(make: Callable[[], dict[str, Any]], tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    r = make()
    ckpts = _killed_after_step_4(r, monkeypatch)
    truncate(ckpts / "step-000004" / checkpoint.TRAINABLE)
    flip_a_byte(ckpts / "step-000002" / checkpoint.OPTIMIZER_TENSORS)
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(r))
    capsys.readouterr()
    assert main(["train", str(path), "--resume"]) == 2
    err = capsys.readouterr().err
    assert "none of its 2 checkpoint(s) verifies" in err and "step-000004: trainable.safetensors has" in err
    assert "step-000002: optimizer.safetensors does not match" in err and "Traceback" not in err


# ----------------------------------------------------------------------------- (c) a full disk, no permission
@pytest.mark.parametrize(("code", "words"), [(errno.ENOSPC, "No space left on device (ENOSPC)"),
                                             (errno.EACCES, "Permission denied (EACCES)")])
@pytest.mark.parametrize("file", [checkpoint.TRAINABLE, checkpoint.OPTIMIZER_TENSORS])
def test_c_a_failed_write_marks_the_run_failed_and_leaves_no_temporary_folder(
        make: Callable[[], dict[str, Any]], straight: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
        capsys: pytest.CaptureFixture[str], code: int, words: str, file: str) -> None:
    r = make()
    run_dir = Path(r["output"])
    real_save, calls = checkpoint.save_file, {"n": 0}

    def disk_fills(tensors: dict[str, torch.Tensor], path: str) -> None:
        if Path(path).name == file and Path(path).parent.name.startswith(".tmp-step"):
            calls["n"] += 1
            if calls["n"] == 2:  # the checkpoint of step 4, part-way through the file
                Path(path).write_bytes(b"\0" * 100)
                raise OSError(code, "simulated")
        real_save(tensors, path)

    monkeypatch.setattr(checkpoint, "save_file", disk_fills)
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(r))
    assert main(["train", str(path)]) == 2
    err = capsys.readouterr().err
    assert f"could not write the checkpoint {run_dir / 'checkpoints' / 'step-000004'}: {words}" in err
    assert "Traceback" not in err
    status = RunDir(run_dir).status()
    assert status["state"] == "failed" and words in status["error"]
    assert not list(run_dir.rglob(".tmp*"))
    assert sorted(p.name for p in (run_dir / "checkpoints").glob("step-*")) == ["step-000002"]
    monkeypatch.undo()
    api.train(r, resume=True, **QUIET)  # space freed: the run continues from step 2
    assert_same_as_straight(run_dir, straight)


def test_c_a_full_disk_while_saving_the_best_weights(make: Callable[[], dict[str, Any]],
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    r = make()
    run_dir = Path(r["output"])
    real_save = checkpoint.save_file

    def disk_fills(tensors: dict[str, torch.Tensor], path: str) -> None:
        if Path(path).parent.name == ".tmp-best":
            raise OSError(errno.ENOSPC, "simulated")
        real_save(tensors, path)

    monkeypatch.setattr(checkpoint, "save_file", disk_fills)
    with pytest.raises(UserError, match=r"checkpoints/best: No space left on device \(ENOSPC\); free some disk"):
        api.train(r, **QUIET)
    assert RunDir(run_dir).status()["state"] == "failed"
    assert not list(run_dir.rglob(".tmp*"))


# ----------------------------------------------------------------------------- (d) the log after a resume
def test_d_a_resume_logs_every_step_once_and_drops_a_half_written_line(
        make: Callable[[], dict[str, Any]], straight: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    r = make()
    ckpts = _killed_after_step_4(r, monkeypatch)
    shutil.rmtree(ckpts / "step-000004")  # resume from step 2: steps 3 and 4 are trained and logged again
    metrics = Path(r["output"]) / "metrics.jsonl"
    with metrics.open("a") as fh:
        fh.write('{"step": 5, "loss": 0.')  # a kill in the middle of an append
    assert [x["step"] for x in records(straight)].count(3) == 1
    api.train(r, resume=True, **QUIET)
    steps = [x["step"] for x in records(Path(r["output"])) if "event" not in x]
    assert steps == list(range(1, STEPS + 1))
    assert_same_as_straight(Path(r["output"]), straight)


def test_d_resume_before_any_checkpoint_starts_the_log_again(make: Callable[[], dict[str, Any]], straight: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    r = make()
    _killed_in_step(r, monkeypatch, 2)
    assert [x["step"] for x in records(Path(r["output"]))] == [1]
    api.train(r, resume=True, **QUIET)
    assert_same_as_straight(Path(r["output"]), straight)


# ----------------------------------------------------------------------------- the pickle-free state format
def test_optimizer_and_scheduler_state_round_trip_exactly_without_pickle() -> None:
    from transformers import get_scheduler

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.LayerNorm(3))
    opt = torch.optim.AdamW([{"params": [model[0].weight], "weight_decay": 0.1},
                             {"params": [*model[0].parameters()][1:] + [*model[1].parameters()], "weight_decay": 0.0}],
                            lr=1e-3)
    sched = get_scheduler("cosine", opt, num_warmup_steps=2, num_training_steps=10)
    for _ in range(3):
        model(torch.randn(5, 4)).pow(2).sum().backward()
        opt.step()
        sched.step()
        opt.zero_grad()
    tensors: dict[str, torch.Tensor] = {}
    saved = {"optimizer": opt.state_dict(), "scheduler": sched.state_dict()}
    text = json.dumps(checkpoint.split_tensors(saved, tensors))
    back = checkpoint.join_tensors(json.loads(text), {k: v.clone() for k, v in tensors.items()})
    assert back["scheduler"] == saved["scheduler"]
    assert back["optimizer"]["param_groups"] == saved["optimizer"]["param_groups"]  # betas come back a tuple
    for i, s in saved["optimizer"]["state"].items():
        assert back["optimizer"]["state"][i].keys() == s.keys()
        assert all(torch.equal(back["optimizer"]["state"][i][k], v) for k, v in s.items())
    with pytest.raises(TypeError, match="without pickle"):
        checkpoint.split_tensors({"fn": object()}, {})


def test_damaged_best_weights_are_refused_with_a_message(tmp_path: Path) -> None:
    run = RunDir(tmp_path / "run")
    checkpoint.save_best(run, {"w": torch.arange(64, dtype=torch.float32)})
    assert torch.equal(checkpoint.load_best(run)["w"], torch.arange(64, dtype=torch.float32))
    flip_a_byte(run.checkpoints / "best" / checkpoint.TRAINABLE)
    with pytest.raises(UserError, match="best weights .* cannot be used: trainable.safetensors does not match"):
        checkpoint.load_best(run)


def test_pruning_drops_skipped_checkpoints_past_the_resumed_step(tmp_path: Path) -> None:
    """Resumed from step 4 past a bad step-6: after step 4 is written again with keep 1, only it is left."""
    run = RunDir(tmp_path / "run")
    for step in (2, 4, 6):
        (run.checkpoints / f"step-{step:06d}").mkdir(parents=True)
    (run.checkpoints / ".tmp-step-000008").mkdir()
    checkpoint.prune_checkpoints(run, keep=1, step=4)
    checkpoint.remove_partial_writes(run)
    assert sorted(p.name for p in run.checkpoints.iterdir()) == ["step-000004"]
