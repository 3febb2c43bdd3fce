"""The malloc the ``tuneforge`` command starts with: found, preloaded once, recorded, and refused clearly."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tuneforge import cli
from tuneforge.accel import allocator
from tuneforge.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]
LDCONFIG = """\t3 libs found in cache `/etc/ld.so.cache'
\tlibtcmalloc_minimal.so.4 (libc6,x86-64) => /lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4
\tlibjemalloc.so.2 (libc6) => /lib/i386-linux-gnu/libjemalloc.so.2
\tlibjemalloc.so.2 (libc6,x86-64) => /lib/x86_64-linux-gnu/libjemalloc.so.2
"""
REPORT = ("from tuneforge.accel import allocator; import os; "
          "print(allocator.loaded_allocator(), os.environ.get('{}', '-'))")


def _fake_search(monkeypatch: pytest.MonkeyPatch, present: dict[str, str]) -> None:
    monkeypatch.setattr(allocator, "_search", lambda lib: Path(present[lib]) if lib in present else None)


def _child(env: dict[str, str], code: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), **env}
    env.pop(allocator.ACTIVE, None)
    env.pop("LD_PRELOAD", None)
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60)


def test_auto_prefers_tcmalloc_then_jemalloc_then_the_system(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "platform", "linux")
    _fake_search(monkeypatch, {"jemalloc": "/x/libjemalloc.so.2", "tcmalloc_minimal": "/x/libtcmalloc_minimal.so.4"})
    assert allocator.find_allocator("auto") == Path("/x/libtcmalloc_minimal.so.4")
    assert allocator.find_allocator("jemalloc") == Path("/x/libjemalloc.so.2")
    _fake_search(monkeypatch, {"jemalloc": "/x/libjemalloc.so.2"})
    assert allocator.find_allocator("auto") == Path("/x/libjemalloc.so.2")
    _fake_search(monkeypatch, {})
    assert allocator.find_allocator("auto") is None
    assert allocator.find_allocator("system") is None


def test_a_named_allocator_that_is_missing_is_a_config_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(sys, "platform", "linux")
    _fake_search(monkeypatch, {})
    with pytest.raises(ConfigError, match="apt install libtcmalloc-minimal4"):
        allocator.find_allocator("tcmalloc")
    with pytest.raises(ConfigError, match=f"{allocator.ENV}=.*no such library"):
        allocator.find_allocator(str(tmp_path / "libnothing.so"))
    lib = tmp_path / "libmine.so"
    lib.write_bytes(b"")
    assert allocator.find_allocator(str(lib)) == lib.absolute()
    monkeypatch.setenv(allocator.ENV, "system")
    assert allocator.find_allocator() is None


def test_ldconfig_entries_of_this_architecture_only(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(allocator.platform, "machine", lambda: "x86_64")
    monkeypatch.setattr(allocator.subprocess, "run",
                        lambda *a, **k: subprocess.CompletedProcess(a, 0, stdout=LDCONFIG, stderr=""))
    allocator._ldconfig.cache_clear()  # read once a process: this test's output, not the machine's
    found = allocator._ldconfig()
    allocator._ldconfig.cache_clear()
    assert found == {"libtcmalloc_minimal": Path("/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4"),
                     "libjemalloc": Path("/lib/x86_64-linux-gnu/libjemalloc.so.2")}


def test_preload_env_prepends_once_and_marks_the_child(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    lib = tmp_path / "libtcmalloc_minimal.so.4"
    lib.write_bytes(b"")
    monkeypatch.setattr(sys, "platform", "linux")
    env = allocator.preload_env(str(lib), {"LD_PRELOAD": "/other.so"})
    assert env["LD_PRELOAD"] == f"{lib.absolute()}:/other.so"
    assert env[allocator.ACTIVE] == str(lib.absolute())
    assert env["TCMALLOC_LARGE_ALLOC_REPORT_THRESHOLD"] == str(1 << 40)
    assert allocator.preload_env(str(lib), env)["LD_PRELOAD"] == env["LD_PRELOAD"]
    assert allocator.preload_env("system", {"A": "1"}) == {"A": "1"}


def test_cli_main_with_arguments_never_reexecutes(monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    def refuse(*args, **kwargs):
        raise AssertionError("cli.main([...]) re-executed the interpreter")

    monkeypatch.setattr(os, "execve", refuse)
    monkeypatch.delenv(allocator.ACTIVE, raising=False)
    assert cli.main(["schema"]) == 0
    assert '"properties"' in capsys.readouterr().out


@pytest.mark.skipif(allocator.find_allocator("auto") is None, reason="no tcmalloc or jemalloc on this machine")
def test_relaunch_starts_the_process_again_with_the_allocator_loaded() -> None:
    code = "from tuneforge.accel import allocator; allocator.relaunch(); " + REPORT.format(allocator.ACTIVE)
    done = _child({allocator.ENV: "auto"}, code)
    name, active = done.stdout.split()
    assert done.returncode == 0, done.stderr
    assert name in ("tcmalloc", "jemalloc")
    assert active == str(allocator.find_allocator("auto"))
    done = _child({allocator.ENV: "system"}, code)
    assert done.stdout.split() == ["system", "-"]


def test_an_allocator_the_user_preloads_is_left_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args, **kwargs):
        raise AssertionError("re-executed over the user's LD_PRELOAD")

    monkeypatch.setattr(sys, "platform", "linux")
    monkeypatch.delenv(allocator.ACTIVE, raising=False)
    monkeypatch.setenv("LD_PRELOAD", "/opt/lib/libmimalloc.so.2")
    monkeypatch.setattr(os, "execve", refuse)
    _fake_search(monkeypatch, {"tcmalloc_minimal": "/x/libtcmalloc_minimal.so.4"})
    allocator.relaunch()  # returns: mimalloc stays the process's allocator


def test_the_command_refuses_an_unknown_allocator_with_exit_2() -> None:
    done = _child({allocator.ENV: "/no/such/libmalloc.so"}, "import sys; from tuneforge.cli import main; "
                  "sys.argv = ['tuneforge', 'models']; sys.exit(main())")
    assert done.returncode == 2
    assert "TUNEFORGE_ALLOCATOR=/no/such/libmalloc.so: no such library" in done.stderr
