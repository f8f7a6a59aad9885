use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, ValueEnum};
use serde::Serialize;
use serde_json::Value;

use crate::manifests::{self, DocumentError, ManifestViolation};
use crate::policy::{Facts, Policy};
use crate::policy_file;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    /// One line per finding: `PATH:LINE KIND/NAMESPACE/NAME: message` (the line where the
    /// object starts).
    #[default]
    Text,
    /// One JSON object with `findings` and `errors` (each with `path`, `document` and `line`).
    Json,
}

/// Checks manifests offline: PersistentVolumes, PersistentVolumeClaims and StatefulSet
/// volumeClaimTemplates against rule V1 (ReadWriteOncePod must be the only access mode).
/// V2 needs the object's previous version, which only the API server knows.
///
/// Exit status: 0 clean, 1 findings, 2 unusable input (file or document named on stderr).
#[derive(Debug, Args)]
pub struct CheckArgs {
    /// Files, directories (searched recursively for *.yaml, *.yml, *.json) or `-` for stdin.
    /// Multi-document YAML, JSON and `List` objects are understood.
    #[arg(short = 'f', long = "filename", value_name = "PATH", required = true, num_args = 1..)]
    pub paths: Vec<PathBuf>,
    /// Policy file (YAML); `mutation.storageClasses` decides what `--mutate` rewrites.
    #[arg(long, value_name = "FILE", env = "RWOP_GUARD_CONFIG")]
    pub config: Option<PathBuf>,
    /// Output format of the findings.
    #[arg(short = 'o', long, value_enum, default_value_t)]
    pub output: OutputFormat,
    /// Print the manifests with mutation M1 applied (as the mutating webhook would on create) to
    /// stdout as YAML; findings and per-claim notes go to stderr. Comments are not preserved.
    #[arg(long)]
    pub mutate: bool,
}

/// An item of the report and the file it is about.
#[derive(Debug, Serialize)]
struct InFile<T> {
    path: String,
    #[serde(flatten)]
    item: T,
}

#[derive(Debug, Serialize)]
struct ErrorItem {
    document: Option<usize>,
    line: Option<usize>,
    message: String,
}

#[derive(Debug, Default, Serialize)]
struct Report {
    findings: Vec<InFile<ManifestViolation>>,
    errors: Vec<InFile<ErrorItem>>,
}

pub fn run(args: &CheckArgs) -> ExitCode {
    let policy = match policy_file::load(args.config.as_deref()) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("rwop-guard check: {e}");
            return ExitCode::from(super::EXIT_UNUSABLE);
        }
    };
    let mut report = Report::default();
    let mut mutated_docs = Vec::new();
    for input in inputs(&args.paths, &mut report) {
        check_input(&input, args, &policy, &mut report, &mut mutated_docs);
    }
    if args.mutate {
        match manifests::to_yaml_stream(&mutated_docs) {
            Ok(text) => {
                if let Err(e) = std::io::stdout().lock().write_all(text.as_bytes()) {
                    eprintln!("rwop-guard check: cannot write stdout: {e}");
                    return ExitCode::from(super::EXIT_UNUSABLE);
                }
            }
            Err(e) => report.errors.push(InFile {
                path: "-".to_owned(),
                item: ErrorItem {
                    document: None,
                    line: None,
                    message: format!("cannot write YAML: {e}"),
                },
            }),
        }
    }
    print_report(&report, args);
    if !report.errors.is_empty() {
        ExitCode::from(super::EXIT_UNUSABLE)
    } else if !report.findings.is_empty() {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}

/// One readable source: its display path and contents.
struct Input {
    path: String,
    text: String,
}

fn inputs(paths: &[PathBuf], report: &mut Report) -> Vec<Input> {
    let mut files = Vec::new();
    for path in paths {
        if path.as_os_str() == "-" {
            let mut text = String::new();
            match std::io::stdin().read_to_string(&mut text) {
                Ok(_) => files.push(Input {
                    path: "-".to_owned(),
                    text,
                }),
                Err(e) => push_error(report, "-", None, format!("cannot read stdin: {e}")),
            }
        } else if path.is_dir() {
            let mut found = Vec::new();
            if let Err(e) = walk(path, &mut found) {
                push_error(report, &path.display().to_string(), None, e);
            }
            found.sort();
            files.extend(found.into_iter().filter_map(|p| read(&p, report)));
        } else if let Some(input) = read(path, report) {
            files.push(input);
        }
    }
    files
}

fn read(path: &Path, report: &mut Report) -> Option<Input> {
    let shown = path.display().to_string();
    match std::fs::read(path) {
        Ok(bytes) => match String::from_utf8(bytes) {
            Ok(text) => Some(Input { path: shown, text }),
            Err(_) => {
                push_error(report, &shown, None, "not UTF-8 text".to_owned());
                None
            }
        },
        Err(e) => {
            push_error(report, &shown, None, format!("cannot read: {e}"));
            None
        }
    }
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> Result<(), String> {
    let entries = std::fs::read_dir(dir).map_err(|e| format!("cannot read directory: {e}"))?;
    for entry in entries {
        let path = entry
            .map_err(|e| format!("cannot read directory: {e}"))?
            .path();
        if path.is_dir() {
            walk(&path, out)?;
        } else if path
            .extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| matches!(e, "yaml" | "yml" | "json"))
        {
            out.push(path);
        }
    }
    Ok(())
}

fn check_input(
    input: &Input,
    args: &CheckArgs,
    policy: &Policy,
    report: &mut Report,
    mutated_docs: &mut Vec<Value>,
) {
    // A document that does not parse is reported; the others are still checked.
    for parsed in manifests::parse_documents(&input.text) {
        let mut doc = match parsed {
            Ok(doc) => doc,
            Err(e) => {
                push_doc_error(report, &input.path, e);
                continue;
            }
        };
        match manifests::check_document(&doc) {
            Ok(findings) => report.findings.extend(findings.into_iter().map(|f| InFile {
                path: input.path.clone(),
                item: f,
            })),
            Err(e) => push_doc_error(report, &input.path, e),
        }
        if args.mutate {
            match manifests::mutate_document(policy, &Facts::default(), &mut doc) {
                Ok(notes) => {
                    for note in notes {
                        eprintln!("{}:{} {note}", input.path, note.line);
                    }
                }
                Err(e) => push_doc_error(report, &input.path, e),
            }
            mutated_docs.push(doc.value);
        }
    }
}

fn push_doc_error(report: &mut Report, path: &str, e: DocumentError) {
    report.errors.push(InFile {
        path: path.to_owned(),
        item: ErrorItem {
            document: Some(e.document),
            line: Some(e.line),
            message: e.message,
        },
    });
}

fn push_error(report: &mut Report, path: &str, document: Option<usize>, message: String) {
    report.errors.push(InFile {
        path: path.to_owned(),
        item: ErrorItem {
            document,
            line: None,
            message,
        },
    });
}

fn print_report(report: &Report, args: &CheckArgs) {
    if args.output == OutputFormat::Json {
        // The JSON report goes to stdout unless stdout carries the mutated manifests.
        let text = serde_json::to_string_pretty(report)
            .unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"));
        if args.mutate {
            eprintln!("{text}");
        } else {
            println!("{text}");
        }
        return;
    }
    for f in &report.findings {
        let line = format!(
            "{}:{} {}: {}",
            f.path,
            f.item.line,
            f.item.object(),
            f.item.message
        );
        if args.mutate {
            eprintln!("{line}");
        } else {
            println!("{line}");
        }
    }
    for e in &report.errors {
        match (e.item.line, e.item.document) {
            (Some(line), Some(d)) => {
                eprintln!("{}:{line}: error: document {d}: {}", e.path, e.item.message)
            }
            _ => eprintln!("{}: error: {}", e.path, e.item.message),
        }
    }
}
