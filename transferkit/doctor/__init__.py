"""The data doctor: near-duplicates, label issues and outliers, from cached features.

    from transferkit.doctor import diagnose
    issues = diagnose("photos/")                 # → doctor/data_issues.csv

Modules: `neighbours` (cosine kNN), `duplicates`, `labels` (k-fold + cleanlab),
`outliers`, `findings` (all three from features), `examine` (the images, their size and
trunk; the files written), `diagnose` (a folder: audit, feature store), `training_step`
(inside `train`, before the split), `command` (the CLI).
"""

from transferkit.doctor.diagnose import diagnose
from transferkit.doctor.findings import DoctorConfig, Findings, find_issues

__all__ = ["DoctorConfig", "Findings", "diagnose", "find_issues"]
