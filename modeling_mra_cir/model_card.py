"""The model card written next to every saved `MraCirModel` (README.md with Hub YAML metadata)."""

from __future__ import annotations

import json


def render_model_card(config, training_summary: dict | None = None) -> str:
    """Fill the model card template.

    Args:
        config ([`MraCirConfig`]): the model's configuration (sizes are reported).
        training_summary (`dict`, *optional*): what the trainer knows (`base_model`, `datasets`, `hyperparameters`,
            `metrics`, ...); `None` for an untrained or converted model.

    Returns:
        `str`: Markdown with a YAML header (`library_name`, `pipeline_tag`, `tags`, `base_model`, `datasets`).
    """
    summary = dict(training_summary or {})
    base_model = summary.get("base_model")
    datasets = summary.get("datasets") or []
    header = ["---", "library_name: transformers", "pipeline_tag: image-feature-extraction", "license: apache-2.0"]
    header += ["tags:", "- composed-image-retrieval", "- zero-shot-cir", "- blip-2", "- mra-cir"]
    if base_model:
        header.append(f"base_model: {base_model}")
    if datasets:
        header += ["datasets:"] + [f"- {d}" for d in datasets]
    header.append("---")
    v, q = config.vision_config, config.qformer_config
    lines = [
        "# MRA-CIR composed image retrieval model",
        "",
        "A BLIP-2 vision tower and Q-Former with a composed-query head, for zero-shot composed image retrieval "
        "(reference image + modification text -> target image) as in *Multimodal Reasoning Agent for Zero-Shot "
        "Composed Image Retrieval* (arXiv 2505.19952). Made with [mra-cir](https://github.com/).",
        "",
        "## Architecture",
        "",
        f"- vision tower: ViT, {v.num_hidden_layers} layers, width {v.hidden_size}, {v.image_size} px, patch {v.patch_size}",
        f"- Q-Former: {q.num_hidden_layers} layers, width {q.hidden_size}, {config.num_query_tokens} query tokens",
        f"- embedding size: {config.image_text_hidden_size}; query-target score: token-level {config.similarity_reduce} cosine",
        "",
        "## How to load",
        "",
        "```python",
        "from transformers import AutoModel, AutoProcessor",
        'model = AutoModel.from_pretrained("<this repo or folder>", trust_remote_code=True)',
        'processor = AutoProcessor.from_pretrained("<this repo or folder>", trust_remote_code=True)',
        'inputs = processor(images=reference_image, text="make it red", return_tensors="pt")',
        "query = model.get_composed_features(inputs.pixel_values, inputs.input_ids, inputs.attention_mask)  # (1, D)",
        'gallery = model.get_image_features(processor(images=gallery_images, return_tensors="pt").pixel_values)  # (N, Q, D)',
        "scores = (gallery @ query[0]).amax(dim=-1)  # max over each image's Q tokens",
        "```",
        "",
        "With `mra-cir` installed, `import mra_cir.modeling_mra_cir` registers the model with the Auto classes and "
        "`trust_remote_code` is not needed.",
        "",
        "## Training",
        "",
    ]
    if not summary:
        lines.append("Not fine-tuned by mra-cir (random, converted or pretrained BLIP-2 weights).")
    else:
        if base_model:
            lines.append(f"- base model: `{base_model}`")
        if datasets:
            lines.append("- training data: " + ", ".join(f"`{d}`" for d in datasets))
        for key in sorted(k for k in summary if k not in ("base_model", "datasets")):
            value = summary[key]
            rendered = (
                json.dumps(value, indent=2, sort_keys=True, default=str) if isinstance(value, (dict, list)) else value
            )
            if isinstance(value, (dict, list)):
                lines += [f"- {key}:", "", "```json", rendered, "```", ""]
            else:
                lines.append(f"- {key}: {rendered}")
    lines += [
        "",
        "## Citation",
        "",
        "```bibtex",
        "@article{mra_cir_2025,",
        "  title={Multimodal Reasoning Agent for Zero-Shot Composed Image Retrieval},",
        "  journal={arXiv preprint arXiv:2505.19952},",
        "  year={2025}",
        "}",
        "```",
        "",
    ]
    return "\n".join(header + [""] + lines)
