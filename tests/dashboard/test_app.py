"""Dashboard widgets without a browser: set a trait, assert what is shown changed."""

from __future__ import annotations

from geomlib.dashboard import ModelBrowser, build_app
from tests.factories.hf import make_checkpoint


def test_default_app_shows_the_demo_model():
    app = build_app()
    assert isinstance(app, ModelBrowser)
    assert app.error == ""
    html = app.facts_html
    assert "llama" in html and ">30<" in html and ">576<" in html
    # quantized demo: labelled, not hidden
    assert "Q4_1" in html and "quantization noise" in html


def test_setting_source_redraws_the_facts(tmp_path):
    path, _ = make_checkpoint(tmp_path, "gpt2", n_layers=2)
    app = ModelBrowser("demo:minilm-l6")
    before = app.facts_html
    assert "bert" in before
    app.source = str(path)
    assert app.facts_html != before
    assert "gpt2" in app.facts_html and ">2<" in app.facts_html
    assert "quantization noise" not in app.facts_html


def test_picker_and_text_box_drive_the_source(tmp_path):
    app = ModelBrowser("demo:smollm2-135m")
    app._picker.value = "demo:minilm-l6"
    assert app.source == "demo:minilm-l6" and "bert" in app.facts_html
    path, _ = make_checkpoint(tmp_path, "phi3", n_layers=2)
    app._path.value = str(path)  # the text box commits on Enter (continuous_update=False)
    assert app.source == str(path) and "phi3" in app.facts_html


def test_bad_source_shows_one_line_and_keeps_the_last_facts():
    app = ModelBrowser("demo:minilm-l6")
    shown = app.facts_html
    app.source = "/definitely/not/here"
    assert "not an existing file" in app.error and "\n" not in app.error
    assert app.facts_html == shown
