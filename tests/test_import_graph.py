"""The layers point one way: nn < config/fileio < data < render < train/metrics < families < cli.

Every import in the project's source is read with ``ast`` (imports inside functions count too:
a lazy import is still a dependency; ``if TYPE_CHECKING:`` blocks do not). The test fails on
an import from a lower layer into a higher one, and on any cycle between modules.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("vidgen", "timelapse")

# (layer, module prefixes); the first matching prefix wins, longest prefixes first.
LAYERS = {
    0: ("vidgen.errors", "vidgen.optional", "vidgen.nn"),
    1: ("vidgen.config", "vidgen.fileio", "vidgen.registry", "vidgen.hostmem",
        "vidgen.safe_pickle", "vidgen"),
    2: ("vidgen.data",),
    3: ("vidgen.render",),
    4: ("vidgen.train", "vidgen.metrics"),
    5: ("vidgen.lvg", "vidgen.diffusion", "vidgen.sg3", "vidgen.stylegan_t", "timelapse"),
    6: ("vidgen.cli", "vidgen.families", "vidgen.__main__", "vidgen.import_cli"),
}
NAMES = {0: "nn", 1: "config/fileio", 2: "data", 3: "render", 4: "train/metrics", 5: "families", 6: "cli"}


def layer(module: str) -> int:
    """A module's layer; every ``cli`` module (and ``__main__``) belongs to the cli layer."""
    last = module.rsplit(".", 1)[-1]
    if last in ("cli", "__main__"):
        return 6
    best, best_len = None, -1
    for level, prefixes in LAYERS.items():
        for p in prefixes:
            if (module == p or module.startswith(p + ".")) and len(p) > best_len:
                best, best_len = level, len(p)
    assert best is not None, module
    return best


def source_modules() -> dict[str, Path]:
    mods = {}
    for pkg in PACKAGES:
        for path in sorted((ROOT / pkg).rglob("*.py")):
            rel = path.relative_to(ROOT).with_suffix("")
            parts = list(rel.parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            mods[".".join(parts)] = path
    return mods


def _is_type_checking(node: ast.If) -> bool:
    t = node.test
    return (isinstance(t, ast.Name) and t.id == "TYPE_CHECKING") or \
        (isinstance(t, ast.Attribute) and t.attr == "TYPE_CHECKING")


def imports_of(module: str, path: Path, known: set[str]) -> set[str]:
    """Project modules imported by ``module`` (resolved to the longest known module name)."""
    tree = ast.parse(path.read_text(), str(path))
    is_pkg = path.name == "__init__.py"
    found: set[str] = set()

    def resolve(name: str) -> str | None:
        while name and name not in known:
            name = name.rpartition(".")[0]
        return name or None

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            for alias in node.names:
                if (m := resolve(alias.name)) is not None:
                    found.add(m)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".") if is_pkg else module.split(".")[:-1]
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            for alias in node.names:
                m = resolve(f"{target}.{alias.name}") if f"{target}.{alias.name}" in known else resolve(target)
                if m is not None:
                    found.add(m)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    found.discard(module)
    # a package's own __init__ is imported by every module in it; that is not a dependency
    return {m for m in found if not module.startswith(m + ".")}


def graph() -> dict[str, set[str]]:
    mods = source_modules()
    known = set(mods)
    return {m: imports_of(m, p, known) for m, p in mods.items()}


def test_no_import_points_up():
    bad = []
    for mod, deps in graph().items():
        for dep in deps:
            if layer(dep) > layer(mod):
                bad.append(f"{mod} ({NAMES[layer(mod)]}) imports {dep} ({NAMES[layer(dep)]})")
    assert not bad, "imports that point up a layer:\n" + "\n".join(sorted(bad))


def test_no_import_cycles():
    g = graph()
    index, low, on_stack, stack, cycles = {}, {}, set(), [], []
    counter = [0]

    def strongconnect(v):  # Tarjan's strongly connected components
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in g.get(v, ()):
            if w not in index:
                strongconnect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                cycles.append(sorted(comp))

    for v in sorted(g):
        if v not in index:
            strongconnect(v)
    assert not cycles, "import cycles:\n" + "\n".join(" <-> ".join(c) for c in cycles)


def test_the_graph_is_read():
    """The checks above see real edges (a parser that found nothing would pass them)."""
    g = graph()
    assert "vidgen.errors" in g["vidgen.config"]
    assert "vidgen.fileio" in g["vidgen.train.checkpoint"]
    assert layer("vidgen.data.cli") == 6 and layer("vidgen.nn.filters") == 0
    assert layer("timelapse.model") == 5 and layer("vidgen.train.engine") == 4
