"""The service's page in a real headless browser (Debian's chromium, driven by Playwright), with
the pretrained EfficientNet-Lite0: a person picks the chelsea photo and sees the class and the
overlay; picks a class; drops another photo. A screenshot is kept as a test artifact."""
from __future__ import annotations

import base64
import os
import shutil
from pathlib import Path

import pytest
from skimage import data as photos

pytest.importorskip("uvicorn")

from benchmarks.serving import Server  # noqa: E402
from onnxcam import Explainer  # noqa: E402
from onnxcam.images.decode import decode_image  # noqa: E402
from onnxcam.render.overlay import encode_png, overlay  # noqa: E402
from support.paths import ROOT  # noqa: E402

CHROMIUM = Path("/usr/bin/chromium")  # Debian's package; Playwright downloads no browser here
ARTIFACTS = ROOT / "tests" / "artifacts"
QUIET = ["--no-sandbox", "--disable-background-networking", "--disable-component-update",
         "--disable-default-apps", "--disable-sync", "--no-first-run", "--disable-extensions",
         "--metrics-recording-only", "--disable-domain-reliability"]


@pytest.fixture(scope="module")
def chromium():
    """Playwright and Debian's chromium; missing ones fail under CI (.ci/run installs them)."""
    missing = [what for what, ok in (("chromium (apt-get install chromium)", CHROMIUM.is_file()),
                                     ("playwright (pip install playwright)", _has_playwright())) if not ok]
    if missing:
        message = f"the page test needs {' and '.join(missing)}"
        pytest.fail(message) if os.environ.get("CI") else pytest.skip(message)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as driver:
        browser = driver.chromium.launch(executable_path=str(CHROMIUM), args=QUIET)
        yield browser
        browser.close()


def _has_playwright() -> bool:
    import importlib.util

    return importlib.util.find_spec("playwright") is not None


def test_page_explains_a_photo(lite0, chromium, tmp_path):
    _, model = lite0
    photo = tmp_path / "chelsea.png"
    photo.write_bytes(encode_png(photos.chelsea()))
    library = Explainer(model).explain(photo)
    assert library.label(0) == "Egyptian cat"
    with Server([model, "--no-access-log"], tmp_path / "server.log",
                env={"PYTHONPATH": str(ROOT)}) as server:
        origin = f"http://127.0.0.1:{server.port}"
        page = chromium.new_page(viewport={"width": 1400, "height": 400})
        urls: list[str] = []
        page.on("request", lambda request: urls.append(request.url))
        page.goto(origin + "/")
        page.wait_for_function("document.getElementById('method').options.length > 0")
        assert "gradcam" in page.eval_on_selector_all("#method option", "options => options.map(o => o.value)")

        page.set_input_files("#file", str(photo))  # pick a photo
        page.wait_for_selector("#predictions li")
        assert page.inner_text("#predictions li >> nth=0").startswith("Egyptian cat")
        page.wait_for_function("document.querySelector('img.overlay') && document.querySelector('img.overlay').complete")
        assert page.inner_text("#overlays figcaption").startswith("gradcam: Egyptian cat")
        shown = page.get_attribute("img.overlay", "src")
        drawn = decode_image(base64.b64decode(shown.split(",", 1)[1]))
        assert (drawn == overlay(library.images[0], library.heatmaps[0][0])).all()
        assert page.evaluate("document.querySelector('img.overlay').naturalWidth") == 451
        boxes = [page.locator(selector).bounding_box() for selector in ("#photo", "img.overlay", "#prediction")]
        assert boxes[0]["x"] < boxes[1]["x"] < boxes[2]["x"]  # photo, overlay, prediction side by side
        assert abs(boxes[0]["y"] - boxes[1]["y"]) < 5
        screenshot = tmp_path / "serve_page.png"
        page.screenshot(path=str(screenshot), full_page=True)
        ARTIFACTS.mkdir(exist_ok=True)
        shutil.copy(screenshot, ARTIFACTS / "serve_page.png")

        page.check("#boxes")  # the weakly-supervised box, in the caption and drawn on the overlay
        x0, y0, x1, y1 = library.boxes(0, 0)[0]
        page.wait_for_function(f"document.querySelector('#overlays figcaption').textContent"
                               f".endsWith('box {x0},{y0} to {x1},{y1}')")
        page.uncheck("#boxes")

        page.fill("#target", "281")  # pick a class: tabby
        page.dispatch_event("#target", "change")
        page.wait_for_function("document.querySelector('#overlays figcaption').textContent.includes('tabby')")

        page.check("input[name=which][value=top]")  # drop another photo, top 2 classes
        page.fill("#top-k", "2")
        coffee = base64.b64encode(encode_png(photos.coffee())).decode()
        page.evaluate("""(data) => {
            const bytes = Uint8Array.from(atob(data), c => c.charCodeAt(0));
            const drop = new DataTransfer();
            drop.items.add(new File([bytes], "coffee.png", {type: "image/png"}));
            document.getElementById("drop").dispatchEvent(
                new DragEvent("drop", {dataTransfer: drop, bubbles: true, cancelable: true}));
        }""", coffee)
        page.wait_for_function("document.querySelectorAll('img.overlay').length === 2")
        assert page.inner_text("#predictions li >> nth=0").startswith("espresso")
        assert page.inner_text("#drop-hint") == "coffee.png"

        page.fill("#target", "5000")  # a class the model does not have: the server's 422, shown
        page.dispatch_event("#target", "change")
        page.wait_for_selector("#status.error")
        assert "class 5000 out of range for a model with 1000 classes" in page.inner_text("#status")
        page.close()
    assert urls and all(url.startswith((origin + "/", "data:", "blob:")) for url in urls), urls
