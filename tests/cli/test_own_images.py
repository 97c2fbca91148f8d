"""docs/own-images.md runs as printed: its ```bash blocks, in order, as one shell script, with the tiny sizes the page
documents (a tiny random MraCirModel as EMBEDDER, a tiny random Gemma 3 as AGENT, 12 generated photos, DEVICE=cpu
Q1=2 Q2=4 BATCH=4 EPOCHS=1 BF16=false). The last block, the app, is started in the background and searched through its
API. ```sh blocks (a vLLM server) are not run."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import torch
from conftest import REPO_ROOT, load_test_fixture

PAGE = REPO_ROOT / "docs" / "own-images.md"
TINY_SIZES = {"DEVICE": "cpu", "Q1": "2", "Q2": "4", "BATCH": "4", "EPOCHS": "1", "BF16": "false"}


def bash_blocks(text: str) -> list[str]:
    return re.findall(r"^```bash\n(.*?)^```", text, flags=re.S | re.M)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    """The photos and the two tiny models, in the folder the page's commands run in."""
    from mra_cir.modeling_mra_cir import MraCirModel
    from mra_cir.tiny import TOY_WORDS, offline_processor, random_image, tiny_config

    root = tmp_path_factory.mktemp("own_images")
    (root / "photos" / "holiday").mkdir(parents=True)
    for i in range(12):  # a nested folder, and JPEG as well as PNG, like a real photo folder
        folder = root / "photos" / ("holiday" if i % 3 == 0 else "")
        random_image(i, size=48).save(folder / f"img_{i:02d}.{'jpg' if i % 2 else 'png'}")
    torch.manual_seed(0)
    MraCirModel(tiny_config()).save_pretrained(root / "embedder")
    offline_processor(32, texts=[" ".join(TOY_WORDS)]).save_pretrained(root / "embedder")
    load_test_fixture("make_tiny_gemma3").make_tiny_gemma3(root / "agent")
    return root


def _env(workdir: Path, **extra) -> dict:
    return {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",  # mra-cir and python of this venv
        "HF_HUB_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "GRADIO_ANALYTICS_ENABLED": "False",
        "EMBEDDER": str(workdir / "embedder"),
        "AGENT": str(workdir / "agent"),
        **TINY_SIZES,
        **extra,
    }


def test_the_page_documents_the_sizes_the_test_uses():
    text = PAGE.read_text()
    blocks = bash_blocks(text)
    assert len(blocks) >= 5 and blocks[-1].lstrip().startswith("mra-cir app")
    for name, value in TINY_SIZES.items():
        assert re.search(rf"(^|; ){name}=\$\{{{name}:-", blocks[0], flags=re.M), f"the settings block sets {name}"
        assert f"{name}={value}" in text, f"the page says the tests run with {name}={value}"
    assert "tests/cli/test_own_images.py" in text and "Gemma 3" in text


def test_own_images_page_runs_end_to_end(workdir):
    blocks = bash_blocks(PAGE.read_text())
    script = "set -eu\n" + "\n".join(blocks[:-1])
    result = subprocess.run(
        ["bash", "-c", script], cwd=workdir, env=_env(workdir), capture_output=True, text=True, timeout=900
    )
    out = result.stdout
    assert result.returncode == 0, f"{out[-3000:]}\n{result.stderr[-5000:]}"

    built = re.search(r"^triplets: (\d+) -> triplets", out, flags=re.M)
    assert built and int(built.group(1)) > 0, out
    assert re.search(r"^images: 12 found, 0 skipped", out, flags=re.M), out
    read_back = re.search(r"^(\d+) triplets; (\S+) -> (\S+) \(rank (\d+)\):", out, flags=re.M)
    assert read_back and read_back.group(1) == built.group(1), out
    assert 2 <= int(read_back.group(4)) <= 4  # the window Q1..Q2

    model = workdir / "out" / "my-mra-cir"
    assert (model / "model.safetensors").is_file() and (model / "README.md").is_file()
    assert "The tokenizer has new PAD/BOS/EOS tokens" not in result.stderr

    search = json.loads([line for line in out.splitlines() if line.startswith('{"image"')][-1])
    assert search["text"] == "the same but in red" and len(search["results"]) == 5
    reference = Path(search["image"]).relative_to("photos").as_posix()
    assert reference not in [r["id"] for r in search["results"]]  # --exclude_reference
    assert (workdir / "photos-index" / "features.safetensors").is_file()


def test_own_images_app_serves_the_trained_model(workdir):
    """The app block as printed, over the model and index the previous test made (run after it)."""
    if not (workdir / "out" / "my-mra-cir" / "config.json").is_file():
        pytest.skip("needs the trained model of test_own_images_page_runs_end_to_end")
    from gradio_client import Client, handle_file

    blocks = bash_blocks(PAGE.read_text())
    port = _free_port()
    env = _env(workdir, GRADIO_SERVER_PORT=str(port))
    process = subprocess.Popen(
        ["bash", "-c", f"set -eu\n{blocks[0]}\nexec {blocks[-1].strip()}"],
        cwd=workdir,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    url = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.monotonic() + 180
        while True:
            assert process.poll() is None, process.stdout.read()
            try:
                if httpx.get(url, timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "mra-cir app did not answer within 180 s"
            time.sleep(0.5)
        reference = workdir / "photos" / "img_01.jpg"
        status, first, second, answer = Client(url, verbose=False).predict(
            handle_file(str(reference)), "the same but in red", "composed", 3, True, api_name="/search"
        )
        assert "over 12 gallery images" in status, status
        assert len(first) == 3 and len(second) == 3  # the fine-tuned model beside BLIP-2 (here: the tiny embedder)
        assert [m["model"] for m in answer["models"]][0].endswith("my-mra-cir")
    finally:
        process.terminate()
        try:
            output = process.communicate(timeout=30)[0]
        except subprocess.TimeoutExpired:
            process.kill()
            output = process.communicate()[0]
    assert "Traceback" not in output, output
