"""Experiments on the user's own data: the evidence behind transferkit's defaults.

    transferkit experiment transfer photos/ --fractions 0.05,0.1,0.25,0.5,1 --out runs/transfer

Modules: `transfer` (the experiment: subsets, cells, resume, `transfer.csv`), `cells`
(training one method on one subset), `plot` (the curve with the plan's thresholds) and
`command` (the `experiment` subcommand).
"""

from transferkit.experiments.transfer import (
    METHODS, TransferConfig, nested_subsets, transfer_experiment)

__all__ = ["METHODS", "TransferConfig", "nested_subsets", "transfer_experiment"]
