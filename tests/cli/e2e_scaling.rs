//! End-to-end scaling tests on the lab (being written).
