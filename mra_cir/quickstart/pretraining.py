"""`mra-cir pretrain-stand-in`: the pretraining of the offline stand-in for BLIP-2, done once and shipped.

A user of MRA-CIR starts from a pretrained BLIP-2 and never pretrains it inside an experiment. The quickstart does the
same: it loads the stand-in shipped in the package ([`~mra_cir.quickstart.STAND_IN`]), made by this command from the
corpus of [`~mra_cir.dataset_builders.synthetic_world.pretraining_corpus`] (seeds reserved for it; no benchmark image,
no held-out benchmark phrasing; its docstring says what it sees and what it never sees).

Objectives, per step:

- **ITC** (BLIP-2's image-text contrastive loss, [`~mra_cir.quickstart.stage1.itc_loss`]) on `batch_size`
  image-caption pairs, the max over the query tokens against the caption's [CLS] feature;
- **ITG** (BLIP-2's image-grounded captioning, optional, `itg_weight`) on the same pairs: it trains the fused path,
  the path the composed query takes;
- **paraphrase contrast** (the language pretraining of the text side, `paraphrase_weight`): symmetric InfoNCE between
  the text features of two phrasings of the same changes, `paraphrase_batch_size` pairs per step;
- **fused image-text contrast** (`fused_weight`, [`fused_loss`]): the fused path's first text position (query tokens
  and text through the Q-Former together, the output BLIP-2's ITM reads and the composed query uses) for an image and
  a text, against the image tokens of the batch: it must find its own image. Half the batch gets its caption, half a
  generic text ("a picture"), so the position learns to read the image through the query tokens. No modification
  text is involved: the fused path learns to carry an image, not to change it.

The corpus is drawn in chunks (`chunk_size` pairs, rendered when first needed, each from its own random stream), so
the first steps of a long run need only the first chunk: `--stop_after 50` reproduces the head of the recorded loss
trace (the schedule still spans `max_steps`).

Example:

```bash
mra-cir pretrain-stand-in --output_dir my-stand-in --max_steps 200 --num_pairs 20000   # a short run
```
"""

from __future__ import annotations

import json
import math
import platform
import re
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from mra_cir.modeling_mra_cir.modeling_mra_cir import max_sim_logits
from mra_cir.retrieval.content_hashes import file_sha256

from .stage1 import itc_loss, itg_loss, warmup_cosine

#: the stand-in's size (a field of `PretrainArguments` each; the shipped one was made with these)
DEFAULT_SIZE = {
    "vision_hidden_size": 96,
    "vision_layers": 3,
    "patch_size": 8,
    "hidden_size": 64,
    "qformer_layers": 4,
    "num_query_tokens": 8,
    "embed_dim": 64,
}
#: recorded losses of the first steps (the reproducibility test compares them)
TRACE_STEPS = 50


@dataclass
class PretrainArguments:
    """Options of `mra-cir pretrain-stand-in`."""

    output_dir: str = field(default="stand_in", metadata={"help": "Where the model, processor and card are written."})
    seed: int = field(
        default=1_000_000, metadata={"help": "Corpus and initialisation seed (>= 1000000: reserved for pretraining)."}
    )
    num_pairs: int = field(default=400_000, metadata={"help": "Image-caption pairs in the corpus (cycled)."})
    chunk_size: int = field(default=8192, metadata={"help": "Pairs rendered at a time (each chunk its own stream)."})
    max_steps: int = field(default=3000, metadata={"help": "Optimisation steps (the schedule's length)."})
    stop_after: int | None = field(
        default=None, metadata={"help": "Stop after this many steps without changing the schedule (reproduction)."}
    )
    batch_size: int = field(default=128, metadata={"help": "Image-caption pairs per step (in-batch negatives)."})
    paraphrase_batch_size: int = field(default=64, metadata={"help": "Paraphrase pairs per step (0: none)."})
    paraphrase_weight: float = field(default=0.5, metadata={"help": "Weight of the paraphrase contrast."})
    itg_weight: float = field(default=0.0, metadata={"help": "Weight of image-grounded captioning (0: off)."})
    fused_weight: float = field(
        default=1.0, metadata={"help": "Weight of the fused image-text contrast (0: off; see the module docstring)."}
    )
    learning_rate: float = field(default=6e-4, metadata={"help": "AdamW peak learning rate."})
    warmup_steps: int = field(default=200, metadata={"help": "Linear warm-up steps."})
    weight_decay: float = field(default=0.05, metadata={"help": "AdamW weight decay."})
    image_size: int = field(default=32, metadata={"help": "Image side in pixels."})
    vision_hidden_size: int = field(default=DEFAULT_SIZE["vision_hidden_size"], metadata={"help": "ViT width."})
    vision_layers: int = field(default=DEFAULT_SIZE["vision_layers"], metadata={"help": "ViT layers."})
    hidden_size: int = field(default=DEFAULT_SIZE["hidden_size"], metadata={"help": "Q-Former width."})
    qformer_layers: int = field(
        default=DEFAULT_SIZE["qformer_layers"],
        metadata={
            "help": "Q-Former layers (the composed query's text reads the image one hop per layer after the first)."
        },
    )
    patch_size: int = field(default=DEFAULT_SIZE["patch_size"], metadata={"help": "ViT patch side in pixels."})
    num_query_tokens: int = field(default=DEFAULT_SIZE["num_query_tokens"], metadata={"help": "Query tokens (Q)."})
    embed_dim: int = field(default=DEFAULT_SIZE["embed_dim"], metadata={"help": "Image-text embedding width (D)."})
    temperature_min: float = field(default=0.01, metadata={"help": "Lower clamp of the logit temperature."})
    num_threads: int = field(default=1, metadata={"help": "torch CPU threads."})
    device: str = field(default="cpu", metadata={"help": "cpu, cuda or auto."})
    checkpoint_every: int = field(default=500, metadata={"help": "Save a resumable checkpoint every N steps."})
    show_progress: bool = field(default=True, metadata={"help": "A progress bar."})

    def __post_init__(self):
        from mra_cir.dataset_builders.synthetic_world.pretraining_corpus import check_pretraining_seed

        check_pretraining_seed(self.seed)
        for name in ("num_pairs", "chunk_size", "max_steps", "batch_size", "num_threads"):
            if getattr(self, name) < 1:
                raise ValueError(f"--{name} must be >= 1, got {getattr(self, name)}")
        if self.batch_size < 2:
            raise ValueError(f"--batch_size must be >= 2 (in-batch negatives), got {self.batch_size}")
        if self.paraphrase_batch_size == 1:
            raise ValueError("--paraphrase_batch_size must be 0 (off) or >= 2")
        if self.image_size % self.patch_size:
            raise ValueError(f"--image_size {self.image_size} is not a multiple of --patch_size {self.patch_size}")
        if self.device == "auto":
            self.device = "cuda" if torch.cuda.is_available() else "cpu"
        if self.device not in ("cpu", "cuda"):
            raise ValueError(f"--device must be cpu, cuda or auto, got {self.device!r}")


def stand_in_processor(image_size: int = 32):
    """The stand-in's processor: the PIL BLIP image processor and a word-level tokenizer that knows every word of the
    world (captions, pretraining corpus, agent and benchmark texts), as a pretrained tokenizer knows a benchmark's
    words without having seen its phrasings. Each word is given once, so the ids depend only on the set of words."""
    from mra_cir.dataset_builders.synthetic_world import benchmark_texts, world_texts
    from mra_cir.dataset_builders.synthetic_world.pretraining_corpus import corpus_texts
    from mra_cir.dataset_builders.synthetic_world.scene_agent import agent_texts
    from mra_cir.tiny import offline_processor

    texts = world_texts() + agent_texts() + benchmark_texts() + corpus_texts()
    words = sorted({word for text in texts for word in re.findall(r"\w+|[^\w\s]", text.lower())})
    return offline_processor(image_size, texts=[" ".join(words)], vocab_size=len(words) + 16)


def stand_in_config(args: PretrainArguments, vocab_size: int):
    """The `MraCirConfig` of a stand-in of `args`'s size."""
    from mra_cir.tiny import tiny_config

    config = tiny_config(
        hidden_size=args.hidden_size,
        vision_hidden_size=args.vision_hidden_size,
        num_hidden_layers=args.vision_layers,
        num_attention_heads=4,
        image_size=args.image_size,
        patch_size=args.patch_size,
        num_query_tokens=args.num_query_tokens,
        embed_dim=args.embed_dim,
        vocab_size=vocab_size,
        logit_temperature_min=args.temperature_min,
    )
    config.qformer_config.num_hidden_layers = args.qformer_layers
    return config


class _Corpus:
    """The chunked corpus: chunk k = `image_caption_pairs(seed + k, chunk_size)` and as many paraphrase pairs, made
    when first needed; pixel values normalised like the processor's, texts tokenised once per chunk."""

    def __init__(self, args: PretrainArguments, processor):
        self.args, self.processor = args, processor
        self.num_chunks = max(1, math.ceil(args.num_pairs / args.chunk_size))
        self.chunks: dict[int, dict] = {}
        mean = torch.tensor(processor.image_processor.image_mean).view(1, 3, 1, 1)
        std = torch.tensor(processor.image_processor.image_std).view(1, 3, 1, 1)
        self.mean, self.std = mean, std

    def _tokens(self, texts: list[str]) -> dict[str, torch.Tensor]:
        encoded = self.processor.tokenizer(texts, padding="longest", return_tensors="pt")
        return {"input_ids": encoded["input_ids"], "attention_mask": encoded["attention_mask"]}

    def chunk(self, index: int) -> dict:
        from mra_cir.dataset_builders.synthetic_world.pretraining_corpus import image_caption_pairs, paraphrase_pairs

        k = index % self.num_chunks
        if k not in self.chunks:
            size = min(self.args.chunk_size, self.args.num_pairs - k * self.args.chunk_size)
            images, captions, _ = image_caption_pairs(self.args.seed + k, size, self.args.image_size)
            paraphrases = list(paraphrase_pairs(self.args.seed + k, size)) if self.args.paraphrase_batch_size else []
            self.chunks[k] = {
                "images": torch.from_numpy(images),
                "captions": self._tokens(captions),
                "first": self._tokens([a for a, _ in paraphrases]) if paraphrases else None,
                "second": self._tokens([b for _, b in paraphrases]) if paraphrases else None,
            }
        return self.chunks[k]

    def pixel_values(self, images: torch.Tensor) -> torch.Tensor:
        pixels = images.permute(0, 3, 1, 2).float() / 255.0
        return (pixels - self.mean) / self.std


def paraphrase_loss(first: torch.Tensor, second: torch.Tensor, logit_temperature) -> torch.Tensor:
    """Symmetric InfoNCE between `(B, D)` normalised text features of two phrasings; row i of each is one meaning."""
    return itc_loss(first, second.unsqueeze(1), logit_temperature)  # ITC with one token per "image"


#: the generic text of the fused contrast's second half
GENERIC_TEXT = "a picture"


def fused_loss(model, vision_embeds, input_ids, attention_mask, generic, image_embeds, logit_temperature):
    """Fused image-text contrast: the composed-query vector of (image i, text i) against the `(B, Q, D)` image tokens
    of the batch, InfoNCE with the max over the tokens; the first half of the batch keeps its captions, the second
    half reads `generic` (`(1, L)` ids of `GENERIC_TEXT`) instead."""
    half = input_ids.shape[0] // 2
    rest = vision_embeds.shape[0] - half
    captioned = model.get_composed_features(
        input_ids=input_ids[:half], attention_mask=attention_mask[:half], vision_embeds=vision_embeds[:half]
    )
    plain = model.get_composed_features(input_ids=generic.expand(rest, -1), vision_embeds=vision_embeds[half:])
    logits = max_sim_logits(torch.cat([captioned, plain]), image_embeds) / logit_temperature
    return F.cross_entropy(logits, torch.arange(logits.shape[0], device=logits.device))


def _rows(tokens: dict[str, torch.Tensor], index: torch.Tensor, device) -> tuple[torch.Tensor, torch.Tensor]:
    ids, mask = tokens["input_ids"][index], tokens["attention_mask"][index]
    width = int(mask.sum(1).max())
    return ids[:, :width].to(device), mask[:, :width].to(device)


def pretrain_stand_in(args: PretrainArguments) -> dict:
    """Pretrain a stand-in of `args`'s size and write it (model, processor, `pretraining.json`, card) to
    `args.output_dir`; resumes from `<output_dir>/checkpoint` when one is there. Returns the summary."""
    from transformers import set_seed

    from mra_cir.modeling_mra_cir import MraCirModel

    torch.set_num_threads(args.num_threads)
    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    set_seed(args.seed)
    processor = stand_in_processor(args.image_size)
    model = MraCirModel(stand_in_config(args, len(processor.tokenizer))).to(args.device)
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.learning_rate, weight_decay=args.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_cosine(args.warmup_steps, args.max_steps))
    generator = torch.Generator().manual_seed(args.seed)
    losses: list[dict] = []
    start_step, seconds = 0, 0.0
    checkpoint = out / "checkpoint" / "state.pt"
    if checkpoint.exists():
        state = torch.load(checkpoint, weights_only=False)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        generator.set_state(state["generator"])
        losses, start_step, seconds = state["losses"], state["step"], state["seconds"]
    corpus = _Corpus(args, processor)
    generic = processor.tokenizer([GENERIC_TEXT], return_tensors="pt")["input_ids"].to(args.device)
    per_chunk = max(1, args.chunk_size // args.batch_size)
    stop = min(args.max_steps, args.stop_after or args.max_steps)
    started = time.perf_counter()
    bar = tqdm(range(start_step, stop), desc="pretrain stand-in", disable=not args.show_progress, initial=start_step)
    device = model.device
    for step in bar:
        data = corpus.chunk(step // per_chunk)
        size = data["images"].shape[0]
        index = torch.randint(size, (min(args.batch_size, size),), generator=generator)
        pixel_values = corpus.pixel_values(data["images"][index]).to(device)
        input_ids, attention_mask = _rows(data["captions"], index, device)
        vision_embeds = model.get_vision_outputs(pixel_values)
        tau = model.clamped_logit_temperature()
        image_embeds = model.get_image_features(vision_embeds=vision_embeds)
        itc = itc_loss(model.get_text_features(input_ids, attention_mask), image_embeds, tau)
        loss, record = itc, {"step": step + 1, "itc": float(itc.detach())}
        if args.fused_weight > 0:
            fused = fused_loss(model, vision_embeds, input_ids, attention_mask, generic, image_embeds, tau)
            loss = loss + args.fused_weight * fused
            record["fused"] = float(fused.detach())
        if args.itg_weight > 0:
            itg = itg_loss(model, vision_embeds, input_ids, attention_mask)
            loss = loss + args.itg_weight * itg
            record["itg"] = float(itg.detach())
        if args.paraphrase_batch_size:
            rows = torch.randint(size, (min(args.paraphrase_batch_size, size),), generator=generator)
            first = model.get_text_features(*_rows(data["first"], rows, device))
            second = model.get_text_features(*_rows(data["second"], rows, device))
            paraphrase = paraphrase_loss(first, second, tau)
            loss = loss + args.paraphrase_weight * paraphrase
            record["paraphrase"] = float(paraphrase.detach())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
        record["loss"] = float(loss.detach())
        losses.append(record)
        bar.set_postfix(loss=f"{record['loss']:.3f}")
        done = step + 1
        periodic = args.checkpoint_every and done % args.checkpoint_every == 0
        if (periodic or done == stop) and done < args.max_steps:  # stopped early: resumable from here
            checkpoint.parent.mkdir(exist_ok=True)
            state = {
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "generator": generator.get_state(),
                "losses": losses,
                "step": done,
                "seconds": seconds + time.perf_counter() - started,
            }
            torch.save(state, checkpoint.with_suffix(".tmp"))
            checkpoint.with_suffix(".tmp").replace(checkpoint)
    model.eval()
    seconds += time.perf_counter() - started
    summary = {
        "arguments": asdict(args),
        "steps": len(losses),
        "seconds": round(seconds, 1),
        "device": _device_name(args.device),
        "torch": torch.__version__,
        "loss_trace": [round(r["loss"], 6) for r in losses[:TRACE_STEPS]],
        "final_losses": {
            k: round(float(np.mean([r[k] for r in losses[-200:]])), 4) for k in losses[-1] if k != "step"
        },
    }
    if len(losses) >= args.max_steps:
        model.save_pretrained(out)
        processor.save_pretrained(out)
        for copied in out.glob("*.py"):  # the remote-code copies: `import mra_cir` registers the classes instead
            copied.unlink()
        summary["model_sha256"] = file_sha256(out / "model.safetensors")
        (out / "pretraining.json").write_text(json.dumps(summary, indent=2))
        from .stand_in_card import stand_in_card

        parameters = sum(p.numel() for p in model.parameters())
        (out / "README.md").write_text(stand_in_card(summary, parameters, asdict(PretrainArguments())))
    return summary


def _device_name(device: str) -> str:
    if device == "cuda":
        return torch.cuda.get_device_name()
    return f"CPU ({platform.processor() or platform.machine()}), {torch.get_num_threads()} thread(s)"


__all__ = [
    "DEFAULT_SIZE",
    "PretrainArguments",
    "fused_loss",
    "paraphrase_loss",
    "pretrain_stand_in",
    "stand_in_config",
]
