"""The package's shape: no import cycles (deferred imports included), small modules."""

import ast
from pathlib import Path

import transferkit

PACKAGE = Path(transferkit.__file__).parent
MAX_LINES = 400


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path, modules: set[str]) -> set[str]:
    """The transferkit modules `path` imports, at the top or inside a function."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from . import x
                base = ".".join(package.split(".")[:len(package.split(".")) - node.level + 1]
                                + ([base] if base else []))
            for alias in node.names:  # `from transferkit import layout` imports a module
                full = f"{base}.{alias.name}"
                found.add(full if full in modules else base)
    return {m for m in found if m in modules and m != name}


def test_no_import_cycles_deferred_imports_included():
    files = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph = {name: imports(path, set(files)) for name, path in files.items()}
    state: dict[str, str] = {}

    def visit(node: str, trail: list[str]) -> None:
        state[node] = "open"
        for nxt in sorted(graph[node]):
            assert state.get(nxt) != "open", f"import cycle: {' -> '.join(trail + [nxt])}"
            if nxt not in state:
                visit(nxt, trail + [nxt])
        state[node] = "done"

    for name in sorted(graph):
        if name not in state:
            visit(name, [name])


def test_no_module_is_over_400_lines():
    long = {str(p.relative_to(PACKAGE)): n for p in PACKAGE.rglob("*.py")
            if (n := len(p.read_text(encoding="utf-8").splitlines())) > MAX_LINES}
    assert long == {}, f"split these modules (one idea each): {long}"


def test_the_cycle_check_finds_a_cycle(tmp_path, monkeypatch):
    """The check above can fail: two modules importing each other are caught."""
    (tmp_path / "transferkit").mkdir()
    (tmp_path / "transferkit" / "__init__.py").write_text("")
    (tmp_path / "transferkit" / "a.py").write_text("def f():\n    from transferkit.b import g\n")
    (tmp_path / "transferkit" / "b.py").write_text("from transferkit import a\n")
    monkeypatch.setattr(__import__(__name__), "PACKAGE", tmp_path / "transferkit")
    try:
        test_no_import_cycles_deferred_imports_included()
    except AssertionError as e:
        assert "transferkit.a -> transferkit.b -> transferkit.a" in str(e)
    else:
        raise AssertionError("the cycle a -> b -> a was not found")
