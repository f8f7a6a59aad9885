//! Reloads the certificate and the policy when their files change: rewritten in place, or swapped
//! the way Kubernetes updates Secret and ConfigMap volumes (a new timestamped directory, then an
//! atomic rename of the `..data` symlink). A bad new file keeps the old one serving.
//!
//! inotify on the files' directories triggers a reload quickly; a periodic re-read catches what
//! notifications miss. A file is only re-parsed when its bytes changed.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use notify::{RecursiveMode, Watcher as _};
use tokio::sync::{broadcast, mpsc};
use tokio::task::JoinHandle;

use super::tls::{self, CertReloader};
use super::{AppState, Metrics, ServeError};
use crate::policy_file;

/// The outcome of one reload attempt that found changed bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ReloadEvent {
    TlsReloaded { not_after: i64 },
    TlsFailed(String),
    PolicyReloaded,
    PolicyFailed(String),
}

pub struct Sources {
    /// cert path, key path, the resolver to update, bytes of the pair now served.
    pub tls: Option<(PathBuf, PathBuf, Arc<CertReloader>, Vec<u8>)>,
    pub policy: Option<PathBuf>,
}

/// Stops watching when dropped.
pub struct Watcher {
    _fs: Option<notify::RecommendedWatcher>,
    task: JoinHandle<()>,
}

impl Drop for Watcher {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Watcher {
    pub fn start(
        sources: Sources,
        state: Arc<AppState>,
        events: broadcast::Sender<ReloadEvent>,
        interval: Duration,
    ) -> Result<Watcher, ServeError> {
        let mut dirs: Vec<PathBuf> = Vec::new();
        if let Some((cert, key, _, _)) = &sources.tls {
            dirs.extend([parent(cert), parent(key)]);
        }
        if let Some(p) = &sources.policy {
            dirs.push(parent(p));
        }
        dirs.sort();
        dirs.dedup();
        // The file names that matter; `..data` and the timestamped `..2026_…` directories are how
        // the kubelet swaps Secret and ConfigMap volumes. Other files in the same directories
        // (a log file next to the certificate, say) must not cost a re-read each.
        let mut names: Vec<std::ffi::OsString> = Vec::new();
        if let Some((cert, key, _, _)) = &sources.tls {
            names.extend(
                [cert, key]
                    .iter()
                    .filter_map(|p| p.file_name().map(Into::into)),
            );
        }
        if let Some(p) = &sources.policy {
            names.extend(p.file_name().map(Into::into));
        }
        let relevant = move |event: &notify::Event| {
            event.paths.iter().any(|p| {
                p.file_name().is_some_and(|n| {
                    names.iter().any(|w| w == n) || n.to_string_lossy().starts_with("..")
                })
            })
        };
        let (tx, rx) = mpsc::unbounded_channel();
        let fs = if dirs.is_empty() {
            None
        } else {
            let mut w = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
                // On a watcher error, re-check rather than miss a change.
                if res.as_ref().map_or(true, &relevant) {
                    let _ = tx.send(());
                }
            })
            .map_err(|e| ServeError::Watch {
                path: dirs[0].clone(),
                message: e.to_string(),
            })?;
            for dir in &dirs {
                w.watch(dir, RecursiveMode::NonRecursive)
                    .map_err(|e| ServeError::Watch {
                        path: dir.clone(),
                        message: e.to_string(),
                    })?;
            }
            Some(w)
        };
        let policy_bytes = sources
            .policy
            .as_deref()
            .and_then(|p| std::fs::read(p).ok());
        let mut reloader = Reloader {
            tls: sources.tls,
            policy: sources.policy.map(|p| (p, policy_bytes)),
            state,
            events,
        };
        let task = tokio::spawn(async move { reloader.run(rx, interval).await });
        Ok(Watcher { _fs: fs, task })
    }
}

fn parent(p: &Path) -> PathBuf {
    match p.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.to_owned(),
        _ => PathBuf::from("."),
    }
}

struct Reloader {
    tls: Option<(PathBuf, PathBuf, Arc<CertReloader>, Vec<u8>)>,
    policy: Option<(PathBuf, Option<Vec<u8>>)>,
    state: Arc<AppState>,
    events: broadcast::Sender<ReloadEvent>,
}

/// Writers touch several files in a row (cert, then key); wait for the burst to settle.
const SETTLE: Duration = Duration::from_millis(100);

impl Reloader {
    async fn run(&mut self, mut rx: mpsc::UnboundedReceiver<()>, interval: Duration) {
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        loop {
            tokio::select! {
                got = rx.recv() => {
                    if got.is_none() {
                        return;
                    }
                    tokio::time::sleep(SETTLE).await;
                    while rx.try_recv().is_ok() {}
                }
                _ = tick.tick() => {}
            }
            self.check_tls();
            self.check_policy();
        }
    }

    fn emit(&self, event: ReloadEvent) {
        let _ = self.events.send(event);
    }

    fn check_tls(&mut self) {
        let Some((cert, key, resolver, served)) = &mut self.tls else {
            return;
        };
        let (cert_pem, key_pem) = match (std::fs::read(&*cert), std::fs::read(&*key)) {
            (Ok(c), Ok(k)) => (c, k),
            (Err(e), _) | (_, Err(e)) => {
                // A missing file mid-swap is normal for a moment; it counts only once it changes.
                let message = format!("cannot read the certificate or key: {e}");
                if !served.is_empty() {
                    tracing::warn!(cert = %cert.display(), "TLS reload failed, keeping the current certificate: {message}");
                    Metrics::reload(&self.state.metrics.tls_reloads, false);
                    served.clear();
                    self.emit(ReloadEvent::TlsFailed(message));
                }
                return;
            }
        };
        let mut fingerprint = cert_pem.clone();
        fingerprint.extend_from_slice(&key_pem);
        if fingerprint == *served {
            return;
        }
        *served = fingerprint;
        match tls::parse_pair(&cert_pem, &key_pem) {
            Ok(pair) => {
                let not_after = pair.not_after;
                resolver.store(pair);
                self.state.metrics.cert_not_after.set(not_after);
                Metrics::reload(&self.state.metrics.tls_reloads, true);
                tracing::info!(cert = %cert.display(), not_after, "TLS certificate reloaded");
                self.emit(ReloadEvent::TlsReloaded { not_after });
            }
            Err(e) => {
                Metrics::reload(&self.state.metrics.tls_reloads, false);
                tracing::error!(cert = %cert.display(), key = %key.display(), "TLS reload failed, keeping the current certificate: {e}");
                self.emit(ReloadEvent::TlsFailed(e.to_string()));
            }
        }
    }

    fn check_policy(&mut self) {
        let Some((path, served)) = &mut self.policy else {
            return;
        };
        let bytes = std::fs::read(&*path).ok();
        if bytes == *served {
            return;
        }
        *served = bytes;
        match policy_file::load(Some(path)) {
            Ok(policy) => {
                self.state.policy.store(Arc::new(policy));
                Metrics::reload(&self.state.metrics.policy_reloads, true);
                tracing::info!(path = %path.display(), "policy reloaded");
                self.emit(ReloadEvent::PolicyReloaded);
            }
            Err(e) => {
                Metrics::reload(&self.state.metrics.policy_reloads, false);
                tracing::error!(path = %path.display(), "policy reload failed, keeping the current policy: {e}");
                self.emit(ReloadEvent::PolicyFailed(e.to_string()));
            }
        }
    }
}
