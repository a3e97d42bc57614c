//! One observation of the cluster from its sources' answers: the assembly that `steward run`'s
//! observer and `steward observe` (the CLI command) share, and the table a fleet files its
//! metrics answers in, per cluster (`fleet`).

pub mod assemble;
pub mod fleet;
