"""The run directory: what one training run leaves behind, and how it is made and read.

``directory`` (config.json, history.csv, checkpoints written atomically, metrics, load_run),
``lock`` (one writer at a time, readers see whole epochs), ``config_file`` (the TOML files of
``--config`` and ``--print-config``), ``program`` (a user's own model saved as a torch.export
program) and ``experiment`` (``train_run`` / ``resume_run``: names in, a finished run directory
out). Above ``cnnlab.train``, which trains and knows nothing of files; below ``cnnlab.insight``,
which reads runs.
"""


def __getattr__(name: str):
    # 0.1's flat module cnnlab.runs (now cnnlab.runs.directory): its names keep working for this
    # release, with the FutureWarning every moved path gives (cnnlab._moved).
    import importlib
    import warnings

    directory = importlib.import_module("cnnlab.runs.directory")
    if not name.startswith("_") and hasattr(directory, name):
        warnings.warn(f"cnnlab.runs.{name} moved to cnnlab.runs.directory.{name}; import it from there "
                      "(the old path goes in the next release)", FutureWarning, stacklevel=2)
        return getattr(directory, name)
    raise AttributeError(f"module 'cnnlab.runs' has no attribute {name!r}")
