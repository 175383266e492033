"""How to install an optional dependency, worded for the way this copy of vivit was installed.

`pip install "vivit[video]"` only works where pip can resolve `vivit` to this package: an installed
distribution (`pip install .`, `pip install -e .`, a wheel). Run from a source checkout on
`PYTHONPATH` there is no distribution, and pip would look for a project named `vivit` on PyPI, which
is not this one (none is published from this repository). So every hint names the dependency
itself (`pip install av`), which is right everywhere, and adds the extra only where it resolves.
"""

from __future__ import annotations

import json
from functools import cache
from importlib import metadata
from pathlib import Path
from urllib.parse import unquote, urlparse

__all__ = ["install_hint", "missing_modules"]

_DISTRIBUTION = "vivit"


@cache
def _installed_as_distribution() -> bool:
    """Whether pip knows *this* vivit (the one imported) as an installed distribution."""
    try:
        dist = metadata.distribution(_DISTRIBUTION)
    except metadata.PackageNotFoundError:
        return False
    package_dir = Path(__file__).resolve().parent
    try:  # PEP 610: how it was installed; an editable install points at its source tree
        direct_url = json.loads(dist.read_text("direct_url.json") or "{}")
    except ValueError:
        direct_url = {}
    url = str(direct_url.get("url", ""))
    if direct_url.get("dir_info", {}).get("editable") and url.startswith("file:"):
        source = Path(unquote(urlparse(url).path)).resolve()
        return source in package_dir.parents
    # A regular install: the distribution's files are the package being run (not a stale other copy).
    return Path(str(dist.locate_file(_DISTRIBUTION))).resolve() == package_dir


def install_hint(requirement: str, extra: str) -> str:
    """The pip command(s) that install an optional dependency of vivit.

    Args:
        requirement: The dependency's own pip name, e.g. `"av"`, `"matplotlib"`.
        extra: The vivit extra that pulls it in, e.g. `"video"` (see pyproject.toml).

    Returns:
        `'pip install av'`, followed by `' (or pip install "vivit[video]")'` when this vivit is an
        installed distribution, where the extra resolves.
    """
    hint = f"pip install {requirement}"
    if _installed_as_distribution():
        hint += f' (or pip install "{_DISTRIBUTION}[{extra}]")'
    return hint


def missing_modules(modules: tuple[str, ...] | list[str]) -> list[str]:
    """The names among `modules` that cannot be imported (each is imported to find out)."""
    missing = []
    for module in modules:
        try:
            __import__(module)
        except ImportError:
            missing.append(module)
    return missing
