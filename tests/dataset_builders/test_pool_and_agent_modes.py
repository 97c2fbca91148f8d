"""The builder-side reproduction items (issue 15, phase 2): the seeded pool sample (`--per-class`, `--max-images`), the
one-step agent without captions (`agent_mode="direct"`), the public mining hook (`pair_miner`) and the Hub revision in
a model's cache key. The agent is `FakeAgentServer` (a real OpenAI-compatible HTTP server that counts every request by
step and image hashes); the embedding model is a tiny random `MraCirModel`."""

from __future__ import annotations

import logging
import random
from pathlib import Path

import numpy as np
import pytest
import yaml
from conftest import load_test_fixture
from PIL import Image

from mra_cir.dataset_builders.agents import AgentPrompts, OutputFilter, ResponseCache, get_prompts
from mra_cir.dataset_builders.mra_triplets import MraTriplets, MraTripletsConfig
from mra_cir.dataset_builders.mra_triplets.fingerprints import fingerprint, hub_revision, model_identity
from mra_cir.dataset_builders.mra_triplets.publishing import dataset_card, export_triplets
from mra_cir.retrieval.image_features import list_images

servers = load_test_fixture("agent_servers")
WINDOW = {"q1": 1, "q2": 3, "pairs_per_shard": 4, "max_new_tokens": 8}
OPTIONS = {"max_concurrency": 2, "batch_size": 4, "max_retries": 1, "backoff": 0.01, "timeout": 5.0}


def _image(path: Path, seed: int) -> None:
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(path)


@pytest.fixture(scope="module")
def classes(tmp_path_factory) -> Path:
    """An ImageNet-style layout: 5 class folders of 6 images (JPEG and PNG) and 2 images at the top."""
    root = tmp_path_factory.mktemp("imagenet")
    for c in range(5):
        (root / f"n0{c}").mkdir()
        for i in range(6):
            _image(root / f"n0{c}" / f"n0{c}_{i}.{'png' if i % 2 else 'JPEG'}", seed=10 * c + i)
    _image(root / "top_a.png", 98)
    _image(root / "top_b.png", 99)
    return root


@pytest.fixture(scope="module")
def embedding_model(tmp_path_factory, tiny_model, tiny_processor) -> Path:
    folder = tmp_path_factory.mktemp("embedding_model")
    tiny_model.save_pretrained(folder)
    tiny_processor.save_pretrained(folder)
    return folder


def _class_of(image_id: str) -> str:
    return image_id.split("/")[0] if "/" in image_id else ""


def test_per_class_and_max_images_are_seeded_samples(classes, monkeypatch):
    everything = list_images(classes)
    assert len(everything) == 32 and everything == sorted(everything)
    sample = list_images(classes, per_class=2, seed=0)
    assert sample == sorted(sample) and sample == list_images(classes, per_class=2, seed=0)
    counts = {}
    for image_id, _ in sample:
        counts[_class_of(image_id)] = counts.get(_class_of(image_id), 0) + 1
    assert counts == {"": 2, "n00": 2, "n01": 2, "n02": 2, "n03": 2, "n04": 2}  # the top-level images: one group
    assert list_images(classes, per_class=2, seed=1) != sample
    assert list_images(classes, per_class=10) == everything  # classes smaller than K are kept whole

    # independent of the file system's listing order
    original = Path.rglob

    def shuffled(self, pattern):
        found = list(original(self, pattern))
        random.Random(7).shuffle(found)
        return iter(found)

    monkeypatch.setattr(Path, "rglob", shuffled)
    assert list_images(classes, per_class=2, seed=0) == sample
    monkeypatch.undo()

    # max_images: a seeded sample over every class, not the first N paths in sorted order
    five = list_images(classes, max_images=5, seed=0)
    assert len(five) == 5 and five == list_images(classes, max_images=5, seed=0) and five != everything[:5]
    assert len({_class_of(i) for i, _ in five}) > 1
    both = list_images(classes, max_images=7, per_class=2, seed=0)
    assert len(both) == 7 and set(both) <= set(sample)  # per class first, then at most N in all


def test_adding_a_class_does_not_change_the_other_classes_samples(classes, tmp_path):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(classes, copy)
    before = [i for i, _ in list_images(copy, per_class=3, seed=5)]
    (copy / "n09").mkdir()
    for i in range(4):
        _image(copy / "n09" / f"x{i}.png", 500 + i)
    after = [i for i, _ in list_images(copy, per_class=3, seed=5)]
    assert [i for i in after if not i.startswith("n09/")] == before and sum(i.startswith("n09/") for i in after) == 3


def test_config_validates_the_new_fields(classes):
    base = {"images": str(classes), "embedding_model": "m"}
    assert MraTripletsConfig(**base).prompt_version == "mra-v1"
    assert MraTripletsConfig(**base, agent_mode="direct").prompt_version == "mra-direct-v1"
    for bad, message in [
        ({"per_class": 0}, "per_class must be >= 1"),
        ({"agent_mode": "one_step"}, "agent_mode must be one of"),
        ({"agent_mode": "direct", "prompt_version": "mra-v1"}, "reads captions"),
        ({"prompt_version": "mra-direct-v1"}, "has no caption step"),
    ]:
        with pytest.raises(ValueError, match=message):
            MraTripletsConfig(**base, **bad)
    with pytest.raises(ValueError, match="must not contain caption placeholders"):
        AgentPrompts(version="x", modify="{reference_caption} to {target_caption}", uses_captions=False)
    # without captions (direct mode) the filter has nothing to compare with: same_as_caption is off
    assert OutputFilter().modification("a red car", "", "") == "a red car"
    assert OutputFilter().modification("a red car", "A red car.", "x") is None
    assert get_prompts("mra-direct-v1").uses_captions is False and get_prompts("mra-v1").uses_captions is True


def _builder(
    root: Path, images: Path, model: Path, url: str, agent_cache: Path | None = None, **kwargs
) -> MraTriplets:
    return MraTriplets(
        cache_dir=str(root / "cache"), agent_cache=str(agent_cache or root / "agent.sqlite"), show_progress=False,
        images=str(images), embedding_model=str(model), agent="openai", agent_model="fake",
        agent_options={**OPTIONS, "base_urls": [url]}, feature_shard_size=8, **{**WINDOW, **kwargs},
    )  # fmt: skip


def test_direct_mode_asks_no_caption_and_has_its_own_cache_key(classes, embedding_model, tmp_path):
    with servers.FakeAgentServer() as server:
        direct = _builder(tmp_path, classes, embedding_model, server.url, agent_mode="direct", per_class=2)
        direct.download_and_prepare()
        summary = direct.build_summary()
        pairs = summary["pairs_mined"]
        assert pairs == 12 and summary["complete"] and summary["triplets"] == pairs
        assert server.count("caption") == 0 and server.count("modify") == pairs  # counted at the server
        assert summary["agent_calls_by_step"] == {"modify": pairs}
        rows = direct.as_dataset(split="train")
        assert set(rows["reference_caption"]) == set(rows["target_caption"]) == {""}
        assert all(text.startswith("make the shape a ") for text in rows["modification_text"])

        # the two-step agent on the same response cache: its answers are cached under other keys, so every caption
        # and every modification request is asked (none is taken from the direct run)
        server.reset()
        two_step = _builder(tmp_path, classes, embedding_model, server.url, per_class=2)
        two_step.download_and_prepare()
        assert server.count("caption") == 12 and server.count("modify") == pairs
        assert ResponseCache(tmp_path / "agent.sqlite").count_by_step() == {"caption": 12, "modify": 2 * pairs}
        assert all(two_step.as_dataset(split="train")["reference_caption"])
        assert two_step.hash != direct.hash
        # the features and the mined pairs do not depend on the agent: computed once for both builds
        assert len(list(direct.work_dir.glob("features-*"))) == 1 and len(list(direct.work_dir.glob("mined-*"))) == 1

        server.reset()  # a re-run of the direct build asks nothing
        again = _builder(
            tmp_path / "again", classes, embedding_model, server.url, tmp_path / "agent.sqlite", agent_mode="direct",
            per_class=2,
        )  # fmt: skip
        again.download_and_prepare()
        assert server.count() == 0 and again.build_summary()["agent_cached"] == pairs

    card = export_triplets(rows, tmp_path / "out", config=direct.config_dict(), summary=summary) / "README.md"
    text = card.read_text()
    assert "mode `direct`" in text and "from both images alone, without captions" in text
    assert "repeating a caption" not in text
    assert "at most 2 images of each class folder" in text and "(`sample_seed` 0)" in text
    config = yaml.safe_load(text.split("---")[1])["mra_cir"]["builder_config"]
    assert config["agent_mode"] == "direct" and config["per_class"] == 2 and config["sample_seed"] == 0
    assert config["prompt_version"] == "mra-direct-v1" and config["version"] == "1.4.0"


def test_pair_miner_hook_supplies_the_pairs(classes, embedding_model, tmp_path):
    def next_image(features, config):
        ids = features.ids
        return {"pairs": [{"reference_id": a, "target_id": b, "rank": 1, "score": 0.5} for a, b in zip(ids, ids[1:])]}

    with servers.FakeAgentServer() as server:
        hooked = _builder(tmp_path, classes, embedding_model, server.url, max_images=6, pair_miner=next_image)
        hooked.download_and_prepare()
        listed = [i for i, _ in list_images(classes, max_images=6)]
        rows = hooked.as_dataset(split="train")
        assert list(zip(rows["reference_id"], rows["target_id"])) == list(zip(listed, listed[1:]))
        assert hooked.build_summary()["pairs_mined"] == 5
        # the miner is part of the dataset's cache key: the default mining of the same config is another folder
        assert _builder(tmp_path, classes, embedding_model, server.url, max_images=6).hash != hooked.hash

        def stranger(features, config):
            return {"pairs": [{"reference_id": features.ids[0], "target_id": "nope.png", "rank": 1, "score": 0.0}]}

        with pytest.raises(ValueError, match="not embedded"):
            _builder(tmp_path / "x", classes, embedding_model, server.url, max_images=6, pair_miner=stranger)\
                .download_and_prepare()  # fmt: skip


def _fake_hub_cache(root: Path, repo_id: str, commit: str) -> None:
    repo = root / f"models--{repo_id.replace('/', '--')}"
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / "main").write_text(commit)
    (repo / "snapshots" / commit).mkdir(parents=True)
    (repo / "snapshots" / commit / "config.json").write_text("{}")


def test_hub_revision_offline_falls_back_to_the_name_and_says_so(caplog, tmp_path, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    assert constants.is_offline_mode()  # the tests run with HF_HUB_OFFLINE=1: no network here
    with caplog.at_level(logging.INFO):
        key, revision = model_identity("someone/blip2-itm-like")
    assert revision is None and key == fingerprint("hub-model", "someone/blip2-itm-like")
    (line,) = [r.getMessage() for r in caplog.records if "someone/blip2-itm-like" in r.getMessage()]
    assert "Hub revision could not be resolved (offline (HF_HUB_OFFLINE), and it is not in the local" in line
    assert "the cache key uses the name only" in line

    # offline with the model in the local Hugging Face cache: the snapshot `main` points at (what from_pretrained loads)
    _fake_hub_cache(tmp_path / "hub", "someone/blip2-itm-like", "a" * 40)
    key_a, revision = model_identity("someone/blip2-itm-like")
    assert revision == "a" * 40 and key_a != key
    _fake_hub_cache(tmp_path / "hub", "someone/blip2-itm-like", "b" * 40)  # a new revision downloaded: a new key
    assert model_identity("someone/blip2-itm-like")[0] not in (key, key_a)

    # online: the Hub's answer; a Hub that does not answer: the local cache, else the name
    class Info:
        sha = "c" * 40

    monkeypatch.setattr(constants, "is_offline_mode", lambda: False)
    monkeypatch.setattr("huggingface_hub.HfApi.model_info", lambda self, repo_id, timeout=None: Info())
    assert hub_revision("someone/blip2-itm-like") == ("c" * 40, "from the Hub")

    def unreachable(self, repo_id, timeout=None):
        raise ConnectionError("no network")

    monkeypatch.setattr("huggingface_hub.HfApi.model_info", unreachable)
    assert hub_revision("someone/blip2-itm-like") == (
        "b" * 40, "the local Hugging Face cache's snapshot; the Hub did not answer: ConnectionError"
    )  # fmt: skip
    assert hub_revision("someone/elsewhere")[0] is None


def test_builder_records_the_hub_revision_in_the_card(classes, tmp_path, monkeypatch):
    import datasets
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    _fake_hub_cache(tmp_path / "hub", "Salesforce/blip2-itm-vit-g", "d" * 40)
    builder = MraTriplets(
        cache_dir=str(tmp_path / "cache"), images=str(classes), embedding_model="Salesforce/blip2-itm-vit-g",
        agent="openai", agent_model="fake", agent_options={"base_urls": ["http://127.0.0.1:9/v1"]},
    )  # fmt: skip
    config = builder.config_dict()
    assert config["embedding_model_revision"] == "d" * 40
    empty = datasets.Dataset.from_dict({"modification_text": []})
    card = str(dataset_card(empty, config, {"triplets": 0}))
    assert f"`Salesforce/blip2-itm-vit-g` (revision `{'d' * 40}`)" in card
    assert "The pool was every image of the folder." in card and "mode `two_step`" in card
