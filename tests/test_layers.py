"""The package reads top-down: every import of a lwbench module, at the top of a file or inside a function,
points to the same part or a lower layer (the layers are named in lwbench/grid/__init__.py)."""
import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "lwbench"
LAYERS = [  # bottom to top; the parts of one layer do not import each other
    ["files", "options", "openmp"], ["logs", "config", "budget", "environment"], ["data", "kernels", "records"],
    ["plugin", "evaluate"], ["registry"], ["methods", "training", "profile"], ["reports"], ["studies"], ["grid"],
    ["tuning"], ["cli"], ["__main__"],
]
RANK = {part: rank for rank, parts in enumerate(LAYERS) for part in parts}


def part_of(module: str) -> str:
    """``lwbench.grid.plan`` -> ``grid``; the package itself (``lwbench``) is nobody's part."""
    pieces = module.split(".")
    return pieces[1] if len(pieces) > 1 else "lwbench"


def imports(path: Path) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "lwbench":
            found += [f"lwbench.{alias.name}" for alias in node.names] if node.module == "lwbench" else [node.module]
        elif isinstance(node, ast.Import):
            found += [alias.name for alias in node.names if alias.name.split(".")[0] == "lwbench"]
    return found


def test_every_part_has_a_layer():
    parts = {p.stem if p.is_file() else p.name for p in PACKAGE.iterdir()
             if (p.suffix == ".py" or (p / "__init__.py").exists()) and p.stem != "__init__"}
    assert parts == set(RANK), parts ^ set(RANK)


def test_no_import_runs_back_up():
    upward = []
    for path in PACKAGE.rglob("*.py"):
        source = part_of(".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts))
        if source == "__init__":
            continue
        for target in map(part_of, imports(path)):
            if target not in (source, "lwbench", "__init__") and RANK[target] >= RANK[source]:
                upward.append(f"{path.relative_to(PACKAGE.parent)} imports lwbench.{target}")
    assert not upward, "\n".join(sorted(set(upward)))
