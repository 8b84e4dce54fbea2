//! Work orders: persistence (filled in by the work-order change).
