"""`mra-cir audit-triplets` in a real browser (Debian's headless Chromium through Playwright): open the page, judge
three triplets (a click, a key, a click), reload, the answers are in the JSONL file and the page resumes at the fourth;
then the report: error rates by kind and the verifier against the person. A screenshot is saved in the test's folder."""

from __future__ import annotations

import json
import os
import shutil

import datasets
import numpy as np
import pytest
from app_helpers import free_port
from PIL import Image

from mra_cir.app.audit_data import AuditSession, audit_report, format_report, load_splits
from mra_cir.dataset_builders.mra_triplets.config import FEATURES
from mra_cir.dataset_builders.mra_triplets.publishing import export_triplets

pytestmark = [  # pandas 3 deprecations inside Gradio's queue, not ours
    pytest.mark.filterwarnings("ignore:'future.no_silent_downcasting' is deprecated"),
    pytest.mark.filterwarnings("ignore:The copy keyword is deprecated"),
]
TIMEOUT_MS = 30_000


def _triplets(n: int, reason: str, start: int) -> datasets.Dataset:
    rows = []
    for i in range(start, start + n):
        rng = np.random.default_rng(i)
        image = Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8))
        rows.append({
            "reference_image": image, "target_image": image.rotate(90), "modification_text": f"make it red {i}",
            "reference_caption": f"a picture {i}", "target_caption": f"another picture {i}", "rank": 1,
            "score": 0.5, "reference_id": f"r{i}.png", "target_id": f"t{i}.png", "drop_reason": reason,
        })  # fmt: skip
    features = datasets.Features({**FEATURES, "drop_reason": datasets.Value("string")})
    return datasets.Dataset.from_list(rows, features=features)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """An exported, verified dataset: 8 kept triplets and 4 the verifier dropped."""
    folder = tmp_path_factory.mktemp("audit") / "triplets"
    export_triplets(_triplets(8, "", 0), folder, {"verify": True}, {}, dropped=_triplets(4, "not_verified", 8))
    return folder


@pytest.fixture(scope="module")
def served(dataset):
    from mra_cir.app.audit_page import audit_launch_options, build_audit_page

    session = AuditSession(load_splits(str(dataset)), sample=6, seed=3, answers=dataset / "audit.jsonl")
    demo = build_audit_page(session)
    demo.queue().launch(prevent_thread_lock=True, quiet=True, **audit_launch_options("127.0.0.1", free_port()))
    try:
        yield {"url": demo.local_url, "session": session}
    finally:
        demo.close()


def _missing(what: str) -> None:
    message = f"{what} (apt-get install chromium; pip install -e '.[app]')"
    pytest.fail(message) if os.environ.get("CI") else pytest.skip(message)


def _text(page) -> str:
    return page.input_value("#audit-text textarea")


def test_judge_three_reload_and_the_answers_are_there(served, dataset, tmp_path):
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _missing("the playwright Python package is not installed")
    chromium = shutil.which("chromium") or "/usr/bin/chromium"
    if not os.access(chromium, os.X_OK):
        _missing("Debian's chromium is not installed")
    session = served["session"]
    expected = [session.row(item)["modification_text"] for item in session.items]
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, headless=True, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1100, "height": 900})
        page.set_default_timeout(TIMEOUT_MS)
        page.goto(served["url"], wait_until="domcontentloaded")
        page.wait_for_function("() => document.querySelector('#audit-progress')?.innerText.includes('0 / 6')")
        assert _text(page) == expected[0]
        for n, action in enumerate(["#audit-ok", "t", "#audit-caption-wrong"], start=1):
            if action.startswith("#"):
                page.click(action)
            else:
                page.locator("body").press(action)  # the keyboard shortcut
            page.wait_for_function(
                f"() => document.querySelector('#audit-progress')?.innerText.includes('{n} / 6')", timeout=TIMEOUT_MS
            )
            assert _text(page) == expected[n]
        page.screenshot(path=str(tmp_path / "audit.png"), full_page=True)
        page.reload(wait_until="domcontentloaded")  # a reload resumes at the fourth triplet
        page.wait_for_function("() => document.querySelector('#audit-progress')?.innerText.includes('3 / 6')")
        assert _text(page) == expected[3]
        browser.close()
    lines = [json.loads(line) for line in (dataset / "audit.jsonl").read_text().splitlines()]
    assert [line["answer"] for line in lines] == ["ok", "text_wrong", "caption_wrong"]
    assert [line["modification_text"] for line in lines] == expected[:3]
    # a new session over the same file (a restarted command) resumes there too
    again = AuditSession(load_splits(str(dataset)), sample=6, seed=3, answers=dataset / "audit.jsonl")
    assert again.judged() == 3 and again.row(again.next_item())["modification_text"] == expected[3]
    report = audit_report(again)
    assert report["judged"] == 3 and report["rates"]["text_wrong"]["count"] == 1
    assert report["rates"]["ok"]["share"] == pytest.approx(1 / 3, abs=1e-3)
    dropped = {session.key(item) for item in session.items[:3] if item[0] == "dropped"}
    wrong = {session.key(session.items[1])}
    flagged_right = len(dropped & wrong)
    scores = report["verifiers"]["agent"]
    assert scores["recall"] == flagged_right and scores["dropped"] == pytest.approx(len(dropped) / 3, abs=1e-3)
    assert "text_wrong" in format_report(report)


def test_sample_is_seeded_and_bad_answers_are_refused(dataset, tmp_path):
    splits = load_splits(str(dataset))
    assert set(splits) == {"train", "dropped"} and len(splits["train"]) == 8  # the dropped rows are not training rows
    first = AuditSession(splits, sample=5, seed=1, answers=tmp_path / "a.jsonl").items
    assert first == AuditSession(splits, sample=5, seed=1, answers=tmp_path / "b.jsonl").items
    assert first != AuditSession(splits, sample=5, seed=2, answers=tmp_path / "c.jsonl").items
    session = AuditSession(splits, sample=5, seed=1, answers=tmp_path / "a.jsonl")
    with pytest.raises(ValueError, match="an answer is one of"):
        session.answer(session.items[0], "maybe")
    (tmp_path / "bad.jsonl").write_text('{"item": "train:0", "answer": "ok"}\nnot json\n')
    with pytest.raises(ValueError, match="bad.jsonl, line 2"):
        AuditSession(splits, sample=5, seed=1, answers=tmp_path / "bad.jsonl")
