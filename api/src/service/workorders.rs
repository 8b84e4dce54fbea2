//! Work orders and hazards to closure: use cases (filled in by the work-order change).
