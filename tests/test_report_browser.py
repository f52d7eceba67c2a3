"""The report renders in a real browser: headless Chromium, offline, every plot drawn, no errors.

Chromium (Debian package `chromium`) is installed with apt-get when missing (as root); the
tests skip with a clear message only where it cannot be installed.
"""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from test_report import CONFIGS, ENVIRONMENT, make_results, report_outputs

FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-extensions",
    "--hide-scrollbars", "--mute-audio",
    # offline: every host name fails to resolve, so any network use would show as an error
    "--host-resolver-rules=MAP * ~NOTFOUND",
    "--enable-logging=stderr", "--v=0",
]

# injected into a copy of the report: records errors and, once loaded, each image's state
PROBE = """<script>
window.__errors = [];
window.addEventListener('error', function (e) {
  var t = e.target || {};
  window.__errors.push(t.tagName ? ('failed to load ' + t.tagName + ' ' + (t.src || t.href || '')) : ('error: ' + e.message));
}, true);
['error', 'warn'].forEach(function (level) {
  var orig = console[level];
  console[level] = function () { window.__errors.push('console.' + level + ': ' + Array.from(arguments).join(' ')); orig.apply(console, arguments); };
});
window.addEventListener('load', function () {
  var imgs = Array.from(document.images).map(function (img) {
    return {plot: img.dataset.plot, complete: img.complete, w: img.naturalWidth, h: img.naturalHeight,
            shown_w: img.getBoundingClientRect().width};
  });
  var out = document.createElement('pre');
  out.id = 'ecoeval-probe';
  out.textContent = JSON.stringify({images: imgs, errors: window.__errors, tables: document.querySelectorAll('table').length});
  document.body.appendChild(out);
});
</script>"""


def _install_chromium() -> str | None:
    for name in ("chromium", "chromium-browser"):
        if shutil.which(name):
            return shutil.which(name)
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        return None
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for cmd in (["apt-get", "install", "-y", "--no-install-recommends", "chromium"],
                ["apt-get", "update"],
                ["apt-get", "install", "-y", "--no-install-recommends", "chromium"]):
        try:
            subprocess.run(cmd, env=env, capture_output=True, timeout=900)
        except (OSError, subprocess.TimeoutExpired):
            return None
        if shutil.which("chromium"):
            return shutil.which("chromium")
    return None


@pytest.fixture(scope="module")
def chromium():
    path = _install_chromium()
    if path is None:
        pytest.skip("headless Chromium is not installed and could not be installed with apt-get "
                    "(needs root and a package mirror): `apt-get install chromium` to run these tests")
    return path


@pytest.fixture(scope="module")
def report_html(tmp_path_factory):
    from ecoeval.report import build_report

    root = tmp_path_factory.mktemp("browser")
    folders = make_results(root)
    outputs = report_outputs(root / "report")
    build_report(folders, outputs, configs=CONFIGS, environment=ENVIRONMENT, model_folders=False)
    return outputs["html"]


def _run(chromium: str, tmp: Path, *args: str) -> subprocess.CompletedProcess:
    profile = tmp / f"profile-{len(list(tmp.glob('profile-*')))}"
    cmd = [chromium, *FLAGS, f"--user-data-dir={profile}", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=180)


def test_every_plot_draws_without_errors_offline(chromium, report_html, tmp_path):
    from ecoeval.report.plots import PLOTS

    probe = tmp_path / "probe.html"
    probe.write_text(report_html.read_text().replace("</head>", PROBE + "\n</head>", 1))
    proc = _run(chromium, tmp_path, "--virtual-time-budget=10000", "--window-size=1280,2000", "--dump-dom", probe.as_uri())
    m = re.search(r'<pre id="ecoeval-probe">(.*?)</pre>', proc.stdout, re.S)
    assert m, f"the page did not finish loading in Chromium:\n{proc.stderr[-3000:]}"
    result = json.loads(m.group(1).replace("&quot;", '"').replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&"))
    assert result["errors"] == []
    images = {i["plot"]: i for i in result["images"]}
    assert sorted(images) == sorted(p.key for p in PLOTS)
    for key, img in images.items():
        assert img["complete"] and img["w"] > 100 and img["h"] > 100 and img["shown_w"] > 100, (key, img)
    assert result["tables"] >= 9
    # Chromium's own log: no page console messages, no network errors (the original page, unprobed)
    plain = _run(chromium, tmp_path, "--virtual-time-budget=10000", "--dump-dom", report_html.as_uri())
    assert "</html>" in plain.stdout
    bad = [line for line in plain.stderr.splitlines() if "CONSOLE" in line or "net::ERR" in line or "Uncaught" in line]
    assert bad == []


def test_screenshot_shows_the_report(chromium, report_html, tmp_path):
    from PIL import Image

    shot = Path(os.environ.get("ECOEVAL_SCREENSHOT_DIR", tmp_path)) / "report.png"
    shot.parent.mkdir(parents=True, exist_ok=True)
    proc = _run(chromium, tmp_path, "--virtual-time-budget=10000", "--window-size=1280,3000",
                f"--screenshot={shot}", report_html.as_uri())
    assert shot.is_file(), proc.stderr[-3000:]
    img = np.asarray(Image.open(io.BytesIO(shot.read_bytes())).convert("RGB")).astype(int)
    assert img.shape[:2] == (3000, 1280)
    # more than a blank page: a sizeable share of non-white pixels, and coloured ones from the plots
    assert (img.sum(axis=2) < 700).mean() > 0.02
    assert (np.ptp(img, axis=2) > 60).mean() > 0.002
