"""The SQLite run catalogue: runs register themselves, tags, promotion history, comparison."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from deploy_fixtures import cls_run, ext_run, quiet  # noqa: F401  (fixtures)
from tuneforge.cli import main
from tuneforge.errors import UserError
from tuneforge.run.catalogue import RunRegistry, default_path


def copy_run(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def test_finished_runs_register_themselves_in_the_configured_catalogue(cls_run: Path) -> None:
    entry = RunRegistry().get(str(cls_run))
    path = default_path()
    assert path is not None and Path.home() / ".local" not in path.parents  # tests never touch the user's catalogue
    assert entry.task == "classification" and entry.state == "complete" and entry.method == "full"
    assert set(entry.headline()) == {"accuracy", "macro_f1"}


def test_registry_can_be_switched_off(monkeypatch: pytest.MonkeyPatch, cls_run: Path) -> None:
    from tuneforge.run.catalogue import register_finished_run

    monkeypatch.setenv("TUNEFORGE_REGISTRY", "off")
    assert default_path() is None and register_finished_run(cls_run) is None
    with pytest.raises(UserError, match="switched off"):
        RunRegistry()


def test_add_is_idempotent_and_tags_filter_the_list(cls_run: Path, tmp_path: Path) -> None:
    reg = RunRegistry(tmp_path / "r.sqlite")
    a = reg.add(cls_run)
    assert reg.add(cls_run).id == a.id and len(reg.list()) == 1
    reg.tag(str(a.id), ["baseline", "snips"])
    assert reg.get(str(a.id)).tags == ["baseline", "snips"]
    reg.tag(str(a.id), ["snips"], remove=True)
    assert [e.id for e in reg.list(tag="baseline")] == [a.id] and reg.list(tag="snips") == []
    assert reg.list(task="generation") == []


def test_promotion_records_what_it_replaced_and_keeps_history(cls_run: Path, tmp_path: Path) -> None:
    reg = RunRegistry(tmp_path / "r.sqlite")
    first = reg.add(cls_run)
    second = reg.add(copy_run(cls_run, tmp_path / "second"))
    assert reg.promote(str(first.id), "sentiment")["replaced"] is None
    promo = reg.promote(str(second.id), "sentiment", note="better")
    assert promo["replaced"] == first.id
    assert [h["run_id"] for h in reg.history("sentiment")] == [first.id, second.id]
    assert reg.production("sentiment").id == second.id
    assert reg.get(str(second.id)).production == ["sentiment"] and reg.get(str(first.id)).production == []
    with pytest.raises(UserError, match="already in production"):
        reg.promote(str(second.id), "sentiment")


def test_unfinished_runs_cannot_be_promoted_and_refs_must_be_unique(cls_run: Path, tmp_path: Path) -> None:
    reg = RunRegistry(tmp_path / "r.sqlite")
    broken = copy_run(cls_run, tmp_path / "a" / "run")
    (broken / "status.json").write_text('{"state": "failed"}')
    entry = reg.add(broken)
    with pytest.raises(UserError, match="not complete"):
        reg.promote(str(entry.id), "x")
    reg.add(copy_run(cls_run, tmp_path / "b" / "run"))
    with pytest.raises(UserError, match="several runs"):
        reg.get("run")
    with pytest.raises(UserError, match="no run"):
        reg.get("999")
    with pytest.raises(UserError, match="not a tuneforge run"):
        reg.add(tmp_path)


def test_compare_flags_runs_scored_on_different_test_splits(cls_run: Path, ext_run: Path, tmp_path: Path) -> None:
    reg = RunRegistry(tmp_path / "r.sqlite")
    a, b, c = reg.add(cls_run), reg.add(copy_run(cls_run, tmp_path / "b")), reg.add(ext_run)
    same = reg.compare([str(a.id), str(b.id)])
    assert same["same_test_split"] and same["metrics"] == ["accuracy", "macro_f1"]
    assert not reg.compare([str(a.id), str(c.id)])["same_test_split"]


def test_cli_runs_commands(cls_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = str(tmp_path / "cli.sqlite")
    second = copy_run(cls_run, tmp_path / "second")
    assert main(["runs", "--db", db, "add", str(cls_run), str(second)]) == 0
    assert main(["runs", "--db", db, "promote", "1", "--name", "sentiment"]) == 0
    assert main(["runs", "--db", db, "promote", "2", "--name", "sentiment"]) == 0
    assert "replaced run 1" in capsys.readouterr().out
    assert main(["runs", "--db", db, "tag", "2", "prod-candidate"]) == 0
    assert main(["runs", "--db", db, "list"]) == 0
    listing = capsys.readouterr().out
    assert "prod-candidate" in listing and "sentiment" in listing and "accuracy=" in listing
    assert main(["runs", "--db", db, "compare", "1", "2"]) == 0 and "accuracy" in capsys.readouterr().out
    assert main(["runs", "--db", db, "show", "2"]) == 0 and '"sentiment"' in capsys.readouterr().out
    assert main(["runs", "--db", db, "history", "sentiment"]) == 0
    assert main(["runs", "--db", db, "show", "nope"]) == 2


def test_compressed_folders_are_catalogued_with_their_compression(cls_run: Path, tmp_path: Path) -> None:
    from tuneforge.run.compress import compress

    out = compress(cls_run, {"method": "int8-dynamic"}, tmp_path / "int8", echo=quiet).out_dir
    entry = RunRegistry().get(str(out))
    assert entry.compression == "int8-dynamic" and entry.summary["compression"]["size_bytes"]["ratio"] < 1
    assert entry.summary["base_is"] == "the uncompressed tuned model"
