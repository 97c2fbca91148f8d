"""Default prompts of the MRA agent, versioned.

The prompt version is part of the response-cache key and of the builder config: changing a prompt's text without
bumping `prompt_version` would silently reuse answers to the old prompt, so `AgentPrompts` requires a new version
string whenever a prompt is overridden.

Two sets are registered: `mra-v1` (the paper's two steps: caption each image, then write the modification text from
both images and both captions) and `mra-direct-v1` (one step: the modification text from both images alone, the
paper's "without captions" ablation; `MraTripletsConfig(agent_mode="direct")`).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

DEFAULT_PROMPT_VERSION = "mra-v1"
DIRECT_PROMPT_VERSION = "mra-direct-v1"

CAPTION_PROMPT = (
    "Describe this image in one short sentence: the main object, its colour, shape, material and setting. "
    "Answer with the sentence only."
)

MODIFY_PROMPT = (
    "You see a reference photo and a target photo.\n"
    "Reference description: {reference_caption}\n"
    "Target description: {target_caption}\n"
    "Write one short imperative instruction (at most 20 words) that turns the reference into the target, "
    'like "make it red and sleeveless" or "replace the dog with two cats on grass". Mention only what changes. '
    "Do not refer to the photos by number or position. Answer with the instruction only."
)

DIRECT_MODIFY_PROMPT = (
    "You see a reference photo and a target photo.\n"
    "Write one short imperative instruction (at most 20 words) that turns the reference into the target, "
    'like "make it red and sleeveless" or "replace the dog with two cats on grass". Mention only what changes. '
    "Do not refer to the photos by number or position. Answer with the instruction only."
)

VERIFY_PROMPT = (
    "You see a reference photo and a target photo.\n"
    "Instruction: {modification}\n"
    "Does applying the instruction to the reference photo give the target photo? Answer yes or no."
)


@dataclass(frozen=True)
class AgentPrompts:
    """The three prompts of the agent and their version.

    Args:
        version (`str`, defaults to `DEFAULT_PROMPT_VERSION`): goes into every cache key and the builder config.
        caption (`str`): step 1, asked with one image.
        modify (`str`): step 2, asked with the reference then the target image; formatted with
            `{reference_caption}` and `{target_caption}` (both required when `uses_captions`, neither allowed
            otherwise).
        verify (`str`): optional step 3, asked with both images; formatted with `{modification}`; the answer must
            start with "yes" or "no".
        uses_captions (`bool`, defaults to True): True for the two-step agent (step 2 reads step 1's captions);
            False for a one-step set (`agent_mode="direct"`: no caption is asked, step 2 sees the images only).

    Example:
        ```python
        >>> prompts = AgentPrompts.default().override(version="shop-v1", caption="Describe this product.")
        ```
    """

    version: str = DEFAULT_PROMPT_VERSION
    caption: str = CAPTION_PROMPT
    modify: str = MODIFY_PROMPT
    verify: str = VERIFY_PROMPT
    uses_captions: bool = True

    def __post_init__(self):
        if not self.version:
            raise ValueError("AgentPrompts.version must be a non-empty string")
        captions = ("{reference_caption}", "{target_caption}")
        for name, fields in (("modify", captions if self.uses_captions else ()), ("verify", ("{modification}",))):
            text = getattr(self, name)
            missing = [field for field in fields if field not in text]
            if missing:
                raise ValueError(f"AgentPrompts.{name} must contain the placeholders {missing}")
        if not self.uses_captions and any(field in self.modify for field in captions):
            raise ValueError("AgentPrompts(uses_captions=False).modify must not contain caption placeholders")

    @classmethod
    def default(cls) -> AgentPrompts:
        return cls()

    def override(self, version: str, **prompts: str) -> AgentPrompts:
        """A copy with some prompts replaced; a new `version` is mandatory so that caches are not mixed up."""
        if version == self.version and any(getattr(self, key) != value for key, value in prompts.items()):
            raise ValueError(f"changed prompts need a new version (got the current one, {version!r})")
        return replace(self, version=version, **prompts)


PROMPTS: dict[str, AgentPrompts] = {
    DEFAULT_PROMPT_VERSION: AgentPrompts(),
    DIRECT_PROMPT_VERSION: AgentPrompts(
        version=DIRECT_PROMPT_VERSION, modify=DIRECT_MODIFY_PROMPT, uses_captions=False
    ),
}
#: the default prompt set of each agent mode (`MraTripletsConfig.agent_mode`)
MODE_PROMPT_VERSIONS = {"two_step": DEFAULT_PROMPT_VERSION, "direct": DIRECT_PROMPT_VERSION}


def get_prompts(version: str = DEFAULT_PROMPT_VERSION) -> AgentPrompts:
    """The registered prompts of a version (register more with `register_prompts`)."""
    if version not in PROMPTS:
        raise KeyError(f"unknown prompt_version {version!r}; registered: {sorted(PROMPTS)}")
    return PROMPTS[version]


def register_prompts(prompts: AgentPrompts) -> AgentPrompts:
    """Register a prompt set under its version (so builder configs can refer to it by name)."""
    existing = PROMPTS.get(prompts.version)
    if existing is not None and existing != prompts:
        raise ValueError(f"prompt_version {prompts.version!r} is already registered with different prompts")
    PROMPTS[prompts.version] = prompts
    return prompts
