"""transferkit: a folder of images → a trustworthy, explainable, deployable classifier.

    import transferkit
    run = transferkit.train("photos/", "runs/photos")
    run.predict(["a.jpg"])             # probabilities [N, C]
    run = transferkit.load_run("runs/photos")
"""

__version__ = "0.1.0"


def train(data, out, overwrite: bool = False, **options):
    """Trains a classifier; see `transferkit.training.train`."""
    from transferkit.training import train as _train
    return _train(data, out, overwrite=overwrite, **options)


def load_run(run_dir):
    """Opens a finished run directory; see `transferkit.run.load_run`."""
    from transferkit.run import load_run as _load_run
    return _load_run(run_dir)
