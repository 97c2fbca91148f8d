"""The composed-search web app (`mra-cir app`, and `app.py` on a Hugging Face Space).

- `arguments.py`: [`AppArguments`], the options.
- `images.py`: reading an uploaded reference ([`prepare_reference`], [`InputError`]) and images for display.
- `gallery.py`: the gallery's images (a folder or a dataset), its index (loaded, or built and cached) and the faiss
  path for large galleries ([`ApproximateGallery`]).
- `quickstart_default.py`: the embedded default, the last `mra-cir quickstart` run (or the way to make one).
- `engine.py`: [`SearchEngine`] and [`load_engine`]: the models, their indexes, one search through `rank_gallery`.
- `ui.py`: the Gradio page ([`build_app`]); imported on first use, so the rest works without Gradio.
- `space.py`: a model id and a dataset as the gallery, from environment variables (the Space's `app.py`).
"""

from __future__ import annotations

from .arguments import APPROXIMATE_ABOVE, MAX_K, AppArguments
from .engine import ModelResults, SearchEngine, load_engine
from .images import InputError, prepare_reference

_UI = ("EngineHolder", "build_app", "launch_options")


def __getattr__(name: str):
    if name in _UI:
        from . import ui

        return getattr(ui, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "APPROXIMATE_ABOVE",
    "AppArguments",
    "EngineHolder",
    "InputError",
    "MAX_K",
    "ModelResults",
    "SearchEngine",
    "build_app",
    "launch_options",
    "load_engine",
    "prepare_reference",
]
