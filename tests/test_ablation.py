"""scripts/ablation.py, the miniature ablation: it renders and scores every row it is given,
writes both tables (the first with `posecast eval`'s means, seam ratio and face found among
them), and a rerun with --reuse rebuilds the same tables without rendering."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).parents[1] / "scripts" / "ablation.py"


def run_ablation(*args) -> subprocess.CompletedProcess:
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    return subprocess.run([sys.executable, str(SCRIPT), *map(str, args)], env=env,
                          capture_output=True, text=True, timeout=600)


def test_the_ablation_script_reproduces_its_tables(tmp_path, cospeech_dataset, trained_tiny,
                                                   tiny_student):
    out, table = tmp_path / "ablation", tmp_path / "table.md"
    common = ["--data", cospeech_dataset, "--output", out, "--teacher", trained_tiny[0],
              "--method", tiny_student, "--region-steps", tiny_student, "--real", "--frames", 8,
              "--teacher-steps", 2, "--markdown", table]
    first = run_ablation(*common)
    assert first.returncode == 0, first.stderr[-2000:]
    text = table.read_text()
    titles = ["the real clips", "| teacher |", "teacher + input-aware attention",
              "DMD + region loss (the method)", "the method + region steps"]
    assert all(title in text for title in titles), text
    assert "plain DMD student" not in text  # rows without a model are left out

    manifest = json.loads((cospeech_dataset / "manifest.json").read_text())
    held_out = sorted(path.stem for path in (cospeech_dataset / "heldout").glob("*.mp4"))
    rendered = sorted(path.stem for path in (out / "method").glob("*.mp4"))
    assert rendered == held_out and held_out
    assert sorted(path.stem for path in (out / "real").glob("*.mp4")) == rendered
    scores = json.loads((out / "method" / "scores.json").read_text())
    assert [clip["frames"] for clip in scores["clips"]] == [8] * len(held_out)
    assert scores["mean"]["psnr"] > 5 and scores["mean"]["fps"] > 0
    real = json.loads((out / "real" / "scores.json").read_text())
    assert real["mean"]["psnr"] > 30  # the real clips against themselves, after MP4 encoding
    # the main table's columns hold the mean scores, the face found as a percentage
    lines = text.splitlines()
    columns = [cell.strip() for cell in lines[0].split("|")]
    real_cells = dict(zip(columns, (cell.strip() for cell in next(
        line for line in lines if line.startswith("| the real clips")).split("|")), strict=True))
    assert real_cells["seam ratio"] == f"{real['mean']['seam_ratio']:.2f}"
    assert real_cells["face found"] == f"{real['mean']['face_found']:.0%}"

    # the lip-sync table: a cell per group of held-out clips, counting the clips in it
    clips = {Path(clip["file"]).stem: clip for clip in manifest["clips"]}
    new_sentence = {name for name in held_out
                    if clips[name]["sentence"] in manifest["held_out_sentences"]}
    new_person = {name for name in held_out
                  if clips[name]["person"] in manifest["held_out_people"]}
    group_sizes = [len(new_sentence), len(new_sentence - new_person), len(new_person)]
    real_row = [line for line in text.splitlines() if line.startswith("| the real clips")][1]
    cells = [cell.strip() for cell in real_row.split("|")[2:-1]]
    assert any(group_sizes)
    for size, cell in zip(group_sizes, cells, strict=True):
        assert cell == "-" if size == 0 else cell.endswith(f", {size} clips")

    before = {path: path.stat().st_mtime_ns for path in out.rglob("*.mp4")}
    again = run_ablation(*common, "--reuse")
    assert again.returncode == 0, again.stderr[-2000:]
    assert table.read_text() == text
    assert {path: path.stat().st_mtime_ns for path in out.rglob("*.mp4")} == before

    # scores from before the seam ratio existed are not reused: the table would lack it
    for clip in scores["clips"]:
        del clip["seam_ratio"]
    (out / "method" / "scores.json").write_text(json.dumps(scores))
    old = run_ablation(*common, "--reuse")
    assert old.returncode != 0 and "use --rescore" in old.stderr


def test_the_ablation_script_picks_clips_by_name_and_rows(tmp_path, cospeech_dataset,
                                                          trained_tiny):
    name = sorted((cospeech_dataset / "heldout").glob("*.mp4"))[0].stem
    out, table = tmp_path / "teachers", tmp_path / "table.md"
    result = run_ablation("--data", cospeech_dataset, "--output", out, "--teacher", trained_tiny[0],
                          "--no-sparse-teacher", "--names", name, "--frames", 4,
                          "--teacher-steps", 1, "--markdown", table)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "| teacher |" in table.read_text()
    assert "input-aware" not in table.read_text()
    assert [path.stem for path in (out / "teacher").glob("*.mp4")] == [name]

    wrong = run_ablation("--data", cospeech_dataset, "--output", out, "--names", "no_such_clip")
    assert wrong.returncode != 0 and "no held-out clip named no_such_clip" in wrong.stderr
