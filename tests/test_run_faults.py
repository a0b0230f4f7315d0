"""Run directories survive anything: two writers, kills at creation, and every damaged file."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from cnnlab.cli import main
from cnnlab.runs import lock as runlock

SPEC = "conv4k3-relu,maxpool2,flatten"


def train(out: Path, *extra: str) -> int:
    return main(["train", "--data", "digits", "--model", SPEC, "--epochs", "1", "--batch-size", "64",
                 "--out", str(out), "--quiet", "--no-report", *extra])


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("trained") / "run"
    assert train(out) == 0
    return out


@pytest.fixture
def run(trained, tmp_path) -> Path:
    copy = tmp_path / "run"
    shutil.copytree(trained, copy)
    return copy


def one_line_error(capsys, *needles: str) -> str:
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "Traceback" not in err, err
    for needle in needles:
        assert needle in err, err
    return err


# --------------------------------------------------------------------------- two writers


@pytest.fixture
def holder(run):
    """Another process holding the run's writer lock, as a training in progress does."""
    code = f"from cnnlab.runs import lock as runlock; runlock.acquire({str(run)!r}); print('held', flush=True); " \
           "import time; time.sleep(60)"
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    yield proc
    proc.kill()
    proc.wait()
    proc.stdout.close()


@pytest.mark.parametrize("argv", [["--overwrite"], []])
def test_a_second_writer_is_refused_naming_the_pid(run, holder, capsys, argv):
    before = (run / "config.json").read_bytes(), (run / "best.pt").read_bytes()
    assert train(run, *argv) == 2
    if argv:
        one_line_error(capsys, "is being written by another cnnlab process", f"PID {holder.pid}")
    assert ((run / "config.json").read_bytes(), (run / "best.pt").read_bytes()) == before  # untouched


def test_resume_is_refused_while_another_process_writes(run, holder, capsys):
    assert main(["train", "--resume", str(run), "--epochs", "2", "--quiet", "--no-report"]) == 2
    one_line_error(capsys, f"PID {holder.pid}")


def test_the_lock_goes_when_its_holder_is_killed(run, holder, capsys):
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    assert train(run, "--overwrite") == 0  # no stale lock: the OS dropped it


def test_readers_wait_for_a_whole_epoch(run):
    """While the writer replaces an epoch's files, a reader's load_run waits for all of them."""
    from cnnlab.runs.directory import load_run

    code = f"from cnnlab.runs import lock as runlock; import time\n" \
           f"with runlock.snapshot({str(run)!r}, write=True):\n    print('in', flush=True); time.sleep(1.0)"
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "in"
    start = time.monotonic()
    load_run(run)
    assert time.monotonic() - start > 0.3  # it waited for the writer
    proc.wait()
    proc.stdout.close()


def test_readers_of_a_read_only_run_need_no_lock_file(run):
    from cnnlab.runs.directory import load_run

    with runlock.snapshot(run, write=False):
        assert load_run(run).config["model"] == SPEC


# --------------------------------------------------------------------------- kills at creation


def test_a_folder_left_by_a_kill_at_creation_does_not_block_train(tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    (out / ".cnnlab.lock").write_text("99999999\n")
    stale = out / ".config.json.99999999.deadbeef.tmp"  # a writer killed before its rename
    stale.write_text('{"trunc')
    assert train(out) == 0  # no --overwrite needed: nothing of a run was there
    assert not stale.exists() and json.loads((out / "config.json").read_text())["model"] == SPEC


def test_overwrite_and_resume_clean_up_stale_temporary_files(run):
    stale = run / ".last.pt.99999999.cafebabe.tmp"
    stale.write_bytes(b"PK\x03\x04half")
    assert main(["train", "--resume", str(run), "--epochs", "2", "--quiet", "--no-report"]) == 0
    assert not stale.exists()
    stale.write_bytes(b"")
    assert train(run, "--overwrite") == 0 and not stale.exists()


def test_a_run_killed_before_its_first_epoch_resumes_from_the_start(run):
    for name in ("last.pt", "best.pt", "history.csv", "metrics.json"):
        (run / name).unlink(missing_ok=True)
    assert main(["train", "--resume", str(run), "--quiet", "--no-report"]) == 0
    assert (run / "last.pt").is_file()


def test_out_pointing_at_a_file_is_refused(tmp_path, capsys):
    target = tmp_path / "notes.txt"
    target.write_text("keep me")
    assert train(target) == 2
    one_line_error(capsys, "is a file, not a folder")
    assert target.read_text() == "keep me"


# --------------------------------------------------------------------------- damaged files

DAMAGE = {
    "truncated": lambda data: data[: len(data) // 2],
    "not-utf8": lambda data: b"\xff\xfe" + data[2:],
    "wrong-type": lambda data: b"[1, 2, 3]\n",
}


def evaluate(run) -> int:
    return main(["evaluate", str(run)])


@pytest.mark.parametrize("damage", sorted(DAMAGE))
def test_damaged_config_json_is_named(run, capsys, damage):
    path = run / "config.json"
    path.write_bytes(DAMAGE[damage](path.read_bytes()))
    assert evaluate(run) == 2
    one_line_error(capsys, str(path))


@pytest.mark.parametrize("key, value, needle", [("model", None, "has no 'model'"),
                                                 ("input_shape", [8, 8], "'input_shape' should be [H, W, C]"),
                                                 ("num_classes", "ten", "'num_classes' should be a positive integer"),
                                                 ("classes", ["a"], "'classes' should be a list of 10 names")])
def test_config_json_with_a_missing_or_mistyped_key_is_named(run, capsys, key, value, needle):
    config = json.loads((run / "config.json").read_text())
    config.pop(key) if value is None else config.update({key: value})
    (run / "config.json").write_text(json.dumps(config))
    assert evaluate(run) == 2
    one_line_error(capsys, "config.json", needle)


@pytest.mark.parametrize("damage", ["not-utf8", "garbage"])
def test_damaged_history_stops_the_report_not_evaluate(run, capsys, damage):
    path = run / "history.csv"
    path.write_bytes(b"\xff\xfe\x00" if damage == "not-utf8" else path.read_bytes() + b"2,abc,0.5,,,,\n")
    assert evaluate(run) == 0  # evaluate does not read the history
    capsys.readouterr()
    assert main(["report", str(run)]) == 2
    one_line_error(capsys, "history.csv")


@pytest.mark.parametrize("damage", sorted(DAMAGE))
def test_damaged_metrics_json_is_rewritten_by_evaluate(run, capsys, damage):
    path = run / "metrics.json"
    path.write_bytes(DAMAGE[damage](path.read_bytes()))
    from cnnlab.runs.directory import load_run

    with pytest.raises(Exception, match="metrics.json") as info:
        _ = load_run(run).metrics
    assert "\n" not in str(info.value)
    assert evaluate(run) == 0
    assert isinstance(json.loads(path.read_text())["accuracy"], float)


@pytest.mark.parametrize("name", ["best.pt", "last.pt"])
def test_truncated_or_foreign_checkpoints_are_named(run, capsys, name):
    path = run / name
    path.write_bytes(path.read_bytes()[:200])  # truncated
    command = ["train", "--resume", str(run), "--epochs", "2", "--quiet", "--no-report"]
    assert (evaluate(run) if name == "best.pt" else main(command)) == 2
    one_line_error(capsys, str(path))
    torch.save({"epoch": 1, "weights": torch.zeros(3)}, path)  # loads with weights_only, but is not ours
    assert (evaluate(run) if name == "best.pt" else main(command)) == 2
    one_line_error(capsys, str(path), "not" if name == "last.pt" else "hold a dict")


def test_a_damaged_last_pt_leaves_evaluate_working(run, capsys):
    (run / "last.pt").write_bytes(b"garbage")
    assert evaluate(run) == 0


def test_damaged_files_do_not_stop_overwrite(run):
    (run / "config.json").write_bytes(b"\xff")
    (run / "last.pt").write_bytes(b"")
    assert train(run, "--overwrite") == 0
    assert json.loads((run / "config.json").read_text())["model"] == SPEC
    assert os.path.getsize(run / "last.pt") > 0
