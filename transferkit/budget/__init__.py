"""Training within a time budget: `--time-limit` / `--preset` (issue 16).

    parse.py    budgets ("20m", "90s", "1h30m") and presets, parsed strictly
    speed.py    this machine's speed on this data, measured in a few timed steps
    planner.py  measured speeds + dataset size + budget -> image size, epochs, recipe
    stop.py     the clock: ledger (resume with the time left), stop-in-time callback,
                time-tied learning rate
    finetune.py phase 2 within the planned time (progressive resizing, ingredients)
    session.py  the glue `training.train` calls
"""
