"""What the app computes, without any web page: the models and their gallery indexes ([`load_engine`]) and one search
([`SearchEngine.search`]), through [`rank_gallery`], the ranking code of `mra-cir search` and of evaluation.

Every problem a user can cause (a missing or mismatched index, an unreadable model, an empty text, a bad image) is an
[`InputError`] whose message is meant for the page, as it is.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image

from mra_cir.retrieval.encoding import QUERY_MODES, rank_gallery
from mra_cir.retrieval.gallery_index import CONFIG_FILE, FEATURES_FILE, GalleryIndex

from .arguments import MAX_K, AppArguments
from .gallery import ApproximateGallery, GalleryImages, build_index, cached_index, recorded_images, searchable
from .images import InputError
from .quickstart_default import benchmark_examples, find_quickstart

logger = logging.getLogger(__name__)

#: the longest modification text accepted, in characters (the processor keeps the first 64 tokens anyway)
MAX_TEXT_CHARS = 1000


@dataclass
class RankingModel:
    """One model the app ranks with, and its gallery index (exact, or the faiss path for large galleries)."""

    name: str
    path: str
    model: object
    processor: object
    index: GalleryIndex | ApproximateGallery


@dataclass
class ModelResults:
    """One model's answer to a query: gallery ids by decreasing score."""

    name: str
    ids: list[str]
    scores: list[float]

    def as_dict(self) -> dict:
        return {
            "model": self.name,
            "results": [{"id": i, "score": round(s, 6)} for i, s in zip(self.ids, self.scores)],
        }


@dataclass
class SearchEngine:
    """The models of the app over one gallery.

    Args:
        models (`list[RankingModel]`): one, or two shown side by side (same gallery).
        gallery ([`GalleryImages`], *optional*): the gallery's images (without it, results show their ids only).
        examples (`list[tuple[str, str]]`): example queries `(gallery id of the reference, text)`.
        notes (`list[str]`): what the page should say about the set-up (e.g. an index built with a moved model).
    """

    models: list[RankingModel]
    gallery: GalleryImages | None = None
    examples: list[tuple[str, str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def summary(self) -> str:
        """One line of Markdown: the models, the gallery size and the search path."""
        index = self.models[0].index
        path = "faiss candidates + exact re-rank" if isinstance(index, ApproximateGallery) else "exact search"
        names = " vs ".join(f"**{m.name}** (`{m.path}`)" for m in self.models)
        return " ".join([f"{names} over {len(index):,} gallery images ({path}).", *self.notes])

    def reference_from_gallery(self, id_: str) -> Image.Image:
        """The stored image of a gallery id, as the gallery side decoded it (a query picked in the gallery)."""
        if self.gallery is None:
            raise InputError("the gallery's images are not available here (start the app with --images DIR)")
        try:
            return self.gallery.original(id_)
        except (KeyError, OSError, ValueError) as err:
            raise InputError(f"gallery image {id_!r} cannot be read: {err}") from None

    def search(
        self, reference: Image.Image | None, text: str | None, mode: str, k: int, exclude_id: str | None = None
    ) -> list[ModelResults]:
        """Rank the gallery for one query with every model ([`rank_gallery`]).

        Args:
            reference (`PIL.Image.Image`, *optional*): the reference image (RGB); not needed by the `"text"` mode.
            text (`str`, *optional*): the modification text; not needed by the `"image"` mode.
            mode (`str`): one of `QUERY_MODES` (`composed`, `image`, `text`, `image_text_fusion`).
            k (`int`): results per model, 1 to `MAX_K`.
            exclude_id (`str`, *optional*): a gallery id left out of the results (the reference, when it was picked
                from the gallery).

        Raises:
            [`InputError`]: a missing or empty input for the mode, an unknown mode, `k` out of range.
        """
        if mode not in QUERY_MODES:
            raise InputError(f"unknown ranking mode {mode!r}: choose one of {', '.join(QUERY_MODES)}")
        text = (text or "").strip()
        if mode != "image" and not text:
            raise InputError(
                "Type a modification text (what should change, e.g. “same scene but the circle is blue”): the "
                f"{mode.replace('_', ' ')} ranking needs one (the image-only ranking does not)."
            )
        if len(text) > MAX_TEXT_CHARS:
            raise InputError(f"The text is {len(text)} characters long; keep it under {MAX_TEXT_CHARS}.")
        if mode != "text" and reference is None:
            raise InputError("Choose a reference image: upload one, or click one in the gallery below.")
        try:
            k = int(k)
        except (TypeError, ValueError):
            raise InputError(f"the number of results must be a whole number, got {k!r}") from None
        if not 1 <= k <= MAX_K:
            raise InputError(f"the number of results must be between 1 and {MAX_K}, got {k}")
        out = []
        for entry in self.models:
            exclude = [exclude_id] if exclude_id is not None and exclude_id in entry.index else None
            size = len(entry.index) - (1 if exclude else 0)
            ranking = rank_gallery(
                entry.model,
                entry.processor,
                entry.index,
                [reference] if mode != "text" else None,
                [text] if mode != "image" else None,
                mode=mode,
                k=min(k, size),
                exclude=exclude,
            )
            out.append(ModelResults(entry.name, ranking.ids[0], [float(s) for s in ranking.scores[0].tolist()]))
        return out


# ----------------------------------------------------------------------------------------------------------------------
# Loading
# ----------------------------------------------------------------------------------------------------------------------
def load_model(path: str, device: str = "cpu"):
    """`(model, processor)` of a model folder or Hub id, or an [`InputError`] saying why not."""
    from mra_cir.modeling_mra_cir.loading import load_model_and_processor

    try:
        return load_model_and_processor(path, device=device)
    except (OSError, ValueError, RuntimeError) as err:  # FileNotFoundError, a Hub id not found offline, bad weights
        raise InputError(f"The model {path} cannot be loaded: {err}") from None


def _same_path(a: str, b: str) -> bool:
    return Path(a).resolve() == Path(b).resolve() if Path(a).exists() and Path(b).exists() else a == b


def check_index(index: GalleryIndex, model, model_path: str, index_dir: str | None) -> str | None:
    """Refuse an index the model cannot rank: features of another shape, or recorded as built by another model.

    Returns:
        `str` or `None`: a note for the page when the index names a model that is not on this machine.

    Raises:
        [`InputError`]: the features' tokens or dimension differ from the model's, or the index records another model
        that exists here.
    """
    where = f"The gallery index {index_dir}" if index_dir else "The gallery index"
    _, q, d = index.features.shape
    mq, md = model.config.num_query_tokens, model.config.image_text_hidden_size
    rebuild = f"build one for this model: `mra-cir app --model {model_path} --images IMAGES --index NEW_FOLDER`"
    if (q, d) != (mq, md):
        raise InputError(
            f"{where} does not match the model {model_path}: its features are {q} tokens of dimension {d}, the model "
            f"makes {mq} tokens of dimension {md}. It was built with another model; {rebuild}."
        )
    recorded = index.model_path
    if recorded and not _same_path(recorded, model_path):
        if Path(recorded).exists() or not Path(model_path).exists():
            raise InputError(
                f"{where} was built with the model {recorded}, not {model_path}: its features would not match the "
                f"queries. Start the app with `--model {recorded}`, or {rebuild}."
            )
        return f"(The index was built with {recorded}, not on this machine; its features have this model's shape.)"
    return None


def _index_model_path(index_dir: str) -> str | None:
    path = Path(index_dir) / CONFIG_FILE
    try:
        return json.loads(path.read_text()).get("model_path") if path.is_file() else None
    except (OSError, ValueError) as err:
        raise InputError(f"{path} cannot be read: {err}") from None


def _resolve_model(args: AppArguments) -> str:
    """--model, else the model recorded in --index, else the index folder when it holds a saved model (as search)."""
    candidates = [args.model, _index_model_path(args.index) if args.index else None, args.index]
    for candidate in candidates:
        if candidate and ((Path(candidate) / "config.json").is_file() or candidate == args.model):
            return candidate
    where = (
        f"; the index {args.index} records model_path={candidates[1]!r}, which holds no config.json"
        if args.index
        else ""
    )
    raise InputError(f"No model: pass --model (a saved MRA-CIR model folder or Hub id){where}.")


def _index_for(model, processor, model_path, index_dir, images, args) -> tuple[GalleryIndex, str | None]:
    """The gallery index of one model: loaded from `index_dir` and checked, or built from `images` (and saved to
    `index_dir` when given, as `mra-cir search --images` does)."""
    if index_dir and (Path(index_dir) / FEATURES_FILE).is_file():
        try:
            index = GalleryIndex.load(index_dir)
        except (OSError, ValueError) as err:
            raise InputError(f"The gallery index {index_dir} cannot be read: {err}") from None
        return index, check_index(index, model, model_path, index_dir)
    if images is None:
        where = f"{index_dir} is not a gallery index (no {FEATURES_FILE})" if index_dir else "No gallery index"
        raise InputError(f"{where}: pass --images DIR to build one from a folder of images.")
    resolved = str(Path(model_path).resolve()) if Path(model_path).exists() else model_path
    try:
        index = build_index(model, processor, images, resolved, args.batch_size)
    except (OSError, ValueError) as err:
        raise InputError(f"The gallery index cannot be built from {images}: {err}") from None
    if index_dir:
        index.save(index_dir)
    return index, None


def _gallery(images: str | Path) -> GalleryImages:
    try:
        return GalleryImages.from_folder(images)
    except (OSError, ValueError) as err:
        raise InputError(f"--images {images}: {err}") from None


def load_engine(args: AppArguments) -> SearchEngine:
    """The models and the gallery of `args` (the quickstart's when neither --model nor --index is given).

    Raises:
        [`InputError`] (a [`NoQuickstartError`] when the default has not been made yet): what the page shows.
    """
    if args.uses_quickstart:
        output = find_quickstart(args.quickstart_dir)
        images = Path(args.images) if args.images else output.images
        gallery = _gallery(images)
        specs = [("MRA-trained", output.mra_model, output.index_dir("mra"))]
        if args.compare_model is None and output.stage1_model is not None:
            specs.append(("stand-in (before MRA)", output.stage1_model, output.index_dir("stage1")))
        models = []
        for name, path, index_dir in specs:
            model, processor = load_model(str(path), args.device)
            index = cached_index(model, processor, images, gallery, index_dir, str(path.resolve()), args.batch_size)
            models.append(RankingModel(name, str(path), model, processor, searchable(index, args.approximate_above)))
        engine = SearchEngine(models, gallery, benchmark_examples(output.benchmark))
    else:
        images = args.images or (recorded_images(args.index) if args.index else None)
        gallery = _gallery(images) if images else None
        model_path = _resolve_model(args)
        model, processor = load_model(model_path, args.device)
        index, note = _index_for(model, processor, model_path, args.index, images, args)
        name = Path(model_path).name or model_path
        models = [RankingModel(name, model_path, model, processor, searchable(index, args.approximate_above))]
        engine = SearchEngine(models, gallery, notes=[note] if note else [])
        if gallery is None:
            engine.notes.append("(Pass --images DIR to see the gallery images; results show their ids.)")
    if args.compare_model and args.compare_model.lower() != "none":
        model, processor = load_model(args.compare_model, args.device)
        index, note = _index_for(model, processor, args.compare_model, args.compare_index, images, args)
        if len(index) != len(engine.models[0].index):
            engine.notes.append(f"(The compared index has {len(index):,} images, not the same gallery.)")
        name = Path(args.compare_model).name or args.compare_model
        engine.models.append(
            RankingModel(name, args.compare_model, model, processor, searchable(index, args.approximate_above))
        )
        engine.notes += [note] if note else []
    return engine


__all__ = [
    "MAX_TEXT_CHARS",
    "ModelResults",
    "RankingModel",
    "SearchEngine",
    "check_index",
    "load_engine",
    "load_model",
]
