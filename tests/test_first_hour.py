"""What a new user meets first: names as the docs spell them, typos refused early and
with a suggestion, one-line errors for bad files and arguments, outputs never replaced
unless they are ours, shipped weights used, progress shown."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

import codesign
from codesign.arch import ArchConfig, get_board
from codesign.cli import main
from codesign.flow import STEPS
from codesign.names import board_name, model_name

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize(
    ("spelling", "board"),
    [
        ("Ultra96-V2", "ultra96v2"),
        ("PYNQ-Z2", "pynq-z2"),
        ("ZCU102", "zcu102"),
        ("kv_260", "kv260"),
    ],
)
def test_boards_accept_the_spellings_the_docs_use(spelling, board):
    assert board_name(spelling) == board
    assert get_board(spelling).name == board


@pytest.mark.parametrize(
    ("typo", "suggestion", "kind"),
    [("zcu012", "zcu102", board_name), ("ultra96", "ultra96v2", board_name),
     ("m3vti", "m3vit", model_name), ("vit_tinny", "vit-tiny", model_name)],
)  # fmt: skip
def test_a_typo_names_the_closest_name(typo, suggestion, kind):
    with pytest.raises(ValueError, match=rf"did you mean '{suggestion}'\?"):
        kind(typo)


def test_model_names_ignore_case_and_separators():
    assert model_name("M3ViT_Tiny") == "m3vit-tiny"
    assert codesign.build("M3ViT_Tiny", board="ZCU102", eval_images=1).report["model"]["name"] == (
        "m3vit-tiny"
    )


def _cli(*args: str, env=None) -> subprocess.CompletedProcess:
    code = (
        "import sys\n"
        "from codesign.cli import main\n"
        "try:\n"
        f"    main({list(args)!r}, standalone_mode=False)\n"
        "except SystemExit as stop:\n"
        "    print('exit', stop.code)\n"
        "print('torch loaded:', 'torch' in sys.modules)\n"
    )
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, env=env, timeout=300
    )


def test_cli_refuses_typos_before_torch_loads():
    for args, wanted in [
        (("build", "--model", "m3vti"), "did you mean 'm3vit'?"),
        (("build", "--model", "m3vit", "--board", "zcu012"), "did you mean 'zcu102'?"),
        (("build", "--model", "m3vit", "--precision", "w16"), "not of the form wNaM"),
        (("build", "--model", "m3vit", "--arch", "max_heads=0"), "max_heads=0 must be in 1..64"),
    ]:
        result = _cli(*args)
        assert wanted in result.stderr, (args, result.stderr)
        assert "exit 2" in result.stdout and "torch loaded: False" in result.stdout, result.stdout
        assert "Traceback" not in result.stderr


def test_weights_that_are_not_a_state_dict_get_one_line(tmp_path):
    weights = tmp_path / "weights.json"
    weights.write_text(json.dumps({"blocks.0": [1, 2, 3]}))
    result = CliRunner().invoke(
        main, ["build", "--model", "m3vit-tiny", "--weights", str(weights), "--no-csim"]
    )
    assert result.exit_code == 2
    error = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(error) == 1, result.output
    assert "weights.json: not a torch state dict (it looks like JSON" in error[0]
    assert "weights_only" not in result.output


def test_an_existing_file_or_foreign_folder_is_never_replaced(tmp_path):
    precious = tmp_path / "notes.txt"
    precious.write_text("mine")
    with pytest.raises(ValueError, match="exists and is not a folder"):
        codesign.build("m3vit-tiny", eval_images=1, out=precious)
    assert precious.read_text() == "mine"
    with pytest.raises(ValueError, match="holds files codesign did not write"):
        codesign.build("m3vit-tiny", eval_images=1, out=tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]
    out = tmp_path / "tiny"
    first = codesign.build("m3vit-tiny", eval_images=1, out=out, plot=False)
    assert (out / ".codesign-output").is_file()
    stamp = (out / "program.bin").stat().st_mtime_ns
    codesign.build("m3vit-tiny", eval_images=1, out=out, plot=False, seed=1)  # replaces ours
    assert (out / "program.bin").read_bytes() != first.program_bytes
    assert (out / "program.bin").stat().st_mtime_ns != stamp
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt", "tiny"]  # no .old left


def test_api_arguments_are_checked_with_clear_messages(tiny_build):
    for kwargs, message in [
        ({"precision": 16}, "precision must be a string like 'w16a24'"),
        ({"arch": 5}, "arch must be an ArchConfig or a dict"),
        ({"arch": {"max_dim": -1}}, r"max_dim=-1 must be in 1\.\.65535"),
        ({"arch": {"tile_in": "8"}}, "tile_in must be an integer"),
        ({"task": 0.5}, "task ids are integers"),
    ]:
        with pytest.raises(ValueError, match=message):
            codesign.build("m3vit-tiny", eval_images=1, **kwargs)
    built = codesign.build("m3vit-tiny", eval_images=1, arch={"tile_in": 8})
    assert built.report["arch"]["tile_in"] == 8
    # the fields a partial arch leaves out come from the board's default, buffers sized to
    # the model; a given buffer field is kept
    from codesign.arch.config import BOARD_DEFAULTS

    default_slots = BOARD_DEFAULTS["zcu102"]["attn_parallel"]
    assert built.report["arch"]["max_tokens"] == 16
    assert built.report["arch"]["attn_parallel"] == default_slots
    kept = codesign.build("m3vit-tiny", eval_images=1, arch={"tile_in": 8, "max_tokens": 64})
    assert kept.report["arch"]["max_tokens"] == 64 and kept.report["arch"]["max_dim"] == 64
    shape = (3, *tiny_build.graph.meta["image_size"])
    for images, task, message in [
        (np.zeros((1, *shape)), 0.5, r"task must be one of \[0, 1\]"),
        (np.zeros((1, *shape)), 7, r"task must be one of \[0, 1\]"),
        (np.zeros((0, *shape)), 0, "the batch is empty"),
        (np.full((1, *shape), np.nan), 0, "NaN or infinite"),
        (np.zeros((1, 3, 5, 5)), 0, "expected"),
    ]:
        with pytest.raises(ValueError, match=message):
            tiny_build.predict(images, task=task)
    assert tiny_build.predict(np.zeros(shape), task=1).shape[0] == 1  # one image, no batch axis


def test_two_bit_weights_build_and_stay_bit_exact():
    """w2a4 used to fail deep in quantize with 'width must be in 1..63, got 0'."""
    built = codesign.build("m3vit-tiny", precision="w2a4", eval_images=1)
    assert built.report["precision"] == "w2a4"
    assert all(np.isfinite(built.predict(np.zeros((1, 3, 32, 64)), task=0)).ravel())


def test_digits_vit_uses_its_shipped_checkpoint():
    trained = codesign.build("digits-vit", eval_images=2)
    assert trained.report["model"]["weights"].startswith("digits-vit.pt")
    random = codesign.build("digits-vit", eval_images=2, weights="random")
    assert random.report["model"]["weights"] == "random (seeded)"
    trained_w = trained.module.state_dict()["head.weight"]
    assert not np.allclose(trained_w.numpy(), random.module.state_dict()["head.weight"].numpy())


def test_build_reports_progress_through_a_callback():
    seen = []
    codesign.build("m3vit-tiny", eval_images=1, progress=lambda *step: seen.append(step))
    assert [name for name, _, _ in seen] == [name for name, _ in STEPS]
    assert [index for _, index, _ in seen] == list(range(len(STEPS)))


def test_ctrl_c_during_start_up_prints_no_traceback(tmp_path):
    """SIGINT while torch and the flow load (after the console script's own import)."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    code = "from codesign.cli import run\nprint('ready', flush=True)\nrun()"

    def default_sigint():  # pytest-xdist workers ignore SIGINT, and children inherit that
        signal.signal(signal.SIGINT, signal.SIG_DFL)

    for delay in (0.2, 1.5):
        out = tmp_path / f"after-{delay}"
        proc = subprocess.Popen(
            [sys.executable, "-c", code, "build", "--model", "m3vit", "--no-csim",
             "--out", str(out)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=tmp_path,
            preexec_fn=default_sigint,
        )  # fmt: skip
        assert proc.stdout.readline().strip() == "ready"
        time.sleep(delay)
        proc.send_signal(signal.SIGINT)
        _, stderr = proc.communicate(timeout=300)
        assert "Traceback" not in stderr, stderr
        assert proc.returncode in (1, 130), (proc.returncode, stderr)
        assert not out.exists()  # interrupted before anything was written


def test_prune_help_has_whole_sentences():
    result = CliRunner().invoke(main, ["prune", "--help"])
    assert result.exit_code == 0
    help_text = " ".join(result.output.split())
    assert "board whose default ArchConfig (for --precision) sets the block shape" in help_text


def test_arch_config_refuses_values_the_buffers_cannot_hold():
    with pytest.raises(ValueError, match="max_heads=0"):
        ArchConfig(max_heads=0)
    with pytest.raises(ValueError, match="max_dim=2 must be at least max_heads=4"):
        ArchConfig(max_dim=2, max_heads=4)


def test_readme_names_the_build_steps_and_links_only_files_that_exist():
    import re

    readme = (REPO / "README.md").read_text()
    listed = re.search(r"The steps of a build \(`([^`]*)`", readme).group(1)
    assert [step.strip() for step in listed.split(",")] == [name for name, _ in STEPS]
    for target in re.findall(r"\]\(([^)#]+)\)", readme):
        if not target.startswith("http"):
            assert (REPO / target).exists(), target
    assert "ARCHITECTURE.md" not in readme.replace("docs/architecture.md", "")


def test_calibration_sources_are_real_by_default_and_random_is_said(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(0)
    folder = tmp_path / "images"
    folder.mkdir()
    for index in range(3):
        pixels = (rng.random((40, 70, 3)) * 255).astype("uint8")
        Image.fromarray(pixels).save(folder / f"{index}.png")
    array = tmp_path / "calib.npy"
    np.save(array, rng.standard_normal((2, 3, 32, 64)))
    expected = {
        None: ("random", 4),
        3: ("random", 3),
        str(folder): ("folder", 3),
        str(array): ("npy", 2),
    }
    for calib, (source, count) in expected.items():
        report = codesign.build("m3vit-tiny", eval_images=1, calib=calib).report["calibration"]
        assert (report["source"], report["images"], report["samples"]) == (source, count, count)
        assert report["random"] == (source == "random")
    digits = codesign.build("digits-vit", eval_images=1).report["calibration"]
    assert digits["source"] == "dataset" and "digits" in digits["description"]
    with pytest.raises(ValueError, match="expected"):
        codesign.build("digits-vit", eval_images=1, calib=array)  # wrong shape for this model
    result = _cli("build", "--model", "m3vit-tiny", "--calib", "no-such-folder")
    assert "not a count, 'digits', an .npy file or a folder" in result.stderr
    assert "torch loaded: False" in result.stdout


def test_evaluation_images_from_a_file_are_used_and_named(tmp_path):
    rng = np.random.default_rng(1)
    images = rng.standard_normal((3, 3, 32, 64))
    array = tmp_path / "eval.npy"
    np.save(array, images)
    from_file = codesign.build("m3vit-tiny", eval_images=str(array), out=tmp_path / "b", plot=False)
    given = codesign.build("m3vit-tiny", eval_images=images)
    assert from_file.report["fidelity"]["images"] == 3
    assert from_file.report["fidelity"]["image_source"] == "eval.npy"
    assert from_file.report["fidelity"]["vs_torch"] == given.report["fidelity"]["vs_torch"]
    assert "3 image(s) per task (eval.npy)" in (tmp_path / "b" / "report.md").read_text()
    assert codesign.build("m3vit-tiny").report["fidelity"]["image_source"].startswith("random")
    result = _cli("build", "--model", "m3vit-tiny", "--images", "no-such.npy")
    assert "--images no-such.npy: not a count, an .npy file or a folder" in result.stderr
    assert "torch loaded: False" in result.stdout


def test_random_calibration_is_flagged_in_report_md(tmp_path):
    codesign.build("m3vit-tiny", eval_images=1, out=tmp_path / "b", plot=False)
    text = (tmp_path / "b" / "report.md").read_text()
    assert "- calibration: **4 random Gaussian image(s)" in text
