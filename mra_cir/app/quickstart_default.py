"""The app's embedded default: the last `mra-cir quickstart` run, or the way to make one.

A quickstart folder holds `mra_model/` (MRA-trained), `stage1_model/` (the pretrained stand-in for BLIP-2 it started
from) and the world's benchmarks in CIRCO's layout (`benchmarks/<name>/unlabeled2017/*.png`, `annotations/val.json`). The app ranks
the gallery of the first benchmark (`single_edit` when present), shows some of its queries as examples, and builds
the gallery index of each model on first start (cached as `gallery_index/` and `gallery_index_stage1/` in the
quickstart folder, rebuilt when the model changes). The default run (`mra-cir quickstart`, several seeds) writes one
such folder per seed (`seed_<S>/`): the app serves the first seed's. Without a quickstart folder the page says which
command makes one, and can run it ([`build_quickstart`]: the `--fast` run, with a progress bar).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import torch

from .images import InputError

#: the benchmark whose gallery the app shows, when the quickstart wrote it (else the first benchmark found)
PREFERRED_BENCHMARK = "single_edit"


def quickstart_command(output_dir: str | os.PathLike) -> str:
    """The one command that makes the app's default model and gallery."""
    suffix = "" if str(output_dir) == "quickstart_output" else f" --output_dir {output_dir}"
    return f"mra-cir quickstart --fast{suffix}"


class NoQuickstartError(InputError):
    """No quickstart output where the app looked: the message says which command makes it."""

    def __init__(self, output_dir: str | os.PathLike, missing: str):
        self.output_dir = str(output_dir)
        super().__init__(
            f"No model to serve yet: {missing}. Make the default one (the quickstart's synthetic world, about 70 s "
            f"on a 2-core CPU) with `{quickstart_command(output_dir)}`, or press **Build the quickstart model** "
            "below; or start the app on your own model with `mra-cir app --model DIR --index DIR --images DIR`."
        )


@dataclass
class QuickstartOutput:
    """The paths of a finished quickstart run that the app serves."""

    root: Path
    mra_model: Path
    stage1_model: Path | None
    benchmark: Path

    @property
    def images(self) -> Path:
        return self.benchmark / "unlabeled2017"

    def index_dir(self, which: str) -> Path:
        """Where the app caches the gallery index of `which` model (`"mra"` or `"stage1"`)."""
        return self.root / ("gallery_index" if which == "mra" else f"gallery_index_{which}")


def find_quickstart(output_dir: str | os.PathLike) -> QuickstartOutput:
    """The quickstart run in `output_dir` (or, for a several-seed run, in its first seed's folder), or a
    [`NoQuickstartError`] naming what is missing."""
    root = Path(output_dir)
    if not (root / "mra_model" / "config.json").is_file() and (root / "seeds.json").is_file():
        seeds = json.loads((root / "seeds.json").read_text()).get("seeds") or [0]
        root = root / f"seed_{seeds[0]}"
    mra = root / "mra_model"
    if not (mra / "config.json").is_file():
        what = f"{root} does not exist" if not root.exists() else f"{mra} holds no trained model"
        raise NoQuickstartError(output_dir, what)
    benchmarks = sorted(p.parent for p in (root / "benchmarks").glob("*/unlabeled2017") if p.is_dir())
    if not benchmarks:
        raise NoQuickstartError(output_dir, f"{root / 'benchmarks'} holds no benchmark gallery (an older quickstart?)")
    benchmark = next((b for b in benchmarks if b.name == PREFERRED_BENCHMARK), benchmarks[0])
    stage1 = root / "stage1_model"
    return QuickstartOutput(root, mra, stage1 if (stage1 / "config.json").is_file() else None, benchmark)


def benchmark_examples(benchmark: str | os.PathLike, limit: int = 8) -> list[tuple[str, str]]:
    """The first `limit` queries of a benchmark in CIRCO's layout as `(gallery id, modification text)`, the gallery
    id being the reference's file name (its id in an index built from `unlabeled2017/`). Empty if unreadable."""
    benchmark = Path(benchmark)
    try:
        info = json.loads((benchmark / "image_info_unlabeled2017.json").read_text())
        names = {entry["id"]: entry["file_name"] for entry in info["images"]}
        queries = json.loads((benchmark / "annotations" / "val.json").read_text())
        return [(names[q["reference_img_id"]], q["relative_caption"]) for q in queries[:limit]]
    except (OSError, ValueError, KeyError, TypeError):
        return []


def build_quickstart(output_dir: str | os.PathLike) -> None:
    """Run `mra-cir quickstart --fast --output_dir output_dir` in this process (its tqdm bars are what the page's
    progress bar follows); the torch thread count is restored afterwards."""
    from mra_cir.quickstart import QuickstartArguments, run_quickstart

    threads = torch.get_num_threads()
    try:
        run_quickstart(QuickstartArguments(fast=True, output_dir=str(output_dir)))
    finally:
        torch.set_num_threads(threads)


__all__ = [
    "NoQuickstartError",
    "QuickstartOutput",
    "benchmark_examples",
    "build_quickstart",
    "find_quickstart",
    "quickstart_command",
]
