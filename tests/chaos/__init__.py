"""A randomized fault campaign against the multi-host deployment, with a history checker.

`python -m tests.chaos --duration 90 --seed 1 --broker redis` (or `make chaos`): see
docs/reliability.md, "The fault campaign".
"""
