//! Every command in the docs (README.md and docs/*.md; docs/reference/ is generated and has
//! none) is run by a test, or says why not. Each ```sh block is preceded by a marker line:
//!
//! * `<!-- docs-test: fast NAME -->`: run here, by the runner NAME below;
//! * `<!-- docs-test: e2e NAME -->`: run on a real control plane by tests/e2e/docs.rs; the names
//!   are those of tests/fixtures/docs-e2e-blocks.txt, which that suite reads too;
//! * `<!-- docs-test: skip: REASON -->`: not run, for the reason given.
//!
//! A block without a marker, a `fast` block without a runner, a runner without its block, or an
//! `e2e` block the fixture does not list (or the reverse) fails [`every_command_block_is_tested`].

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use rwop_test_support as support;

#[derive(Clone, Debug, PartialEq)]
enum Marker {
    Fast(String),
    E2e(String),
    Skip(String),
}

/// One ```sh block: where it is, its marker (None: it has none), its text (the lines between
/// the fences).
#[derive(Clone, Debug)]
struct Block {
    file: String,
    line: usize,
    marker: Option<Marker>,
    text: String,
}

impl Block {
    fn at(&self) -> String {
        format!("{}:{}", self.file, self.line)
    }
}

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// README.md and docs/*.md (not docs/reference/, a directory), relative to the repository.
fn doc_files() -> Vec<String> {
    let mut files: Vec<String> = std::fs::read_dir(root().join("docs"))
        .expect("docs/")
        .map(|e| e.expect("docs/ entry").path())
        .filter(|p| p.is_file() && p.extension().is_some_and(|e| e == "md"))
        .map(|p| format!("docs/{}", p.file_name().unwrap().to_string_lossy()))
        .collect();
    files.sort();
    files.insert(0, "README.md".to_owned());
    files
}

/// `<!-- docs-test: … -->` on this line, parsed; Err for a marker line that is malformed.
fn marker(line: &str) -> Option<Result<Marker, String>> {
    let body = line
        .trim()
        .strip_prefix("<!-- docs-test:")?
        .strip_suffix("-->")
        .map(str::trim);
    let Some(body) = body else {
        return Some(Err(format!("unterminated marker: {line}")));
    };
    let parsed = if let Some(reason) = body.strip_prefix("skip:") {
        let reason = reason.trim();
        (!reason.is_empty()).then(|| Marker::Skip(reason.to_owned()))
    } else if let Some(name) = body.strip_prefix("fast ") {
        valid_name(name).then(|| Marker::Fast(name.trim().to_owned()))
    } else if let Some(name) = body.strip_prefix("e2e ") {
        valid_name(name).then(|| Marker::E2e(name.trim().to_owned()))
    } else {
        None
    };
    Some(
        parsed.ok_or_else(|| {
            format!("malformed marker (fast NAME, e2e NAME or skip: REASON): {line}")
        }),
    )
}

fn valid_name(name: &str) -> bool {
    let name = name.trim();
    !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
}

/// Every ```sh block of `text`, and the problems found (a marker that is malformed or not
/// followed by a ```sh block, an unclosed fence).
fn parse(file: &str, text: &str) -> (Vec<Block>, Vec<String>) {
    let mut blocks = Vec::new();
    let mut problems = Vec::new();
    // A marker waiting for its block: (line, marker).
    let mut pending: Option<(usize, Marker)> = None;
    let mut lines = text.lines().enumerate().map(|(i, l)| (i + 1, l));
    while let Some((n, line)) = lines.next() {
        let trimmed = line.trim();
        if let Some(m) = marker(line) {
            if let Some((at, _)) = pending.take() {
                problems.push(format!("{file}:{at}: marker followed by another marker"));
            }
            match m {
                Ok(m) => pending = Some((n, m)),
                Err(e) => problems.push(format!("{file}:{n}: {e}")),
            }
            continue;
        }
        if trimmed.is_empty() {
            continue;
        }
        let Some(info) = trimmed.strip_prefix("```") else {
            if let Some((at, _)) = pending.take() {
                problems.push(format!("{file}:{at}: marker not followed by a ```sh block"));
            }
            continue;
        };
        let mut body = Vec::new();
        let mut closed = false;
        for (_, inner) in lines.by_ref() {
            if inner.trim() == "```" {
                closed = true;
                break;
            }
            body.push(inner);
        }
        if !closed {
            problems.push(format!("{file}:{n}: unclosed fence"));
        }
        let marker = pending.take();
        if info.trim() == "sh" {
            blocks.push(Block {
                file: file.to_owned(),
                line: n,
                marker: marker.map(|(_, m)| m),
                text: body.join("\n") + "\n",
            });
        } else if let Some((at, _)) = marker {
            problems.push(format!(
                "{file}:{at}: marker before a ```{info} block (only ```sh blocks are commands)"
            ));
        }
    }
    if let Some((at, _)) = pending {
        problems.push(format!("{file}:{at}: marker not followed by a ```sh block"));
    }
    (blocks, problems)
}

fn all_blocks() -> (Vec<Block>, Vec<String>) {
    let mut blocks = Vec::new();
    let mut problems = Vec::new();
    for file in doc_files() {
        let text = std::fs::read_to_string(root().join(&file))
            .unwrap_or_else(|e| panic!("reading {file}: {e}"));
        let (b, p) = parse(&file, &text);
        blocks.extend(b);
        problems.extend(p);
    }
    (blocks, problems)
}

/// The `fast` block NAME (exactly one).
fn block(name: &str) -> Block {
    let (blocks, _) = all_blocks();
    let found: Vec<Block> = blocks
        .into_iter()
        .filter(|b| b.marker == Some(Marker::Fast(name.to_owned())))
        .collect();
    assert_eq!(
        found.len(),
        1,
        "expected one block marked `fast {name}`: {found:#?}"
    );
    found.into_iter().next().unwrap()
}

/// The runners of the `fast` blocks: each a test of its own, named after the function.
macro_rules! fast_runners {
    ($($name:literal => $runner:ident),* $(,)?) => {
        const FAST_RUNNERS: &[&str] = &[$($name),*];
        $(
            #[test]
            fn $runner() {
                runners::$runner(&block($name));
            }
        )*
    };
}

fast_runners! {
    "dev-review" => dev_review,
    "review-patch" => review_patch,
}

#[test]
fn every_command_block_is_tested() {
    let (blocks, mut problems) = all_blocks();
    assert!(
        !blocks.is_empty(),
        "no ```sh block found: is the parser broken?"
    );
    let mut seen = BTreeSet::new();
    let mut fast = BTreeSet::new();
    let mut e2e = BTreeSet::new();
    for b in &blocks {
        let name = match &b.marker {
            None => {
                problems.push(format!(
                    "{}: ```sh block without a `<!-- docs-test: fast NAME | e2e NAME | skip: \
                     REASON -->` line before it",
                    b.at()
                ));
                continue;
            }
            Some(Marker::Skip(_)) => continue,
            Some(Marker::Fast(n)) => {
                fast.insert(n.as_str());
                n
            }
            Some(Marker::E2e(n)) => {
                e2e.insert(n.as_str());
                n
            }
        };
        if !seen.insert(name.as_str()) {
            problems.push(format!("{}: the name {name} is used twice", b.at()));
        }
    }
    let runners: BTreeSet<&str> = FAST_RUNNERS.iter().copied().collect();
    for name in fast.difference(&runners) {
        problems.push(format!(
            "fast block {name} has no runner in tests/docs.rs (fast_runners!)"
        ));
    }
    for name in runners.difference(&fast) {
        problems.push(format!(
            "runner {name} of tests/docs.rs has no `<!-- docs-test: fast {name} -->` block"
        ));
    }
    let names = support::fixtures::docs_e2e_blocks();
    let listed: BTreeSet<&str> = names.iter().map(String::as_str).collect();
    assert_eq!(
        listed.len(),
        names.len(),
        "tests/fixtures/docs-e2e-blocks.txt lists a name twice"
    );
    for name in e2e.difference(&listed) {
        problems.push(format!(
            "e2e block {name} is not in tests/fixtures/docs-e2e-blocks.txt (and so has no \
             runner in tests/e2e/docs.rs)"
        ));
    }
    for name in listed.difference(&e2e) {
        problems.push(format!(
            "tests/fixtures/docs-e2e-blocks.txt lists {name}, which no `<!-- docs-test: e2e \
             {name} -->` block has"
        ));
    }
    assert!(problems.is_empty(), "\n{}", problems.join("\n"));
}

#[test]
fn the_parser_finds_markers_blocks_and_mistakes() {
    let text = "\
<!-- docs-test: fast one -->

```sh
echo 1
```
```text
not a command
```
```sh
echo unmarked
```
<!-- docs-test: skip: no reason needed here -->
```yaml
a: 1
```
<!-- docs-test: e2e two -->
prose
<!-- docs-test: bogus -->
";
    let (blocks, problems) = parse("x.md", text);
    let got: Vec<(usize, Option<Marker>, &str)> = blocks
        .iter()
        .map(|b| (b.line, b.marker.clone(), b.text.as_str()))
        .collect();
    assert_eq!(
        got,
        [
            (3, Some(Marker::Fast("one".into())), "echo 1\n"),
            (9, None, "echo unmarked\n"),
        ]
    );
    assert_eq!(
        problems,
        [
            "x.md:12: marker before a ```yaml block (only ```sh blocks are commands)",
            "x.md:16: marker not followed by a ```sh block",
            "x.md:18: malformed marker (fast NAME, e2e NAME or skip: REASON): \
             <!-- docs-test: bogus -->",
        ]
    );
}

/// The runners: each runs its block's text with bash as written but for the substitutions it
/// names, with the binary under test first in `PATH`, and checks what the docs say it shows.
mod runners {
    use super::*;

    /// `text` with `from` replaced by `to`; `from` must be in it (else the test would quietly
    /// run something else than it means to).
    fn substitute(text: &str, from: &str, to: &str) -> String {
        assert!(
            text.contains(from),
            "the block no longer contains {from:?}, which the test replaces:\n{text}"
        );
        text.replace(from, to)
    }

    /// `PATH` with these directories first: the binary's, then the tools'.
    fn path_with(tools: &[&Path]) -> String {
        let binary = Path::new(env!("CARGO_BIN_EXE_rwop-guard"));
        let mut dirs: Vec<PathBuf> = vec![binary.parent().unwrap().to_owned()];
        dirs.extend(tools.iter().filter_map(|t| t.parent().map(Path::to_owned)));
        dirs.extend(std::env::split_paths(
            &std::env::var_os("PATH").unwrap_or_default(),
        ));
        std::env::join_paths(dirs)
            .unwrap()
            .to_string_lossy()
            .into_owned()
    }

    /// `bash -e -o pipefail -c SCRIPT` from the repository's root, without the caller's
    /// `RWOP_GUARD_*`, `KUBECONFIG` or proxies (support::binary::command).
    fn bash(script: &str, path: &str) -> Command {
        let mut command = support::binary::command("bash");
        command
            .args(["-e", "-o", "pipefail", "-c", script])
            .current_dir(root())
            .env("PATH", path);
        command
    }

    /// README: with `serve --dev` running, a captured review posted with curl is denied, and
    /// the metrics count it. Substituted: the ports (8443, 9090) and the CA path, for the test
    /// server's own.
    pub fn dev_review(block: &Block) {
        let Some(curl) = support::tools::require("docs", "curl") else {
            return;
        };
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let server = support::server::ServeProcess::start(&[]).await;
            let dir = tempfile::tempdir().unwrap();
            let ca = dir.path().join("dev-ca.crt");
            std::fs::write(&ca, &server.roots[0]).unwrap();
            let mut script = block.text.clone();
            script = substitute(&script, "/tmp/rwop-guard-dev-ca.crt", &ca.to_string_lossy());
            script = substitute(
                &script,
                "https://localhost:8443/",
                &format!("https://localhost:{}/", server.addr.port()),
            );
            script = substitute(
                &script,
                "http://127.0.0.1:9090/",
                &format!("http://{}/", server.metrics_addr),
            );
            let run = support::binary::run_async(bash(&script, &path_with(&[&curl])), b"").await;
            assert_eq!(run.code, 0, "{}: {script}\n{run:#?}", block.at());
            assert!(
                run.stdout.contains(r#""allowed":false"#)
                    && run.stdout.contains(
                        "access mode change [ReadWriteMany] -> [ReadWriteOncePod] is not allowed"
                    ),
                "{}: the review was not denied as the README shows:\n{run:#?}",
                block.at()
            );
            // The review's JSON ends without a newline: the grep's first line follows it on
            // the same line, as in a terminal.
            assert!(
                run.stdout.contains("rwop_guard_requests_total{"),
                "{}: no rwop_guard_requests_total sample:\n{run:#?}",
                block.at()
            );
        });
    }

    /// docs/commands.md: `review --webhook mutate` of a claim whose class the policy lists
    /// answers a base64 JSON Patch that replaces the access modes. Substituted: /tmp/policy.yaml,
    /// for a temporary file.
    pub fn review_patch(block: &Block) {
        let Some(jq) = support::tools::require("docs", "jq") else {
            return;
        };
        let dir = tempfile::tempdir().unwrap();
        let policy = dir.path().join("policy.yaml");
        let script = substitute(&block.text, "/tmp/policy.yaml", &policy.to_string_lossy());
        let run = support::binary::run_command(bash(&script, &path_with(&[&jq])), b"");
        assert_eq!(run.code, 0, "{}: {script}\n{run:#?}", block.at());
        let patch: serde_json::Value = serde_json::from_str(&run.stdout).unwrap_or_else(|e| {
            panic!(
                "{}: the decoded patch is not JSON ({e}):\n{run:#?}",
                block.at()
            )
        });
        let ops = patch.as_array().expect("a JSON Patch is an array");
        assert!(
            ops.iter().any(|op| op["op"] == "replace"
                && op["path"] == "/spec/accessModes"
                && op["value"] == serde_json::json!(["ReadWriteOncePod"])),
            "{}: the patch does not replace /spec/accessModes with [ReadWriteOncePod]: {patch:#}",
            block.at()
        );
    }
}

/// The anchors GitHub gives the headings of a markdown file (outside code fences): lower case,
/// punctuation other than `-` and `_` dropped, spaces as `-`.
fn anchors(text: &str) -> BTreeSet<String> {
    let mut fenced = false;
    let mut out = BTreeSet::new();
    for line in text.lines() {
        if line.starts_with("```") {
            fenced = !fenced;
        }
        if fenced || !line.starts_with('#') {
            continue;
        }
        let title = line.trim_start_matches('#').trim().to_lowercase();
        let anchor: String = title
            .chars()
            .filter(|c| c.is_alphanumeric() || matches!(c, '-' | '_' | ' '))
            .map(|c| if c == ' ' { '-' } else { c })
            .collect();
        out.insert(anchor);
    }
    out
}

/// Every relative link of README.md, BENCHMARKS.md and docs/ (references included) names a
/// file that exists and, with `#anchor` into a markdown file, a heading it has: moving or
/// renaming a section cannot leave a dead link behind.
#[test]
fn every_relative_link_resolves() {
    let mut files = doc_files();
    files.push("BENCHMARKS.md".to_owned());
    for entry in std::fs::read_dir(root().join("docs/reference")).expect("docs/reference/") {
        let path = entry.expect("docs/reference/ entry").path();
        files.push(format!(
            "docs/reference/{}",
            path.file_name().unwrap_or_default().to_string_lossy()
        ));
    }
    let mut dead = Vec::new();
    let mut checked = 0;
    for file in &files {
        let text = std::fs::read_to_string(root().join(file)).expect("a doc file");
        let dir = Path::new(file).parent().unwrap_or(Path::new(""));
        for (i, _) in text.match_indices("](") {
            let rest = &text[i + 2..];
            let Some(end) = rest.find(')') else { continue };
            let link = &rest[..end];
            if link.contains("://") || link.starts_with("mailto:") || link.contains(' ') {
                continue;
            }
            checked += 1;
            let (path, anchor) = link.split_once('#').unwrap_or((link, ""));
            let target = if path.is_empty() {
                PathBuf::from(file)
            } else {
                dir.join(path)
            };
            let full = root().join(&target);
            if !full.exists() {
                dead.push(format!("{file}: {link}: no such file"));
                continue;
            }
            if !anchor.is_empty() && full.extension().is_some_and(|e| e == "md") {
                let text = std::fs::read_to_string(&full).expect("a linked doc");
                if !anchors(&text).contains(anchor) {
                    dead.push(format!("{file}: {link}: no such heading"));
                }
            }
        }
    }
    assert!(
        checked > 50,
        "only {checked} links found: is the parser broken?"
    );
    assert!(dead.is_empty(), "dead links:\n{}", dead.join("\n"));
}
