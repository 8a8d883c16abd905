"""The report page's charting library is the version web/charts/package-lock.json locks, and
the copy beside the page (shipped in the wheel) is that package's build."""

from __future__ import annotations

import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
WEB = ROOT / "web"


def test_the_shipped_uplot_is_the_locked_version() -> None:
    lock = json.loads((WEB / "charts" / "package-lock.json").read_text())
    version = lock["packages"]["node_modules/uplot"]["version"]
    assert json.loads((WEB / "charts" / "package.json").read_text())["dependencies"] == {
        "uplot": version
    }
    shipped = (WEB / "uPlot.iife.min.js").read_bytes()
    assert shipped.startswith(f"/*! https://github.com/leeoniya/uPlot (v{version}) */".encode())
    installed = WEB / "charts" / "node_modules" / "uplot" / "dist"
    if installed.is_dir():  # after `make web-deps`: byte for byte what npm installed
        assert shipped == (installed / "uPlot.iife.min.js").read_bytes()
        assert (WEB / "uPlot.min.css").read_bytes() == (installed / "uPlot.min.css").read_bytes()


def test_the_page_loads_only_files_the_wheel_ships() -> None:
    import re
    import tomllib

    page = (WEB / "report.html").read_text()
    shipped = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"][
        "package-data"
    ]["bridge.web"]
    for name in re.findall(r'(?:src|href)="/web/([^"]+)"', page):
        assert (WEB / name).is_file(), name
        assert any(Path(name).match(pattern) for pattern in shipped), name
