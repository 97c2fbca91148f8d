"""The web page (Gradio Blocks) of the composed-search app: a reference image (uploaded, or picked in the gallery), a
modification text, a ranking mode, and the top-k gallery images of one model, or of two side by side.

Nothing here ranks: the page calls [`SearchEngine.search`]. Every problem a user can cause is shown in the page's
status line (`#status`) and the app keeps serving; an unexpected error is logged with its traceback on the server and
shown as one line. The search is also an API endpoint, `/search` (`gradio_client`):

```python
>>> from gradio_client import Client, handle_file
>>> status, results, compared, answer = Client("http://127.0.0.1:7860/").predict(
...     handle_file("dress.jpg"), "make it red", "composed", 8, True, api_name="/search")
>>> answer["models"][0]["results"][:2]
[{'id': 'img_017.png', 'score': 0.61}, {'id': 'img_003.png', 'score': 0.58}]
```
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # no calls home (offline machines, tests)

import gradio as gr  # noqa: E402

from .arguments import MAX_K  # noqa: E402
from .engine import ModelResults, SearchEngine  # noqa: E402
from .images import InputError, prepare_reference  # noqa: E402
from .quickstart_default import NoQuickstartError, build_quickstart  # noqa: E402

logger = logging.getLogger(__name__)

MODE_CHOICES = [
    ("Composed: image + text (the method)", "composed"),
    ("Image only", "image"),
    ("Text only", "text"),
    ("Image + text, late fusion", "image_text_fusion"),
]
#: gallery images offered as references to click (example queries first)
PICKER_SIZE = 30
SYSTEM_FONTS = ["ui-sans-serif", "system-ui", "-apple-system", "Segoe UI", "Roboto", "sans-serif"]
#: result thumbnails fill their column and carry their caption (rank, id, score) under the image, wrapped
CSS = """
#status { min-height: 2.5em; }
#reference-id { min-height: 1.5em; font-size: var(--text-sm); }
.result-gallery, #picker { height: auto !important; min-height: 0 !important; flex-grow: 0 !important; }
.result-gallery .gallery-container, #picker .gallery-container { height: auto !important; }
.result-gallery .grid-wrap, #picker .grid-wrap { height: auto !important; max-height: none !important;
    min-height: 0 !important; overflow: visible !important; }
.result-gallery .grid-container, #picker .grid-container {
    grid-template-columns: repeat(var(--grid-cols), minmax(0, 1fr)) !important; }
.result-gallery .grid-container { padding-top: 2.25rem !important; }
.result-gallery .gallery-item { height: auto !important; }
.result-gallery .thumbnail-item { aspect-ratio: auto !important; height: auto !important; overflow: visible !important;
    display: flex !important; flex-direction: column; }
.result-gallery .thumbnail-item img { aspect-ratio: 1 / 1; width: 100%; height: auto; image-rendering: pixelated; }
.result-gallery .caption-label { position: static !important; max-width: 100% !important;
    white-space: normal !important; overflow-wrap: anywhere; font-family: ui-monospace, monospace; font-size: 11px; line-height: 1.25;
    padding: 2px 0 0 0 !important; margin: 0 !important; background: none !important; box-shadow: none !important;
    border: none !important; text-align: center; transform: none !important; }
#picker img { image-rendering: pixelated; }
"""


class EngineHolder:
    """The app's [`SearchEngine`] (shared by every visitor), or the error that keeps it from loading.

    Args:
        loader (`Callable[[], SearchEngine]`): makes the engine (raises [`InputError`] for what a user can fix).
        quickstart_dir (`str`, *optional*): where the page's build button writes the quickstart (`None`: no button).
    """

    def __init__(self, loader: Callable[[], SearchEngine], quickstart_dir: str | None = None) -> None:
        self.loader = loader
        self.quickstart_dir = quickstart_dir
        self.engine: SearchEngine | None = None
        self.error: InputError | None = None
        self.lock = threading.Lock()

    def load(self) -> None:
        with self.lock:
            try:
                self.engine, self.error = self.loader(), None
            except InputError as err:
                self.engine, self.error = None, err
                logger.warning("the app has nothing to serve yet: %s", err)
            except Exception as err:  # a bug or a broken file: one line in the page, the traceback in the log
                logger.exception("the app could not load its models and gallery")
                self.engine = None
                self.error = InputError(f"Unexpected error while loading ({type(err).__name__}: {err}); see the log.")

    @property
    def can_build(self) -> bool:
        return self.quickstart_dir is not None and isinstance(self.error, NoQuickstartError)

    def status(self) -> str:
        return self.engine.summary() if self.engine is not None else f"⚠️ {self.error}"


def _captioned(engine: SearchEngine, results: ModelResults) -> list[tuple]:
    images = engine.gallery.display if engine.gallery is not None else None
    out = []
    for rank, (id_, score) in enumerate(zip(results.ids, results.scores), start=1):
        caption = f"{rank}. {id_} · {score:.4f}"
        out.append((images(id_) if images else _id_tile(id_), caption))
    return out


def _id_tile(id_: str):
    from .images import placeholder_image

    return placeholder_image(id_)


def _picker_items(engine: SearchEngine | None) -> tuple[list[tuple], list[tuple[str, str | None]]]:
    """The pick-a-reference gallery: example queries (with their text) first, then other gallery images."""
    if engine is None or engine.gallery is None:
        return [], []
    index_ids = engine.models[0].index.ids
    entries: list[tuple[str, str | None]] = [(i, t) for i, t in engine.examples if i in engine.models[0].index]
    seen = {i for i, _ in entries}
    entries += [(i, None) for i in index_ids if i not in seen][: max(0, PICKER_SIZE - len(entries))]
    items = [(engine.gallery.display(i), f"example {n + 1}" if t else None) for n, (i, t) in enumerate(entries)]
    return items, entries


def _reference_path(payload) -> str | None:
    """The uploaded file's path from the image input's raw payload (the page and `gradio_client` send FileData)."""
    if payload is None:
        return None
    if isinstance(payload, dict):
        return payload.get("path")
    return getattr(payload, "path", None) or (payload if isinstance(payload, str) else None)


def build_app(holder: EngineHolder, k: int = 6, title: str = "MRA-CIR composed image search") -> gr.Blocks:
    """The Gradio page over `holder` (see the module docstring). `holder.load()` is called if it was not yet."""
    if holder.engine is None and holder.error is None:
        holder.load()
    compare = holder.engine is not None and len(holder.engine.models) > 1
    names = [m.name for m in holder.engine.models] if holder.engine else ["results"]
    picker_items, picker_entries = _picker_items(holder.engine)

    with gr.Blocks(title=title, fill_width=True) as demo:
        gr.Markdown(
            f"# {title}\nA reference image and a modification text: the model ranks the gallery for the image "
            "that shows the reference **with the change**. Switch the ranking mode to see what the text changes."
        )
        status = gr.Markdown(holder.status(), elem_id="status")
        with gr.Group(visible=holder.engine is None) as setup:
            with gr.Row():
                build = gr.Button("Build the quickstart model", variant="primary", visible=holder.can_build)
                reload = gr.Button("Reload")
        picked = gr.State(None)  # gallery id of a reference picked in the gallery (None: an upload)
        entries = gr.State(picker_entries)
        with gr.Row():
            with gr.Column(scale=1, min_width=280):
                reference = gr.Image(
                    label="Reference image", type="filepath", sources=["upload"], height=240, elem_id="reference"
                )
                reference_note = gr.Markdown("", elem_id="reference-id")
                text = gr.Textbox(
                    label="Modification text", placeholder="e.g. same scene but the circle is blue", elem_id="text"
                )
                mode = gr.Radio(MODE_CHOICES, value="composed", label="Ranking", elem_id="mode")
                top_k = gr.Slider(1, MAX_K, value=k, step=1, label="Results per model (k)")
                exclude = gr.Checkbox(True, label="Hide the reference itself (when picked in the gallery)")
                search = gr.Button("Search", variant="primary", elem_id="search")
            with gr.Column(scale=3):
                results = [
                    gr.Gallery(
                        label=names[i] if i < len(names) else "compared",
                        columns=6,
                        height="auto",
                        object_fit="contain",
                        visible=i == 0 or compare,
                        elem_id=f"results-{i}",
                        elem_classes=["result-gallery"],
                    )
                    for i in range(2)
                ]
        with gr.Accordion("Pick a reference in the gallery (example queries first)", open=True):
            picker = gr.Gallery(
                picker_items, columns=10, height="auto", allow_preview=False, elem_id="picker", show_label=False
            )
        with gr.Accordion("Results as JSON", open=False):
            answer = gr.JSON()

        def run(payload, text_value, mode_value, k_value, exclude_value, picked_id):
            engine = holder.engine
            empty = ([], [], {})
            if engine is None:
                return (holder.status(), *empty)
            try:
                if picked_id is not None:
                    image = engine.reference_from_gallery(picked_id)
                else:
                    path = _reference_path(payload)
                    image = prepare_reference(path) if path else None
                found = engine.search(
                    image, text_value, mode_value, k_value, exclude_id=picked_id if exclude_value else None
                )
            except InputError as err:
                return (f"⚠️ {err}", *empty)
            except Exception as err:  # a bug, not the user's doing: one line in the page, the traceback in the log
                logger.exception("search failed")
                return (f"⚠️ Unexpected error ({type(err).__name__}: {err}); the details are in the log.", *empty)
            galleries = [_captioned(engine, r) for r in found] + [[]] * (2 - len(found))
            body = {"mode": mode_value, "text": (text_value or "").strip(), "models": [r.as_dict() for r in found]}
            return (engine.summary(), *galleries[:2], body)

        inputs = [reference, text, mode, top_k, exclude, picked]
        outputs = [status, *results, answer]
        search.click(run, inputs, outputs, api_name="search", preprocess=False)
        text.submit(run, inputs, outputs, api_visibility="private", preprocess=False)
        mode.change(run, inputs, outputs, api_visibility="private", preprocess=False)

        def pick(entry_list, evt: gr.SelectData):
            id_, example_text = entry_list[evt.index]
            engine = holder.engine
            image = engine.gallery.display(id_) if engine is not None and engine.gallery is not None else None
            note = f"From the gallery: `{id_}`" + (" (an example query)" if example_text else "")
            return image, id_, example_text if example_text else gr.skip(), note

        picker.select(pick, [entries], [reference, picked, text, reference_note], api_visibility="private")
        for event in (reference.upload, reference.clear):  # an upload is not a gallery image: nothing to hide
            event(lambda: (None, ""), None, [picked, reference_note], api_visibility="private")

        def refreshed():
            engine = holder.engine
            items, new_entries = _picker_items(engine)
            labels = [m.name for m in engine.models] if engine else ["results"]
            return (
                holder.status(),
                gr.Group(visible=engine is None),
                gr.Button(visible=holder.can_build),
                gr.Gallery(items),
                new_entries,
                gr.Gallery(label=labels[0], value=[]),
                gr.Gallery(label=labels[-1], visible=len(labels) > 1, value=[]),
            )

        def do_reload(progress=gr.Progress(track_tqdm=True)):  # noqa: B008 (Gradio's progress idiom)
            holder.load()
            return refreshed()

        def do_build(progress=gr.Progress(track_tqdm=True)):  # noqa: B008
            try:
                build_quickstart(holder.quickstart_dir)
            except Exception as err:  # shown in the page; the traceback in the log
                logger.exception("the quickstart failed")
                return (f"⚠️ The quickstart failed ({type(err).__name__}: {err}).", *[gr.skip()] * 6)
            holder.load()
            return refreshed()

        refresh_outputs = [status, setup, build, picker, entries, *results]
        reload.click(do_reload, None, refresh_outputs, api_visibility="private")
        build.click(do_build, None, refresh_outputs, api_visibility="private")
    return demo


def launch_options(server_name: str | None, port: int | None, share: bool) -> dict:
    """`Blocks.launch` keyword arguments following Gradio's conventions (None: Gradio's default / environment)."""
    theme = gr.themes.Soft(font=SYSTEM_FONTS, font_mono=["ui-monospace", "monospace"])  # no web-font download
    return {
        "server_name": server_name,
        "server_port": port,
        "share": share,
        "theme": theme,
        "css": CSS,
        "max_file_size": "50mb",
        "footer_links": ["api"],
    }


__all__ = ["EngineHolder", "MODE_CHOICES", "build_app", "launch_options"]
