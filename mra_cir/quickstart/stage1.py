"""Stage 1: BLIP-2-style image-text pretraining (ITC, optionally ITM and ITG) of a small model, and BLIP-2's stage-1
losses that `mra-cir pretrain-stand-in` ([`.pretraining`]) reuses.

MRA-CIR starts from a pretrained BLIP-2 (`Salesforce/blip2-itm-vit-g`), whose image tokens and text features already
live in one space and whose Q-Former already fuses query tokens with text (its ITM head). The quickstart loads the
stand-in shipped with the package ([`~mra_cir.quickstart.STAND_IN`]); `mra-cir quickstart --pretrain_from_scratch`
instead trains a random `MraCirModel` here, inside the run, on (image, caption) pairs with BLIP-2's three stage-1
objectives (ITC alone by default):

- **ITC** (image-text contrastive): text feature `t_i = model.get_text_features(caption_i)` (`(B, D)`), image tokens
  `v_j = model.get_image_features(image_j)` (`(B, Q, D)`), `s_ij = max_q <t_i, v_jq> / tau` (BLIP-2 takes the
  maximum over the query tokens); loss = symmetric InfoNCE, `(CE(s, diag) + CE(s^T, diag)) / 2`.
- **ITM** (image-text matching, [`itm_logits`], `itm_weight`): query tokens and caption tokens go through the Q-Former
  *together*, cross-attending to the image (the same fused path as `get_composed_features`); `itm_head` on the mean
  of the Q query outputs classifies match / no match. Per positive pair, one hard negative image per text and one
  hard negative text per image are sampled from the ITC similarities of the batch (BLIP-2's hard negative mining),
  never a pair of the same `group` (an image with the same content: BLIP-2 excludes pairs of the same image id).
  Loss = cross-entropy over the 3B pairs.
- **ITG** (image-grounded text generation, [`itg_loss`], `itg_weight`): the caption is predicted token by token, the
  text seeing the image only through the query tokens (BLIP-2's multimodal causal mask); the head is the tied
  word-embedding matrix, so no parameter is added and checkpoints keep their layout.

What was measured at the quickstart's scale (from-scratch model, 2,000 pool captions; docs/findings.md): ITC is far
from converged after 2,000 steps of 64 pairs (the exact caption of a pool image ranks that scene first among the
2,000 for ~27% of the pool); 6,000 steps lift that to ~47% and the benchmark's target-caption R@1 from ~24% to ~44%.
ITM never leaves the
loss of the constant prediction of the 1:2 positive/negative prior (0.637) when trained with ITC (hard negatives at
learning rates 3e-4 and 1e-3, random ones at 3e-4); alone (no ITC), with random negatives and lr 1e-3, it starts
learning after ~150 steps. ITG learns (loss ~0.5 per token after 6,000 steps) and costs ~45% more time per step, but
did not make the composed query better after stage 2 (seeds 10 and 11). A real BLIP-2 was pretrained with all three
losses from a BERT-initialised Q-Former on 129M images.

Every parameter trains here (the ViT too: BLIP-2's was pretrained, ours starts random); stage 2 then freezes the ViT
as the paper does. The composed query itself (the first text position of the fused path through `text_projection`)
gets no retrieval objective in stage 1: it is the "untrained composed" baseline, as it is for a real BLIP-2.

Example:

```python
>>> summary = align_image_text(model, processor, images, captions, AlignmentArguments(max_steps=300))
>>> summary["final_loss"]
```
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from mra_cir.modeling_mra_cir.modeling_mra_cir import max_sim_logits

#: how ITM draws its negatives (`AlignmentArguments.itm_negatives`)
ITM_NEGATIVES = ("hard", "random", "mixed")


@dataclass
class AlignmentArguments:
    """Settings of stage-1 alignment (one field per option, as `HfArgumentParser` reads them).

    Args:
        max_steps (`int`, defaults to 400): optimisation steps.
        batch_size (`int`, defaults to 128): pairs per step (in-batch negatives).
        learning_rate (`float`, defaults to 1e-3): AdamW peak learning rate (linear warm-up, cosine decay).
        warmup_steps (`int`, defaults to 20): warm-up steps.
        weight_decay (`float`, defaults to 0.01): AdamW weight decay.
        seed (`int`, defaults to 0): batch order seed (and the hard-negative draws).
        itm_weight (`float`, defaults to 1.0): weight of the ITM loss (0 disables ITM: ITC only).
    """

    max_steps: int = field(default=400, metadata={"help": "Stage-1 optimisation steps."})
    batch_size: int = field(default=128, metadata={"help": "Stage-1 image-caption pairs per step."})
    learning_rate: float = field(default=1e-3, metadata={"help": "Stage-1 AdamW peak learning rate."})
    warmup_steps: int = field(default=20, metadata={"help": "Stage-1 linear warm-up steps."})
    weight_decay: float = field(default=0.01, metadata={"help": "Stage-1 AdamW weight decay."})
    seed: int = field(default=0, metadata={"help": "Stage-1 batch order seed."})
    itm_weight: float = field(default=1.0, metadata={"help": "Weight of the image-text matching loss (0: ITC only)."})
    batch_blocks: int = field(
        default=1,
        metadata={"help": "Consecutive items of this many stay in one batch (e.g. 2 for a corpus of edit pairs)."},
    )
    itg_weight: float = field(
        default=0.0,
        metadata={"help": "Weight of image-grounded text generation (captioning through the fused path; 0: off)."},
    )
    itm_negatives: str = field(
        default="hard",
        metadata={
            "help": "ITM negatives: hard (drawn from the ITC similarities, BLIP-2), random, or mixed (half each)."
        },
    )

    def __post_init__(self):
        for name in ("max_steps", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"AlignmentArguments.{name} must be >= 1, got {getattr(self, name)}")
        if self.learning_rate <= 0:
            raise ValueError(f"AlignmentArguments.learning_rate must be > 0, got {self.learning_rate}")
        if self.itm_weight < 0:
            raise ValueError(f"AlignmentArguments.itm_weight must be >= 0, got {self.itm_weight}")
        if self.itg_weight < 0:
            raise ValueError(f"AlignmentArguments.itg_weight must be >= 0, got {self.itg_weight}")
        if self.batch_blocks < 1:
            raise ValueError(f"AlignmentArguments.batch_blocks must be >= 1, got {self.batch_blocks}")
        if self.itm_negatives not in ITM_NEGATIVES:
            raise ValueError(
                f"AlignmentArguments.itm_negatives must be hard, random or mixed, got {self.itm_negatives!r}"
            )


def warmup_cosine(warmup_steps: int, max_steps: int):
    """The learning-rate factor of stage-1 pretraining at a step: linear warm-up to 1 over `warmup_steps`, then a
    cosine decay to 0 at `max_steps` (for `torch.optim.lr_scheduler.LambdaLR`)."""

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = (step - warmup_steps) / max(1, max_steps - warmup_steps)
        return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

    return factor


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


def itm_logits(
    model, vision_embeds: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor
) -> torch.Tensor:
    """Image-text matching logits of BLIP-2 (`Blip2ForImageTextRetrieval(..., use_image_text_matching_head=True)`).

    Query tokens and text tokens go through the Q-Former together (bidirectional attention), cross-attending to the
    image; `itm_head` is applied to the Q query outputs and averaged.

    Args:
        model ([`MraCirModel`]): the model.
        vision_embeds (`torch.Tensor` of shape `(B, P, vision_hidden)`): ViT outputs of the images.
        input_ids (`torch.LongTensor` of shape `(B, L)`): text tokens; row i is paired with image i.
        attention_mask (`torch.LongTensor` of shape `(B, L)`): text padding mask.

    Returns:
        `torch.Tensor` of shape `(B, 2)`: logits of (no match, match).
    """
    hidden = model.get_fused_hidden_states(vision_embeds, input_ids, attention_mask)
    hidden = hidden[:, : model.config.num_query_tokens, :].to(dtype=model.itm_head.weight.dtype)
    return model.itm_head(hidden).mean(dim=1)


def itm_loss(
    model,
    vision_embeds: torch.Tensor,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    itc_logits: torch.Tensor,
    groups: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """ITM with in-batch hard negatives drawn from the ITC similarities (BLIP-2 / ALBEF).

    For each text, a negative image is drawn with probability `softmax(itc_logits[i])` over the images of other
    groups; for each image, a negative text likewise. The B positives and 2B negatives are classified by
    [`itm_logits`].

    Args:
        model ([`MraCirModel`]): the model.
        vision_embeds (`torch.Tensor` of shape `(B, P, vision_hidden)`): ViT outputs; image i pairs with text i.
        input_ids / attention_mask (`torch.LongTensor` of shape `(B, L)`): the texts.
        itc_logits (`torch.Tensor` of shape `(B, B)`): text-to-image ITC logits (row: text, column: image).
        groups (`torch.LongTensor` of shape `(B,)`, *optional*): equal values mark pairs that are not negatives
            of each other (same content); default: only the diagonal.
        generator (`torch.Generator`, *optional*): source of the negative draws.

    Returns:
        `torch.Tensor` of shape `()`; `nan`-free even when a row has no valid negative (it is then skipped).
    """
    batch = input_ids.shape[0]
    with torch.no_grad():
        if groups is None:
            groups = torch.arange(batch, device=itc_logits.device)
        same = groups[:, None] == groups[None, :]
        # drawn on the CPU (a B x B matrix), so a CPU generator serves every device and draws the same negatives
        itc_logits, same = itc_logits.detach().float().cpu(), same.cpu()
        weights_t2i = F.softmax(itc_logits, dim=1).masked_fill(same, 0.0)
        weights_i2t = F.softmax(itc_logits.t(), dim=1).masked_fill(same, 0.0)
        valid_t = weights_t2i.sum(1) > 0
        valid_i = weights_i2t.sum(1) > 0
        # rows without a valid negative draw anything (their pair is dropped below)
        neg_image = torch.multinomial(torch.where(valid_t[:, None], weights_t2i, 1.0), 1, generator=generator)[:, 0]
        neg_text = torch.multinomial(torch.where(valid_i[:, None], weights_i2t, 1.0), 1, generator=generator)[:, 0]
    device = input_ids.device
    t_rows = valid_t.nonzero()[:, 0].to(device)  # text i with a negative image
    i_rows = valid_i.nonzero()[:, 0].to(device)  # image i with a negative text
    neg_image, neg_text = neg_image.to(device), neg_text.to(device)
    vision = torch.cat([vision_embeds, vision_embeds[neg_image[t_rows]], vision_embeds[i_rows]])
    ids = torch.cat([input_ids, input_ids[t_rows], input_ids[neg_text[i_rows]]])
    mask = torch.cat([attention_mask, attention_mask[t_rows], attention_mask[neg_text[i_rows]]])
    labels = torch.zeros(ids.shape[0], dtype=torch.long, device=ids.device)
    labels[:batch] = 1
    return F.cross_entropy(itm_logits(model, vision, ids, mask).float(), labels)


def itg_loss(
    model, vision_embeds: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor
) -> torch.Tensor:
    """Image-grounded text generation (BLIP-2's ITG): every text position predicts the next caption token, seeing the
    image only through the query tokens (queries cross-attend to the image; text attends to the queries and the text
    before it: `get_fused_hidden_states(..., causal_text=True)`). It trains the path the composed query takes (text
    positions reading the image through the queries). The prediction head is the word-embedding matrix (tied, no new parameter), so the
    checkpoint keeps its layout; the first position ([CLS], BLIP-2's [DEC]) predicts the first word.

    Args:
        model ([`MraCirModel`]): the model.
        vision_embeds (`torch.Tensor` of shape `(B, P, vision_hidden)`): ViT outputs; image i pairs with text i.
        input_ids / attention_mask (`torch.LongTensor` of shape `(B, L)`): the captions.

    Returns:
        `torch.Tensor` of shape `()`: mean cross-entropy over the predicted (non-padding) tokens.
    """
    input_ids, attention_mask = model._strip_image_tokens(input_ids, attention_mask)
    q = model.config.num_query_tokens
    hidden = model.get_fused_hidden_states(vision_embeds, input_ids, attention_mask, causal_text=True)[:, q:-1]
    logits = hidden @ model.embeddings.word_embeddings.weight.t()
    labels = input_ids[:, 1:].masked_fill(attention_mask[:, 1:] == 0, -100)
    return F.cross_entropy(logits.flatten(0, 1).float(), labels.flatten())


def block_permutation(n: int, block: int, generator: torch.Generator) -> torch.Tensor:
    """A random order of `range(n)` that moves whole blocks of `block` consecutive items (items `block*k` to
    `block*k + block - 1` stay adjacent, in order); an incomplete last block goes last. With a batch size that is a
    multiple of `block`, every block lands in one batch."""
    whole = n // block
    starts = torch.randperm(whole, generator=generator) * block
    order = (starts[:, None] + torch.arange(block)).flatten()
    return torch.cat([order, torch.arange(whole * block, n)])


def _negative_logits(itc_logits: torch.Tensor, args: AlignmentArguments, generator: torch.Generator) -> torch.Tensor:
    """The logits ITM draws its negatives from: the ITC ones (hard), zeros (uniform: random), or zeros on a random
    half of the rows (mixed)."""
    if args.itm_negatives == "hard":
        return itc_logits
    if args.itm_negatives == "random":
        return torch.zeros_like(itc_logits)
    uniform = (torch.rand(itc_logits.shape[0], generator=generator) < 0.5).to(itc_logits.device)
    return itc_logits.masked_fill(uniform[:, None], 0.0)


def align_image_text(
    model,
    processor,
    images: Sequence,
    captions: Sequence[str],
    args: AlignmentArguments | None = None,
    show_progress: bool = True,
    groups: Sequence | None = None,
) -> dict:
    """Train `model` (in place) with [`itc_loss`] + `args.itm_weight` * [`itm_loss`] on (image, caption) pairs.

    Args:
        model ([`MraCirModel`]): the model (every parameter is trained).
        processor ([`MraCirProcessor`]): turns PIL images and captions into tensors (once, up front).
        images (`Sequence[PIL.Image.Image]`): the images.
        captions (`Sequence[str]`): one caption per image.
        args ([`AlignmentArguments`], *optional*): the settings.
        show_progress (`bool`, defaults to `True`): a tqdm bar with the running loss.
        groups (`Sequence`, *optional*): one hashable per image; images of the same group (the same content, e.g. the
            same scene graph) are never drawn as each other's ITM negatives. Default: every image its own group.

    Returns:
        `dict`: `first_loss`, `final_loss` (mean of the last 20 steps, ITC + weighted ITM), `final_itc_loss`,
        `final_itm_loss`, `steps`, `seconds`, and the arguments.
    """
    args = args or AlignmentArguments()
    if len(images) != len(captions):
        raise ValueError(f"align_image_text got {len(images)} images but {len(captions)} captions")
    if len(images) < 2:
        raise ValueError("align_image_text needs at least 2 (image, caption) pairs (in-batch negatives)")
    if groups is not None and len(groups) != len(images):
        raise ValueError(f"align_image_text got {len(images)} images but {len(groups)} groups")
    group_index: dict = {}
    group_ids = torch.tensor(
        [group_index.setdefault(g, len(group_index)) for g in (groups if groups is not None else range(len(images)))]
    )
    start = time.perf_counter()
    encoded = processor(images=list(images), text=list(captions), return_tensors="pt").to(model.device)
    pixel_values, input_ids, attention_mask = encoded["pixel_values"], encoded["input_ids"], encoded["attention_mask"]
    model.train()
    for parameter in model.parameters():
        parameter.requires_grad_(True)
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.learning_rate, weight_decay=args.weight_decay)

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_cosine(args.warmup_steps, args.max_steps))
    generator = torch.Generator().manual_seed(args.seed)
    batch = min(args.batch_size, len(images))

    def shuffled() -> torch.Tensor:
        return block_permutation(len(images), args.batch_blocks, generator)

    order = shuffled()
    itm_generator = torch.Generator().manual_seed(args.seed + 1)
    cursor, losses, itc_losses, itm_losses, itg_losses = 0, [], [], [], []
    bar = tqdm(range(args.max_steps), desc="stage 1: image-text alignment", disable=not show_progress)
    for _ in bar:
        if cursor + batch > len(order):
            order, cursor = shuffled(), 0
        index = order[cursor : cursor + batch]
        cursor += batch
        vision_embeds = model.get_vision_outputs(pixel_values[index])
        image_embeds = model.get_image_features(vision_embeds=vision_embeds)
        text_embeds = model.get_text_features(input_ids[index], attention_mask[index])
        tau = model.clamped_logit_temperature()
        loss = contrastive = itc_loss(text_embeds, image_embeds, tau)
        if args.itm_weight > 0:
            matching = itm_loss(
                model,
                vision_embeds,
                input_ids[index],
                attention_mask[index],
                _negative_logits(
                    max_sim_logits(text_embeds, image_embeds).detach() / tau.detach(), args, itm_generator
                ),
                groups=group_ids[index],
                generator=itm_generator,
            )
            loss = contrastive + args.itm_weight * matching
            itm_losses.append(float(matching.detach()))
        if args.itg_weight > 0:
            generation = itg_loss(model, vision_embeds, input_ids[index], attention_mask[index])
            loss = loss + args.itg_weight * generation
            itg_losses.append(float(generation.detach()))
        itc_losses.append(float(contrastive.detach()))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
        losses.append(float(loss.detach()))
        bar.set_postfix(loss=f"{losses[-1]:.3f}")
    model.eval()

    def tail(values: list[float]) -> float | None:
        return sum(values[-20:]) / len(values[-20:]) if values else None

    return {
        "first_loss": losses[0],
        "final_loss": tail(losses),
        "final_itc_loss": tail(itc_losses),
        "final_itm_loss": tail(itm_losses),
        "final_itg_loss": tail(itg_losses),
        "steps": args.max_steps,
        "seconds": time.perf_counter() - start,
        "arguments": asdict(args),
    }


__all__ = [
    "AlignmentArguments",
    "align_image_text",
    "block_permutation",
    "itc_loss",
    "itg_loss",
    "itm_logits",
    "itm_loss",
    "warmup_cosine",
]
