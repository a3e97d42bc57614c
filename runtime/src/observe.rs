//! One observation of the cluster from its sources' answers: the assembly that `steward run`'s
//! observer and `steward observe` (the CLI command) share.

pub mod assemble;
