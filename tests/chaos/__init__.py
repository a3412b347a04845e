"""Chaos testing: a Jepsen-style queue workload, seeded nemeses, and a history checker.

Run `python -m tests.chaos --seed 7 --nemesis kill,pause,partition --duration 60`.
Modules: `history` (the JSON-lines record of every operation), `checker` (pure functions
over a history), `workload` (confluent-kafka producers and assign-mode consumers),
`nemesis` (the seeded fault schedule and its executor), `runner` (one run end to end).
"""
