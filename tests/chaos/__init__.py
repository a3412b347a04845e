"""Chaos testing: Jepsen-style workloads, seeded nemeses, and a history checker.

Run `python -m tests.chaos --seed 7 --nemesis kill,pause,partition --duration 60`
(add `--nodes 5`, `--workload group`, `--nemesis ...,corrupt`).
Modules: `history` (the JSON-lines record of every operation), `checker` (pure functions
over a history), `workload` (confluent-kafka producers and assign-mode consumers),
`group_workload` (subscribe-mode group members committing offsets), `nemesis` (the
seeded fault schedule and its executor), `replicas` (white-box: leader lines from the
nodes' logs, replica logs compared from their segment files), `runner` (one run end to
end, and the campaign table).
"""
