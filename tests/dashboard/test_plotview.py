"""The plot view's script ships with the package and is what the widget sends to the page."""

from __future__ import annotations

import importlib.resources

from geomlib.dashboard.plotview import PlotView
from tests.factories.packaging import carried


def test_the_script_is_package_data_and_the_widgets_module():
    script = importlib.resources.files("geomlib.dashboard").joinpath("plotview.js")
    assert script.is_file() and carried("dashboard/plotview.js")  # a wheel carries it
    text = script.read_text(encoding="utf-8")
    assert PlotView._esm == text and "export default" in text and "drawInTurn" in text
