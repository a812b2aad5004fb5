"""The layers' import rules (docs/architecture.md), checked on the source: every `import` and
`from … import`, at the top of a module or inside a function, of every module of each package.
And `rig --version` / `rig --help` load none of the heavy modules: the commands import their code
only when they run."""

from __future__ import annotations

import ast
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
OURS = ("hardware", "rig", "recorder", "policy", "tui")
SHARED = ("rig.step",)  # the shared module: records and contracts, importing nothing of ours
STORE_READING = (
    "recorder.store",
    "recorder.reader",
    "recorder.steps",
    "recorder.video",
    "recorder.catalogue",
)


def imports_of(path: Path) -> set[str]:
    """The modules of ours that `path` imports, anywhere in it."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
    return {name for name in found if name.split(".")[0] in OURS}


def modules(package: str) -> list[Path]:
    return sorted((ROOT / package).rglob("*.py"))


def under(name: str, *prefixes: str) -> bool:
    return any(name == prefix or name.startswith(prefix + ".") for prefix in prefixes)


def broken(paths: list[Path], allowed: Callable[[Path, str], bool]) -> list[str]:
    return [
        f"{path.relative_to(ROOT)} imports {name}"
        for path in paths
        for name in sorted(imports_of(path))
        if not allowed(path, name)
    ]


def test_hardware_imports_nothing_of_ours() -> None:
    assert broken(modules("hardware"), lambda _, name: under(name, "hardware")) == []


def test_recorder_imports_only_itself_hardware_and_the_shared_module() -> None:
    def allowed(_: Path, name: str) -> bool:
        return under(name, "recorder", "hardware") or name in SHARED

    assert broken(modules("recorder"), allowed) == []


def test_policy_imports_only_the_shared_module_and_the_stores_reading_side() -> None:
    bench = {"recorder.recorder", "recorder.bench"}  # bench_autonomy records what it measures

    def allowed(path: Path, name: str) -> bool:
        if under(name, "policy") or name in SHARED or name in STORE_READING:
            return True
        return path.name == "bench_autonomy.py" and name in bench

    assert broken(modules("policy"), allowed) == []


def test_the_rig_core_never_imports_the_policy_the_recorder_or_the_faces() -> None:
    core = [p for p in modules("rig") if p.parent == ROOT / "rig" and p.name != "cli.py"]

    def allowed(_: Path, name: str) -> bool:
        return under(name, "hardware", "rig") and not under(name, "rig.app", "rig.commands", "rig.cli")

    assert broken(core, allowed) == []


def test_the_app_layer_serves_both_faces_and_imports_neither() -> None:
    def allowed(_: Path, name: str) -> bool:
        return not under(name, "tui", "rig.commands", "rig.cli")

    assert broken(modules("rig/app"), allowed) == []


def test_the_terminal_app_uses_the_app_layer_not_the_commands() -> None:
    entry = ROOT / "tui" / "__main__.py"  # `python -m tui` is `rig tui`: the entry point itself

    def allowed(path: Path, name: str) -> bool:
        return path == entry or not under(name, "rig.commands", "rig.cli")

    assert broken(modules("tui"), allowed) == []


HEAVY = ("torch", "recorder", "policy", "av", "sqlite3", "pyarrow", "mujoco", "zmq", "textual")


@pytest.mark.parametrize("flag", ["--version", "--help"])
def test_version_and_help_load_no_heavy_module(flag: str) -> None:
    script = (
        "import contextlib, io, sys\n"
        "from rig.cli import main\n"
        "with contextlib.redirect_stdout(io.StringIO()), contextlib.suppress(SystemExit):\n"
        f"    main([{flag!r}])\n"
        f"print(sorted(m for m in {HEAVY!r} if m in sys.modules))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
