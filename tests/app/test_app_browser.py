"""The page in a real browser: Debian's headless Chromium driven by Playwright (`executable_path`, never a downloaded
browser build). Upload a reference, type a text, search: k result images with their ids; bad inputs: a message in the
page; a reference picked in the gallery and a switch of ranking mode. A screenshot is saved in the test's folder."""

from __future__ import annotations

import os
import shutil

import pytest
from app_helpers import QUERY_TEXT, make_app_files, serve_app

from mra_cir.app import prepare_reference

app_files = pytest.fixture(scope="session", name="app_files")(make_app_files)
served_app = pytest.fixture(scope="session", name="served_app")(serve_app)

CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
TIMEOUT_MS = 30_000

pytestmark = [  # pandas 3 deprecations inside Gradio's queue, not ours
    pytest.mark.filterwarnings("ignore:'future.no_silent_downcasting' is deprecated"),
    pytest.mark.filterwarnings("ignore:The copy keyword is deprecated"),
]


def _missing(what: str) -> None:
    """CI installs the browser (.ci/run): there a missing one fails; elsewhere the test is skipped, and says why."""
    message = f"{what} (apt-get install chromium; pip install -e '.[app]')"
    pytest.fail(message) if os.environ.get("CI") else pytest.skip(message)


@pytest.fixture(scope="module")
def page(served_app):
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _missing("the playwright Python package is not installed")
    chromium = shutil.which("chromium") or "/usr/bin/chromium"
    if not os.access(chromium, os.X_OK):
        _missing("Debian's chromium is not installed")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, headless=True, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1280, "height": 1000})
        page.set_default_timeout(TIMEOUT_MS)
        page.goto(served_app["url"], wait_until="domcontentloaded")
        page.wait_for_selector("#search")
        yield page
        browser.close()


def _search_and_wait(page, expected_status: str) -> str:
    page.click("#search")
    page.wait_for_function(
        "text => document.querySelector('#status').innerText.includes(text)", arg=expected_status, timeout=TIMEOUT_MS
    )
    return page.inner_text("#status")


def _wait_for_ranking(page, gallery: str, ids: list[str]) -> None:
    """Wait until a results gallery shows exactly `ids` in order (captions "rank. id · score")."""
    page.wait_for_function(
        """([gallery, ids]) => {
            const captions = [...document.querySelectorAll(`#${gallery} .gallery-item .caption-label`)];
            return captions.length === ids.length && captions.every((c, i) => c.innerText.split(' ')[1] === ids[i]);
        }""",
        arg=[gallery, ids],
    )


def _shown(page, gallery: str) -> list[str]:
    """The result captions of a gallery once all its images are loaded."""
    page.wait_for_function(
        f"""() => {{
            const imgs = [...document.querySelectorAll('#{gallery} .gallery-item img')];
            return imgs.length > 0 && imgs.every(img => img.complete && img.naturalWidth > 0);
        }}"""
    )
    return page.locator(f"#{gallery} .gallery-item .caption-label").all_inner_texts()


def test_upload_type_search_shows_k_results_with_their_ids(page, served_app, app_files, tmp_path):
    reference = app_files["images"] / "img_04.png"
    page.locator("#reference input[type=file]").set_input_files(str(reference))
    page.wait_for_selector("#reference img")
    page.fill("#text textarea", QUERY_TEXT)
    expected = served_app["engine"].search(prepare_reference(reference), QUERY_TEXT, "composed", 5)
    page.click("#search")
    for gallery, result in zip(("results-0", "results-1"), expected):
        _wait_for_ranking(page, gallery, result.ids)
        captions = _shown(page, gallery)
        assert len(captions) == 5 and page.locator(f"#{gallery} .gallery-item img").count() == 5
        assert [c.split(" ")[1] for c in captions] == result.ids
        assert [float(c.split(" · ")[1]) for c in captions] == pytest.approx(result.scores, abs=1e-4)
    page.screenshot(path=str(tmp_path / "app.png"), full_page=True)
    assert (tmp_path / "app.png").stat().st_size > 20_000


def test_bad_inputs_show_a_message_and_the_page_keeps_working(page, app_files, tmp_path):
    upload = page.locator("#reference input[type=file]")
    # a file that is not an image by its type: Gradio's upload refuses it with a notice, nothing is uploaded
    (tmp_path / "notes.txt").write_text("not an image")
    upload.set_input_files(str(tmp_path / "notes.txt"))
    page.get_by_text("Invalid file type: notes.txt. Only image/* allowed.").wait_for()
    # an image by its name but not by its content: the app's own message in the status line
    (tmp_path / "fake.png").write_text("not an image either")
    upload.set_input_files(str(tmp_path / "fake.png"))
    page.fill("#text textarea", QUERY_TEXT)
    status = _search_and_wait(page, "is not an image")
    assert "fake.png is not an image (PNG, JPEG, WebP, GIF, BMP or TIFF are accepted)" in status
    assert page.locator("#results-0 .gallery-item").count() == 0
    # an empty text
    upload.set_input_files(str(app_files["images"] / "img_02.png"))
    page.wait_for_selector("#reference img")
    page.fill("#text textarea", "  ")
    status = _search_and_wait(page, "Type a modification text")
    assert status.startswith("⚠") and page.locator("#results-0 .gallery-item").count() == 0
    page.screenshot(path=str(tmp_path / "bad_input.png"), full_page=True)
    # and the next query is answered
    page.fill("#text textarea", QUERY_TEXT)
    _search_and_wait(page, "exact search")
    assert len(_shown(page, "results-0")) == 5


def test_pick_a_reference_in_the_gallery_then_switch_the_ranking_mode(page, served_app):
    engine = served_app["engine"]
    page.locator("#picker .gallery-item").nth(3).click()
    page.wait_for_selector("#reference img")
    page.get_by_text("From the gallery:").wait_for()
    picked_id = page.inner_text("#reference-id").removeprefix("From the gallery: ").strip()
    assert picked_id == engine.models[0].index.ids[3]  # the picker lists the gallery in index order
    page.fill("#text textarea", QUERY_TEXT)
    reference = engine.reference_from_gallery(picked_id)
    composed = engine.search(reference, QUERY_TEXT, "composed", 5, exclude_id=picked_id)[0].ids
    image_only = engine.search(reference, QUERY_TEXT, "image", 5, exclude_id=picked_id)[0].ids
    assert composed != image_only and picked_id not in composed + image_only  # the reference itself is hidden
    page.click("#search")
    _wait_for_ranking(page, "results-0", composed)
    page.get_by_label("Image only").check()  # a new ranking without pressing Search
    _wait_for_ranking(page, "results-0", image_only)
    assert len(_shown(page, "results-0")) == 5
