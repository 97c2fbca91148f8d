"""The options of the composed-search app (`mra-cir app`, and the Space's `app.py` through environment variables)."""

from __future__ import annotations

from dataclasses import dataclass, field

#: the most results the page can ask for
MAX_K = 50
#: galleries with more images than this are searched through faiss candidates re-ranked exactly
APPROXIMATE_ABOVE = 50_000


@dataclass
class AppArguments:
    """What the app serves: one model (or two, side by side) over one gallery, and where it listens.

    With no `--model` and no `--index`, the app serves the last quickstart run (`--quickstart_dir`): its MRA-trained
    model beside the pretrained stand-in it started from, over the gallery of the quickstart's benchmark (the index is built on first start
    and cached in the quickstart folder). With no quickstart output yet, the page says how to make one and can build
    it.
    """

    model: str | None = field(
        default=None,
        metadata={
            "help": "A saved MRA-CIR model folder or a Hub id (default: the quickstart's mra_model, else the model "
            "recorded in --index)."
        },
    )
    index: str | None = field(
        default=None,
        metadata={
            "help": "A gallery index folder (GalleryIndex.save, as `mra-cir search` writes it). Built from --images "
            "when it does not exist. Default: <quickstart_dir>/gallery_index, built from the quickstart's benchmark "
            "gallery."
        },
    )
    images: str | None = field(
        default=None,
        metadata={
            "help": "The gallery's image folder (ids are paths relative to it, as `mra-cir search --images` makes "
            "them): shows the result images, and builds --index when it does not exist."
        },
    )
    compare_model: str | None = field(
        default=None,
        metadata={
            "help": "A second model whose ranking is shown side by side (e.g. the pretrained stand-in vs MRA-trained). Default with "
            "the quickstart: its stage-1 model; 'none' turns the comparison off.",
        },
    )
    compare_index: str | None = field(
        default=None,
        metadata={
            "help": "The second model's gallery index (default: built from --images in memory).",
        },
    )
    quickstart_dir: str = field(
        default="quickstart_output",
        metadata={"help": "Where `mra-cir quickstart` wrote its output."},
    )
    k: int = field(default=6, metadata={"help": f"Results shown per model at first (the page goes up to {MAX_K})."})
    approximate_above: int = field(
        default=APPROXIMATE_ABOVE,
        metadata={
            "help": "Galleries with more images than this are searched with faiss candidates re-ranked exactly "
            "(ApproximateTokenIndex); smaller ones exactly. 0: always approximate.",
        },
    )
    device: str = field(default="cpu", metadata={"help": "Where the models run: cpu, cuda, ..."})
    batch_size: int = field(default=32, metadata={"help": "Images per forward pass when building an index."})
    server_name: str | None = field(
        default=None,
        metadata={
            "help": "Gradio's server_name: 127.0.0.1 by default (env GRADIO_SERVER_NAME); 0.0.0.0 serves the network.",
        },
    )
    port: int | None = field(
        default=None,
        metadata={
            "aliases": ["--server-port", "--server_port"],
            "help": "Gradio's server_port: 7860 or the next free one by default (env GRADIO_SERVER_PORT).",
        },
    )
    share: bool = field(default=False, metadata={"help": "A temporary public gradio.live link (Gradio's share)."})

    def __post_init__(self) -> None:
        if not 1 <= self.k <= MAX_K:
            raise ValueError(f"--k must be between 1 and {MAX_K}, got {self.k}")
        if self.approximate_above < 0:
            raise ValueError(f"--approximate_above must be >= 0, got {self.approximate_above}")
        if self.batch_size < 1:
            raise ValueError(f"--batch_size must be >= 1, got {self.batch_size}")
        if self.compare_index is not None and self.compare_model is None:
            raise ValueError("--compare_index needs --compare_model (the model that built it)")

    @property
    def uses_quickstart(self) -> bool:
        """Whether the app serves the quickstart's output (neither --model nor --index given)."""
        return self.model is None and self.index is None


__all__ = ["APPROXIMATE_ABOVE", "AppArguments", "MAX_K"]
