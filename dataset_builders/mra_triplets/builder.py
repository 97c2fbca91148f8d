"""The MRA triplet builder: unlabeled images in, (reference image, modification text, target image) triplets out.

Pipeline (`MraTriplets._split_generators`, run once in the main process, each step cached under `work_dir`):

1. list the images of `config.images` (sorted; with `per_class` / `max_images` a sample drawn with `sample_seed`,
   `pool.list_images`; sub-folders that cannot be listed are counted and named), embed them with
   `config.embedding_model`, an `MraCirModel` folder or a BLIP-2 ITM checkpoint (`extract_image_features`: resumable
   shards; corrupt images are skipped and counted); fewer than two readable images is a `ValueError` naming them;
2. mine (reference, target) pairs in the rank window [q1, q2] of token-level similarity (`sample_rank_window`, or the
   `pair_miner` passed to the builder); a window that gives no pair at all is a `ValueError` suggesting one that fits;
3. caption every image used by a pair (agent step 1, one call per image, response cache; skipped when
   `agent_mode="direct"`).

Then `_generate_examples` runs agent step 2 (and the optional verification, `agent_steps`) over fixed shards of
`config.pairs_per_shard` pairs, so `download_and_prepare(num_proc=N)` runs shards in parallel and the output does not
depend on `num_proc`; the worker processes end with the building process, even when it is killed (`processes`).
Every answer goes through `OutputFilter`; rejected pairs are dropped and counted (the counts are in
`builder.build_summary()` and the dataset card).

A build is complete only when every pair has an answer or a counted rejection; failed requests (time-outs, 5xx, ...)
leave it unwritten (`IncompleteBuildError`, see `summary`) and the next run asks exactly those again. Every cache key
covers what its content depends on (`fingerprints`): a changed input recomputes what depends on it, nothing else.

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

import dataclasses
import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import datasets

from mra_cir.modeling_mra_cir.loading import check_model_source
from mra_cir.retrieval.content_hashes import ContentHashes
from mra_cir.retrieval.image_files import list_images

from ..agents.base import AgentBackend, AgentError, AgentImage
from ..agents.cache import CachedAgent, ResponseCache
from ..agents.registry import make_agent
from .agent_steps import caption_images, modification_shard
from .config import FEATURES, MraTripletsConfig, triplet_features
from .fingerprints import atomic_write_json, fingerprint, image_hashes, miner_key, model_identity
from .pool_messages import no_pairs_message, too_few_images_message
from .processes import workers_end_with_this_process
from .summary import IncompleteBuildError, read_build_summary, record_agent_error, stop_reason
from .verification import DROPPED_SPLIT, CycleCheck, read_dropped, write_dropped


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
        work_dir (`str`, *optional*): features, mined pairs, captions, statistics and the memo of file hashes
            (default `<cache_dir>/mra_triplets_work`).
        embedding_batch_size (`int`, defaults to 32): images per forward pass when embedding.
        device (`str`, *optional*): where the images are embedded and the pairs mined (`"cuda"`; default: the CPU).
        feature_shard_size (`int`, defaults to 1024): images per feature shard (the unit of resumption and of
            recomputation when images change).
        allow_failures (`bool`, defaults to False): finish the dataset even when agent requests failed (those pairs
            are dropped and counted in `pairs_failed`); a later run without it asks them again.
        overwrite (`bool`, defaults to False): recompute the features, the mined pairs and the dataset (agent answers
            stay cached: their keys cover every input).
        show_progress (`bool`, defaults to True): progress bars.
        pair_miner (`Callable[[ImageFeatures, MraTripletsConfig], dict]`, *optional*): the mining step, replacing
            `sample_rank_window` over the config's window: called once per preparation with the embedded images
            (`features.features` `(N, Q, D)`, `features.ids`, `features.duplicates`) and the config, it returns
            `{"pairs": [{"reference_id", "target_id", "rank", "score"}, ...], "too_few": [ids]}` (or an object
            with `.pairs` / `.too_few`, like `sample_rank_window`'s result); picklable for `num_proc > 1`. Its
            pairs are not cached by the builder.
            Its identity is part of the dataset's cache key: `pair_miner.cache_key` (a string to change whenever
            its pairs can change for the same inputs) or else its qualified name. The window sweep passes a
            [`SharedWindowDraws`] (every window drawn from one ranking pass).
    """

    BUILDER_CONFIG_CLASS = MraTripletsConfig
    # bump when the generation logic changes (1.2: pool sampling, agent_mode; 1.3: control characters; 1.4: cycle check)
    VERSION = datasets.Version("1.4.0")

    def __init__(
        self,
        *args,
        agent_backend: AgentBackend | None = None,
        agent_options: dict | None = None,
        agent_cache: str | None = None,
        work_dir: str | None = None,
        embedding_batch_size: int = 32,
        device: str | None = None,
        feature_shard_size: int = 1024,
        allow_failures: bool = False,
        overwrite: bool = False,
        show_progress: bool = True,
        pair_miner: Callable | None = None,
        **kwargs,
    ):
        config = kwargs.pop("config", None)
        if config is not None:
            kwargs = {**{k: v for k, v in vars(config).items() if k not in ("name", "version")}, **kwargs}
            kwargs.setdefault("config_name", None)
        root = os.path.expanduser(str(kwargs.get("cache_dir") or datasets.config.HF_DATASETS_CACHE))
        self.work_dir = Path(work_dir or os.path.join(root, "mra_triplets_work"))
        self.agent_options = dict(agent_options or {})
        self.content_hashes = ContentHashes(self.work_dir / "content_hashes.sqlite")
        # validate the config now (clear errors before any hashing) and make the agent: its identity is in the hash
        names = {f.name for f in dataclasses.fields(MraTripletsConfig)} - {"name", "version"}
        early = MraTripletsConfig(**{k: v for k, v in kwargs.items() if k in names})
        check_model_source(early.embedding_model)
        self._agent = self._make_agent(agent_backend, early)
        self._unreadable: list[tuple[str, str]] = []
        self._listed = list_images(
            early.images, early.max_images, early.per_class, early.sample_seed, True, unreadable=self._unreadable
        )
        self._hashes = image_hashes(self._listed, self.content_hashes)
        self._model_key, self.embedding_model_revision = model_identity(early.embedding_model, self.content_hashes)
        self.pair_miner = pair_miner
        if kwargs.get("hash") is None:
            # the cache folder changes when the images' bytes, the embedding model or the agent's answers can change
            agent = self._agent
            identity = [agent.backend_name, agent.model_name, agent.prompt_version, agent.cache_settings()]
            miner = [miner_key(pair_miner)] if pair_miner is not None else []
            kwargs["hash"] = fingerprint(sorted(self._hashes.items()), self._model_key, identity, *miner)
        super().__init__(*args, **kwargs)
        self.agent_cache_path = str(agent_cache or self.work_dir / "agent_cache.sqlite")
        self.embedding_batch_size = embedding_batch_size
        self.device = device
        self.feature_shard_size = feature_shard_size
        self.allow_failures = allow_failures
        self.overwrite = overwrite
        self.show_progress = show_progress
        self.prepared_in_this_run = False

    def download_and_prepare(self, *args, **kwargs):
        """`datasets`' `download_and_prepare`, with three differences: a prepared dataset whose statistics still count
        failed pairs is prepared again (unless `allow_failures`), so a re-run asks them; `overwrite=True` rebuilds it;
        an agent failure (`AgentUnavailableError`, also from a worker process), failed requests
        (`IncompleteBuildError`) or a Ctrl-C (`KeyboardInterrupt`) are raised as themselves rather than wrapped in
        `DatasetGenerationError`. Answers received before any of them are cached."""
        output_dir = kwargs.get("output_dir") or self._cache_dir
        if os.path.isfile(os.path.join(output_dir, datasets.config.DATASET_INFO_FILENAME)):
            try:
                complete = self.build_summary()["complete"]
            except (FileNotFoundError, KeyError, ValueError):
                complete = False  # statistics missing or from an older version: prepare again (answers are cached)
            if self.overwrite or (not complete and not self.allow_failures):
                kwargs["download_mode"] = datasets.DownloadMode.FORCE_REDOWNLOAD
                self.info.splits = None  # the old split sizes are not what the new preparation must match
        try:
            with workers_end_with_this_process():
                return super().download_and_prepare(*args, **kwargs)
        except Exception as error:
            reason = stop_reason(error, self.stats_dir)
            if reason is error:
                raise
            raise reason from error

    def _download_and_prepare(self, dl_manager, verification_mode, **prepare_split_kwargs):
        super()._download_and_prepare(dl_manager, verification_mode, **prepare_split_kwargs)
        summary = self.build_summary()
        if not summary["complete"] and not self.allow_failures:
            # raised inside `datasets`' temporary folder: nothing final is written, the next run prepares again
            raise IncompleteBuildError(summary)

    def _as_dataset(self, split=datasets.Split.TRAIN, in_memory: bool = False) -> datasets.Dataset:
        info = (self.info.splits or {}).get(str(split))
        if info is not None and info.num_examples == 0:  # every pair rejected: an empty dataset, not a reader error
            features = self.info.features or FEATURES
            return datasets.Dataset.from_dict({name: [] for name in features}, features=features, split=split)
        return super()._as_dataset(split=split, in_memory=in_memory)

    # -- helpers -------------------------------------------------------------------------------------------------------

    @property
    def stats_dir(self) -> Path:
        return self.work_dir / "stats" / f"{self.config_id}-{self.hash}"

    def _make_agent(self, agent: AgentBackend | None, config: MraTripletsConfig) -> AgentBackend:
        if agent is None:
            kwargs = {"prompts": config.prompt_version, "max_new_tokens": config.max_new_tokens, **self.agent_options}
            agent = make_agent(config.agent, **({"model": config.agent_model} if config.agent_model else {}), **kwargs)
        if agent.backend_name != config.agent or agent.prompt_version != config.prompt_version:
            raise ValueError(
                f"the agent passed ({agent!r}) does not match the config (agent={config.agent!r}, "
                f"prompt_version={config.prompt_version!r}): the cache key would be wrong"
            )
        return agent

    def get_agent(self) -> AgentBackend:
        """The agent backend (built from the config with `make_agent` unless one was passed)."""
        return self._agent

    def _cached_agent(self, on_progress=None) -> CachedAgent:
        return CachedAgent(self.get_agent(), ResponseCache(self.agent_cache_path), on_progress=on_progress)

    def _info(self) -> datasets.DatasetInfo:
        return datasets.DatasetInfo(
            description="MRA triplets: (reference image, modification text, target image) built from unlabeled "
            "images by rank-window mining and a two-step multimodal agent (arXiv 2505.19952).",
            features=triplet_features(self.config),
        )

    # -- once: embed, mine, caption ----------------------------------------------------------------------------------

    def _embed(self, listed: list[tuple[str, str]]):
        from mra_cir.modeling_mra_cir.loading import load_model_and_processor
        from mra_cir.retrieval.image_features import extract_image_features

        model, processor = load_model_and_processor(self.config.embedding_model, device=self.device)
        output_dir = self.work_dir / f"features-{self._model_key}"  # the images' bytes are in its manifest
        if self.overwrite:
            shutil.rmtree(output_dir, ignore_errors=True)
        return extract_image_features(
            model, processor, [path for _, path in listed], output_dir=str(output_dir),
            batch_size=self.embedding_batch_size, ids=[image_id for image_id, _ in listed],
            show_progress=self.show_progress, shard_size=self.feature_shard_size, reuse_shards=True,
            content_hashes=self.content_hashes,
        )  # fmt: skip

    def _mine(self, features) -> dict:
        from .mining import checked_pairs, sample_rank_window

        if self.pair_miner is not None:
            return checked_pairs(self.pair_miner(features, self.config), features.ids)

        config = self.config
        key = fingerprint(
            "mined", self._model_key, [(i, self._hashes.get(i)) for i in features.ids], list(features.features.shape),
            config.reduce, config.q1, config.q2, config.targets_per_reference, config.seed,
            sorted(features.duplicates.items()),
        )  # fmt: skip
        path = self.work_dir / f"mined-{key}.json"
        if path.exists() and not self.overwrite:
            return json.loads(path.read_text())
        mined = sample_rank_window(
            features.features.to(self.device or "cpu"), features.ids, q1=config.q1, q2=config.q2, seed=config.seed,
            reduce=config.reduce, targets_per_reference=config.targets_per_reference, duplicates=features.duplicates,
        )  # fmt: skip
        keep = ("reference_id", "target_id")
        pairs = [{**{k: p[k] for k in keep}, "rank": int(p["rank"]), "score": float(p["score"])} for p in mined.pairs]
        data = {"pairs": pairs, "too_few": list(mined.too_few)}
        atomic_write_json(path, data)
        return data

    def _split_generators(self, dl_manager):
        from tqdm.auto import tqdm

        config = self.config
        self.prepared_in_this_run = True
        shutil.rmtree(self.stats_dir, ignore_errors=True)
        self.stats_dir.mkdir(parents=True, exist_ok=True)

        listed = self._listed
        if len(listed) < 2:
            raise ValueError(too_few_images_message(config.images, len(listed), len(listed), [], self._unreadable))
        paths = dict(listed)
        features = self._embed(listed)
        if len(features.ids) < 2:
            found = (len(listed), len(features.ids), [tuple(item) for item in features.skipped], self._unreadable)
            raise ValueError(too_few_images_message(config.images, *found))
        mined = self._mine(features)
        pairs = mined["pairs"]
        if not pairs and self.pair_miner is None:
            window = (len(features.ids), config.q1, config.q2, len(mined["too_few"]))
            raise ValueError(no_pairs_message(config.images, *window))

        # step 1: one caption per image used by a pair (main process: deterministic order and batching)
        used = sorted({p["reference_id"] for p in pairs} | {p["target_id"] for p in pairs})
        agent_images = [AgentImage(id=i, path=paths[i], sha256=self._hashes[i]) for i in used]
        asked = len(agent_images) if config.agent_mode == "two_step" else 0
        bar = tqdm(total=asked, desc="captions", unit="img", disable=not self.show_progress or not asked)
        try:  # closed on an error too: the command's one-line message then starts on a line of its own
            cached_agent = self._cached_agent(on_progress=bar.update)
            captions, caption_counts = caption_images(cached_agent, agent_images, config)
        finally:
            bar.close()
        captions_path = self.stats_dir / "captions.json"
        atomic_write_json(captions_path, captions)
        atomic_write_json(
            self.stats_dir / "prepare.json",
            {
                "images_found": len(listed),
                "unreadable_folders": [list(item) for item in self._unreadable],
                "images_embedded": len(features.ids),
                "skipped": [list(item) for item in features.skipped],
                "duplicates": dict(features.duplicates),
                "pairs_mined": len(pairs),
                "too_few_candidates": len(mined["too_few"]),
                "captions": caption_counts,
                "agent": {"caption": cached_agent.stats.to_dict()},
            },
        )
        size = config.pairs_per_shard
        shards = [
            {"index": index, "pairs": pairs[start : start + size]}
            for index, start in enumerate(range(0, len(pairs), size))
        ]
        cycle = None
        if config.cycle_check:  # the window candidates' tokens, once, for every shard's process
            cycle = CycleCheck.prepare(self.stats_dir / "cycle_check.pt", features, pairs, config, self.device)
        kwargs = {"shards": shards, "captions_path": str(captions_path), "stats_dir": str(self.stats_dir)}
        splits = [datasets.SplitGenerator(name=datasets.Split.TRAIN, gen_kwargs={**kwargs, "cycle_check": cycle})]
        if config.verify or config.cycle_check:  # what the verifiers drop, written by the train split's shards
            splits.append(datasets.SplitGenerator(name=DROPPED_SPLIT, gen_kwargs={**kwargs, "split": DROPPED_SPLIT}))
        return splits

    # -- per shard: modification text (+ verification) -----------------------------------------------------------

    def _generate_examples(
        self, shards: list[dict], captions_path: str, stats_dir: str, cycle_check=None, split: str = "train"
    ):
        if split == DROPPED_SPLIT:
            for local_index, shard in enumerate(shards):
                for item_index, (request, pair, text, reasons) in enumerate(read_dropped(stats_dir, shard["index"])):
                    yield datasets.builder.Key(local_index, item_index), self._row(request, pair, text, reasons)
            return
        config = self.config
        captions = json.loads(Path(captions_path).read_text())
        cached_agent = self._cached_agent()
        for local_index, shard in enumerate(shards):
            try:
                accepted, counts, dropped = modification_shard(
                    cached_agent, shard["pairs"], captions, config, cycle_check
                )
            except AgentError as error:  # reaches the main process without its type when raised in a worker
                record_agent_error(stats_dir, shard["index"], error)
                raise
            counts["agent"] = cached_agent.stats.to_dict()
            if config.verify or config.cycle_check:
                write_dropped(stats_dir, shard["index"], dropped)
            atomic_write_json(Path(stats_dir) / f"shard-{shard['index']:05d}.json", counts)
            cached_agent.stats = type(cached_agent.stats)()
            for item_index, (request, pair, text) in enumerate(accepted):
                yield datasets.builder.Key(local_index, item_index), self._row(request, pair, text, [])

    def _row(self, request, pair: dict, text: str, reasons: list[str]) -> dict:
        """One example: the triplet, and the columns of `triplet_features` this config adds."""
        reference_bytes, target_bytes = (Path(i.path).read_bytes() for i in (request.reference, request.target))
        row = {
            "reference_image": {"path": pair["reference_id"], "bytes": reference_bytes},
            "target_image": {"path": pair["target_id"], "bytes": target_bytes},
            "modification_text": text,
            "reference_caption": request.reference_caption,
            "target_caption": request.target_caption,
            "rank": pair["rank"],
            "score": pair["score"],
            "reference_id": pair["reference_id"],
            "target_id": pair["target_id"],
        }
        if "drop_reason" in self.info.features:
            row["drop_reason"] = ",".join(reasons)
        if "agent_error" in self.info.features:
            known = getattr(self.get_agent(), "known_error", None)
            row["agent_error"] = (known(request, text) if known else None) or ""
        return row

    # -- reporting -----------------------------------------------------------------------------------------------------

    def build_summary(self) -> dict:
        """What the last preparation of this config did: images, pairs mined, agent calls / cached / failed per step,
        rejections by reason, failed pairs by step and why (`pairs_failed`, `failed_by_step`, `failure_reasons`),
        whether it is `complete`, triplets kept (read from the statistics written by `download_and_prepare`)."""
        answers = len(ResponseCache(self.agent_cache_path)) if os.path.exists(self.agent_cache_path) else 0
        return read_build_summary(self.stats_dir, self.prepared_in_this_run, answers)

    def config_dict(self) -> dict:
        """The builder config as a plain dict (for the dataset card)."""
        data = {k: v for k, v in vars(self.config).items() if k not in ("data_files", "description")}
        data["version"] = str(self.config.version)
        if self.embedding_model_revision:
            data["embedding_model_revision"] = self.embedding_model_revision
        return data


__all__ = ["MraTriplets"]
