"""edge/model/_schema_tables.py is exactly what tools/gen_schema_tables.py makes from the installed
ai-edge-litert's schema bindings: nobody hand-edited it, and it is not stale for this runtime."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from edge.model import _schema_tables
from tests.support import ROOT


def test_regenerating_gives_the_committed_file_byte_for_byte(tmp_path: Path) -> None:
    out = tmp_path / "_schema_tables.py"
    r = subprocess.run(
        [sys.executable, str(ROOT / "tools" / "gen_schema_tables.py"), "--output", str(out)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 0, r.stderr
    assert out.read_bytes() == (ROOT / "edge" / "model" / "_schema_tables.py").read_bytes()


def test_tables_agree_with_the_runtime_bindings() -> None:
    from ai_edge_litert import schema_py_generated as schema

    assert _schema_tables.BUILTIN_OPERATORS[schema.BuiltinOperator.CONV_2D] == "CONV_2D"
    assert _schema_tables.TENSOR_TYPES[schema.TensorType.INT8] == "INT8"
    assert len(_schema_tables.BUILTIN_OPERATORS) > 200
