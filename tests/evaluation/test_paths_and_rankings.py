"""Benchmark files that point outside the data root, ranking files with duplicate keys, CIRCO ids outside the gallery:
each one error naming the file and the entry (docs/reliability.md)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from cir_placeholders import circo_images, placeholder

from mra_cir.cli import main
from mra_cir.evaluation import CircoLoader, CirrLoader, FashionIQLoader
from mra_cir.evaluation.benchmark import PathOutsideRootError
from mra_cir.evaluation.circo import read_circo_rankings
from mra_cir.evaluation.submissions import SubmissionError, load_rankings_json


def _cirr(root: Path, split_entries: dict[str, str]) -> Path:
    """A one-query CIRR layout under `root` whose split file maps names to `split_entries` (images written where
    the entries point inside `root`)."""
    names = list(split_entries)
    record = {"pairid": 7, "reference": names[0], "target_hard": names[1], "caption": "make it red",
              "img_set": {"id": 1, "members": names[:2]}}  # fmt: skip
    (root / "captions").mkdir(parents=True)
    (root / "image_splits").mkdir()
    (root / "captions" / "cap.rc2.val.json").write_text(json.dumps([record]))
    (root / "image_splits" / "split.rc2.val.json").write_text(json.dumps(split_entries))
    for name, rel in split_entries.items():
        if not rel.startswith(("/", "..")):
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            placeholder(name).save(root / rel)
    return root


@pytest.mark.parametrize("entry", ["../outside.png", "./dev/../../outside.png", "ABSOLUTE"])
def test_cirr_split_entries_leaving_the_root_are_errors(tmp_path, entry):
    outside = tmp_path / "outside.png"
    placeholder("outside").save(outside)  # the file exists: before, it was read silently
    entry = str(outside) if entry == "ABSOLUTE" else entry
    root = _cirr(tmp_path / "cirr", {"dev-0": "./dev/dev-0.png", "dev-1": "./dev/dev-1.png", "dev-2": entry})
    with pytest.raises(PathOutsideRootError) as err:
        CirrLoader(root).load("val")
    message = str(err.value)
    assert message.startswith(f"{root / 'image_splits' / 'split.rc2.val.json'}: entry 'dev-2' -> {entry!r}")
    assert "absolute path" in message if entry.startswith("/") else f"resolves to {outside}" in message


def test_symlinked_image_leading_outside_is_an_error_inside_is_fine(tmp_path):
    root = _cirr(tmp_path / "cirr", {"dev-0": "./dev/dev-0.png", "dev-1": "./dev/dev-1.png"})
    placeholder("elsewhere").save(tmp_path / "elsewhere.png")
    (root / "dev" / "dev-1.png").unlink()
    (root / "dev" / "dev-1.png").symlink_to(tmp_path / "elsewhere.png")
    with pytest.raises(PathOutsideRootError, match=r"entry 'dev-1' -> './dev/dev-1.png' resolves to .*elsewhere.png"):
        CirrLoader(root).load("val")
    (root / "dev" / "dev-1.png").unlink()
    (root / "dev" / "dev-1.png").symlink_to(root / "dev" / "dev-0.png")  # a link inside the root is fine
    assert len(CirrLoader(root).load("val").gallery) == 2


def test_fashioniq_and_circo_names_with_paths(tmp_path, benchmarks_dir):
    fiq = tmp_path / "fiq"
    (fiq / "captions").mkdir(parents=True)
    (fiq / "image_splits").mkdir()
    (fiq / "images").mkdir()
    (fiq / "captions" / "cap.dress.val.json").write_text(
        json.dumps([{"candidate": "a", "target": "b", "captions": ["x", "y"]}])
    )
    (fiq / "image_splits" / "split.dress.val.json").write_text(json.dumps(["a", "b", "../../secret"]))
    with pytest.raises(PathOutsideRootError, match=r"FashionIQ val annotations: entry '../../secret'"):
        FashionIQLoader(fiq).load("val", subset="dress")

    root = circo_images(benchmarks_dir, tmp_path / "circo", n_queries=1, n_extra=1)
    shutil.copytree(benchmarks_dir / "circo" / "annotations", root / "annotations")
    info_path = root / "COCO2017_unlabeled" / "annotations" / "image_info_unlabeled2017.json"
    info = json.loads(info_path.read_text())
    info["images"].append({"id": 5, "file_name": "../../../etc/hostname"})
    info_path.write_text(json.dumps(info))
    with pytest.raises(PathOutsideRootError, match=rf"{info_path}: entry '5' -> '../../../etc/hostname'"):
        CircoLoader(root).load("val", max_queries=1)


def test_evaluate_command_reports_the_entry_in_one_line(tmp_path, tiny_model, tiny_processor, capsys):
    placeholder("outside").save(tmp_path / "outside.png")
    root = _cirr(tmp_path / "cirr", {"dev-0": "./dev/dev-0.png", "dev-1": "../outside.png"})
    tiny_model.save_pretrained(tmp_path / "model")
    tiny_processor.save_pretrained(tmp_path / "model")
    argv = ["evaluate", "--model", str(tmp_path / "model"), "--benchmark", "cirr", "--data-root", str(root),
            "--output", str(tmp_path / "eval"), "--cache-dir", "", "--no-progress"]  # fmt: skip
    assert main(argv) == 2
    err = capsys.readouterr().err
    (line,) = [line for line in err.splitlines() if line.startswith("mra-cir evaluate: error: ")]
    assert "entry 'dev-1' -> '../outside.png'" in line and "Traceback" not in err


def test_duplicate_keys_in_a_rankings_file_are_refused(tmp_path, benchmarks_dir, capsys):
    caps = json.loads((benchmarks_dir / "cirr/captions/cap.rc2.val.json").read_text())
    gallery = list(json.loads((benchmarks_dir / "cirr/image_splits/split.rc2.val.json").read_text()))
    body = ", ".join(f'"{c["pairid"]}": {json.dumps(gallery[:50])}' for c in caps)
    first = caps[0]["pairid"]
    path = tmp_path / "recall.json"
    path.write_text('{"version": "rc2", "metric": "recall", ' + body + f', "{first}": {json.dumps(gallery[50:100])}}}')
    with pytest.raises(SubmissionError, match=rf"recall.json: key '{first}' appears twice"):
        load_rankings_json(path)
    argv = ["evaluate-rankings", "--benchmark", "cirr", "--annotations", str(benchmarks_dir / "cirr"),
            "--rankings", str(path)]  # fmt: skip
    assert main(argv) == 2
    assert f"key '{first}' appears twice" in capsys.readouterr().err
    path.write_text('{"version": "rc2", "metric": "recall", ' + body + "}")  # the same without the duplicate
    assert main(argv) == 0


def test_circo_ranking_ids_are_checked_against_the_gallery(tmp_path, benchmarks_dir, capsys):
    queries = json.loads((benchmarks_dir / "circo/annotations/val.json").read_text())
    ids = [str(q["id"]) for q in queries]
    known = sorted({str(g) for q in queries for g in q["gt_img_ids"]} | {str(q["reference_img_id"]) for q in queries})
    rankings = {q: known[:50] for q in ids}
    path = tmp_path / "circo.json"
    path.write_text(json.dumps(rankings))
    assert read_circo_rankings(path, ids, gallery=known)[ids[0]] == known[:50]
    rankings[ids[3]] = ["123"] + known[:49]
    path.write_text(json.dumps(rankings))
    with pytest.raises(SubmissionError, match=rf"query '{ids[3]}': id '123' is not in the gallery"):
        read_circo_rankings(path, ids, gallery=known)
    assert read_circo_rankings(path, ids)[ids[3]][0] == "123"  # no gallery known: COCO-like ids pass
    rankings[ids[3]] = ["cat.jpg"] + known[:49]
    path.write_text(json.dumps(rankings))
    with pytest.raises(SubmissionError, match=rf"query '{ids[3]}': id 'cat.jpg' is not a COCO image id"):
        read_circo_rankings(path, ids)

    # through the command, with COCO's image info file next to the annotations: the gallery is known
    root = tmp_path / "circo_root"
    shutil.copytree(benchmarks_dir / "circo" / "annotations", root / "annotations")
    info = {"images": [{"id": int(i), "file_name": f"{int(i):012d}.jpg"} for i in known]}
    (root / "annotations" / "image_info_unlabeled2017.json").write_text(json.dumps(info))
    rankings[ids[3]] = ["123"] + known[:49]
    path.write_text(json.dumps(rankings))
    argv = ["evaluate-rankings", "--benchmark", "circo", "--annotations", str(root), "--rankings", str(path)]
    assert main(argv) == 2
    assert f"query '{ids[3]}': id '123' is not in the gallery" in capsys.readouterr().err
    rankings[ids[3]] = known[:50]
    path.write_text(json.dumps(rankings))
    assert main(argv) == 0
