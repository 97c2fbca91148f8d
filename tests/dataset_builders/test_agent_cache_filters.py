"""The agent's response cache (sqlite), its caching front `CachedAgent`, the output filters and the prompts."""

from __future__ import annotations

import multiprocessing
import sqlite3

import pytest

from mra_cir.dataset_builders.agents.base import AgentBackend, AgentImage, ModificationRequest, parse_yes_no
from mra_cir.dataset_builders.agents.cache import CachedAgent, ResponseCache, response_key
from mra_cir.dataset_builders.agents.filters import OutputFilter, normalize_text
from mra_cir.dataset_builders.agents.prompts import AgentPrompts


class CountingAgent(AgentBackend):
    """A rule-based backend (overrides caption/modify) that counts what it is asked."""

    backend_name, model_name = "counting", "rules-v1"

    def __init__(self, fail_ids=(), **kwargs):
        super().__init__(**kwargs)
        self.asked: list[str] = []
        self.fail_ids = set(fail_ids)

    def caption(self, images):
        self.asked += [image.id for image in images]
        return [None if image.id in self.fail_ids else f"a photo of {image.id}" for image in images]

    def modify(self, requests):
        self.asked += [f"{r.reference.id}->{r.target.id}" for r in requests]
        return [f"turn {r.reference.id} into {r.target.id}" for r in requests]


def _images(n: int) -> list[AgentImage]:
    return [AgentImage(f"im{i}", f"/nonexistent/im{i}.png", f"{i:064x}") for i in range(n)]


def test_cache_stores_once_and_survives_reopen(tmp_path):
    path = tmp_path / "cache.sqlite"
    cache = ResponseCache(path)
    cache.put_many([("k1", "first", "b", "m", "v", "caption")])
    cache.put_many([("k1", "second", "b", "m", "v", "caption"), ("k2", "other", "b", "m", "v", "modify")])
    assert cache.get_many(["k1", "k2", "k3"]) == {"k1": "first", "k2": "other"}
    cache.close()
    reopened = ResponseCache(path)
    assert len(reopened) == 2 and reopened.count_by_step() == {"caption": 1, "modify": 1}
    assert sqlite3.connect(path).execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_response_key_depends_on_every_part():
    base = ("openai", "m", "v1", "modify", "prompt", ["a", "b"], 64)
    keys = {response_key(*base)}
    for index, other in enumerate(["x", "m2", "v2", "caption", "prompt2", ["b", "a"], 32]):
        variant = list(base)
        variant[index] = other
        keys.add(response_key(*variant))
    assert len(keys) == 8


def _writer(path: str, start: int) -> None:
    cache = ResponseCache(path)
    for i in range(start, start + 50):
        cache.put_many([(f"k{i}", f"v{i}", "b", "m", "v", "caption")])


def test_cache_concurrent_processes_no_duplicates(tmp_path):
    path = str(tmp_path / "cache.sqlite")
    ResponseCache(path)
    processes = [multiprocessing.get_context("fork").Process(target=_writer, args=(path, s)) for s in (0, 25)]
    for process in processes:
        process.start()
    for process in processes:
        process.join()
    assert all(process.exitcode == 0 for process in processes)
    assert len(ResponseCache(path)) == 75


def test_cached_agent_reuses_answers_and_retries_failures(tmp_path):
    cache = ResponseCache(tmp_path / "cache.sqlite")
    images = _images(5)
    backend = CountingAgent(fail_ids={"im3"}, batch_size=2)
    agent = CachedAgent(backend, cache)
    first = agent.caption(images + images[:2])  # duplicates are asked once
    assert first[3] is None and first[0] == "a photo of im0" and first[5] == first[0]
    assert backend.asked == ["im0", "im1", "im2", "im3", "im4"]
    assert agent.stats.calls == 5 and agent.stats.failed == 1 and agent.stats.cached == 0

    second_backend = CountingAgent(batch_size=2)
    again = CachedAgent(second_backend, cache).caption(images)
    assert second_backend.asked == ["im3"]  # only the failure is asked again
    assert again[:3] == first[:3] and again[3] == "a photo of im3"

    # another model or prompt version is another key
    other = CountingAgent(prompts=AgentPrompts().override(version="v-other", caption="Describe."))
    CachedAgent(other, cache).caption(images[:1])
    assert other.asked == ["im0"]

    requests = [ModificationRequest(images[0], images[1], "c0", "c1")]
    modifier = CountingAgent()
    assert CachedAgent(modifier, cache).modify(requests) == ["turn im0 into im1"]
    assert CachedAgent(modifier, cache).modify(requests) == ["turn im0 into im1"] and len(modifier.asked) == 1


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        (None, "request_failed"),
        ("   \n ", "empty"),
        ('"..."', "empty"),
        ("I'm sorry, I cannot help with that.", "refusal"),
        ("As an AI I cannot see images", "refusal"),
        ("Change image 1 so it looks like image 2", "image_leak"),
        ("make the first image brighter", "image_leak"),
        ("Unlike the reference photo, add a hat", "image_leak"),
        ("a red car", "same_as_caption"),
        ("A red car.", "same_as_caption"),
        ("make it " + "very " * 50 + "red", "too_long"),
        ("make it red\x00", "control_characters"),  # NUL
        ("make it \x1b[31mred\x1b[0m", "control_characters"),  # ANSI colour escape
        ("make it \u202eder", "control_characters"),  # right-to-left override
        ("make it\u200bred", "control_characters"),  # zero-width space
        ("make it red\x7f", "control_characters"),  # DEL
        ("make it red\x85", "control_characters"),  # C1 next-line
    ],
)
def test_filter_rejections(text, reason):
    output_filter = OutputFilter(max_words=40)
    assert output_filter.modification(text, "a red car", "a blue car on grass") is None
    assert output_filter.rejected == {reason: 1}


def test_filter_normalises_and_keeps_good_text():
    output_filter = OutputFilter(max_chars=30)
    assert normalize_text('  Instruction: "Make it red\n and  shiny." ') == "Make it red and shiny."
    assert output_filter.modification("Make it red\nand shiny.", "a blue car", "a red car") == "Make it red and shiny."
    assert output_filter.caption("x" * 31) is None and output_filter.rejected == {"caption_too_long": 1}
    assert output_filter.verification(True) and not output_filter.verification(False)
    assert not output_filter.verification(None)
    assert output_filter.rejected["not_verified"] == 1 and output_filter.rejected["verify_unclear"] == 1
    assert [parse_yes_no(t) for t in ["Yes.", "no, it does not", "maybe", None]] == [True, False, None, None]
    # tabs and line breaks are whitespace (normalised), not control characters; other scripts are text
    assert output_filter.modification("make it\tred\r\n", "a", "b") == "make it red"
    assert output_filter.modification("rends-la rouge, \u4e2d", "a", "b") == "rends-la rouge, \u4e2d"
    assert output_filter.caption("a \x1b]8;;http://x\x07link") is None
    assert output_filter.rejected["caption_control_characters"] == 1


def test_prompts_override_needs_new_version():
    prompts = AgentPrompts()
    with pytest.raises(ValueError, match="new version"):
        prompts.override(version=prompts.version, caption="Describe.")
    with pytest.raises(ValueError, match="placeholders"):
        prompts.override(version="v2", modify="no placeholders here")
    assert prompts.override(version="v2", caption="Describe.").caption == "Describe."


def test_response_key_covers_the_backends_answer_changing_settings(tmp_path):
    from mra_cir.dataset_builders.agents.openai_backend import OpenAIAgent

    base = ("openai", "m", "v1", "modify", "prompt", ["a", "b"], 64)
    greedy = OpenAIAgent("m", "http://127.0.0.1:1/v1").cache_settings()
    sampled = OpenAIAgent("m", "http://127.0.0.1:1/v1", temperature=0.7).cache_settings()
    seeded = OpenAIAgent("m", "http://127.0.0.1:1/v1", extra_body={"seed": 1}).cache_settings()
    keys = {response_key(*base, settings) for settings in (greedy, sampled, seeded)}
    assert len(keys) == 3 and response_key(*base, greedy) == response_key(*base, dict(greedy))
    # the same answers are found again through CachedAgent only with the same settings
    cache = ResponseCache(tmp_path / "c.sqlite")
    first = CachedAgent(CountingAgent(), cache)
    first.caption(_images(2))

    class Sampling(CountingAgent):
        def cache_settings(self):
            return {"temperature": 0.7}

    other = Sampling()
    CachedAgent(other, cache).caption(_images(2))
    assert other.asked == ["im0", "im1"]


def test_content_hashes_are_computed_once_and_follow_edits(tmp_path):
    import os
    import time

    from mra_cir.dataset_builders.agents.base import file_sha256
    from mra_cir.retrieval.content_hashes import ContentHashes

    path = tmp_path / "a.bin"
    path.write_bytes(b"x" * 100)
    old = time.time() - 10
    os.utime(path, (old, old))  # older than the racy window
    memo = ContentHashes(tmp_path / "memo.sqlite")
    assert memo.sha256(path) == file_sha256(path) and memo.hashed == 1
    again = ContentHashes(tmp_path / "memo.sqlite")  # persistent: a new process reads the memo
    assert again.sha256(path) == file_sha256(path) and again.hashed == 0
    path.write_bytes(b"y" * 100)  # same size, new contents (and mtime)
    os.utime(path, (old + 1, old + 1))
    assert again.sha256(path) == file_sha256(path) and again.hashed == 1
    # a file written just now is hashed again on each look-up until its mtime is older than the racy window
    fresh = tmp_path / "fresh.bin"
    fresh.write_bytes(b"z")
    memo.sha256(fresh)
    memo.sha256(fresh)
    assert memo.hashed == 3
    with pytest.raises(FileNotFoundError):
        memo.sha256(tmp_path / "missing.bin")


def test_content_hashes_see_a_same_size_rewrite_with_the_mtime_restored(tmp_path):
    """`cp --preserve=timestamps` onto the file: same path, size, inode and mtime; only the ctime tells."""
    import os
    import time

    from mra_cir.dataset_builders.agents.base import file_sha256
    from mra_cir.retrieval.content_hashes import ContentHashes

    path = tmp_path / "a.bin"
    path.write_bytes(b"x" * 100)
    old = time.time_ns() - 10**10  # older than the racy window
    os.utime(path, ns=(old, old))
    memo = ContentHashes(tmp_path / "memo.sqlite")
    first = memo.sha256(path)
    before = os.stat(path)
    with open(path, "r+b") as handle:  # in place: the same inode
        handle.write(b"y" * 100)
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    after = os.stat(path)
    assert (after.st_ino, after.st_size, after.st_mtime_ns) == (before.st_ino, before.st_size, before.st_mtime_ns)
    assert after.st_ctime_ns != before.st_ctime_ns
    assert memo.sha256(path) == file_sha256(path) != first and memo.hashed == 2
    assert ContentHashes(tmp_path / "memo.sqlite").sha256(path) == file_sha256(path)  # the memo holds the new hash


def test_content_hashes_memo_of_an_older_layout_is_started_afresh(tmp_path):
    import sqlite3

    from mra_cir.dataset_builders.agents.base import file_sha256
    from mra_cir.retrieval.content_hashes import ContentHashes

    path = tmp_path / "a.bin"
    path.write_bytes(b"x")
    with sqlite3.connect(tmp_path / "memo.sqlite") as old:  # the table as written before ctime was recorded
        old.execute(
            "CREATE TABLE content_hashes (path TEXT PRIMARY KEY, size INTEGER NOT NULL, mtime_ns INTEGER NOT NULL, "
            "inode INTEGER NOT NULL, sha256 TEXT NOT NULL, hashed_at REAL NOT NULL)"
        )
        stat = path.stat()
        old.execute("INSERT INTO content_hashes VALUES (?, ?, ?, ?, 'stale', 1e12)", (str(path), 1, 0, stat.st_ino))
    old.close()
    memo = ContentHashes(tmp_path / "memo.sqlite")
    assert memo.sha256(path) == file_sha256(path) and memo.hashed == 1
