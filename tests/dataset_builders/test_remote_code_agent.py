"""The transformers backend on a remote-code chat model (the MiniCPM-V-2.6 API: `model.chat(image=None, msgs=[{"role":
"user", "content": [PIL images..., text]}], tokenizer=...)`): refused without the explicit opt-in, driven through
`chat` with it, the opt-in part of the response-cache key, and a whole `build-triplets --agent-trust-remote-code` run.

The model is a tiny local checkpoint written by the test: a folder whose config has an `auto_map` to a Python module in
the folder defining a config and a model with a `chat` method (a 6 x 3 colour palette as its weights, a word-level
tokenizer), the layout of `openbmb/MiniCPM-V-2_6`."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mra_cir.cli import main
from mra_cir.dataset_builders.agents import AgentImage, CachedAgent, ModificationRequest, make_agent
from mra_cir.dataset_builders.agents.transformers_backend import TransformersAgent

COLOURS = ("red", "green", "blue", "yellow", "white", "black")
PALETTE = ((1, 0, 0), (0, 1, 0), (0, 0, 1), (1, 1, 0), (1, 1, 1), (0, 0, 0))

MODULE = """
import torch
from torch import nn
from transformers import PretrainedConfig, PreTrainedModel

COLOURS = __COLOURS__


class TinyChatConfig(PretrainedConfig):
    model_type = "tiny_chat_vlm"

    def __init__(self, num_colours=6, **kwargs):
        self.num_colours = num_colours
        super().__init__(**kwargs)


class TinyChatModel(PreTrainedModel):
    config_class = TinyChatConfig

    def __init__(self, config):
        super().__init__(config)
        self.palette = nn.Parameter(torch.zeros(config.num_colours, 3))
        self.calls = []
        self.post_init()

    def _init_weights(self, module):
        pass

    def _colour(self, image):
        rgb = torch.tensor(image.resize((1, 1)).getpixel((0, 0)), dtype=torch.float32) / 255
        return COLOURS[int(torch.cdist(rgb[None], self.palette).argmin())]

    def chat(self, image, msgs, tokenizer, processor=None, max_new_tokens=2048, sampling=True, **kwargs):
        assert image is None and len(msgs) == 1 and msgs[0]["role"] == "user"
        *images, text = msgs[0]["content"]
        self.calls.append({"images": len(images), "text": text, "sampling": sampling,
                           "max_new_tokens": max_new_tokens, "kwargs": kwargs})
        names = [self._colour(im) for im in images]
        if "Answer yes or no" in text:
            answer = "yes"
        elif len(images) == 1:
            answer = f"a {names[0]} photo"
        else:
            answer = f"make it {names[1]} instead of {names[0]}"
        return tokenizer.decode(tokenizer(answer, add_special_tokens=False)["input_ids"])
""".replace("__COLOURS__", repr(COLOURS))


def write_remote_code_chat_model(folder: Path) -> Path:
    """Save the tiny remote-code chat model (config with `auto_map`, its module, weights, tokenizer) to `folder`."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    source = folder.parent / f"{folder.name}_src"
    source.mkdir(parents=True)
    (source / "modeling_tiny_chat.py").write_text(MODULE)
    spec = importlib.util.spec_from_file_location("modeling_tiny_chat", source / "modeling_tiny_chat.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["modeling_tiny_chat"] = module
    try:
        spec.loader.exec_module(module)
        module.TinyChatConfig.register_for_auto_class()
        module.TinyChatModel.register_for_auto_class("AutoModel")
        import torch

        model = module.TinyChatModel(module.TinyChatConfig())
        with torch.no_grad():
            model.palette.copy_(torch.tensor(PALETTE, dtype=torch.float32))
        model.save_pretrained(folder)
    finally:
        del sys.modules["modeling_tiny_chat"]
    words = ["[UNK]", "a", "photo", "make", "it", "instead", "of", "yes", *COLOURS]
    backend = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="[UNK]"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="[UNK]").save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def chat_model(tmp_path_factory) -> Path:
    return write_remote_code_chat_model(tmp_path_factory.mktemp("remote") / "tiny-chat-vlm")


def _square(path: Path, rgb: tuple[int, int, int], seed: int) -> Path:
    rng = np.random.default_rng(seed)
    pixels = np.clip(np.array(rgb)[None, None] + rng.integers(-20, 20, (32, 32, 3)), 0, 255).astype(np.uint8)
    Image.fromarray(pixels).save(path)
    return path


def test_remote_code_checkpoint_needs_the_explicit_opt_in(chat_model):
    config = json.loads((chat_model / "config.json").read_text())
    assert config["auto_map"] == {
        "AutoConfig": "modeling_tiny_chat.TinyChatConfig",
        "AutoModel": "modeling_tiny_chat.TinyChatModel",
    }
    with pytest.raises(ValueError, match=r"needs its own code .*--agent-trust-remote-code.*vLLM") as error:
        TransformersAgent(str(chat_model))
    assert "tiny_chat_vlm" in str(error.value)


def test_chat_api_is_driven_with_images_then_text(chat_model, tmp_path):
    red = AgentImage.from_path(_square(tmp_path / "red.png", (230, 20, 20), 0), id="red.png")
    blue = AgentImage.from_path(_square(tmp_path / "blue.png", (20, 20, 230), 1), id="blue.png")
    agent = make_agent("transformers", model=str(chat_model), trust_remote_code=True, max_new_tokens=12)
    assert agent.uses_chat_api()
    assert agent.caption([red, blue]) == ["a red photo", "a blue photo"]
    request = ModificationRequest(red, blue, "a red photo", "a blue photo")
    assert agent.modify([request]) == ["make it blue instead of red"]
    assert agent.verify([request], ["make it blue"]) == ["yes"]
    calls = agent._model.calls
    assert [c["images"] for c in calls] == [1, 1, 2, 2]
    assert calls[2]["text"] == agent.prompts.modify.format(
        reference_caption="a red photo", target_caption="a blue photo"
    )
    # greedy unless do_sample: sampling off and one beam (MiniCPM-V's default without sampling is 3 beams)
    assert all(c["sampling"] is False and c["kwargs"] == {"num_beams": 1} for c in calls)
    assert [c["max_new_tokens"] for c in calls] == [12, 12, 12, 4]

    # the opt-in is part of the response-cache key; the backend pickles without its model and reloads it
    assert agent.cache_settings()["trust_remote_code"] is True
    assert "trust_remote_code" not in TransformersAgent("unused/hub-id").cache_settings()
    import pickle

    clone = pickle.loads(pickle.dumps(agent))
    assert clone._model is None and clone._tokenizer is None and clone.caption([blue]) == ["a blue photo"]
    chat = agent.caption_request(red)
    assert CachedAgent(agent)._key("caption", chat) != CachedAgent(TransformersAgent("unused/hub-id"))._key(
        "caption", chat
    )


def test_build_triplets_with_the_remote_code_agent_and_a_class_sample(chat_model, tmp_path, tiny_model, capsys):
    from mra_cir.tiny import offline_processor

    images = tmp_path / "imagenet"
    for c, rgb in enumerate([(230, 20, 20), (20, 200, 20), (20, 20, 230)]):
        (images / f"n0{c}").mkdir(parents=True)
        for i in range(5):
            _square(images / f"n0{c}" / f"{i}.png", rgb, 10 * c + i)
    model = tmp_path / "embedding"
    tiny_model.save_pretrained(model)
    offline_processor(image_size=32).save_pretrained(model)
    argv = [
        "build-triplets", "--images", str(images), "--per-class", "3", "--model", str(model),
        "--output", str(tmp_path / "out"), "--agent", "transformers", "--agent-model", str(chat_model),
        "--q1", "1", "--q2", "2", "--max-new-tokens", "12",
    ]  # fmt: skip
    capsys.readouterr()
    assert main(argv) == 2  # without the opt-in: one line, no traceback
    err = capsys.readouterr().err
    assert err.startswith("build-triplets: error: agent model") and "--agent-trust-remote-code" in err
    assert "Traceback" not in err

    assert main([*argv, "--agent-trust-remote-code"]) == 0, capsys.readouterr().err[-2000:]
    import datasets

    rows = datasets.load_dataset(str(tmp_path / "out"), split="train")
    used = set(rows["reference_id"]) | set(rows["target_id"])
    assert len(set(rows["reference_id"])) == 9 and all(
        sum(i.startswith(f"n0{c}/") for i in used) == 3 for c in range(3)
    )
    assert set(rows["reference_caption"]) == {"a red photo", "a green photo", "a blue photo"}
    assert all(text.startswith("make it ") for text in rows["modification_text"])
    card = (tmp_path / "out" / "README.md").read_text()
    assert "at most 3 images of each class folder" in card and '"per_class": 3' in card
