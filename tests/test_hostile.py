"""Hostile checkpoint files, loaded in a subprocess capped at 1 GB above its start-up footprint and
30 s per case: every one is refused with a short ValueError naming the file (or, for the CLI cases,
printed safely), never a raw exception, a hang, a memory blow-up or silently accepted garbage.

The cases are built in `tests/hostile.py` (one per way a file can be wrong, grouped by kind) and run
in one child process; `pytest -s` prints each case's time and peak memory.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from hostile import MEMORY_MB, TIMEOUT_S, build_cases, judge, run_cases

pytest.importorskip("msgpack")

pytestmark = [pytest.mark.slow]

_ROOT: list[Path] = []


@pytest.fixture(scope="module")
def hostile(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, dict]:
    root = tmp_path_factory.mktemp("hostile")
    cases = {c["id"]: c for c in build_cases(root / "files")}
    results = run_cases(list(cases.values()), root)
    for case_id, result in results.items():
        print(
            f"{case_id:<34} {result.get('outcome'):<8} {result.get('seconds', '?'):>7} s  {result.get('peak_mb', '?'):>7} MB"
        )
    return cases, results


def _ids() -> list[str]:
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        return [c["id"] for c in build_cases(Path(tmp))]


CASE_IDS = _ids()


@pytest.mark.parametrize("case_id", CASE_IDS)
def test_hostile_file(hostile: tuple[dict, dict], case_id: str) -> None:
    cases, results = hostile
    result = results[case_id]
    assert judge(cases[case_id], result) == []
    assert result["seconds"] < TIMEOUT_S and result["peak_mb"] < MEMORY_MB


def test_every_kind_is_covered() -> None:
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        kinds = {c["kind"] for c in build_cases(Path(tmp))}
    assert kinds == {"bomb", "raw", "silent", "metadata"}
