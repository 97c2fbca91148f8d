"""Submission writers, validated against the servers' own example files."""

from __future__ import annotations

import json

import pytest

from mra_cir.evaluation.circo import validate_circo_submission, write_circo_submission
from mra_cir.evaluation.cirr import validate_cirr_submission, write_cirr_submission
from mra_cir.evaluation.fashioniq import write_fashioniq_submission
from mra_cir.evaluation.submissions import SubmissionError


@pytest.fixture(scope="module")
def cirr_test1(benchmarks_dir):
    caps = json.loads((benchmarks_dir / "cirr/captions/cap.rc2.test1.json").read_text())
    gallery = list(json.loads((benchmarks_dir / "cirr/image_splits/split.rc2.test1.json").read_text()))
    demo = json.loads((benchmarks_dir / "cirr/submission_examples/test1_pred_ranks_recall_subset.json").read_text())
    return caps, gallery, demo


def _cirr_inputs(caps, gallery):
    references = {str(c["pairid"]): c["reference"] for c in caps}
    members = {str(c["pairid"]): c["img_set"]["members"] for c in caps}
    # full rankings with the reference first (the writer must drop it) and the set members in reverse order
    rankings = {q: [references[q]] + [g for g in gallery[:60] if g != references[q]] for q in references}
    subset = {q: list(reversed(members[q])) for q in references}
    return rankings, subset, references, members


def test_server_demo_file_passes_our_validator(cirr_test1):
    caps, _, demo = cirr_test1
    ids = [str(c["pairid"]) for c in caps]
    references = {str(c["pairid"]): c["reference"] for c in caps}
    members = {str(c["pairid"]): c["img_set"]["members"] for c in caps}
    validate_cirr_submission(demo, "recall_subset", ids, references, members)
    with pytest.raises(SubmissionError, match="'metric': 'recall'"):
        validate_cirr_submission(demo, "recall", ids)


def test_cirr_writer_matches_demo_shape(cirr_test1, tmp_path):
    caps, gallery, demo = cirr_test1
    rankings, subset, references, members = _cirr_inputs(caps, gallery)
    recall_path, subset_path = write_cirr_submission(tmp_path, rankings, subset, references, members)
    assert recall_path.name == "test1_pred_ranks_recall.json"
    assert subset_path.name == "test1_pred_ranks_recall_subset.json"
    recall, sub = json.loads(recall_path.read_text()), json.loads(subset_path.read_text())
    assert set(sub) == set(demo) == set(recall)  # same keys: version, metric and every pair id
    assert sub["version"] == recall["version"] == demo["version"] == "rc2"
    assert sub["metric"] == demo["metric"] == "recall_subset" and recall["metric"] == "recall"
    for q, ref in references.items():
        assert len(sub[q]) == len(demo[q]) == 3
        assert len(recall[q]) == 50 and ref not in recall[q] and ref not in sub[q]
        assert recall[q] == rankings[q][1:51]
        expected = [m for m in reversed(members[q]) if m != ref][:3]
        assert sub[q] == expected


def test_cirr_writer_refuses_bad_rankings(cirr_test1, tmp_path):
    caps, gallery, _ = cirr_test1
    rankings, subset, references, members = _cirr_inputs(caps, gallery)
    q = str(caps[10]["pairid"])
    short = dict(rankings)
    del short[q]
    with pytest.raises(SubmissionError, match=rf"1 query id\(s\) missing \(first: {q}\)"):
        write_cirr_submission(tmp_path, short, subset, references, members)
    dup = dict(rankings)
    dup[q] = [gallery[1], gallery[1]] + gallery[2:60]
    with pytest.raises(SubmissionError, match=rf"query '{q}': duplicate prediction"):
        write_cirr_submission(tmp_path, dup, subset, references, members)
    too_short = dict(rankings)
    too_short[q] = gallery[:10]
    with pytest.raises(SubmissionError, match=rf"query '{q}': \d+ predictions, expected 50"):
        write_cirr_submission(tmp_path, too_short, subset, references, members)
    assert not (tmp_path / "test1_pred_ranks_recall.json").exists()  # validated before writing


def test_circo_example_and_writer(benchmarks_dir, tmp_path):
    example = json.loads((benchmarks_dir / "circo/submission_examples/submission_val.json").read_text())
    val_ids = [str(i) for i in range(220)]
    validate_circo_submission(example, val_ids)
    test_ids = [str(q["id"]) for q in json.loads((benchmarks_dir / "circo/annotations/test.json").read_text())]
    rankings = {q: [str(1000 + i) for i in range(60)] for q in test_ids}
    path = write_circo_submission(tmp_path / "circo_test.json", rankings, test_ids)
    written = json.loads(path.read_text())
    assert list(written) == test_ids and len(test_ids) == 800
    assert all(v == list(range(1000, 1050)) for v in written.values())
    assert type(next(iter(written.values()))) is type(next(iter(example.values())))  # lists of ints, as the example
    rankings["5"] = [1, 2, 1] + list(range(3, 50))
    with pytest.raises(SubmissionError, match="query '5': duplicate prediction '1'"):
        write_circo_submission(tmp_path / "bad.json", rankings, test_ids)
    with pytest.raises(SubmissionError, match=r"1 query id\(s\) missing \(first: 7\)"):
        validate_circo_submission({k: v for k, v in written.items() if k != "7"}, test_ids)


def test_fashioniq_writer_keeps_records_and_adds_ranking(benchmarks_dir, tmp_path):
    records = json.loads((benchmarks_dir / "fashioniq/captions/cap.dress.test.json").read_text())
    gallery = json.loads((benchmarks_dir / "fashioniq/image_splits/split.dress.test.json").read_text())
    rankings = [gallery[i % 7 : i % 7 + 60] for i in range(len(records))]
    path = write_fashioniq_submission(tmp_path, "dress", records, rankings)
    assert path.name == "dress.test.pred.json"
    written = json.loads(path.read_text())
    assert len(written) == len(records) == 2024
    assert {k: v for k, v in written[3].items() if k != "ranking"} == records[3]
    assert written[3]["ranking"] == rankings[3][:50]
    with pytest.raises(SubmissionError, match="2023 rankings for 2024 caption records"):
        write_fashioniq_submission(tmp_path, "dress", records, rankings[:-1])
