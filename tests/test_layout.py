"""The package's layout as the jobs and the command line see it: who may print, who imports whom, what
`import vivit` loads.

* Only the command line's output module writes to the terminal: library code returns, raises, warns
  and logs (an AST scan of every module for print(), sys.stdout, sys.stderr and tqdm).
* The jobs import only the layers below them (data, weights, models, factory, files, version) and
  each other's public names; never the package root or the command line.
* `import vivit` does not import every job: the rest comes on first use, and every documented
  submodule is reachable as an attribute (`vivit.optim.param_groups_layer_decay`, `vivit.features`).
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "vivit"
OUTPUT_MODULE = PACKAGE / "cli" / "console.py"

# Modules of other branches that still draw their own bars: huggingface_hub's download bar in the
# hand-written downloader, which the `weights` branch replaces with huggingface_hub's own download.
# Remove an entry once its module is clean: the test then keeps it clean.
KNOWN_ELSEWHERE = {"weights/hub.py": {"tqdm"}}

JOBS = ("predict", "features", "evaluate", "explain", "render", "info", "workers", "distributed")
# What a job may import from vivit: the layers below it, the leaf modules, and the other jobs.
JOB_MAY_IMPORT = ("vivit.data", "vivit.weights", "vivit.models", "vivit.factory", "vivit.files", "vivit.version")
JOB_MAY_IMPORT += ("vivit._install",) + tuple(f"vivit.{job}" for job in (*JOBS, "export", "optimize"))


def _writes_to_terminal(tree: ast.AST) -> list[str]:
    """Every print() call, sys.stdout / sys.stderr use and tqdm import or use, as `line: what`."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "print":
            found.append(f"{node.lineno}: print")
        elif (
            isinstance(node, ast.Attribute)
            and node.attr in ("stdout", "stderr", "__stdout__", "__stderr__")
            and isinstance(node.value, ast.Name)
            and node.value.id == "sys"
        ):
            found.append(f"{node.lineno}: sys.{node.attr}")
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names = [a.name for a in node.names] + [getattr(node, "module", None) or ""]
            if any(name == "tqdm" or name.startswith("tqdm.") or name.endswith(".tqdm") for name in names):
                found.append(f"{node.lineno}: tqdm")
    return found


def test_only_the_output_module_writes_to_the_terminal():
    offenders = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        if path == OUTPUT_MODULE:
            continue
        found = _writes_to_terminal(ast.parse(path.read_text(encoding="utf-8")))
        relative = str(path.relative_to(PACKAGE))
        allowed = KNOWN_ELSEWHERE.get(relative, set())
        found = [f for f in found if f.split(": ", 1)[1] not in allowed]
        if found:
            offenders[relative] = found
    assert not offenders, f"library code writes to the terminal (only vivit/cli/console.py may): {offenders}"
    assert _writes_to_terminal(ast.parse(OUTPUT_MODULE.read_text(encoding="utf-8")))  # the scan sees it there


def test_the_scan_sees_every_way_of_writing():
    source = "import sys\nfrom tqdm import tqdm\nprint('x')\nsys.stderr.write('y')\nsys.stdout.flush()\n"
    assert [f.split(": ")[1] for f in _writes_to_terminal(ast.parse(source))] == [
        "tqdm",
        "print",
        "sys.stderr",
        "sys.stdout",
    ]


def _imports(path: Path) -> set[str]:
    """The vivit modules `path` imports (relative imports resolved), deferred ones included."""
    module = ".".join(path.relative_to(ROOT).with_suffix("").parts)
    package = module.split(".")[:-1]  # the jobs are modules, not packages
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target == "vivit" or target.startswith("vivit."):
                # `from . import render` names a module: count the module, not the package root
                names = [f"{target}.{a.name}" for a in node.names] if not node.module else [target]
                found.update(names)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name == "vivit" or a.name.startswith("vivit."))
    return found


@pytest.mark.parametrize("job", JOBS)
def test_jobs_import_only_the_layers_below_them(job):
    imported = _imports(PACKAGE / f"{job}.py")
    upward = sorted(m for m in imported if not m.startswith(JOB_MAY_IMPORT))
    assert not upward, f"vivit/{job}.py imports {upward} (the package root, the command line or an unknown layer)"


def test_no_private_name_is_imported_from_another_module_of_mine():
    """`features` took `_iter_views`, `_sum_over_views`, `_window_and_stride` from `predict`: now public."""
    for job in JOBS:
        tree = ast.parse((PACKAGE / f"{job}.py").read_text(encoding="utf-8"))
        private = [
            f"{node.module}.{a.name}"
            for node in ast.walk(tree)
            if isinstance(node, ast.ImportFrom) and (node.level or (node.module or "").startswith("vivit"))
            for a in node.names
            if a.name.startswith("_") and not a.name.startswith("__")
        ]
        assert not private, (job, private)


_PROBE = """
import json, sys
import vivit
loaded = sorted(m for m in sys.modules if m.startswith("vivit"))
attributes = {name: type(getattr(vivit, name)).__name__ for name in sys.argv[1:]}
print(json.dumps({"loaded": loaded, "attributes": attributes, "layer_decay": callable(vivit.optim.param_groups_layer_decay)}))
"""


@pytest.mark.slow
def test_import_vivit_loads_no_job_it_does_not_need_and_reaches_every_documented_submodule(tmp_path):
    documented = ["optim", "features", "evaluate", "distributed", "explain", "export", "data", "weights", "models"]
    names = ["attention_maps", "export_onnx", "optimize_for_inference", "push_to_hub", "create_model", "predict_views"]
    done = subprocess.run(
        [sys.executable, "-c", _PROBE, *documented, *names],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=300,
        check=True,
    )
    result = json.loads(done.stdout)
    heavy = {"vivit.features", "vivit.evaluate", "vivit.explain", "vivit.export", "vivit.render", "vivit.optimize"}
    assert not heavy & set(result["loaded"]), result["loaded"]
    assert "vivit.cli" not in result["loaded"]
    assert result["layer_decay"]  # the README's `vivit.optim.param_groups_layer_decay(...)` after `import vivit`
    assert all(result["attributes"][name] == "module" for name in documented), result["attributes"]
    assert all(result["attributes"][name] == "function" for name in names), result["attributes"]


def test_unknown_attribute_is_still_an_attribute_error():
    import vivit

    with pytest.raises(AttributeError, match="has no attribute 'no_such_thing'"):
        vivit.no_such_thing  # noqa: B018
    assert {"features", "optim", "attention_maps"} <= set(dir(vivit))
