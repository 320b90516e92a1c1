"""Regenerate edge/model/_schema_tables.py, the TFLite schema's enum tables (op and tensor type names).

The tables are read from the Python bindings that flatc generated from TFLite's schema.fbs and that
ai-edge-litert ships (``ai_edge_litert/schema_py_generated.py``). The file is parsed, not imported,
so this needs neither flatbuffers nor a working runtime, and no network:

    python tools/gen_schema_tables.py                  # rewrite edge/model/_schema_tables.py
    python tools/gen_schema_tables.py --check          # exit 1 if the committed file differs
    python tools/gen_schema_tables.py --schema PATH    # another schema_py_generated.py (e.g. TF's)

After a runtime upgrade, regenerate and commit: new ops then get their names on the device.
"""

from __future__ import annotations

import argparse
import ast
import importlib.util
import sys
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TARGET = ROOT / "edge" / "model" / "_schema_tables.py"
DIST = "ai-edge-litert"
# (name in the generated file, flatbuffer enum it comes from)
TABLES = (("BUILTIN_OPERATORS", "BuiltinOperator"), ("TENSOR_TYPES", "TensorType"))


def default_schema() -> Path:
    spec = importlib.util.find_spec("ai_edge_litert")  # finds the package without importing it
    if spec is None or not spec.submodule_search_locations:
        sys.exit(f"{DIST} is not installed: pip install {DIST}, or pass --schema PATH")
    return Path(next(iter(spec.submodule_search_locations))) / "schema_py_generated.py"


def enum_members(tree: ast.Module, class_name: str) -> dict[int, str]:
    """``NAME = <int>`` assignments of one generated enum class, by value."""
    for node in tree.body:
        if isinstance(node, ast.ClassDef) and node.name == class_name:
            members: dict[int, str] = {}
            for stmt in node.body:
                if (
                    isinstance(stmt, ast.Assign)
                    and len(stmt.targets) == 1
                    and isinstance(stmt.targets[0], ast.Name)
                    and isinstance(stmt.value, ast.Constant)
                    and type(stmt.value.value) is int
                ):
                    members.setdefault(stmt.value.value, stmt.targets[0].id)
            return dict(sorted(members.items()))
    raise SystemExit(f"no class {class_name} in the schema bindings")


def render(schema: Path, source: str) -> str:
    tree = ast.parse(schema.read_text(encoding="utf-8"))
    out = [
        '"""Enum tables of the TFLite flatbuffer schema.',
        "",
        f"Generated from {source}'s schema_py_generated.py so that the device",
        "can name ops and tensor types without any TFLite runtime installed.",
        "Do not edit: regenerate with tools/gen_schema_tables.py.",
        '"""',
        "",
        "from __future__ import annotations",
    ]
    for name, enum in TABLES:
        out += ["", f"{name}: dict[int, str] = {{"]
        out += [f'    {value}: "{member}",' for value, member in enum_members(tree, enum).items()]
        out.append("}")
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "--schema", type=Path, help="a flatc-generated schema_py_generated.py (default: ai-edge-litert's)"
    )
    p.add_argument("--output", type=Path, default=TARGET, help="file to write (default: %(default)s)")
    p.add_argument("--check", action="store_true", help="do not write: exit 1 if --output differs")
    args = p.parse_args(argv)
    if args.schema is not None:
        text = render(args.schema, args.schema.parent.name)
    else:
        text = render(default_schema(), f"{DIST.replace('-', '_')} {metadata.version(DIST)}")
    if args.check:
        current = args.output.read_text(encoding="utf-8") if args.output.exists() else ""
        if current != text:
            print(f"{args.output} is stale: run python tools/gen_schema_tables.py", file=sys.stderr)
            return 1
        return 0
    args.output.write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
