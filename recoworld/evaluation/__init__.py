"""Running recommenders against simulated users and judging the outcome: the simulate
loop, the trajectory schema, metrics, reports, and fidelity against real logs."""
