"""The review page of `mra-cir audit-triplets` (Gradio Blocks): one sampled triplet at a time, reference and target
side by side, both captions and the modification text, and three answers: "caption wrong", "text wrong", "ok"
(keys c, t, o). Each answer is saved before the next triplet is shown ([`.audit_data.AuditSession`]), so a reload
of the page, or a new `mra-cir audit-triplets` with the same sample, continues with the first unjudged triplet.

The page serves one person's audit (one answers file); the sample and its order do not depend on the browser.
"""

from __future__ import annotations

import os

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # no calls home (offline machines, tests)

import gradio as gr  # noqa: E402

from .audit_data import AuditSession  # noqa: E402
from .ui import SYSTEM_FONTS  # noqa: E402

#: the buttons: (answer, label, key, element id)
BUTTONS = (
    ("caption_wrong", "caption wrong", "c", "audit-caption-wrong"),
    ("text_wrong", "text wrong", "t", "audit-text-wrong"),
    ("ok", "ok", "o", "audit-ok"),
)
CSS = """
#audit-reference img, #audit-target img { image-rendering: pixelated; object-fit: contain; }
#audit-text textarea { font-size: 1.25rem !important; font-weight: 600; }
#audit-progress { font-size: var(--text-lg); }
"""
#: keyboard shortcuts: a key (outside a text field) clicks its button
SHORTCUTS = (
    "<script>document.addEventListener('keydown', (event) => {"
    " if (event.ctrlKey || event.metaKey || event.altKey) return;"
    " const tag = (event.target.tagName || '').toLowerCase(); if (tag === 'input' || tag === 'textarea') return;"
    " const ids = {" + ", ".join(f"'{key}': '{eid}'" for _, _, key, eid in BUTTONS) + "};"
    " const id = ids[event.key.toLowerCase()]; if (!id) return;"
    " const button = document.getElementById(id); if (button) { event.preventDefault(); button.click(); } });</script>"
)


def _view(session: AuditSession) -> tuple:
    """The page's fields for the next unjudged triplet: progress, images, captions, text, its key, status."""
    item = session.next_item()
    progress = f"{session.judged()} / {len(session.items)} judged"
    if item is None:
        done = f"All {len(session.items)} sampled triplets are judged; answers in {session.answers_path}."
        return progress, None, None, "", "", "", None, done
    row = session.row(item)
    where = f"{row.get('reference_id')} → {row.get('target_id')}"  # not the split: the person judges blind
    return (
        progress,
        row["reference_image"],
        row["target_image"],
        row.get("reference_caption") or "",
        row.get("target_caption") or "",
        row["modification_text"],
        session.key(item),
        where,
    )


def build_audit_page(session: AuditSession, title: str = "MRA triplet audit") -> gr.Blocks:
    """The Gradio page over `session` (see the module docstring)."""
    with gr.Blocks(title=title) as demo:
        gr.Markdown(
            f"## {title}\nIs the modification text a correct instruction from the reference to the target, and are "
            "the captions right? Keys: **o** ok, **c** caption wrong, **t** text wrong (a wrong text wins when both "
            "are wrong)."
        )
        progress = gr.Markdown(elem_id="audit-progress")
        with gr.Row():
            reference = gr.Image(
                label="reference", type="pil", interactive=False, height=280, elem_id="audit-reference"
            )
            target = gr.Image(label="target", type="pil", interactive=False, height=280, elem_id="audit-target")
        with gr.Row():
            reference_caption = gr.Textbox(label="reference caption", interactive=False, elem_id="audit-ref-caption")
            target_caption = gr.Textbox(label="target caption", interactive=False, elem_id="audit-target-caption")
        text = gr.Textbox(label="modification text", interactive=False, elem_id="audit-text")
        current = gr.State(None)
        with gr.Row():
            buttons = [
                gr.Button(f"{label} ({key})", variant="primary" if answer == "ok" else "secondary", elem_id=eid)
                for answer, label, key, eid in BUTTONS
            ]
        status = gr.Markdown(elem_id="audit-status")
        outputs = [progress, reference, target, reference_caption, target_caption, text, current, status]

        def show():
            return _view(session)

        def judge(answer: str, key: str | None):
            if key is None:
                return _view(session)
            item = next((i for i in session.items if session.key(i) == key), None)
            if item is not None:
                session.answer(item, answer)
            return _view(session)

        demo.load(show, outputs=outputs)
        for button, (answer, _, _, _) in zip(buttons, BUTTONS):
            button.click(lambda key, answer=answer: judge(answer, key), inputs=[current], outputs=outputs)
    return demo


def audit_launch_options(server_name: str | None, port: int | None) -> dict:
    """`Blocks.launch` keyword arguments of the audit page (offline fonts, the shortcuts script)."""
    theme = gr.themes.Soft(font=SYSTEM_FONTS, font_mono=["ui-monospace", "monospace"])
    return {"server_name": server_name, "server_port": port, "theme": theme, "css": CSS, "head": SHORTCUTS}


__all__ = ["BUTTONS", "audit_launch_options", "build_audit_page"]
