"""Training within a time budget: `--time-limit` / `--preset` (issue 16).

    parse.py    budgets ("20m", "90s", "1h30m") and presets, parsed strictly
    speed.py    this machine's speed on this data, measured in a few timed steps
    planner.py  measured speeds + dataset size + budget -> image size, epochs, recipe
    ledger.py   the clock: seconds spent across invocations (resume with the time left)
    finetune.py phase 2 within the planned time: the engine's phases at each stage's
                size, the time-tied rate and stop, the ingredients
    session.py  the glue `training.train` calls
"""
