"""Stage 1: BLIP-2-style image-text contrastive alignment, the offline stand-in for a pretrained BLIP-2 checkpoint.

MRA-CIR starts from a pretrained BLIP-2 (`Salesforce/blip2-itm-vit-g`), whose image tokens and text features already
live in one space. Nothing pretrained can be downloaded in the offline quickstart, so a random `MraCirModel` is first
trained on the synthetic pool's (image, caption) pairs with BLIP-2's image-text contrastive (ITC) objective:

- text feature `t_i = model.get_text_features(caption_i)` (`(B, D)`);
- image tokens `v_j = model.get_image_features(image_j)` (`(B, Q, D)`);
- `s_ij = max_q <t_i, v_jq> / tau` (BLIP-2's ITC takes the maximum over the query tokens);
- loss = symmetric InfoNCE, `(CE(s, diag) + CE(s^T, diag)) / 2`.

Every parameter trains here (the ViT too: BLIP-2's was pretrained, ours starts random); stage 2 then freezes the ViT
as the paper does. Only the ITC objective is used (no ITM / ITG heads), so the composed-query path
(`get_composed_features`) is *not* trained by stage 1: it is the "untrained composed" baseline.

Example:

```python
>>> summary = align_image_text(model, processor, images, captions, AlignmentArguments(max_steps=300))
>>> summary["final_loss"]
```
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from modeling_mra_cir.modeling_mra_cir import max_sim_logits


@dataclass
class AlignmentArguments:
    """Settings of stage-1 alignment (one field per option, as `HfArgumentParser` reads them).

    Args:
        max_steps (`int`, defaults to 400): optimisation steps.
        batch_size (`int`, defaults to 128): pairs per step (in-batch negatives).
        learning_rate (`float`, defaults to 1e-3): AdamW peak learning rate (linear warm-up, cosine decay).
        warmup_steps (`int`, defaults to 20): warm-up steps.
        weight_decay (`float`, defaults to 0.01): AdamW weight decay.
        seed (`int`, defaults to 0): batch order seed.
    """

    max_steps: int = field(default=400, metadata={"help": "Stage-1 optimisation steps."})
    batch_size: int = field(default=128, metadata={"help": "Stage-1 image-caption pairs per step."})
    learning_rate: float = field(default=1e-3, metadata={"help": "Stage-1 AdamW peak learning rate."})
    warmup_steps: int = field(default=20, metadata={"help": "Stage-1 linear warm-up steps."})
    weight_decay: float = field(default=0.01, metadata={"help": "Stage-1 AdamW weight decay."})
    seed: int = field(default=0, metadata={"help": "Stage-1 batch order seed."})

    def __post_init__(self):
        for name in ("max_steps", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"AlignmentArguments.{name} must be >= 1, got {getattr(self, name)}")
        if self.learning_rate <= 0:
            raise ValueError(f"AlignmentArguments.learning_rate must be > 0, got {self.learning_rate}")


def itc_loss(text_embeds: torch.Tensor, image_embeds: torch.Tensor, logit_temperature) -> torch.Tensor:
    """Symmetric image-text InfoNCE with BLIP-2's max over query tokens.

    Args:
        text_embeds (`torch.Tensor` of shape `(B, D)`): normalised text features.
        image_embeds (`torch.Tensor` of shape `(B, Q, D)`): normalised image tokens; row i pairs with text i.
        logit_temperature (`torch.Tensor` or `float`): tau.

    Returns:
        `torch.Tensor` of shape `()`.
    """
    logits = max_sim_logits(text_embeds, image_embeds) / logit_temperature
    labels = torch.arange(logits.shape[0], device=logits.device)
    return (F.cross_entropy(logits, labels) + F.cross_entropy(logits.t(), labels)) / 2


def align_image_text(
    model,
    processor,
    images: Sequence,
    captions: Sequence[str],
    args: AlignmentArguments | None = None,
    show_progress: bool = True,
) -> dict:
    """Train `model` (in place) with [`itc_loss`] on (image, caption) pairs.

    Args:
        model ([`MraCirModel`]): the model (every parameter is trained).
        processor ([`MraCirProcessor`]): turns PIL images and captions into tensors (once, up front).
        images (`Sequence[PIL.Image.Image]`): the images.
        captions (`Sequence[str]`): one caption per image.
        args ([`AlignmentArguments`], *optional*): the settings.
        show_progress (`bool`, defaults to `True`): a tqdm bar with the running loss.

    Returns:
        `dict`: `first_loss`, `final_loss` (mean of the last 20 steps), `steps`, `seconds`, and the arguments.
    """
    args = args or AlignmentArguments()
    if len(images) != len(captions):
        raise ValueError(f"align_image_text got {len(images)} images but {len(captions)} captions")
    if len(images) < 2:
        raise ValueError("align_image_text needs at least 2 (image, caption) pairs (in-batch negatives)")
    start = time.perf_counter()
    encoded = processor(images=list(images), text=list(captions), return_tensors="pt")
    pixel_values, input_ids, attention_mask = encoded["pixel_values"], encoded["input_ids"], encoded["attention_mask"]
    model.train()
    for parameter in model.parameters():
        parameter.requires_grad_(True)
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.learning_rate, weight_decay=args.weight_decay)

    def lr_lambda(step: int) -> float:
        if step < args.warmup_steps:
            return (step + 1) / args.warmup_steps
        progress = (step - args.warmup_steps) / max(1, args.max_steps - args.warmup_steps)
        return 0.5 * (1 + torch.cos(torch.tensor(progress * torch.pi)).item())

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda)
    generator = torch.Generator().manual_seed(args.seed)
    batch = min(args.batch_size, len(images))
    order = torch.randperm(len(images), generator=generator)
    cursor, losses = 0, []
    bar = tqdm(range(args.max_steps), desc="stage 1: image-text alignment", disable=not show_progress)
    for _ in bar:
        if cursor + batch > len(order):
            order, cursor = torch.randperm(len(images), generator=generator), 0
        index = order[cursor : cursor + batch]
        cursor += batch
        image_embeds = model.get_image_features(pixel_values=pixel_values[index])
        text_embeds = model.get_text_features(input_ids[index], attention_mask[index])
        loss = itc_loss(text_embeds, image_embeds, model.clamped_logit_temperature())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
        losses.append(float(loss.detach()))
        bar.set_postfix(loss=f"{losses[-1]:.3f}")
    model.eval()
    tail = losses[-20:]
    return {
        "first_loss": losses[0],
        "final_loss": sum(tail) / len(tail),
        "steps": args.max_steps,
        "seconds": time.perf_counter() - start,
        "arguments": asdict(args),
    }


__all__ = ["AlignmentArguments", "align_image_text", "itc_loss"]
