"""A full disk is an error, never a loss: every command that writes, on a full tmpfs.

Each command's output goes to a tmpfs filled to the last page (mounting needs root; CI
runs as root, elsewhere these skip). Every command must exit 2 with one line saying "no
space left on device" and naming the file, leave no partial or temporary file, and keep
the good file that was there before.
"""

from __future__ import annotations

import errno
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cnnlab.cli import main

SPEC = "conv4k3-relu,maxpool2,flatten"
GOOD = b"a good file from before"


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("trained") / "run"
    assert main(["train", "--data", "digits", "--model", SPEC, "--epochs", "1", "--batch-size", "64",
                 "--out", str(out), "--quiet", "--no-report"]) == 0
    Image.fromarray(np.arange(64, dtype=np.uint8).reshape(8, 8) * 4).save(out.parent / "digit.png")
    return out


@pytest.fixture
def disk(mount_tmpfs):
    """A 512 KiB tmpfs, unmounted afterwards."""
    return mount_tmpfs(512)

def fill(disk: Path) -> None:
    """Write a filler until the tmpfs has no page left."""
    with open(disk / "filler", "wb", buffering=0) as f:
        try:
            while True:
                f.write(b"\0" * 4096)
        except OSError as exc:
            assert exc.errno == errno.ENOSPC


def snapshot(disk: Path) -> dict[str, bytes]:
    return {str(p.relative_to(disk)): p.read_bytes() for p in sorted(disk.rglob("*")) if p.is_file()
            and p.name not in (".cnnlab.lock", ".cnnlab.snapshot", "filler")}


def check_refused(argv: list[str], disk: Path, capsys, path_in_message: Path | None = None) -> None:
    before = snapshot(disk)
    fill(disk)
    code = main(argv)
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert "no space left on device" in err and err.count("\n") == 0, err
    assert str(path_in_message or disk) in err, err
    assert snapshot(disk) == before  # nothing replaced, nothing half-written
    assert not [p for p in disk.rglob("*.tmp")]  # no temporary file left behind


# (command line with {run}, {img}, {out}; the file put at {out} first)
COMMANDS = {
    "predict": ["predict", "{run}", "{img}", "--out", "{out}/p.png"],
    "activations": ["activations", "{run}", "{img}", "--layer", "0", "--out", "{out}/a.png"],
    "data-show": ["data", "show", "digits", "--out", "{out}/s.png"],
    "explain": ["explain", "{run}", "{img}", "--out", "{out}/e.png"],
    "features": ["features", "{run}", "--layer", "0", "--channels", "0-1", "--steps", "2", "--out", "{out}/f.png"],
    "embed": ["embed", "{run}", "--method", "pca", "--out", "{out}/m.png"],
    "export": ["export", "{run}", "--format", "safetensors", "--out", "{out}/w.safetensors"],
    "filters": ["filters", "{run}", "--out", "{out}/filters.html"],
    "report-out": ["report", "{run}", "--out", "{out}/report.html", "--quiet"],
}


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_commands_that_write_a_file(trained, disk, capsys, name):
    if name == "export":
        pytest.importorskip("safetensors")  # the 'export' extra; a plain install has it not
    argv = [a.format(run=trained, img=trained.parent / "digit.png", out=disk) for a in COMMANDS[name]]
    target = Path(next(a for a in argv if a.startswith(str(disk))))
    target.write_bytes(GOOD)
    check_refused(argv, disk, capsys, target)
    assert target.read_bytes() == GOOD


@pytest.fixture
def run_on_disk(trained, disk) -> Path:
    run = disk / "run"
    shutil.copytree(trained, run)
    return run


def test_evaluate_keeps_the_old_metrics(run_on_disk, disk, capsys):
    check_refused(["evaluate", str(run_on_disk)], disk, capsys, run_on_disk / "metrics.json")


def test_report_keeps_the_old_report(run_on_disk, disk, capsys):
    (run_on_disk / "report.html").write_bytes(GOOD)
    check_refused(["report", str(run_on_disk), "--quiet"], disk, capsys, run_on_disk)  # metrics.json first


def test_resumed_training_keeps_the_last_good_checkpoint(run_on_disk, disk, capsys):
    check_refused(["train", "--resume", str(run_on_disk), "--epochs", "3", "--quiet", "--no-report"], disk,
                  capsys, run_on_disk)
    assert main(["evaluate", str(run_on_disk)]) == 2  # still full, but what is there loads:
    from cnnlab.runs.directory import load_run

    assert load_run(run_on_disk).build_model() is not None


def test_new_training_on_a_full_disk(trained, disk, capsys):
    out = disk / "new"
    check_refused(["train", "--data", "digits", "--model", SPEC, "--epochs", "1", "--out", str(out), "--quiet",
                   "--no-report"], disk, capsys, out)
    (disk / "filler").unlink()  # space again: what the failed run left does not block a new one
    assert main(["train", "--data", "digits", "--model", SPEC, "--epochs", "1", "--out", str(out), "--quiet",
                 "--no-report"]) == 0


def test_classify_chart(shared_dir, disk, capsys):
    weights = shared_dir / "models" / "squeezenet1_1-imagenet.pth"
    if not weights.is_file():
        pytest.skip(f"{weights} is absent")
    target = disk / "c.png"
    target.write_bytes(GOOD)
    check_refused(["classify", str(shared_dir / "images" / "cat.jpg"), "--weights", str(weights), "--top", "1",
                   "--out", str(target)], disk, capsys, target)
    assert target.read_bytes() == GOOD
