"""What kind of change a modification text asks for: a fast lexical tagger of transformation types.

Types (a text may carry several; `TYPES` order): `color`, `material` (material, texture, pattern), `shape` (shape or
cut changed, or the object replaced by another), `added` (an object or part added), `removed` (an object or part
removed), `count` (the number of objects), `size`, `position` (position, pose or viewpoint), `background` (background
or scene), `style` (the look: casual, formal, a graphic or logo, a drawing), `other` (none of these: an action, a
mood, a vague request).

Why lexical: it tags a million texts in seconds, with no model, so the type mix of every built dataset and every
benchmark query is free to compute; an agent-based tagger (`transformation_types_agent`) is the option when a
multimodal LLM is at hand. The tagger splits a text into clauses (commas, "and", "while", "then", ";", "which") and
looks for each type's cue words in each clause, with rules that keep naming apart from changing: adjectives of a
definite noun phrase ("the red circle", "the large white dog") and a place that names an object ("the object on the
left") are not a change, nor is what the text says stays ("has the same color"); in a clause that adds, removes or
replaces an object, the object's colour and size describe it; a colour in a clause about the background is a
background change. The lexicon was written from the world's vocabulary and general knowledge, then tuned on
person-labelled real val texts kept apart from the texts it is scored on (`tests/fixtures/transformation_types/`). Labels are returned in the order their first cue appears; the
first is the text's *primary* type ([`primary_type`]), which `mra_cir.evaluation.by_type` uses to split queries into
disjoint groups.

Measured (`docs/findings.md`): accuracy against the synthetic world's ground truth on its held-out phrasings, and
micro-F1 on real CIRR, FashionIQ and CIRCO val texts labelled by a person (`tests/fixtures/transformation_types/`).
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Sequence

TYPES = (
    "color", "material", "shape", "added", "removed", "count", "size", "position", "background", "style", "other",
)  # fmt: skip
#: what each type means, for cards and reports
TYPE_NAMES = {
    "color": "colour",
    "material": "material / texture",
    "shape": "shape or object replaced",
    "added": "object added",
    "removed": "object removed",
    "count": "count",
    "size": "size",
    "position": "position / viewpoint",
    "background": "background / scene",
    "style": "style",
    "other": "other",
}

_COLORS = (
    r"red|reds|blue|blues|green|greens|yellow|white|black|gr[ae]y|pink|purple|violet|orange|brown|beige|navy|teal|"
    r"maroon|burgundy|gold|golden|silver|tan|cream|khaki|turquoise|aqua|magenta|lavender|peach|coral|olive|mint|"
    r"ivory|charcoal|mustard|rust|nude|multi-?colou?red|colou?rful|colou?r|colou?rs|colou?red|shade|hue|pastel|neon|"
    r"darker|lighter|brighter|dark|light|bright|pale|dull|vibrant|blonde?|tone|toned|two[- ]toned"
)
_SIZES = r"small|smaller|large|larger|big|bigger|tiny|huge|giant|size|grows|shrinks?|enlarged|gets smaller"
_CUES: dict[str, str] = {
    "color": rf"\b(?:{_COLORS})\b",
    "material": r"\b(?:leather|denim|cotton|silk|silky|satin|lace|lacy|wool|woolen|knit|knitted|fur|furry|velvet|"
    r"sheer|mesh|linen|suede|plastic|wooden|wood|metal|metallic|glass|stone|fabric|material|texture|textured|shiny|"
    r"glossy|matte|fuzzy|striped|stripes|stripe|stripy|floral|flowery|plaid|checkered|checked|polka|dots|dotted|"
    r"spotted|spots|pattern|patterned|patterns|print|printed|prints|camo|camouflage|sequin|sequins|sequined|sparkly|"
    r"glitter|glittery|ruffles?|ruffled|crochet|tie-dye|argyle|paisley|leopard|zebra|animal print|chevrons?|"
    r"fluffy|fluffier|solid|plain)\b",
    "shape": r"\b(?:replace[ds]?|replacing|instead of (?:a|an)\b|in place of|into (?:a|an)\b|shape|shaped|round|"
    r"no (?:sleeves?|straps?|collar|hood)|(?:not|no longer) (?:a|an) \w+|shoulders?|knee|ankle|thigh|button[- ]up|"
    r"rectangular|circular|triangular|sleeves?|sleeveless|strapless|strappy|straps?|neck|necked|"
    r"neckline|v-neck|v neck|crew neck|collar|collared|hood|hooded|length|longer|shorter|long|short|tighter|looser|"
    r"tight|loose|fitted|fitting|flowy|flowing|baggy|cropped|cut|mini|maxi|button-down|button down|"
    r"different (?:animal|dog|breed|type|kind|model|object|item|species|vehicle|car|bird)|another (?:animal|breed|"
    r"type|kind|species)|"
    r"(?<!there )(?:is|be|becomes|now) (?:a|an) (?!(?:" + _COLORS + r"|" + _SIZES + r"|person|man|woman)\b)\w+)\b",
    "added": r"\b(?:add|adds|added|adding|appears?|include|includes|including|insert|there is now|there are now|"
    r"there (?:is|are) (?:a|an|some)\b|now stands|put (?:a|an|some)\b|with (?:a|an|some)\b|has (?:a|an|some)\b|"
    r"have (?:a|an|some)\b|shows? (?:a|an|some)\b|plus (?:a|an)\b|another|wears|wearing|carrying|carries|holding|"
    r"holds|next to (?:a|an)\b|beside (?:a|an)\b|buttons|bow|pockets?|belt|zipper)\b",
    "removed": r"\b(?:remove|removes|removed|removing|without|take away|taken away|delete|deleted|get rid of|gone|"
    r"no longer|disappears?|vanish|vanishes|lacks?|missing|excluding|"
    r"no (?!change\b|background\b|sleeves?\b|straps?\b|collar\b|hood\b)\w+|none)\b",
    "count": r"\b(?:two|three|four|five|six|seven|eight|nine|ten|several|many|multiple|single|"
    r"(?:only|just|become|becomes|from|to) one|pair|couple|group|crowd|both|number of|dozen|lots of|"
    r"(?:more|less|fewer) (?!words|letters|writing|graphics|designs|details)\w+s|fewer \w+|more of them|"
    r"more than)\b",
    "size": rf"\b(?:{_SIZES})\b",
    "position": r"\b(?:left|right|sides?|move|moved|moves|moving|shift|shifted|swap sides|swapped|trade places|"
    r"sits on|facing|faces|face|angle|angled|view|viewed|from (?:above|below|behind|the side|the front)|"
    r"seen from|(?:taken|shot) from|from the top|close[- ]?up|closer|coverage|zoom|zoomed|perspective|upside|"
    r"rotated|turned|lying|laying|lie|lies|angles|"
    r"sitting|sit|sat|sits|stand|stands|standing|position|positioned|touching|behind|in front|center|centre|"
    r"corner|top of|bottom of|away from|towards|toward|looking (?:at|to|toward|away|up|down|left|right)|pose|"
    r"posing|camera|distance|far|near|next to (?:the|each)|beside the|on (?:his|her|its|their) head|hang up)\b",
    "background": r"\b(?:background|backdrop|scenery|setting|surroundings|outdoors?|outside|indoors?|inside|sky|"
    r"beach|field|grass|grassy|snow|snowy|forest|street|road|room|night|daytime|sunset|city|park|floor|wall|water|"
    r"ocean|sea|lake|mountains?|desert|sand|sandy|stage|weather|zoo|court|backyard|garden|yard|cliff|hill|bed|"
    r"sofa|couch|porch|lawn|path|shade|sunlight|pool|crosswalk|parquet|kitchen)\b",
    "style": r"\b(?:style|styled|stylish|graphic|graphics|logo|logos|text|words|writing|lettering|letters|"
    r"in the picture|cartoon|drawing|painting|sketch|vintage|retro|modern|casual|formal|elegant|fancy|sexy|"
    r"sporty|classic|classy|simple|plain|feminine|masculine|girly|cute|professional|trendy|fashionable|revealing|"
    r"modest|conservative|artistic|design|designs|emblem|slogan|cartoonish|realistic|decoration|decorations|"
    r"decor|flag|(?:shot|taken|photo|picture|image|is) in (?:colou?r|gr[ae]yscale|black and white))\b",
}
_PATTERNS = {kind: re.compile(cue, re.IGNORECASE) for kind, cue in _CUES.items()}
#: clause boundaries: commas, semicolons, "and", "while", "then", "but", "plus", "also", relative "which"
_SPLIT = re.compile(r",|;|\band\b|\bwhile\b|\bthen\b|\bbut\b|\balso\b|\bwhich\b|\bplus\b", re.IGNORECASE)
#: a definite noun phrase's adjectives: "the red circle", "the large white dog" (they name, they do not change)
_NAMING = re.compile(rf"\b(?:the|this|that|its|his|her|their)\s+((?:(?:{_SIZES}|{_COLORS})\s+)+)(?=\w)", re.IGNORECASE)
#: an object comes or goes: its colour and size describe it, they are no change
_STRONG_CHANGE = re.compile(
    r"\b(?:add|adds|added|adding|appears?|is added|include|insert|there is now|there are now|now stands|"
    r"put (?:a|an|some)|plus (?:a|an)|remove|removes|removed|without|take away|delete|get rid of|gone|no longer|"
    r"disappears?|vanish|vanishes|missing|excluding)\b"
)
_REPLACING = re.compile(r"\b(?:replace|instead of (?:a|an)|in place of)\b")
#: what is a scene rather than an object, when "in the background"
_SCENE = re.compile(r"\b(?:kitchen|sky|forest|field|city|street|mountains?|sea|beach|garden|room|park)\b")
#: "the object on the left", "the dog on the right": a name by place, not a move
_PLACE_NAME = re.compile(r"\b(?:the|a|an)\s+(?:\w+\s+){0,3}?\w+\s+(on the (?:left|right))\b", re.IGNORECASE)
#: "change the X to a Y", "swap the X for a Y", "turn the X into a Y": another object when Y names a thing
_NEW_OBJECT = re.compile(
    r"\b(?:change|turn|swap|switch|make)\b.*?\b(?:(?:to|for|into) (?:a|an)|into) ([\w -]+)", re.IGNORECASE
)
_DESCRIPTIVE = re.compile(rf"^(?:{_SIZES}|{_COLORS}|one|version|shade|bit|little|more|less)$", re.IGNORECASE)
#: "the same color", "the same distance": named to say it does not change
_SAME = re.compile(r"\b(?:the )?same (?:\w+)(?: as (?:the )?\w+)?", re.IGNORECASE)
#: "instead of rat", "rather than a cat", "in place of the wardrobe"
_INSTEAD = re.compile(r"\b(?:instead of|rather than|in place of) (?:a |an |the )?(?!\w+ing\b)(\w+)", re.IGNORECASE)
_NUMBER = re.compile(r"^(?:one|two|three|four|five|six|seven|eight|nine|ten|\d+)$", re.IGNORECASE)


def _names_new_object(clause: str) -> bool:
    match = _NEW_OBJECT.search(clause)
    return bool(match) and any(not _DESCRIPTIVE.match(word) for word in match.group(1).split()[:4])


def _mask(text: str, start: int, end: int) -> str:
    return text[:start] + " " * (end - start) + text[end:]


def _clauses(text: str) -> Iterable[tuple[int, str]]:
    start = 0
    for match in _SPLIT.finditer(text):
        yield start, text[start : match.start()]
        start = match.end()
    yield start, text[start:]


def tag_positions(text: str) -> dict[str, int]:
    """Type -> offset of its first cue in `text` (types with no cue left out; no cue at all -> `{"other": 0}`)."""
    first: dict[str, int] = {}
    for offset, clause in _clauses(text.lower()):
        for match in _NAMING.finditer(clause):  # "the red circle": naming adjectives are no change
            clause = _mask(clause, match.start(1), match.end(1))
        for match in _SAME.finditer(clause):  # "has the same color": what stays is no change
            clause = _mask(clause, match.start(), match.end())
        for match in _PLACE_NAME.finditer(clause):  # "the object on the left": named by its place
            if not re.search(r"\b(?:move[ds]?|shift|put the|is|are|sits?|now)\b", clause[: match.start(1)]):
                clause = _mask(clause, match.start(1), match.end(1))
        found = {kind: m.start() for kind, pattern in _PATTERNS.items() if (m := pattern.search(clause))}
        if _names_new_object(clause):
            found.setdefault("shape", _NEW_OBJECT.search(clause).start())
        if (
            (match := _INSTEAD.search(clause))
            and not _DESCRIPTIVE.match(match.group(1))
            and not _NUMBER.match(match.group(1))
        ):
            found.setdefault("shape", match.start())  # "a dog instead of rat": another object
        if "style" in found and re.search(r"\bin (?:colou?r|gr[ae]yscale|black and white)\b", clause):
            found.pop("color", None)  # "shot in color": the photograph's mode, a style
        strong = _STRONG_CHANGE.search(clause)  # add / appear / remove / replace: an object comes or goes
        replacing = "shape" in found and (_REPLACING.search(clause) or _names_new_object(clause))
        if strong or replacing:  # the added / removed / replacing object's colour and size describe it
            found.pop("color", None)
            found.pop("size", None)
            if strong and re.search(r"\bon the (?:left|right)\b", clause):
                found.pop("position", None)  # "appears on the left": where the new object goes
            if strong and not replacing:
                found.pop("shape", None)
        if "background" in found:
            found.pop("color", None)  # "the background is white": a background change
            if "added" in found and re.search(r"\bin the background\b", clause) and not _SCENE.search(clause):
                found.pop("background")  # "has a bus in the background": an object added
        if "added" in found and len(found) > 1 and re.search(r"\b(?:with|has|have) (?:a|an|some)\b", clause):
            if not re.search(r"\b(?:add|adds|added|appears?|include)\b", clause):
                found.pop("added")  # "a dress with a floral print": describes, adds nothing
        for kind, position in found.items():
            first[kind] = min(first.get(kind, offset + position), offset + position)
    return first or {"other": 0}


def tag_types(text: str) -> list[str]:
    """The transformation types of a modification text, in the order their first cue appears (see the module doc).

    Example:

    ```python
    >>> tag_types("the red circle is blue now and the background becomes black")
    ['color', 'background']
    ```
    """
    positions = tag_positions(text or "")
    return sorted(positions, key=lambda kind: (positions[kind], TYPES.index(kind)))


def primary_type(text: str) -> str:
    """The first type of [`tag_types`]: the group of the text in a disjoint split by type."""
    return tag_types(text)[0]


def type_mix(texts: Iterable[str], tagger=tag_types) -> dict:
    """The mix of types over `texts`: `{"texts", "primary": {type: count}, "any": {type: count}}` (primary: each text
    counted once, by its first type; any: every type a text carries), types in `TYPES` order."""
    primary: Counter = Counter()
    anywhere: Counter = Counter()
    total = 0
    for text in texts:
        labels = tagger(text) or ["other"]
        primary[labels[0]] += 1
        anywhere.update(set(labels))
        total += 1
    return {
        "texts": total,
        "primary": {t: primary[t] for t in TYPES if primary[t]},
        "any": {t: anywhere[t] for t in TYPES if anywhere[t]},
    }


def micro_f1(predicted: Sequence[Sequence[str]], gold: Sequence[Sequence[str]]) -> dict:
    """Micro-averaged precision, recall and F1 over types, and exact-match accuracy (the label sets equal), of
    multi-label predictions against gold labels; plus per-type false positives and false negatives."""
    if len(predicted) != len(gold):
        raise ValueError(f"micro_f1: {len(predicted)} predictions but {len(gold)} gold label sets")
    tp = fp = fn = exact = 0
    errors: dict[str, dict[str, int]] = {t: {"false_positive": 0, "false_negative": 0} for t in TYPES}
    for pred, true in zip(predicted, gold):
        p, g = set(pred), set(true)
        tp += len(p & g)
        fp += len(p - g)
        fn += len(g - p)
        exact += p == g
        for t in p - g:
            errors[t]["false_positive"] += 1
        for t in g - p:
            errors[t]["false_negative"] += 1
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {
        "texts": len(gold),
        "micro_precision": precision,
        "micro_recall": recall,
        "micro_f1": f1,
        "exact_match": exact / len(gold) if gold else 0.0,
        "errors": {t: e for t, e in errors.items() if any(e.values())},
    }


__all__ = ["TYPES", "TYPE_NAMES", "micro_f1", "primary_type", "tag_positions", "tag_types", "type_mix"]
