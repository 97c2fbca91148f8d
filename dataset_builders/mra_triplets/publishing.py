"""Publishing MRA triplets (Parquet shards with a dataset card, `push_to_hub`) and reading them back (`load_triplets`).

`export_triplets(dataset, folder, ...)` writes a folder laid out like a Hub dataset repository:

```
folder/
  README.md                 dataset card: YAML metadata (configs -> data files, features, sizes), the builder
                            config, counts, filter statistics, how it was made
  data/train-00000-of-0000N.parquet   images embedded as bytes
  data/dropped-00000-of-0000N.parquet what a verifier dropped (with `drop_reason`), when the build verified
  build_summary.json        the builder's statistics (machine-readable)
```

`load_dataset("parquet", data_files="folder/data/*.parquet")` and `load_dataset("folder")` both read it back with
decoded images; `push_triplets_to_hub` uploads the same thing (the upload itself is not exercised by the tests: no
network here).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import datasets
from huggingface_hub import DatasetCard, DatasetCardData

from .config import REQUIRED_COLUMNS

CARD_TEMPLATE = """
# {pretty_name}

Training triplets for zero-shot composed image retrieval, built from unlabeled images with the Multimodal Reasoning
Agent (MRA) method ([arXiv 2505.19952](https://arxiv.org/abs/2505.19952)) by the `mra-cir` library.

Each row: `reference_image`, `target_image`, `modification_text` (how to turn the reference into the target),
`reference_caption`, `target_caption`, `rank` and `score` (the target's similarity rank / token-level max-cosine among
the reference's neighbours), `reference_id`, `target_id`.

## How it was made

1. {pool_note} Every image was embedded with `{embedding_model}`{revision_note} (BLIP-2 Q-Former query tokens).
2. For each reference image, {targets_per_reference} target(s) were sampled among its neighbours ranked
   {q1}..{q2} by token-level similarity (reduction `{reduce}`, seed {seed}).
3. The agent (`{agent}` backend, model `{agent_model}`, prompts `{prompt_version}`, mode `{agent_mode}`)
   {agent_note}{verify_note}.{dropped_note}
4. Outputs were normalised (one line, trimmed) and rejected when empty, refusals, referring to the images by
   position, {caption_filter}or longer than {max_words} words / {max_chars} characters.

## Counts

| | |
|---|---|
| triplets | {triplets} |
| images found | {images_found} |
| images skipped (unreadable) | {images_skipped} |
| duplicate images | {duplicates} |
| pairs mined | {pairs_mined} |
| agent calls (this run) / answered from cache | {agent_calls} / {agent_cached} |
| failed requests | {agent_failed} |
| pairs left out because their requests failed (`allow_failures`) | {pairs_failed} |

### Rejected outputs by reason

{rejections}

## Builder config

```json
{config_json}
```

## Loading

```python
from datasets import load_dataset
triplets = load_dataset("{repo_id}", split="train")
```
"""


TWO_STEP_NOTE = "captioned every image, then wrote the modification text from both images and both captions"
DIRECT_NOTE = "wrote the modification text from both images alone, without captions (the caption columns are empty)"


def dataset_card(
    dataset: datasets.Dataset,
    config: dict,
    summary: dict,
    repo_id: str = "<user>/<repo>",
    pretty_name: str = "MRA triplets",
    license: str | None = None,
    download_size: int | None = None,
    dropped: datasets.Dataset | None = None,
) -> DatasetCard:
    """The dataset card (YAML metadata + text) of a triplet dataset.

    Args:
        dataset (`datasets.Dataset`): the triplets (its length is the count shown; it must equal
            `summary["triplets"]` when a summary from the same build is given).
        config (`dict`): the builder config (`MraTriplets.config_dict()`).
        summary (`dict`): the build statistics (`MraTriplets.build_summary()`).
        repo_id (`str`): shown in the loading snippet.
        pretty_name (`str`), license (`str`, *optional*): card metadata.
        download_size (`int`, *optional*): bytes of the Parquet files (goes into `dataset_info`).
        dropped (`datasets.Dataset`, *optional*): the pairs a verifier dropped (the builder's `dropped` split).
    """
    if summary.get("triplets", len(dataset)) != len(dataset):
        raise ValueError(f"the summary counts {summary['triplets']} triplets but the dataset has {len(dataset)} rows")
    size = len(dataset)
    size_category = "n<1K" if size < 1000 else "1K<n<10K" if size < 10_000 else "10K<n<100K" if size < 100_000 else (
        "100K<n<1M" if size < 1_000_000 else "n>1M"
    )  # fmt: skip
    data = DatasetCardData(
        pretty_name=pretty_name,
        license=license,
        task_categories=["image-to-image", "image-feature-extraction"],
        tags=["composed-image-retrieval", "mra-cir", "synthetic-annotations"],
        size_categories=[size_category],
        configs=[
            {
                "config_name": "default",
                "data_files": [
                    {"split": name, "path": f"data/{name}-*"}
                    for name in ("train", "dropped")[: 1 + (dropped is not None)]
                ],
            }
        ],
        dataset_info=_dataset_info(dataset, download_size, dropped),
        mra_cir={
            "builder_config": config,
            "counts": _counts(summary, size),
            **({"type_balance": summary["type_balance"]} if summary.get("type_balance") else {}),
        },
    )
    rejected = summary.get("rejected") or {}
    rejections = "\n".join(f"- `{reason}`: {count}" for reason, count in sorted(rejected.items())) or "- none"
    fields = {
        "embedding_model": "?", "targets_per_reference": "?", "q1": "?", "q2": "?", "reduce": "?", "seed": "?",
        "agent": "?", "agent_model": "?", "prompt_version": "?", "max_words": "?", "max_chars": "?",
        "agent_mode": "two_step", **config,
    }  # fmt: skip
    direct = config.get("agent_mode") == "direct"
    revision = config.get("embedding_model_revision")
    text = CARD_TEMPLATE.format(
        pretty_name=pretty_name,
        pool_note=_pool_note(config),
        revision_note=f" (revision `{revision}`)" if revision else "",
        agent_note=DIRECT_NOTE if direct else TWO_STEP_NOTE,
        caption_filter="" if direct else "repeating a caption, ",
        verify_note=_verify_note(config),
        dropped_note=f" The {len(dropped)} pairs a verifier dropped are kept in the `dropped` split, their reasons in "
        "`drop_reason` (counted below under the first)."
        if dropped is not None
        else "",
        triplets=size,
        rejections=rejections,
        config_json=json.dumps(config, indent=2, sort_keys=True, default=str),
        repo_id=repo_id,
        **{k: summary.get(k, "?") for k in _COUNT_KEYS if k != "triplets"},
        **{k: v for k, v in fields.items() if k not in ("verify", "cycle_check")},
    )
    text = text.replace("\n## Builder config", types_section(dataset, summary) + "\n## Builder config", 1)
    return DatasetCard(f"---\n{data.to_yaml()}\n---\n{text}")


def types_section(dataset: datasets.Dataset, summary: dict) -> str:
    """The card's "Transformation types" section: how many texts ask for each kind of change (the lexical tagger,
    `transformation_types`), and, when the build balanced them (`--balance-types`), the quotas and candidates."""
    from .transformation_types import TYPE_NAMES, type_mix

    mix = type_mix(dataset["modification_text"]) if "modification_text" in dataset.column_names else None
    if not mix or not mix["texts"]:
        return ""
    lines = [
        "\n## Transformation types\n",
        "What the modification texts ask for, read by the library's lexical tagger (a text may ask for several: "
        "*primary* counts each text once, by the change it names first; *any* counts every change it names).\n",
        "| type | primary | any |",
        "|---|---|---|",
    ]
    lines += [f"| {TYPE_NAMES[t]} | {mix['primary'].get(t, 0)} | {n} |" for t, n in mix["any"].items()]
    balance = summary.get("type_balance")
    if balance:
        target = balance["target"] if isinstance(balance["target"], str) else json.dumps(balance["target"])
        lines += [
            "",
            f"Balanced by type (target `{target}`): {sum(balance['candidates'].values())} candidate triplets, "
            f"{sum(balance['kept'].values())} kept by per-type quotas (primary type)"
            + (f"; fewer candidates than their share: {', '.join(balance['short'])}" if balance["short"] else "")
            + ".\n",
            "| type | candidates | kept |",
            "|---|---|---|",
        ]
        lines += [f"| {TYPE_NAMES[t]} | {n} | {balance['kept'].get(t, 0)} |" for t, n in balance["candidates"].items()]
    return "\n".join(lines) + "\n"


def _verify_note(config: dict) -> str:
    """The verification the build ran, in words (the agent's self-check, the cycle check, both or none)."""
    parts = ["was asked to verify each text (only 'yes' kept)"] if config.get("verify") else []
    if config.get("cycle_check"):
        parts.append(
            f"each text had to bring the embedding model's composed query to the target within the top "
            f"{config.get('cycle_k')} of the reference's window candidates (cycle consistency)"
        )
    return "".join(f" and {part}" for part in parts)


def _pool_note(config: dict) -> str:
    """One sentence: which images of the folder were used (all, or the seeded per-class / total sample)."""
    per_class, max_images = config.get("per_class"), config.get("max_images")
    if not per_class and not max_images:
        return "The pool was every image of the folder."
    parts = [f"at most {per_class} images of each class folder"] if per_class else []
    parts += [f"at most {max_images} images in all"] if max_images else []
    return f"The pool was a random sample of the folder (`sample_seed` {config.get('sample_seed', 0)}): {', '.join(parts)}."


_COUNT_KEYS = (
    "triplets",
    "images_found",
    "images_skipped",
    "duplicates",
    "pairs_mined",
    "agent_calls",
    "agent_cached",
    "agent_failed",
    "pairs_failed",
)


def _dataset_info(dataset: datasets.Dataset, download_size: int | None, dropped=None) -> dict:
    # `load_dataset("<folder>")` caches a local folder by its name and this metadata (not by the files' contents):
    # the sizes keep two different exports in folders of the same name apart
    num_bytes = int(dataset.data.nbytes)
    info = {
        "features": dataset.features._to_yaml_list(),
        "splits": [{"name": "train", "num_bytes": num_bytes, "num_examples": len(dataset)}],
        "dataset_size": num_bytes,
    }
    if dropped is not None:
        info["splits"].append({"name": "dropped", "num_bytes": int(dropped.data.nbytes), "num_examples": len(dropped)})
        info["dataset_size"] += int(dropped.data.nbytes)
    if download_size is not None:
        info["download_size"] = int(download_size)
    return info


def _counts(summary: dict, size: int) -> dict:
    counts = {k: summary[k] for k in _COUNT_KEYS if k in summary}
    counts["triplets"] = size
    counts["rejected"] = dict(summary.get("rejected") or {})
    return counts


def export_triplets(
    dataset: datasets.Dataset,
    folder: str | Path,
    config: dict | None = None,
    summary: dict | None = None,
    max_shard_size: int = 500 << 20,
    save_arrow: bool = False,
    repo_id: str = "<user>/<repo>",
    dropped: datasets.Dataset | None = None,
) -> Path:
    """Write Parquet shards (images embedded), the dataset card and the summary to `folder` (see module docstring).

    Args:
        dataset (`datasets.Dataset`): the triplets.
        folder (`str` or `Path`): output folder (created).
        config (`dict`, *optional*), summary (`dict`, *optional*): for the card (`MraTriplets.config_dict()`,
            `MraTriplets.build_summary()`).
        max_shard_size (`int`, defaults to 500 MiB): approximate bytes per Parquet shard.
        save_arrow (`bool`, defaults to False): also `save_to_disk(folder / "arrow")`.
        repo_id (`str`): shown in the card's loading snippet.
        dropped (`datasets.Dataset`, *optional*): what a verifier dropped (`builder.as_dataset(split="dropped")`),
            written as `data/dropped-*.parquet` so nothing the agent wrote is lost.

    Returns:
        `Path`: the folder.
    """
    folder = Path(folder)
    (folder / "data").mkdir(parents=True, exist_ok=True)
    for old in [*(folder / "data").glob("train-*.parquet"), *(folder / "data").glob("dropped-*.parquet")]:
        old.unlink()
    for name, part in (("train", dataset), ("dropped", dropped)):
        if part is None:
            continue
        part = part.flatten_indices() if part._indices is not None else part
        num_shards = max(1, math.ceil((part.data.nbytes or 1) / max_shard_size))
        for index in range(num_shards):
            shard = part.shard(num_shards=num_shards, index=index, contiguous=True)
            shard.to_parquet(str(folder / "data" / f"{name}-{index:05d}-of-{num_shards:05d}.parquet"))
    summary = dict(summary or {})
    download_size = sum(path.stat().st_size for path in (folder / "data").glob("*.parquet"))
    card = dataset_card(dataset, config or {}, summary, repo_id=repo_id, download_size=download_size, dropped=dropped)
    card.save(folder / "README.md")
    (folder / "build_summary.json").write_text(json.dumps(summary, indent=1, sort_keys=True, default=str))
    if save_arrow:
        dataset.save_to_disk(str(folder / "arrow"))
    return folder


def push_triplets_to_hub(
    dataset: datasets.Dataset,
    repo_id: str,
    config: dict | None = None,
    summary: dict | None = None,
    private: bool = True,
    token: str | None = None,
) -> str:
    """Upload the triplets (`Dataset.push_to_hub`, Parquet with embedded images) and replace the card with ours,
    keeping the `dataset_info` metadata that `push_to_hub` wrote. Not exercised by the tests (no network here): the
    card and the files are tested through `export_triplets`.

    Returns:
        `str`: the commit URL of the card upload.
    """
    dataset.push_to_hub(repo_id, private=private, token=token)
    card = dataset_card(dataset, config or {}, dict(summary or {}), repo_id=repo_id)
    try:
        pushed = DatasetCard.load(repo_id, repo_type="dataset", token=token)
        for key in ("dataset_info", "configs"):
            if key in pushed.data.to_dict():
                card.data[key] = pushed.data.to_dict()[key]
    except Exception:  # noqa: BLE001 - the card is still valid without the merged metadata
        pass
    return card.push_to_hub(repo_id, repo_type="dataset", token=token)


def load_triplets(spec: str, split: str = "train"):
    """A triplet `datasets.Dataset` from a `save_to_disk` folder, an exported folder or parquet file(s) (glob ok), a
    Hub dataset id (`load_dataset`).

    Raises:
        `ValueError` naming the source when it lacks a split or a triplet column (`REQUIRED_COLUMNS`).
    """
    import datasets

    path = Path(spec)
    if path.is_dir() and ((path / "dataset_info.json").is_file() or (path / "state.json").is_file()):
        loaded = datasets.load_from_disk(str(path))
    elif path.is_dir() and (path / "dataset_dict.json").is_file():
        loaded = datasets.load_from_disk(str(path))
    elif spec.endswith(".parquet") or (path.is_dir() and any(path.glob("**/*.parquet"))):
        # an exported folder holds a `dropped` split beside `train` when the build verified: read the split's files
        named = path.is_dir() and any(path.glob(f"**/{split}-*.parquet"))
        files = (
            spec if spec.endswith(".parquet") else str(path / "**" / (f"{split}-*.parquet" if named else "*.parquet"))
        )
        loaded = datasets.load_dataset("parquet", data_files={split: files}, split=split)
    else:
        loaded = datasets.load_dataset(spec, split=split)
    if isinstance(loaded, datasets.DatasetDict):
        if split not in loaded:
            raise ValueError(f"{spec} has splits {list(loaded)}, not {split!r}")
        loaded = loaded[split]
    missing = [c for c in REQUIRED_COLUMNS if c not in loaded.column_names]
    if missing:
        raise ValueError(f"{spec}: missing triplet column(s) {missing} (columns: {loaded.column_names})")
    return loaded
