//! Layer 5 of `migrate`, the flows the command runs: one claim, a fleet of claims, a StatefulSet
//! (one lockstep group plus its two steps). Each takes its planning from the planner, its types
//! from the model, and runs through the executor or the lockstep runner; none imports another.

pub mod claim;
pub mod fleet;
pub mod statefulset;
