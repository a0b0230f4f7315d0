"""`cnnlab explain`, end to end: a tiny trained run (files and test:INDEX images) and the cat photo."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from cnnlab.cli import main
from cnnlab.insight import attribution
from cnnlab.runs.directory import load_run


def test_explain_a_run_on_files_and_test_images(run_env, capsys, tmp_path):
    photo = tmp_path / "bar.png"
    Image.open(run_env["data"] / "bar" / "0.png").convert("RGB").resize((30, 20)).save(photo)  # converted like predict
    out, arr = tmp_path / "fig.png", tmp_path / "maps.npy"
    rc = main(["explain", str(run_env["run"]), str(photo), "test:0", "test:1", "--target", "actual",
               "--out", str(out), "--save-array", str(arr)])
    text = capsys.readouterr()
    assert rc == 2 and "--target actual needs labelled images" in text.err  # a file has no label
    rc = main(["explain", str(run_env["run"]), "test:0", "test:1", "--target", "actual", "--out", str(out),
               "--save-array", str(arr), "--device", "cpu"])
    text = capsys.readouterr().out
    assert rc == 0 and "test:0: predicted" in text and "layer: 4" in text  # the ReLU after the last conv, 3
    run = load_run(run_env["run"])
    test = run.load_data().test
    expected, _, used, _ = attribution.gradcam_maps(run.build_model(), run.preprocess(test.images[:2]), test.labels[:2])
    assert used == ["4"]
    np.testing.assert_allclose(np.load(arr), expected["4"], rtol=1e-6)
    with Image.open(out) as fig:
        assert fig.size[0] > 100
    rc = main(["explain", str(run_env["run"]), str(photo), "--method", "ig", "--target", "ring", "--save-array", str(arr)])
    text = capsys.readouterr().out
    assert rc == 0 and "explaining ring" in text and np.load(arr).shape == (1, 10, 10)
    assert "ig maps are signed; drawn on a diverging colormap centred on 0" in text
    assert np.load(arr).min() < 0 < np.load(arr).max()  # the array keeps the signs
    rc = main(["explain", str(run_env["run"]), "test:0", "--method", "occlusion", "--positive", "--out", str(out)])
    assert rc == 0 and "occlusion maps are signed; drawn as their positive part" in capsys.readouterr().out


def test_explain_sweep_and_bad_input(run_env, capsys, tmp_path):
    arr = tmp_path / "sweep.npy"
    rc = main(["explain", str(run_env["run"]), "test:2", "test:3", "--layer", "sweep", "--save-array", str(arr),
               "--out", str(tmp_path / "sweep.png")])
    assert rc == 0 and "layers: 1, 4" in capsys.readouterr().out  # the ReLU after each conv
    assert np.load(arr).shape == (2, 2, 10, 10)  # (layers, images, H, W)
    for argv, message in [
        (["test:999999"], "not test:INDEX with INDEX in 0.."),
        (["missing.png"], "does not exist"),
        (["test:0", "--layer", "6"], "layer '6' (Linear) gives (1, 8), not (N, C, H, W) feature maps"),
        (["test:0", "--layer", "nope"], "no layer 'nope'"),
        (["test:0", "--target", "7"], "target 7 is out of range: the model has 3 classes"),
        (["test:0", "--target", "cat"], "not predicted, actual, a class index or one of: bar, dot, ring"),
        (["test:0", "--method", "saliency", "--layer", "0"], "--layer is for gradcam"),
        (["test:0", "--weights", "w.pth"], "--weights goes with --model"),
        ([], "give a run directory and at least one image"),
        (["test:0", "--device", "nonsense"], "unknown device 'nonsense'"),
    ]:
        assert main(["explain", str(run_env["run"]), *argv]) == 2
        assert message in capsys.readouterr().err


def test_explain_the_cat_photo_with_squeezenet(shared_dir, squeeze_weights, capsys, tmp_path):
    weights, cat = squeeze_weights, shared_dir / "images" / "cat.jpg"
    if not cat.is_file():
        pytest.skip(f"the cat photo is absent: {cat}")
    out, arr = tmp_path / "cat.png", tmp_path / "cat.npy"
    rc = main(["explain", "--model", "squeezenet1_1", "--weights", str(weights), str(cat), "--out", str(out),
               "--save-array", str(arr)])
    text = capsys.readouterr().out
    assert rc == 0 and "Egyptian_cat" in text and "explaining Egyptian_cat (class 285)" in text
    assert np.load(arr).shape == (1, 720, 1280)
    with Image.open(out) as fig:
        assert fig.size[0] > 200
    rc = main(["explain", "--model", "squeezenet1_1", "--weights", str(weights), str(cat), "--target", "actual"])
    assert rc == 2 and "photos have no labels" in capsys.readouterr().err


def test_a_long_explain_run_shows_progress_and_gives_the_same_maps_as_one_batch(run_env, capsys, tmp_path):
    import numpy as np

    from cnnlab.cli import explain as cli_explain

    images = [f"test:{i}" for i in range(9)]  # the tiny run's whole test set
    one, chunked = tmp_path / "one.npy", tmp_path / "chunked.npy"
    assert main(["explain", str(run_env["run"]), *images, "--method", "ig", "--save-array", str(one), "--quiet"]) == 0
    old, cli_explain.EXPLAIN_CHUNK = cli_explain.EXPLAIN_CHUNK, 4  # 9 images in chunks of 4, 4 and 1
    try:
        assert main(["explain", str(run_env["run"]), *images, "--method", "ig", "--save-array", str(chunked),
                     "--verbose"]) == 0
    finally:
        cli_explain.EXPLAIN_CHUNK = old
    err = capsys.readouterr().err
    assert "/3 [" in err and "chunk" in err  # a bar over the three chunks
    np.testing.assert_allclose(np.load(chunked), np.load(one), rtol=1e-5, atol=1e-6)
