"""Configuration of the MRA-CIR model: a BLIP-2 vision tower + Q-Former with a composed-query retrieval head."""

from __future__ import annotations

from transformers import PreTrainedConfig
from transformers.models.blip_2.configuration_blip_2 import Blip2QFormerConfig, Blip2VisionConfig

# model types whose checkpoints `MraCirModel.from_pretrained` accepts, and the architectures that carry every weight
COMPATIBLE_MODEL_TYPES = ("mra_cir", "blip-2")
COMPATIBLE_ARCHITECTURES = ("MraCirModel", "Blip2ForImageTextRetrieval")


class MraCirConfig(PreTrainedConfig):
    r"""
    Configuration of [`MraCirModel`]. It mirrors [`~transformers.Blip2Config`] (same sub-configs and field names), so a
    BLIP-2 image-text retrieval checkpoint (`Salesforce/blip2-itm-vit-g`) loads into it directly; the language model
    part of a BLIP-2 config (`text_config`) is not used.

    Args:
        vision_config (`dict` or [`Blip2VisionConfig`], *optional*):
            The frozen ViT. Defaults to BLIP-2's ViT-g (1408 wide, 39 layers, 224 px, patch 14).
        qformer_config (`dict` or [`Blip2QFormerConfig`], *optional*):
            The Q-Former. `use_qformer_text_input` is always switched on (the composed query and the text features
            need the text path) and `encoder_hidden_size` is set to the vision width.
        num_query_tokens (`int`, *optional*, defaults to 32):
            Number of learnable query tokens Q; an image is represented by Q vectors.
        image_text_hidden_size (`int`, *optional*, defaults to 256):
            Size D of the shared embedding space (`vision_projection` / `text_projection` output).
        image_token_index (`int`, *optional*):
            Kept for BLIP-2 compatibility: when set and `input_ids` start with `num_query_tokens` such tokens (as
            `Blip2Processor` writes them), they are stripped before the text goes through the Q-Former.
        logit_temperature_init (`float`, *optional*, defaults to 0.07):
            Initial InfoNCE temperature tau (logits are cosine / tau). Not called `temperature`: transformers rejects
            generation parameter names in a model config.
        logit_temperature_min (`float`, *optional*, defaults to 0.001):
            Lower clamp of the learnable temperature.
        logit_temperature_max (`float`, *optional*, defaults to 0.5):
            Upper clamp of the learnable temperature.
        similarity_reduce (`str`, *optional*, defaults to `"max"`):
            How the composed query vector is scored against the Q target tokens: `"max"` (the paper's token-level
            maximum cosine) or `"mean"` (the cosine with the mean target token, an ablation).
        gather_negatives (`bool`, *optional*, defaults to `True`):
            Under `torch.distributed`, score each local query against the targets of every process (in-batch
            negatives across devices). Ignored when `torch.distributed` is not initialised.
        initializer_range (`float`, *optional*, defaults to 0.02):
            Std of the truncated normal initialiser (query tokens, projections).
        initializer_factor (`float`, *optional*, defaults to 1.0):
            Kept for BLIP-2 compatibility.

    Example:

    ```python
    >>> from mra_cir.modeling_mra_cir import MraCirConfig, MraCirModel
    >>> config = MraCirConfig(vision_config={"hidden_size": 32, "intermediate_size": 37, "num_hidden_layers": 2,
    ...     "num_attention_heads": 4, "image_size": 32, "patch_size": 8, "initializer_range": 0.02},
    ...     qformer_config={"hidden_size": 32, "intermediate_size": 37, "num_hidden_layers": 2, "num_attention_heads": 4,
    ...     "vocab_size": 100}, num_query_tokens=4, image_text_hidden_size=16)
    >>> model = MraCirModel(config)
    ```
    """

    model_type = "mra_cir"
    sub_configs_defaults = {"vision_config": Blip2VisionConfig, "qformer_config": Blip2QFormerConfig}

    vision_config: dict | PreTrainedConfig | None = None
    qformer_config: dict | PreTrainedConfig | None = None
    num_query_tokens: int = 32
    image_text_hidden_size: int = 256
    image_token_index: int | None = None
    logit_temperature_init: float = 0.07
    logit_temperature_min: float = 0.001
    logit_temperature_max: float = 0.5
    similarity_reduce: str = "max"
    gather_negatives: bool = True
    initializer_range: float = 0.02
    initializer_factor: float = 1.0

    def __post_init__(self, **kwargs):
        kwargs.pop("text_config", None)  # the language model of a BLIP-2 config is not part of this model
        super().__post_init__(**kwargs)
        self.qformer_config.use_qformer_text_input = True
        self.qformer_config.encoder_hidden_size = self.vision_config.hidden_size
        if self.similarity_reduce not in ("max", "mean"):
            raise ValueError(f"similarity_reduce must be 'max' or 'mean', got {self.similarity_reduce!r}")
        if not 0 < self.logit_temperature_min <= self.logit_temperature_init <= self.logit_temperature_max:
            raise ValueError(
                "logit temperatures must satisfy 0 < logit_temperature_min <= logit_temperature_init <= "
                f"logit_temperature_max, got {self.logit_temperature_min}, {self.logit_temperature_init}, "
                f"{self.logit_temperature_max}"
            )
        if self.num_query_tokens < 1 or self.image_text_hidden_size < 1:
            raise ValueError("num_query_tokens and image_text_hidden_size must be positive")

    @classmethod
    def from_dict(cls, config_dict: dict, **kwargs):
        model_type = config_dict.get("model_type")
        if model_type is not None and model_type not in COMPATIBLE_MODEL_TYPES:
            raise ValueError(
                f"checkpoint config has model_type={model_type!r}; MraCirModel loads only {COMPATIBLE_MODEL_TYPES} "
                "checkpoints (a BLIP-2 image-text retrieval model such as Salesforce/blip2-itm-vit-g)"
            )
        architectures = config_dict.get("architectures") or []
        if architectures and not set(architectures) & set(COMPATIBLE_ARCHITECTURES):
            raise ValueError(
                f"checkpoint architectures={architectures} do not carry the Q-Former text path and projections that "
                f"MraCirModel needs; expected one of {COMPATIBLE_ARCHITECTURES} (e.g. Salesforce/blip2-itm-vit-g)"
            )
        return super().from_dict(config_dict, **kwargs)


__all__ = ["MraCirConfig"]
