"""The process's ``malloc``: tcmalloc or jemalloc when the machine has one, chosen once at start-up.

Why: on a CPU, PyTorch's tensors come straight from ``malloc``. A training step allocates and frees
gigabytes in tensors of a few sizes, and glibc's allocator keeps the holes between the activations
saved for backward: in a SmolLM2-135M LoRA step, about 400 MB of its 1.3 GB heap was free but
resident at the peak (measured with ``mallinfo2``). tcmalloc and jemalloc keep size classes apart and
return what they free; in the bench's same-run comparison the peak resident memory fell from 1.91 to
1.52 GB and training ran 11% faster (``bench/RESULTS.md``). PyTorch's own CPU tuning guide and its
``torch.backends.xeon.run_cpu`` launcher recommend the same.

An allocator can only be chosen before the process starts (``LD_PRELOAD``), so the ``tuneforge``
command re-executes itself once with it (:func:`relaunch`), before anything heavy is imported. The
Python API cannot switch the allocator of a running interpreter; ``python -m tuneforge.accel.allocator``
prints the library to preload for a script (``LD_PRELOAD=$(python -m tuneforge.accel.allocator) python x.py``).

``TUNEFORGE_ALLOCATOR`` picks: ``auto`` (default: tcmalloc, else jemalloc, else the system's),
``tcmalloc``, ``jemalloc``, ``system``, or a path to a shared library. An allocator the user already
preloads (``LD_PRELOAD`` naming a ``*malloc*`` library) is kept. Debian and Ubuntu ship the two as
``libtcmalloc-minimal4`` and ``libjemalloc2``; ``scripts/setup.sh`` installs the first where it can.
Linux only: elsewhere the system allocator is kept.
"""

from __future__ import annotations

import functools
import os
import platform
import subprocess
import sys
from pathlib import Path

from tuneforge.errors import ConfigError, TuneforgeError

ENV = "TUNEFORGE_ALLOCATOR"
ACTIVE = "TUNEFORGE_ALLOCATOR_ACTIVE"  # set for the re-executed process: it never re-executes again
CHOICES = ("auto", "tcmalloc", "jemalloc", "system")
LIBRARIES = {"tcmalloc": ("tcmalloc_minimal", "tcmalloc"), "jemalloc": ("jemalloc",)}  # lib<name>.so*, in order
QUIET = {"TCMALLOC_LARGE_ALLOC_REPORT_THRESHOLD": str(1 << 40)}  # tcmalloc reports every allocation over 1 GB


def find_allocator(choice: str | None = None) -> Path | None:
    """The shared library ``choice`` (default: ``$TUNEFORGE_ALLOCATOR`` or ``auto``) names, or None for the
    system's; raises when a named allocator is missing."""
    choice = (choice if choice is not None else os.environ.get(ENV, "auto")).strip() or "auto"
    if choice == "system" or not sys.platform.startswith("linux"):
        return None
    if choice not in CHOICES:
        path = Path(choice).expanduser()
        if not path.is_file():
            raise ConfigError(f"{ENV}={choice}: no such library; give one of {', '.join(CHOICES)} "
                              "or the path of a malloc shared library")
        return path.absolute()
    for name in LIBRARIES if choice == "auto" else (choice,):
        for lib in LIBRARIES[name]:
            found = _search(lib)
            if found is not None:
                return found
    if choice != "auto":
        package = {"tcmalloc": "libtcmalloc-minimal4", "jemalloc": "libjemalloc2"}[choice]
        raise ConfigError(f"{ENV}={choice}, but no lib{LIBRARIES[choice][0]}.so was found; install it "
                          f"(Debian/Ubuntu: apt install {package}) or set {ENV}=auto or system")
    return None


def _search(lib: str) -> Path | None:
    """``lib<lib>.so*`` in this environment's own lib folder (conda, a venv), then the linker's cache."""
    prefixes = [sys.prefix, os.environ.get("CONDA_PREFIX")]
    for folder in dict.fromkeys(Path(p) / "lib" for p in prefixes if p):
        hits = sorted(folder.glob(f"lib{lib}.so*")) if folder.is_dir() else []
        if hits:
            return hits[0]
    return _ldconfig().get(f"lib{lib}")


@functools.lru_cache(maxsize=1)
def _ldconfig() -> dict[str, Path]:
    """Library stem (``libjemalloc``) -> path, from ``ldconfig -p`` (the 64-bit entries of this machine).

    Read once a process: ``auto`` may look up three names, and this runs at every command's start.
    """
    for exe in ("/sbin/ldconfig", "/usr/sbin/ldconfig", "ldconfig"):
        try:
            out = subprocess.run([exe, "-p"], capture_output=True, text=True, timeout=10).stdout
            break
        except (OSError, subprocess.SubprocessError):
            continue
    else:
        return {}
    arch = {"x86_64": "x86-64", "aarch64": "AArch64"}.get(platform.machine(), "")
    found: dict[str, Path] = {}
    for line in out.splitlines():
        entry, _, path = line.strip().partition(" => ")
        name, _, tag = entry.partition(" (")
        if path and arch in tag:
            found.setdefault(name.split(".so")[0], Path(path))
    return found


def loaded_allocator() -> str:
    """``tcmalloc``, ``jemalloc`` (mapped into this process) or ``system``: what a run records."""
    try:
        maps = Path("/proc/self/maps").read_text()
    except OSError:
        return "system"
    for name, libs in LIBRARIES.items():
        if any(f"/lib{lib}.so" in maps for lib in libs):
            return name
    return "system"


def preload_env(choice: str | None = None, env: dict[str, str] | None = None) -> dict[str, str]:
    """``env`` (default: this process's) for a child process that runs with ``choice``'s allocator."""
    env = dict(os.environ if env is None else env)
    lib = find_allocator(choice)
    if lib is None:
        return env
    current = env.get("LD_PRELOAD", "")
    if str(lib) not in current.split(":"):
        env["LD_PRELOAD"] = f"{lib}:{current}" if current else str(lib)
    for key, value in QUIET.items():
        env.setdefault(key, value)
    env[ACTIVE] = str(lib)
    return env


def relaunch() -> None:
    """Re-execute this command with the chosen allocator preloaded, unless it runs with it already.

    Only for the ``tuneforge`` command's own process (``cli.main`` with no argv): a library that
    calls ``cli.main([...])`` keeps its process as it is.
    """
    if os.environ.get(ACTIVE) or not sys.platform.startswith("linux"):
        return
    if "malloc" in os.environ.get("LD_PRELOAD", ""):  # the user preloads an allocator (mimalloc, ...): theirs
        return
    if loaded_allocator() != "system":  # linked in, or preloaded under another name
        return
    lib = find_allocator()
    if lib is None:
        return
    argv = list(getattr(sys, "orig_argv", []) or [sys.executable, *sys.argv])
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, argv, preload_env(str(lib)))


def main() -> int:
    """Print the library ``$TUNEFORGE_ALLOCATOR`` chooses (empty for the system's), for ``LD_PRELOAD``."""
    try:
        lib = find_allocator()
    except TuneforgeError as err:
        print(f"tuneforge: error: {err}", file=sys.stderr)
        return err.exit_code
    print(lib or "")
    return 0


if __name__ == "__main__":
    sys.exit(main())
