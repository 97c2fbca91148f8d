# size: one modeling file per model, the transformers convention (outputs, loss and model; saved as remote code)
"""MRA-CIR: BLIP-2 (frozen ViT + Q-Former) with a composed-query head and a token-level max-sim InfoNCE loss.

The module names are those of transformers' `Blip2ForImageTextRetrieval` (`vision_model`, `query_tokens`,
`embeddings`, `qformer`, `vision_projection`, `text_projection`, `itm_head`), so its checkpoints load directly and a
saved `MraCirModel` loads back into `Blip2ForImageTextRetrieval`. The BLIP-2 blocks are transformers' own.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from transformers import initialization as init
from transformers.modeling_outputs import BaseModelOutputWithPooling
from transformers.models.blip_2.modeling_blip_2 import (
    Blip2PreTrainedModel,
    Blip2QFormerModel,
    Blip2TextEmbeddings,
    Blip2VisionModel,
)
from transformers.utils import ModelOutput

from .configuration_mra_cir import MraCirConfig


# ----------------------------------------------------------------------------------------------------------------------
# Loss
# ----------------------------------------------------------------------------------------------------------------------
def max_sim_logits(query_embeds: torch.Tensor, target_embeds: torch.Tensor, reduce: str = "max") -> torch.Tensor:
    """Token-level similarity of composed queries with multi-token targets.

    Args:
        query_embeds (`torch.Tensor` of shape `(B, D)`): L2-normalised composed query vectors.
        target_embeds (`torch.Tensor` of shape `(B', Q, D)`): L2-normalised target tokens.
        reduce (`str`, defaults to `"max"`): `"max"` takes the maximum cosine over the Q target tokens (the paper);
            `"mean"` the cosine with the mean token.

    Returns:
        `torch.Tensor` of shape `(B, B')`: cosine similarities.
    """
    if reduce == "mean":
        return query_embeds @ target_embeds.mean(dim=1).transpose(0, 1)
    # (B, D) x (B', Q, D) -> (B, B', Q) via one matmul: (B, D) @ (D, B'*Q)
    sims = query_embeds @ target_embeds.reshape(-1, target_embeds.shape[-1]).transpose(0, 1)
    return sims.view(query_embeds.shape[0], target_embeds.shape[0], target_embeds.shape[1]).amax(dim=-1)


class _DifferentiableAllGather(torch.autograd.Function):
    """All-gather (equal-sized tensors) whose backward sums every process's gradient for our rows.

    Backward is an all-reduce of the gathered gradient followed by taking this rank's slice (a reduce-scatter that
    every backend, gloo included, supports).
    """

    @staticmethod
    def forward(ctx, tensor: torch.Tensor) -> torch.Tensor:
        ctx.rank, ctx.rows = dist.get_rank(), tensor.shape[0]
        parts = [torch.empty_like(tensor) for _ in range(dist.get_world_size())]
        dist.all_gather(parts, tensor.contiguous())
        return torch.cat(parts, dim=0)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.contiguous()
        dist.all_reduce(grad)
        return grad[ctx.rank * ctx.rows : (ctx.rank + 1) * ctx.rows]


def gather_across_processes(tensor: torch.Tensor) -> tuple[torch.Tensor, int]:
    """All-gather `tensor` along dim 0 from every process, keeping the autograd graph.

    The gather is differentiable: the local slice keeps its gradient and the gradients that other processes compute
    for our rows are summed back, so after DDP's gradient averaging the update equals the one of a single process
    holding the whole batch. Batches of unequal size are padded for the collective and trimmed.

    Returns:
        `(gathered, offset)`: the concatenation over ranks in rank order, and the row offset of this rank's part (the
        label offset of its queries). Without an initialised process group: `(tensor, 0)`.
    """
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return tensor, 0
    world, rank = dist.get_world_size(), dist.get_rank()
    size = torch.tensor([tensor.shape[0]], device=tensor.device)
    sizes = [torch.zeros_like(size) for _ in range(world)]
    dist.all_gather(sizes, size)
    sizes = [int(s.item()) for s in sizes]
    rows = max(sizes)
    padded = tensor
    if rows > tensor.shape[0]:
        padded = torch.cat([tensor, tensor.new_zeros((rows - tensor.shape[0], *tensor.shape[1:]))], dim=0)
    gathered = _DifferentiableAllGather.apply(padded)
    if min(sizes) < rows:
        gathered = torch.cat([gathered[r * rows : r * rows + n] for r, n in enumerate(sizes)], dim=0)
    return gathered, sum(sizes[:rank])


def max_sim_infonce_loss(
    query_embeds: torch.Tensor,
    target_embeds: torch.Tensor,
    logit_temperature: torch.Tensor | float,
    gather: bool = False,
    reduce: str = "max",
) -> tuple[torch.Tensor, torch.Tensor]:
    r"""InfoNCE over the token-level maximum cosine (MRA-CIR, arXiv 2505.19952, eq. InfoNCE with max-sim).

    For query i and target j, `logit(i, j) = max_q cos(query_i, target_{j,q}) / tau`; the positive of query i is
    target i and every other target of the batch (of all processes when `gather`) is a negative:
    `loss = mean_i -log softmax_j(logit(i, j))[i]`.

    Args:
        query_embeds (`torch.Tensor` of shape `(B, D)`): L2-normalised composed queries.
        target_embeds (`torch.Tensor` of shape `(B', Q, D)`, `B' >= B`): L2-normalised target tokens; row i is the
            positive of query i, rows beyond B are extra negatives.
        logit_temperature (`torch.Tensor` or `float`): tau (already clamped).
        gather (`bool`, defaults to `False`): gather targets from all processes (labels offset by this rank's
            position); a no-op when `torch.distributed` is not initialised.
        reduce (`str`, defaults to `"max"`): see [`max_sim_logits`].

    Returns:
        `(loss, logits)`: the scalar loss and the `(B, B_total)` logits.
    """
    offset = 0
    if gather:
        target_embeds, offset = gather_across_processes(target_embeds)
    logits = max_sim_logits(query_embeds, target_embeds, reduce=reduce) / logit_temperature
    labels = torch.arange(query_embeds.shape[0], device=logits.device) + offset
    return F.cross_entropy(logits.float(), labels), logits


# ----------------------------------------------------------------------------------------------------------------------
# Outputs
# ----------------------------------------------------------------------------------------------------------------------
@dataclass
class MraCirOutput(ModelOutput):
    """Output of [`MraCirModel.forward`].

    Args:
        loss (`torch.FloatTensor` of shape `()`, *optional*): max-sim InfoNCE loss, when `return_loss=True`.
        logits_per_query (`torch.FloatTensor` of shape `(B, B')`): max-sim cosine / tau of each composed query with
            each target (all processes' targets when negatives are gathered in training).
        query_embeds (`torch.FloatTensor` of shape `(B, D)`): normalised composed query vectors.
        target_embeds (`torch.FloatTensor` of shape `(B', Q, D)`): normalised target tokens (local batch).
    """

    loss: torch.FloatTensor | None = None
    logits_per_query: torch.FloatTensor | None = None
    query_embeds: torch.FloatTensor | None = None
    target_embeds: torch.FloatTensor | None = None


# ----------------------------------------------------------------------------------------------------------------------
# Model
# ----------------------------------------------------------------------------------------------------------------------
class MraCirPreTrainedModel(Blip2PreTrainedModel):
    config: MraCirConfig
    config_class = MraCirConfig
    base_model_prefix = "mra_cir"
    main_input_name = "reference_pixel_values"
    _keep_in_fp32_modules = ["query_tokens", "qformer"]
    _supports_flash_attn = False

    def _init_weights(self, module):
        super()._init_weights(module)
        if isinstance(module, MraCirModel):
            init.trunc_normal_(module.query_tokens, std=self.config.initializer_range)
            init.constant_(module.logit_temperature, self.config.logit_temperature_init)


class MraCirModel(MraCirPreTrainedModel):
    r"""
    BLIP-2 vision tower + Q-Former for zero-shot composed image retrieval (MRA-CIR).

    - a target image is Q normalised vectors ([`get_image_features`], `(B, Q, D)`);
    - a composed query (reference image + modification text) is one normalised vector ([`get_composed_features`],
      `(B, D)`): query tokens and text tokens go through the Q-Former together, cross-attending to the reference
      image, and the first text position (after the Q query tokens) goes through `text_projection`;
    - the score of a query and a target is the maximum cosine over the target's Q tokens.

    Example:

    ```python
    >>> from transformers import AutoModel
    >>> import mra_cir.modeling_mra_cir  # registers mra_cir with the Auto classes
    >>> model = AutoModel.from_pretrained("path/to/mra-cir-model")  # or a BLIP-2 ITM checkpoint directory
    >>> target_tokens = model.get_image_features(pixel_values)                    # (B, Q, D)
    >>> query = model.get_composed_features(pixel_values, input_ids, attention_mask)  # (B, D)
    ```
    """

    def __init__(self, config: MraCirConfig):
        super().__init__(config)
        self.vision_model = Blip2VisionModel._from_config(config.vision_config)
        self.query_tokens = nn.Parameter(torch.zeros(1, config.num_query_tokens, config.qformer_config.hidden_size))
        self.embeddings = Blip2TextEmbeddings(config.qformer_config)
        self.qformer = Blip2QFormerModel._from_config(config.qformer_config)
        self.vision_projection = nn.Linear(config.qformer_config.hidden_size, config.image_text_hidden_size)
        self.text_projection = nn.Linear(config.qformer_config.hidden_size, config.image_text_hidden_size)
        # unused by retrieval; kept so that BLIP-2 ITM checkpoints round-trip without losing their matching head
        self.itm_head = nn.Linear(config.qformer_config.hidden_size, 2)
        self.logit_temperature = nn.Parameter(torch.tensor(config.logit_temperature_init))
        self.post_init()

    def get_input_embeddings(self) -> nn.Module:
        return self.embeddings.word_embeddings

    def set_input_embeddings(self, value: nn.Module) -> None:
        self.embeddings.word_embeddings = value

    # ---------------------------------------------------------------------------------------------------- validation
    def _check_pixel_values(self, pixel_values: torch.Tensor, name: str, interpolate_pos_encoding: bool) -> None:
        size = self.config.vision_config.image_size
        size = tuple(size) if isinstance(size, (list, tuple)) else (size, size)
        if not isinstance(pixel_values, torch.Tensor) or pixel_values.dim() != 4 or pixel_values.shape[1] != 3:
            got = tuple(pixel_values.shape) if isinstance(pixel_values, torch.Tensor) else type(pixel_values).__name__
            raise ValueError(f"{name} must be a (batch, 3, {size[0]}, {size[1]}) tensor, got {got}")
        if not interpolate_pos_encoding and tuple(pixel_values.shape[-2:]) != size:
            raise ValueError(
                f"{name} has spatial size {tuple(pixel_values.shape[-2:])}, but the vision tower expects {size} "
                "(resize with MraCirProcessor, or pass interpolate_pos_encoding=True)"
            )

    def _strip_image_tokens(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Drop the `num_query_tokens` image placeholders that `Blip2Processor` prepends, when the config has them."""
        index, q = self.config.image_token_index, self.config.num_query_tokens
        if index is not None and input_ids.shape[1] > q and bool((input_ids[:, :q] == index).all()):
            input_ids = input_ids[:, q:]
            attention_mask = attention_mask[:, q:] if attention_mask is not None else None
        return input_ids, attention_mask

    @staticmethod
    def _check_batch(named: dict[str, torch.Tensor | None]) -> int:
        sizes = {name: t.shape[0] for name, t in named.items() if t is not None}
        if len(set(sizes.values())) > 1:
            raise ValueError(f"batch sizes do not match: {sizes}; these inputs must have the same first dimension")
        return next(iter(sizes.values()))

    # ------------------------------------------------------------------------------------------------------ features
    def get_vision_outputs(self, pixel_values: torch.Tensor, interpolate_pos_encoding: bool = False) -> torch.Tensor:
        """Frozen ViT output `(B, 1 + patches, vision_hidden)`: what the Q-Former cross-attends to (cacheable)."""
        self._check_pixel_values(pixel_values, "pixel_values", interpolate_pos_encoding)
        outputs: BaseModelOutputWithPooling = self.vision_model(
            pixel_values=pixel_values, interpolate_pos_encoding=interpolate_pos_encoding
        )
        return outputs.last_hidden_state

    def _query_tokens_over(self, vision_embeds: torch.Tensor) -> torch.Tensor:
        query_tokens = self.query_tokens.expand(vision_embeds.shape[0], -1, -1)
        vision_mask = torch.ones(vision_embeds.shape[:-1], dtype=torch.long, device=vision_embeds.device)
        out = self.qformer(
            query_embeds=query_tokens, encoder_hidden_states=vision_embeds, encoder_attention_mask=vision_mask
        )
        return out.last_hidden_state

    def get_image_features(
        self,
        pixel_values: torch.Tensor | None = None,
        vision_embeds: torch.Tensor | None = None,
        interpolate_pos_encoding: bool = False,
    ) -> torch.Tensor:
        """Target-side image tokens.

        Args:
            pixel_values (`torch.Tensor` of shape `(B, 3, H, W)`): images, as `MraCirProcessor` makes them.
            vision_embeds (`torch.Tensor` of shape `(B, P, vision_hidden)`, *optional*): precomputed ViT output
                (from [`get_vision_outputs`]) instead of `pixel_values`.

        Returns:
            `torch.Tensor` of shape `(B, Q, D)`: L2-normalised `vision_projection` of the Q-Former query outputs
            (equal to `Blip2ForImageTextRetrieval(...).image_embeds`).
        """
        if vision_embeds is None:
            if pixel_values is None:
                raise ValueError("get_image_features needs pixel_values or vision_embeds")
            vision_embeds = self.get_vision_outputs(pixel_values, interpolate_pos_encoding)
        hidden = self._query_tokens_over(vision_embeds)
        hidden = hidden.to(dtype=self.vision_projection.weight.dtype)
        return F.normalize(self.vision_projection(hidden), dim=-1)

    def get_text_features(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Text-only features `(B, D)`: the [CLS] output of the Q-Former text path through `text_projection`,
        normalised (equal to `Blip2ForImageTextRetrieval(...).text_embeds`)."""
        if attention_mask is not None:
            self._check_batch({"input_ids": input_ids, "attention_mask": attention_mask})
        input_ids, attention_mask = self._strip_image_tokens(input_ids, attention_mask)
        embeds = self.embeddings(input_ids=input_ids)
        out = self.qformer(query_embeds=embeds, query_length=0, attention_mask=attention_mask)
        hidden = out.last_hidden_state[:, 0, :].to(dtype=self.text_projection.weight.dtype)
        return F.normalize(self.text_projection(hidden), dim=-1)

    def get_composed_features(
        self,
        pixel_values: torch.Tensor | None = None,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        vision_embeds: torch.Tensor | None = None,
        interpolate_pos_encoding: bool = False,
    ) -> torch.Tensor:
        """Composed query vectors for a reference image and a modification text.

        Args:
            pixel_values (`torch.Tensor` of shape `(B, 3, H, W)`): reference images.
            input_ids (`torch.LongTensor` of shape `(B, L)`): modification text tokens ([CLS] first).
            attention_mask (`torch.LongTensor` of shape `(B, L)`, *optional*): text padding mask.
            vision_embeds (`torch.Tensor` of shape `(B, P, vision_hidden)`, *optional*): precomputed ViT output.

        Returns:
            `torch.Tensor` of shape `(B, D)`: the Q-Former output at position Q (the first text token), through
            `text_projection`, L2-normalised.
        """
        if input_ids is None:
            raise ValueError("get_composed_features needs input_ids (the modification text)")
        if vision_embeds is None:
            if pixel_values is None:
                raise ValueError("get_composed_features needs pixel_values or vision_embeds (the reference image)")
            self._check_batch({"pixel_values": pixel_values, "input_ids": input_ids, "attention_mask": attention_mask})
            vision_embeds = self.get_vision_outputs(pixel_values, interpolate_pos_encoding)
        else:
            self._check_batch(
                {"vision_embeds": vision_embeds, "input_ids": input_ids, "attention_mask": attention_mask}
            )
        hidden = self.get_fused_hidden_states(vision_embeds, input_ids, attention_mask)
        hidden = hidden[:, self.config.num_query_tokens, :].to(dtype=self.text_projection.weight.dtype)
        return F.normalize(self.text_projection(hidden), dim=-1)

    def get_fused_hidden_states(
        self,
        vision_embeds: torch.Tensor,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        causal_text: bool = False,
    ) -> torch.Tensor:
        """The Q-Former over query tokens and text together, cross-attending to the image (BLIP-2's fused path,
        shared by the composed query, image-text matching and image-grounded text generation).

        Args:
            vision_embeds (`torch.Tensor` of shape `(B, P, vision_hidden)`): ViT outputs ([`get_vision_outputs`]).
            input_ids (`torch.LongTensor` of shape `(B, L)`): text tokens.
            attention_mask (`torch.LongTensor` of shape `(B, L)`, *optional*): text padding mask.
            causal_text (`bool`, defaults to `False`): BLIP-2's ITG mask instead of bidirectional attention: queries
                see only queries, text sees every query and the text before it (see [`_causal_text_mask`]).

        Returns:
            `torch.Tensor` of shape `(B, Q + L, qformer_hidden)`: the Q query positions, then the L text positions.
        """
        input_ids, attention_mask = self._strip_image_tokens(input_ids, attention_mask)
        batch, q = input_ids.shape[0], self.config.num_query_tokens
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        query_tokens = self.query_tokens.expand(batch, -1, -1)
        query_mask = torch.ones((batch, q), dtype=attention_mask.dtype, device=attention_mask.device)
        embeds = self.embeddings(input_ids=input_ids, query_embeds=query_tokens)
        vision_mask = torch.ones(vision_embeds.shape[:-1], dtype=torch.long, device=vision_embeds.device)
        mask = torch.cat([query_mask, attention_mask], dim=1)
        if causal_text:
            mask = self._causal_text_mask(mask, embeds)
        out = self.qformer(
            query_embeds=embeds,
            query_length=q,
            attention_mask=mask,
            encoder_hidden_states=vision_embeds,
            encoder_attention_mask=vision_mask,
        )
        return out.last_hidden_state

    def _causal_text_mask(self, attention_mask: torch.Tensor, embeds: torch.Tensor) -> torch.Tensor:
        """BLIP-2's ITG mask over `[Q query tokens; L text tokens]` (`attention_mask`: `(B, Q + L)` padding mask):
        queries see only queries, text sees every query and the text before it, never padding. Built on the
        Q-Former's own padding mask, in its format (boolean, or additive float for eager attention), so the attention
        backend takes it as it is. Returns `(B, 1, Q + L, Q + L)`."""
        from transformers.masking_utils import create_bidirectional_mask

        q, total = self.config.num_query_tokens, attention_mask.shape[1]
        padding = create_bidirectional_mask(
            config=self.qformer.config, inputs_embeds=embeds, attention_mask=attention_mask
        )
        if padding is None:  # no padding at all: the backend's "attend everywhere"
            padding = torch.ones((attention_mask.shape[0], 1, total, total), dtype=torch.bool, device=embeds.device)
        rows = torch.arange(total, device=embeds.device)[:, None]
        cols = torch.arange(total, device=embeds.device)[None, :]
        allowed = (cols < q) | ((rows >= q) & (cols <= rows))
        if padding.dtype == torch.bool:
            return padding & allowed
        return padding.masked_fill(~allowed, torch.finfo(padding.dtype).min)

    def clamped_logit_temperature(self) -> torch.Tensor:
        """tau, clamped to `[logit_temperature_min, logit_temperature_max]`."""
        return self.logit_temperature.clamp(self.config.logit_temperature_min, self.config.logit_temperature_max)

    # ------------------------------------------------------------------------------------------------------- forward
    def forward(
        self,
        reference_pixel_values: torch.Tensor | None = None,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        target_pixel_values: torch.Tensor | None = None,
        reference_vision_embeds: torch.Tensor | None = None,
        target_vision_embeds: torch.Tensor | None = None,
        return_loss: bool = True,
        interpolate_pos_encoding: bool = False,
        **kwargs,
    ) -> MraCirOutput:
        r"""
        Args:
            reference_pixel_values (`torch.Tensor` of shape `(B, 3, H, W)`): reference images.
            input_ids (`torch.LongTensor` of shape `(B, L)`): modification texts.
            attention_mask (`torch.LongTensor` of shape `(B, L)`, *optional*): text padding mask.
            target_pixel_values (`torch.Tensor` of shape `(B', 3, H, W)`, `B' >= B`): target images; row i is the
                positive of query i.
            reference_vision_embeds / target_vision_embeds (`torch.Tensor`, *optional*): cached ViT outputs used
                instead of the pixel values (the ViT is frozen, so its output can be computed once).
            return_loss (`bool`, defaults to `True`): compute the max-sim InfoNCE loss (negatives gathered across
                processes when `config.gather_negatives` and `torch.distributed` is initialised).

        Returns:
            [`MraCirOutput`].
        """
        if target_pixel_values is None and target_vision_embeds is None:
            raise ValueError("forward needs target_pixel_values (or target_vision_embeds)")
        if target_vision_embeds is None:
            self._check_pixel_values(target_pixel_values, "target_pixel_values", interpolate_pos_encoding)
        if reference_vision_embeds is None and reference_pixel_values is not None:
            self._check_pixel_values(reference_pixel_values, "reference_pixel_values", interpolate_pos_encoding)
            self._check_batch(
                {
                    "reference_pixel_values": reference_pixel_values,
                    "input_ids": input_ids,
                    "attention_mask": attention_mask,
                }
            )
        query_embeds = self.get_composed_features(
            reference_pixel_values, input_ids, attention_mask, reference_vision_embeds, interpolate_pos_encoding
        )
        target_embeds = self.get_image_features(target_pixel_values, target_vision_embeds, interpolate_pos_encoding)
        if target_embeds.shape[0] < query_embeds.shape[0]:
            raise ValueError(
                f"target_pixel_values has batch size {target_embeds.shape[0]} but there are {query_embeds.shape[0]} "
                "queries; each query needs its target at the same row"
            )
        tau = self.clamped_logit_temperature()
        gather = return_loss and self.training and self.config.gather_negatives
        if return_loss:
            loss, logits = max_sim_infonce_loss(
                query_embeds, target_embeds, tau, gather=gather, reduce=self.config.similarity_reduce
            )
        else:
            loss, logits = None, max_sim_logits(query_embeds, target_embeds, self.config.similarity_reduce) / tau
        return MraCirOutput(loss=loss, logits_per_query=logits, query_embeds=query_embeds, target_embeds=target_embeds)

    # ----------------------------------------------------------------------------------------------------- model card
    def save_pretrained(self, save_directory, *args, **kwargs):
        super().save_pretrained(save_directory, *args, **kwargs)
        if kwargs.get("is_main_process", True):
            from pathlib import Path

            from .model_card import render_model_card

            card = render_model_card(self.config, getattr(self, "training_summary", None))
            (Path(save_directory) / "README.md").write_text(card, encoding="utf-8")


__all__ = [
    "MraCirModel",
    "MraCirOutput",
    "MraCirPreTrainedModel",
    "gather_across_processes",
    "max_sim_infonce_loss",
    "max_sim_logits",
]
