"""Training within a time budget: `--time-limit` / `--preset` (issue 16; issue 25).

    parse.py    budgets ("20m", "90s", "1h30m") and presets, parsed strictly
    speed.py    this machine's speed on this data, measured in a few timed steps
    planner.py  measured speed + dataset size + budget -> the default recipe fitted
    session.py  the ledger (seconds spent across invocations) and the glue training calls
    members.py  the time left after the default run: ensemble members, kept on validation
"""
