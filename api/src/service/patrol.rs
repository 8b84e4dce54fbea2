//! Patrol: use cases (filled in by the patrol change).
