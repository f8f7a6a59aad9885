//! What a run leaves in the cluster's history: one Kubernetes Event per step done, per refusal,
//! per failure and at the end, on the claim and on its PersistentVolume, so `kubectl describe
//! pvc`, `kubectl describe pv` and `kubectl get events` tell a support engineer what happened and
//! when. Pure: the reasons and notes; the cluster layer publishes them.
//!
//! Reasons are stable names an alert can match: `Migration*` for a migration to
//! [ReadWriteOncePod], `Rollback*` for `--rollback`.

use super::state::MigrationState;
use super::steps::Step;

/// The reasons, as `kubectl get events` shows them.
pub mod reason {
    pub const MIGRATION_STEP: &str = "MigrationStep";
    pub const MIGRATION_REFUSED: &str = "MigrationRefused";
    pub const MIGRATION_FAILED: &str = "MigrationFailed";
    pub const MIGRATION_COMPLETED: &str = "MigrationCompleted";
    pub const ROLLBACK_STEP: &str = "RollbackStep";
    pub const ROLLBACK_REFUSED: &str = "RollbackRefused";
    pub const ROLLBACK_FAILED: &str = "RollbackFailed";
    pub const ROLLBACK_COMPLETED: &str = "RollbackCompleted";
}

/// The API server refuses an Event note over 1 kB.
const NOTE_LIMIT: usize = 1024;

/// One Event to record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Note {
    /// A `Warning` event (else `Normal`).
    pub warning: bool,
    pub reason: &'static str,
    /// What was done: the step (`RetainVolume`, `SetVolumeModes`, …), or `Migrate`/`Rollback`
    /// for a refusal, a failure and the end. Distinct per step, since kube's recorder folds
    /// Events of the same reason and action on one object into one series.
    pub action: String,
    /// One line, at most 1 kB: what changed, or why nothing did.
    pub text: String,
}

fn note(
    warning: bool,
    rollback: bool,
    reasons: [&'static str; 2],
    action: Option<Step>,
    text: String,
) -> Note {
    let mut text = text;
    if text.len() > NOTE_LIMIT {
        let mut end = NOTE_LIMIT - '…'.len_utf8();
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
        text.push('…');
    }
    Note {
        warning,
        reason: reasons[usize::from(rollback)],
        action: match action {
            Some(step) => format!("{step:?}"),
            None if rollback => "Rollback".to_owned(),
            None => "Migrate".to_owned(),
        },
        text,
    }
}

/// Step `index` (1-based) of `state` is done; `skipped`: it found its work already in place.
pub fn step_done(
    state: &MigrationState,
    step: Step,
    index: usize,
    volume: &str,
    skipped: Option<&str>,
) -> Note {
    let total = state.steps().len();
    let what = step.describe(state, volume);
    let text = match skipped {
        None => format!("step {index}/{total} done: {what}"),
        Some(why) => format!("step {index}/{total} already in place ({why}): {what}"),
    };
    let reasons = [reason::MIGRATION_STEP, reason::ROLLBACK_STEP];
    note(false, state.is_rollback(), reasons, Some(step), text)
}

/// The run was refused before anything changed.
pub fn refused(rollback: bool, why: &str) -> Note {
    let reasons = [reason::MIGRATION_REFUSED, reason::ROLLBACK_REFUSED];
    note(
        true,
        rollback,
        reasons,
        None,
        format!("nothing changed: {why}"),
    )
}

/// The command that resumes the run of `state`.
pub fn resume_command(state: &MigrationState) -> String {
    let program = crate::program_name();
    let ns = &state.namespace;
    let what = match &state.statefulset {
        Some(sts) => format!("--statefulset {ns}/{}", sts.name),
        None => format!("{ns}/{}", state.claim),
    };
    let rollback = if state.is_rollback() {
        " --rollback"
    } else {
        ""
    };
    format!("{program} migrate {what}{rollback}")
}

/// The run stopped with an error after `state.completed` steps.
pub fn failed(state: &MigrationState, volume: &str, error: &str) -> Note {
    let total = state.steps().len();
    let undo = if state.is_rollback() {
        ""
    } else {
        ", or add --rollback to undo"
    };
    let text = format!(
        "stopped after step {}/{total}: {error}; the progress is recorded on PersistentVolume \
         {volume}: run `{}` to resume{undo}",
        state.completed,
        resume_command(state)
    );
    let reasons = [reason::MIGRATION_FAILED, reason::ROLLBACK_FAILED];
    note(true, state.is_rollback(), reasons, None, text)
}

/// Every step of `state` is done.
pub fn completed(state: &MigrationState, volume: &str) -> Note {
    let (source, target) = (state.target.source(), state.target);
    let text = format!(
        "claim {}/{} and PersistentVolume {volume} are now [{target}] (were [{source}]); reclaim \
         policy {} and consumers restored",
        state.namespace, state.claim, state.reclaim_policy
    );
    let reasons = [reason::MIGRATION_COMPLETED, reason::ROLLBACK_COMPLETED];
    note(false, state.is_rollback(), reasons, None, text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_long_note_is_cut_at_a_character_boundary_within_the_limit() {
        let long = "é".repeat(2000);
        let n = refused(false, &long);
        assert!(n.text.len() <= NOTE_LIMIT, "{}", n.text.len());
        assert!(n.text.ends_with('…'));
        assert_eq!(n.reason, reason::MIGRATION_REFUSED);
        let short = refused(true, "no");
        assert_eq!(short.text, "nothing changed: no");
        assert_eq!(short.reason, reason::ROLLBACK_REFUSED);
        assert!(short.warning);
    }
}
