"""Training within a time budget (`--time-limit` / `--preset`): parse.py parses budgets,
planner.py fits the default recipe to measured speed, session.py measures and keeps the
ledger of seconds spent for training, members.py spends the time left on ensemble members
(kept when validation prefers them)."""
