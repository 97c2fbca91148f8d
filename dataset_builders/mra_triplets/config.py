"""`MraTripletsConfig`: every parameter that changes the MRA triplets, and the triplets' features."""

from __future__ import annotations

import os
from dataclasses import dataclass

import datasets

from ..agents.prompts import MODE_PROMPT_VERSIONS, get_prompts

#: how the agent writes the modification text: "two_step" (the paper: caption each image, then compare both images and
#: both captions) or "direct" (one step from both images, no captions: the paper's ablation)
AGENT_MODES = ("two_step", "direct")

#: the columns training needs (the builder writes more: captions, rank, score, ids)
REQUIRED_COLUMNS = ("reference_image", "target_image", "modification_text")

FEATURES = datasets.Features(
    {
        "reference_image": datasets.Image(),
        "target_image": datasets.Image(),
        "modification_text": datasets.Value("string"),
        "reference_caption": datasets.Value("string"),
        "target_caption": datasets.Value("string"),
        "rank": datasets.Value("int32"),
        "score": datasets.Value("float32"),
        "reference_id": datasets.Value("string"),
        "target_id": datasets.Value("string"),
    }
)


def triplet_features(config: MraTripletsConfig) -> datasets.Features:
    """The columns a build writes: `FEATURES`, plus `drop_reason` when a verifier is on ("" in `train`, the reasons in
    the `dropped` split) and, with the synthetic world's scene agent only, `agent_error` ("" for a true text, else
    the error kind it carries: the world knows the truth, a real agent does not)."""
    features = dict(FEATURES)
    if config.verify or config.cycle_check:
        features["drop_reason"] = datasets.Value("string")
    if config.agent == "scene":
        features["agent_error"] = datasets.Value("string")
    return datasets.Features(features)


@dataclass
class MraTripletsConfig(datasets.BuilderConfig):
    """Every parameter that changes the triplets (primitive fields only, so the cache folder name is honest).

    Args:
        images (`str`): folder of images (searched recursively; ids are paths relative to it).
        embedding_model (`str`): the model that embeds the images: an `MraCirModel` folder or a BLIP-2 ITM checkpoint
            (folder or Hub id, e.g. `Salesforce/blip2-itm-vit-g`; a Hub id's cache key includes its resolved revision
            when it can be resolved, see `fingerprints.model_key`).
        reduce (`str`, defaults to "max"): token-level similarity reduction ("max" or "mean_max").
        q1 (`int`, defaults to 51): first rank of the mining window (1 = most similar other image).
        q2 (`int`, defaults to 60): last rank of the mining window.
        targets_per_reference (`int`, defaults to 1): targets sampled per reference in the window.
        seed (`int`, defaults to 0): seed of the mining window's target draws.
        agent (`str`, defaults to "transformers"): agent backend name (see `make_agent`).
        agent_model (`str`, *optional*): the agent's model (folder or served model id).
        agent_mode (`str`, defaults to "two_step"): "two_step" (caption every image, then write the text from both
            images and both captions) or "direct" (no caption step: the text from both images alone; the caption
            columns are empty and the `same_as_caption` filter is off).
        prompt_version (`str`, *optional*): registered prompt set (`agents.prompts.get_prompts`); defaults to the
            mode's: "mra-v1" (two_step), "mra-direct-v1" (direct). Its `uses_captions` must match the mode.
        max_new_tokens (`int`, defaults to 64): generation budget per answer.
        max_images (`int`, *optional*): use at most `max_images` images, a random sample drawn with `sample_seed`
            (after `per_class`); not the first ones in sorted order (on a class-folder layout those are whole classes).
        per_class (`int`, *optional*): use at most `per_class` images of each first-level sub-folder (a class of an
            ImageNet-style layout; images directly in `images` form one group), sampled with `sample_seed`.
        sample_seed (`int`, defaults to 0): seed of the `per_class` / `max_images` samples (kept apart from `seed`, so
            the pool stays fixed while the mining seed varies, and the other way round). The sample is the same for
            the same seed whatever the file system's listing order.
        verify (`bool`, defaults to False): ask the agent whether each modification text describes the change and
            keep only "yes" answers (higher precision, one more call per pair; `verification`).
        cycle_check (`bool`, defaults to False): keep a pair only when the embedding model's composed query
            (reference, text) ranks the target within the top `cycle_k` of the reference's window candidates (ranks
            q1..q2); no agent call (`verification`).
        cycle_k (`int`, defaults to 3): the cycle check's k.
        max_words (`int`, defaults to 40): longer answers are rejected.
        max_chars (`int`, defaults to 300): longer answers are rejected.
        pairs_per_shard (`int`, defaults to 256): pairs per generation shard (the unit of parallelism).
    """

    images: str | None = None
    embedding_model: str | None = None
    reduce: str = "max"
    q1: int = 51
    q2: int = 60
    targets_per_reference: int = 1
    seed: int = 0
    agent: str = "transformers"
    agent_model: str | None = None
    agent_mode: str = "two_step"
    prompt_version: str | None = None
    max_new_tokens: int = 64
    max_images: int | None = None
    per_class: int | None = None
    sample_seed: int = 0
    verify: bool = False
    cycle_check: bool = False
    cycle_k: int = 3
    max_words: int = 40
    max_chars: int = 300
    pairs_per_shard: int = 256

    def __post_init__(self):
        super().__post_init__()
        if self.images is None or not os.path.isdir(self.images):
            raise ValueError(f"MraTripletsConfig.images must be an existing folder, got {self.images!r}")
        if self.embedding_model is None:
            raise ValueError("MraTripletsConfig.embedding_model is required (a saved MraCirModel folder)")
        if self.reduce not in ("max", "mean_max"):
            raise ValueError(f"MraTripletsConfig.reduce must be 'max' or 'mean_max', got {self.reduce!r}")
        if not 1 <= self.q1 <= self.q2:
            raise ValueError(f"MraTripletsConfig needs 1 <= q1 <= q2, got q1={self.q1}, q2={self.q2}")
        if not 1 <= self.targets_per_reference <= self.q2 - self.q1 + 1:
            raise ValueError(
                f"MraTripletsConfig.targets_per_reference must be in [1, q2 - q1 + 1], got {self.targets_per_reference}"
            )
        if self.max_images is not None and self.max_images < 2:
            raise ValueError(f"MraTripletsConfig.max_images must be >= 2, got {self.max_images}")
        if self.per_class is not None and self.per_class < 1:
            raise ValueError(f"MraTripletsConfig.per_class must be >= 1, got {self.per_class}")
        for name in ("max_new_tokens", "max_words", "max_chars", "pairs_per_shard", "cycle_k"):
            if getattr(self, name) < 1:
                raise ValueError(f"MraTripletsConfig.{name} must be >= 1, got {getattr(self, name)}")
        if self.agent_mode not in AGENT_MODES:
            raise ValueError(f"MraTripletsConfig.agent_mode must be one of {AGENT_MODES}, got {self.agent_mode!r}")
        if self.prompt_version is None:
            self.prompt_version = MODE_PROMPT_VERSIONS[self.agent_mode]
        prompts = get_prompts(self.prompt_version)  # unknown version -> KeyError naming the registered ones
        if prompts.uses_captions != (self.agent_mode == "two_step"):
            raise ValueError(
                f"MraTripletsConfig: prompt_version {self.prompt_version!r} "
                f"{'reads captions' if prompts.uses_captions else 'has no caption step'}, which does not fit "
                f"agent_mode={self.agent_mode!r} (the mode's prompts: {MODE_PROMPT_VERSIONS[self.agent_mode]!r})"
            )


__all__ = ["AGENT_MODES", "FEATURES", "REQUIRED_COLUMNS", "MraTripletsConfig", "triplet_features"]
