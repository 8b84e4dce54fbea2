//! Patrol checkpoints, plans, tasks and check-ins: persistence (filled in by the patrol change).
