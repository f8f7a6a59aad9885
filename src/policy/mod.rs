//! The policy core: pure functions from [`Claim`] and [`Volume`] (what the rules read of an
//! object) and [`Facts`] to a [`Decision`].
//!
//! No I/O, no async, no Kubernetes client: everything a rule needs arrives as an argument, so every
//! rule can be tested exhaustively and the webhook can answer in microseconds.

mod config;
mod facts;
mod mutation;
mod objects;
mod reapply;
mod rules;
pub mod selector;
mod workloads;

mod modes;

pub use config::{
    Action, MutationPolicy, Policy, PolicyError, ProvisionerPolicy, ValidationPolicy,
    WorkloadAction, WorkloadPolicy,
};
pub use facts::{ByName, ClusterFacts, Facts, Labels, StorageClassFacts};
pub use modes::{AccessMode, AccessModes, HasAccessModes};
pub use mutation::{
    MIGRATED_FROM_ANNOTATION, MUTATED_FROM_ANNOTATION, OPT_OUT_ANNOTATION, class_supports_rwop,
    mutate_claim,
};
pub(crate) use objects::Unread;
pub(crate) use objects::resource_as;
pub use objects::{Claim, ClaimSpec, Volume, VolumeSpec};
pub use reapply::keep_rwop_on_reapply;
pub use rules::{
    MIGRATION_ANNOTATION, MigrationTarget, RecordedMigration, Rule, Subject, TASK_URL, Violation,
    exclusive_rwop_violation, transition_violation, validate_claim, validate_volume,
};
pub use workloads::{
    W2_AUDIT_KEY, mutation_would_break, runs_a_controllers_template, validate_workload,
};

use std::collections::BTreeMap;

/// The domain of every annotation rwop-guard reads or writes. [`Claim`] and [`Volume`] keep only
/// these annotations of an object.
pub const ANNOTATION_PREFIX: &str = "rwop-guard.dev/";

/// What the webhook answers. `message` is the denial reason (one line); `explanation` is for the
/// log only and says why nothing was changed when mutation was considered and skipped.
#[derive(Clone, Debug, PartialEq)]
pub struct Decision {
    pub allowed: bool,
    pub message: Option<String>,
    pub warnings: Vec<String>,
    pub patch: Option<json_patch::Patch>,
    pub audit: BTreeMap<String, String>,
    pub explanation: Option<String>,
}

impl Decision {
    pub fn allow() -> Self {
        Self {
            allowed: true,
            message: None,
            warnings: Vec::new(),
            patch: None,
            audit: BTreeMap::new(),
            explanation: None,
        }
    }

    /// Allowed and unchanged, with the reason for the log.
    pub fn allow_because(explanation: impl Into<String>) -> Self {
        Self {
            explanation: Some(explanation.into()),
            ..Self::allow()
        }
    }

    pub fn outcome(&self) -> Outcome {
        if !self.allowed {
            Outcome::Denied
        } else if self.patch.is_some() {
            Outcome::Mutated
        } else if !self.warnings.is_empty() {
            Outcome::Warned
        } else {
            Outcome::Allowed
        }
    }
}

/// What a [`Decision`] comes to, as logs and metrics label it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Outcome {
    #[default]
    Allowed,
    /// Allowed with warnings.
    Warned,
    /// Allowed with a patch.
    Mutated,
    Denied,
}

impl Outcome {
    /// The label: `allowed`, `warned`, `mutated` or `denied`.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Allowed => "allowed",
            Outcome::Warned => "warned",
            Outcome::Mutated => "mutated",
            Outcome::Denied => "denied",
        }
    }
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Compares with the label, as logs and dashboards spell it.
impl PartialEq<&str> for Outcome {
    fn eq(&self, label: &&str) -> bool {
        self.as_str() == *label
    }
}
