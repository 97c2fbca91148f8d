"""The app served on 127.0.0.1 and queried with `gradio_client`: its ranking is `mra-cir search`'s for the same query
in each mode, for both models side by side; bad inputs get a message in the page and the app keeps serving."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import httpx
import numpy as np
import pytest
from app_helpers import QUERY_TEXT, free_port, make_app_files, serve_app
from gradio_client import Client, handle_file
from PIL import Image

from mra_cir.app import InputError
from mra_cir.commands import app as app_command
from mra_cir.commands import search as search_command

app_files = pytest.fixture(scope="session", name="app_files")(make_app_files)
served_app = pytest.fixture(scope="session", name="served_app")(serve_app)

pytestmark = [  # pandas 3 deprecations inside Gradio's queue, not ours
    pytest.mark.filterwarnings("ignore:'future.no_silent_downcasting' is deprecated"),
    pytest.mark.filterwarnings("ignore:The copy keyword is deprecated"),
]


@pytest.fixture(scope="module")
def client(served_app):
    return Client(served_app["url"], verbose=False)


def _search_cli(capsys, index, image, mode, k) -> list[dict]:
    code = search_command.main(
        ["--index", str(index), "--image", str(image), "--text", QUERY_TEXT, "--mode", mode, "--k", str(k)]
    )
    out = capsys.readouterr().out
    assert code == 0, out
    return json.loads(out)["results"]


@pytest.mark.parametrize("mode", ["composed", "image", "text"])
def test_ranking_equals_mra_cir_search(client, app_files, capsys, mode):
    reference = app_files["images"] / "img_04.png"
    status, first, second, answer = client.predict(
        handle_file(str(reference)), QUERY_TEXT, mode, 6, True, api_name="/search"
    )
    assert status.startswith("**model**") and "over 16 gallery images (exact search)" in status
    assert answer["mode"] == mode and [m["model"] for m in answer["models"]] == ["model", "other"]
    for shown, gallery, index in ((answer["models"][0], first, "index"), (answer["models"][1], second, "other_index")):
        expected = _search_cli(capsys, app_files[index], reference, mode, 6)
        assert [r["id"] for r in shown["results"]] == [r["id"] for r in expected]
        np.testing.assert_allclose([r["score"] for r in shown["results"]], [r["score"] for r in expected], atol=2e-6)
        # the page shows the same ranking: k images captioned "rank. id · score"
        assert [item["caption"].split(" ")[1] for item in gallery] == [r["id"] for r in expected]
        assert [item["caption"].split(" ")[0] for item in gallery] == [f"{r}." for r in range(1, 7)]
    assert answer["models"][0]["results"] != answer["models"][1]["results"]  # two models, two rankings


def test_bad_inputs_get_a_message_and_the_app_keeps_serving(client, app_files, tmp_path):
    good = handle_file(str(app_files["images"] / "img_01.png"))
    (tmp_path / "notes.txt").write_text("not an image")
    Image.new("L", (7000, 6000)).save(tmp_path / "huge.png")
    rgb = np.asarray(Image.open(app_files["images"] / "img_01.png"))
    Image.fromarray(rgb).convert("CMYK").save(tmp_path / "cmyk.jpg")
    Image.fromarray(rgb).convert("P").save(tmp_path / "palette.png")
    Image.fromarray(rgb[..., 0].astype(np.uint16) * 257).save(tmp_path / "deep.png")
    refused = [
        (handle_file(str(tmp_path / "notes.txt")), QUERY_TEXT, "composed", "notes.txt is not an image"),
        (good, "", "composed", "Type a modification text"),
        (good, "   ", "text", "Type a modification text"),
        (None, QUERY_TEXT, "composed", "Choose a reference image"),
        (handle_file(str(tmp_path / "huge.png")), QUERY_TEXT, "image", "(42 megapixels); the app accepts up to 40"),
    ]
    for image, text, mode, message in refused:
        status, first, second, answer = client.predict(image, text, mode, 5, True, api_name="/search")
        assert status.startswith("⚠️") and message in status, status
        assert first == [] and second == [] and answer == {}
        # still serving: the next good query is answered
        status, first, _, _ = client.predict(good, QUERY_TEXT, "composed", 3, True, api_name="/search")
        assert "exact search" in status and len(first) == 3
    for odd in ("cmyk.jpg", "palette.png", "deep.png"):  # odd modes are converted, not refused
        status, first, _, answer = client.predict(
            handle_file(str(tmp_path / odd)), QUERY_TEXT, "composed", 4, True, api_name="/search"
        )
        assert "exact search" in status and len(first) == 4 and len(answer["models"][0]["results"]) == 4, odd


def test_a_set_up_error_is_shown_in_the_page_which_keeps_serving(app_files, tmp_path):
    from mra_cir.app import AppArguments, load_engine
    from mra_cir.app.ui import EngineHolder, build_app, launch_options

    missing = tmp_path / "no_index"
    args = AppArguments(model=str(app_files["model"]), index=str(missing))
    holder = EngineHolder(lambda: load_engine(args))
    demo = build_app(holder)
    demo.queue().launch(prevent_thread_lock=True, quiet=True, **launch_options("127.0.0.1", free_port(), False))
    try:
        assert isinstance(holder.error, InputError) and holder.engine is None
        client = Client(demo.local_url, verbose=False)
        for _ in range(2):
            status, first, _, _ = client.predict(
                handle_file(str(app_files["images"] / "img_01.png")),
                QUERY_TEXT,
                "composed",
                3,
                True,
                api_name="/search",
            )
            expected = f"{missing} is not a gallery index (no features.safetensors): pass --images DIR to build one"
            assert status == f"⚠️ {expected} from a folder of images."
            assert first == []
    finally:
        demo.close()


def test_the_app_command_serves_and_says_how_to_make_the_default_model(tmp_path):
    """`mra-cir app` with nothing passed and no quickstart run: the page serves the one command that makes one."""
    port = free_port()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "GRADIO_ANALYTICS_ENABLED": "False"}
    command = [sys.executable, "-m", "mra_cir.cli", "app", "--server-name", "127.0.0.1", "--port", str(port)]
    process = subprocess.Popen(
        command, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    url = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.monotonic() + 120
        while True:
            assert process.poll() is None, process.stdout.read()
            try:
                if httpx.get(url, timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "mra-cir app did not answer within 120 s"
            time.sleep(0.5)
        status, first, _, _ = Client(url, verbose=False).predict(None, QUERY_TEXT, "text", 3, True, api_name="/search")
        assert status.startswith("⚠️ No model to serve yet: quickstart_output does not exist.")
        assert "`mra-cir quickstart --fast`" in status and first == []
    finally:
        process.terminate()
        try:
            output = process.communicate(timeout=30)[0]
        except subprocess.TimeoutExpired:
            process.kill()
            output = process.communicate()[0]
    assert "Traceback" not in output, output


def test_the_app_command_refuses_bad_options(capsys):
    assert app_command.main(["--k", "0"]) == 2
    assert "mra-cir app: --k must be between 1 and 50, got 0" in capsys.readouterr().err
    assert app_command.main(["--compare_index", "x"]) == 2
    assert "--compare_index needs --compare_model" in capsys.readouterr().err
