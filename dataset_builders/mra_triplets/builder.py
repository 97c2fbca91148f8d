"""The MRA triplet builder: unlabeled images in, (reference image, modification text, target image) triplets out.

Pipeline (`MraTriplets._split_generators`, run once in the main process, each step cached under `work_dir`):

1. list the images of `config.images` (sorted, at most `max_images`), embed them with the BLIP-2 / MRA-CIR model
   `config.embedding_model` (`extract_image_features`: resumable shards; corrupt images are skipped and counted);
2. mine (reference, target) pairs in the rank window [q1, q2] of token-level similarity (`sample_rank_window`);
3. caption every image used by a pair (agent step 1, one call per image, response cache).

Then `_generate_examples` runs agent step 2 (and the optional verification) over fixed shards of
`config.pairs_per_shard` pairs, so `download_and_prepare(num_proc=N)` runs shards in parallel and the output does not
depend on `num_proc`. Every answer goes through `OutputFilter`; rejected pairs are dropped and counted (the counts
are in `builder.build_summary()` and the dataset card).

Builder scripts can no longer be loaded with `load_dataset` (datasets >= 4): import the class.

Example:
    ```python
    >>> from mra_cir.dataset_builders.mra_triplets import MraTriplets
    >>> builder = MraTriplets(
    ...     images="photos/", embedding_model="mra-cir-model/", q1=51, q2=60,
    ...     agent="openai", agent_model="openbmb/MiniCPM-V-2_6",
    ...     agent_options={"base_urls": ["http://gpu1:8000/v1", "http://gpu2:8000/v1"], "max_concurrency": 16},
    ...     cache_dir="cache/",
    ... )
    >>> builder.download_and_prepare(num_proc=4)
    >>> triplets = builder.as_dataset(split="train")
    >>> builder.build_summary()["rejected"]
    {'image_leak': 12, 'same_as_caption': 3}
    ```
"""

from __future__ import annotations

import json
import os
import shutil
from collections import Counter
from pathlib import Path

import datasets

from ..agents.base import AgentBackend, AgentError, AgentImage, ModificationRequest, file_sha256, parse_yes_no
from ..agents.cache import CachedAgent, ResponseCache
from ..agents.filters import OutputFilter
from ..agents.registry import make_agent
from .config import FEATURES, MraTripletsConfig
from .fingerprints import atomic_write_json, fingerprint, folder_state
from .image_features import IMAGE_EXTENSIONS, list_images

logger = datasets.logging.get_logger(__name__)


class MraTriplets(datasets.GeneratorBasedBuilder):
    """Build MRA training triplets from a folder of unlabeled images (see the module docstring).

    Config fields (every output-changing parameter) are passed as keyword arguments or as `config=MraTripletsConfig`.
    The other keyword arguments only say *how* to run, not *what* to build:

    Args:
        agent_backend (`AgentBackend`, *optional*): a ready backend object (must be picklable for `num_proc > 1`; its
            `backend_name` and `prompt_version` must match the config). Default: `make_agent(config.agent, ...)`.
        agent_options (`dict`, *optional*): extra arguments for the backend factory (e.g. `base_urls`,
            `max_concurrency`, `api_key_env`, `batch_size`, `device`).
        agent_cache (`str`, *optional*): response cache file (default `<work_dir>/agent_cache.sqlite`).
        work_dir (`str`, *optional*): features, mined pairs, captions and statistics
            (default `<cache_dir>/mra_triplets_work`).
        embedding_batch_size (`int`, defaults to 32): images per forward pass when embedding.
        show_progress (`bool`, defaults to True): progress bars.
    """

    BUILDER_CONFIG_CLASS = MraTripletsConfig
    VERSION = datasets.Version("1.0.0")  # bump when the generation logic changes

    def __init__(
        self,
        *args,
        agent_backend: AgentBackend | None = None,
        agent_options: dict | None = None,
        agent_cache: str | None = None,
        work_dir: str | None = None,
        embedding_batch_size: int = 32,
        show_progress: bool = True,
        **kwargs,
    ):
        config = kwargs.get("config")
        images = kwargs.get("images", getattr(config, "images", None))
        model = kwargs.get("embedding_model", getattr(config, "embedding_model", None))
        if kwargs.get("hash") is None and images is not None:
            # the cache folder changes when the images or the embedding model change
            kwargs["hash"] = fingerprint(folder_state(images), folder_state(model) if model else None)
        if config is not None:
            kwargs.pop("config")
            kwargs = {**{k: v for k, v in vars(config).items() if k not in ("name", "version")}, **kwargs}
            kwargs.setdefault("config_name", None)
        super().__init__(*args, **kwargs)
        self._agent = agent_backend
        self.agent_options = dict(agent_options or {})
        self.work_dir = Path(work_dir or os.path.join(self._cache_dir_root, "mra_triplets_work"))
        self.agent_cache_path = str(agent_cache or self.work_dir / "agent_cache.sqlite")
        self.embedding_batch_size = embedding_batch_size
        self.show_progress = show_progress
        self.prepared_in_this_run = False

    def download_and_prepare(self, *args, **kwargs):
        """`datasets`' `download_and_prepare`; an agent failure (e.g. `AgentUnavailableError`: no server answers) is
        re-raised as itself rather than wrapped in `DatasetGenerationError`. Answers received before it are cached."""
        try:
            return super().download_and_prepare(*args, **kwargs)
        except datasets.exceptions.DatasetGenerationError as error:
            cause = error.__cause__
            while cause is not None and not isinstance(cause, AgentError):
                cause = cause.__cause__
            if isinstance(cause, AgentError):
                raise cause from error
            raise

    # -- helpers -------------------------------------------------------------------------------------------------------

    @property
    def stats_dir(self) -> Path:
        return self.work_dir / "stats" / f"{self.config_id}-{self.hash}"

    def get_agent(self) -> AgentBackend:
        """The agent backend (built from the config with `make_agent` unless one was passed)."""
        if self._agent is None:
            config = self.config
            kwargs = {"prompts": config.prompt_version, "max_new_tokens": config.max_new_tokens, **self.agent_options}
            if config.agent_model is not None:
                kwargs["model"] = config.agent_model
            self._agent = make_agent(config.agent, **kwargs)
        agent = self._agent
        if agent.backend_name != self.config.agent or agent.prompt_version != self.config.prompt_version:
            raise ValueError(
                f"the agent passed ({agent!r}) does not match the config (agent={self.config.agent!r}, "
                f"prompt_version={self.config.prompt_version!r}): the cache key would be wrong"
            )
        return agent

    def _cached_agent(self, on_progress=None) -> CachedAgent:
        return CachedAgent(self.get_agent(), ResponseCache(self.agent_cache_path), on_progress=on_progress)

    def _info(self) -> datasets.DatasetInfo:
        return datasets.DatasetInfo(
            description="MRA triplets: (reference image, modification text, target image) built from unlabeled "
            "images by rank-window mining and a two-step multimodal agent (arXiv 2505.19952).",
            features=FEATURES,
        )

    # -- once: embed, mine, caption ----------------------------------------------------------------------------------

    def _embed(self, listed: list[tuple[str, str]]):
        from mra_cir.modeling_mra_cir.loading import load_model_and_processor

        from .image_features import extract_image_features

        config = self.config
        key = fingerprint(
            listed and [(i, os.path.getsize(p)) for i, p in listed], folder_state(config.embedding_model)
        )
        model, processor = load_model_and_processor(config.embedding_model)
        return extract_image_features(
            model,
            processor,
            [path for _, path in listed],
            output_dir=str(self.work_dir / f"features-{key}"),
            batch_size=self.embedding_batch_size,
            ids=[image_id for image_id, _ in listed],
            show_progress=self.show_progress,
        )

    def _mine(self, features) -> dict:
        from .mining import sample_rank_window

        config = self.config
        key = fingerprint(
            features.ids, list(features.features.shape), config.reduce, config.q1, config.q2,
            config.targets_per_reference, config.seed, sorted(features.duplicates.items()),
        )  # fmt: skip
        path = self.work_dir / f"mined-{key}.json"
        if path.exists():
            return json.loads(path.read_text())
        mined = sample_rank_window(
            features.features,
            features.ids,
            q1=config.q1,
            q2=config.q2,
            targets_per_reference=config.targets_per_reference,
            seed=config.seed,
            reduce=config.reduce,
            duplicates=features.duplicates,
        )
        data = {
            "pairs": [
                {
                    "reference_id": p["reference_id"],
                    "target_id": p["target_id"],
                    "rank": int(p["rank"]),
                    "score": float(p["score"]),
                }
                for p in mined.pairs
            ],
            "too_few": list(mined.too_few),
        }
        atomic_write_json(path, data)
        return data

    def _split_generators(self, dl_manager):
        from tqdm.auto import tqdm

        config = self.config
        self.prepared_in_this_run = True
        shutil.rmtree(self.stats_dir, ignore_errors=True)
        self.stats_dir.mkdir(parents=True, exist_ok=True)

        listed = list_images(config.images, config.max_images)
        if len(listed) < 2:
            raise ValueError(
                f"{config.images}: fewer than 2 images found (extensions: {sorted(IMAGE_EXTENSIONS)[:8]}…)"
            )
        paths = dict(listed)
        features = self._embed(listed)
        mined = self._mine(features)
        pairs = mined["pairs"]

        # step 1: one caption per image used by a pair (main process: deterministic order and batching)
        used = sorted({p["reference_id"] for p in pairs} | {p["target_id"] for p in pairs})
        agent_images = [AgentImage(id=i, path=paths[i], sha256=file_sha256(paths[i])) for i in used]
        bar = tqdm(total=len(agent_images), desc="captions", unit="img", disable=not self.show_progress)
        cached_agent = self._cached_agent(on_progress=bar.update)
        raw = cached_agent.caption(agent_images)
        bar.close()
        output_filter = OutputFilter(max_words=config.max_words, max_chars=config.max_chars)
        captions = {}
        for image, text in zip(agent_images, raw):
            clean = output_filter.caption(text)
            captions[image.id] = None if clean is None else {"text": clean, "path": image.path, "sha256": image.sha256}
        captions_path = self.stats_dir / "captions.json"
        atomic_write_json(captions_path, captions)
        atomic_write_json(
            self.stats_dir / "prepare.json",
            {
                "images_found": len(listed),
                "images_embedded": len(features.ids),
                "skipped": [list(item) for item in features.skipped],
                "duplicates": dict(features.duplicates),
                "pairs_mined": len(pairs),
                "too_few_candidates": len(mined["too_few"]),
                "captions": {"images": len(agent_images), "rejected": dict(output_filter.rejected)},
                "agent": {"caption": cached_agent.stats.to_dict()},
            },
        )
        size = config.pairs_per_shard
        shards = [
            {"index": index, "pairs": pairs[start : start + size]}
            for index, start in enumerate(range(0, len(pairs), size))
        ]
        return [
            datasets.SplitGenerator(
                name=datasets.Split.TRAIN,
                gen_kwargs={"shards": shards, "captions_path": str(captions_path), "stats_dir": str(self.stats_dir)},
            )
        ]

    # -- per shard: modification text (+ verification) -----------------------------------------------------------

    def _generate_examples(self, shards: list[dict], captions_path: str, stats_dir: str):
        config = self.config
        captions = json.loads(Path(captions_path).read_text())
        cached_agent = self._cached_agent()
        for local_index, shard in enumerate(shards):
            output_filter = OutputFilter(max_words=config.max_words, max_chars=config.max_chars)
            requests, kept_pairs = [], []
            for pair in shard["pairs"]:
                reference, target = captions.get(pair["reference_id"]), captions.get(pair["target_id"])
                if reference is None or target is None:
                    output_filter.rejected["caption_failed"] += 1
                    continue
                requests.append(
                    ModificationRequest(
                        reference=AgentImage(pair["reference_id"], reference["path"], reference["sha256"]),
                        target=AgentImage(pair["target_id"], target["path"], target["sha256"]),
                        reference_caption=reference["text"],
                        target_caption=target["text"],
                    )
                )
                kept_pairs.append(pair)
            texts = cached_agent.modify(requests)
            accepted = []
            for request, pair, text in zip(requests, kept_pairs, texts):
                clean = output_filter.modification(text, request.reference_caption, request.target_caption)
                if clean is not None:
                    accepted.append((request, pair, clean))
            if config.verify and accepted:
                answers = cached_agent.verify([a[0] for a in accepted], [a[2] for a in accepted])
                accepted = [
                    a for a, answer in zip(accepted, answers) if output_filter.verification(parse_yes_no(answer))
                ]
            atomic_write_json(
                Path(stats_dir) / f"shard-{shard['index']:05d}.json",
                {
                    "pairs": len(shard["pairs"]),
                    "kept": len(accepted),
                    "rejected": dict(output_filter.rejected),
                    "agent": cached_agent.stats.to_dict(),
                },
            )
            cached_agent.stats = type(cached_agent.stats)()
            for item_index, (request, pair, text) in enumerate(accepted):
                yield (
                    datasets.builder.Key(local_index, item_index),
                    {
                        "reference_image": {"path": pair["reference_id"], "bytes": _read(request.reference.path)},
                        "target_image": {"path": pair["target_id"], "bytes": _read(request.target.path)},
                        "modification_text": text,
                        "reference_caption": request.reference_caption,
                        "target_caption": request.target_caption,
                        "rank": pair["rank"],
                        "score": pair["score"],
                        "reference_id": pair["reference_id"],
                        "target_id": pair["target_id"],
                    },
                )

    # -- reporting -----------------------------------------------------------------------------------------------------

    def build_summary(self) -> dict:
        """What the last preparation of this config did: images, pairs mined, agent calls / cached / failed per step,
        rejections by reason, triplets kept (read from the statistics written by `download_and_prepare`)."""
        prepare_path = self.stats_dir / "prepare.json"
        if not prepare_path.exists():
            raise FileNotFoundError(f"{prepare_path}: no statistics; run download_and_prepare first")
        prepare = json.loads(prepare_path.read_text())
        rejected: Counter = Counter({f"{k}": v for k, v in prepare["captions"]["rejected"].items()})
        calls: Counter = Counter()
        caption_stats = prepare["agent"]["caption"]
        calls.update(
            {"calls": caption_stats["calls"], "cached": caption_stats["cached"], "failed": caption_stats["failed"]}
        )
        by_step: Counter = Counter(caption_stats.get("calls_by_step") or {})
        kept = pairs = 0
        for path in sorted(self.stats_dir.glob("shard-*.json")):
            shard = json.loads(path.read_text())
            kept += shard["kept"]
            pairs += shard["pairs"]
            rejected.update(shard["rejected"])
            agent = shard["agent"]
            calls.update({"calls": agent["calls"], "cached": agent["cached"], "failed": agent["failed"]})
            by_step.update(agent.get("calls_by_step") or {})
        return {
            "prepared_in_this_run": self.prepared_in_this_run,
            "images_found": prepare["images_found"],
            "images_embedded": prepare["images_embedded"],
            "images_skipped": len(prepare["skipped"]),
            "skipped": prepare["skipped"],
            "duplicates": len(prepare["duplicates"]),
            "pairs_mined": prepare["pairs_mined"],
            "pairs_generated": pairs,
            "too_few_candidates": prepare["too_few_candidates"],
            "agent_calls": calls["calls"],
            "agent_cached": calls["cached"],
            "agent_failed": calls["failed"],
            "agent_calls_by_step": dict(by_step),
            "rejected": dict(sorted(rejected.items())),
            "triplets": kept,
        }

    def config_dict(self) -> dict:
        """The builder config as a plain dict (for the dataset card)."""
        data = {k: v for k, v in vars(self.config).items() if k not in ("data_files", "description")}
        data["version"] = str(self.config.version)
        return data


def _read(path: str) -> bytes:
    with open(path, "rb") as handle:
        return handle.read()


__all__ = ["MraTriplets"]
