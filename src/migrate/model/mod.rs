//! Layer 1 of `migrate`, pure: no `async`, no `kube::Api`. The judgement, the recorded state, the
//! steps and their descriptions, the plan and outcome types. Everything above reads these.

pub mod eligibility;
pub mod error;
pub mod facts;
pub mod history;
pub mod plan;
pub mod rollout;
pub mod single_pod;
pub mod state;
pub mod steps;
pub mod templates;
pub mod users;
pub mod workloads;
