//! Runs docs/tutorial.md as written, so that the tutorial cannot drift from what gatehouse
//! does. The page is the source of truth; this file only knows how to read it:
//!
//! - Every ```` ```sh ```` block is a command, run with `bash` in a scratch directory that
//!   holds copies of `conf/` and `geoip-fixtures/` (the tutorial's commands are written for
//!   the root of a checkout). A ```` ```text ```` block right after it (blank lines between
//!   are allowed) is what its stdout must be; a `sh` block without one must print nothing.
//!   Every block must exit 0 within [`STEP_TIMEOUT`].
//! - In an expected output, a line that is `...` matches any number of lines, and `...`
//!   inside a line matches any text on that line. Trailing spaces (and the `\r` of HTTP
//!   headers) are ignored.
//! - `<!-- test: foreground ready=URL -->` before a block marks a command that the reader
//!   runs in a terminal of its own (`make run`): the test starts it in the background and
//!   waits until URL answers 200. `<!-- test: interrupt -->` is the reader's Ctrl-C in that
//!   terminal: SIGINT to its process group.
//! - `make run` is replaced by the recipe of the Makefile's `run` target (read from the
//!   Makefile, so the two cannot part ways): the same binary on the same config, without
//!   the release build that precedes it. `./target/release/gatehouse` is replaced by the
//!   binary cargo built for this test (the same source, in the debug profile).
//! - The ports 8080, 9901 and 9001 (proxy, admin, demo upstream) are replaced, in the page
//!   and in the copy of `conf/`, by ports that were free a moment before, and `0.0.0.0` by
//!   `127.0.0.1` in the copy of `conf/`. Should another process take one of them first
//!   (a gatehouse log then says "is in use"), the whole tutorial is run again on new ports.
//!
//! Two more checks keep the rest of the documentation honest: every relative link of the
//! README, the changelog and `docs/` leads to a file and heading that exist (and the README
//! stays a front page of at most 250 lines), and every key of `conf/gatehouse.yaml` is named
//! on `docs/configuration.md`, which links it to the page that explains it.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test may panic on what it did not expect

use std::fmt::Write as _;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const STEP_TIMEOUT: Duration = Duration::from_secs(60);
const ROOT: &str = env!("CARGO_MANIFEST_DIR");
const BIN: &str = env!("CARGO_BIN_EXE_gatehouse");
/// The ports the tutorial and `conf/` use: proxy, admin, demo upstream.
const PORTS: [&str; 3] = ["8080", "9901", "9001"];
const ATTEMPTS: usize = 3;
/// How long Ctrl-C may take to stop the foreground command.
const INTERRUPT_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, PartialEq)]
enum Step {
    /// A command and the stdout it must print (`None`: nothing).
    Run {
        line: usize,
        cmd: String,
        expected: Option<String>,
    },
    /// A long-running command, started in the background; ready when `ready` answers 200.
    Foreground {
        line: usize,
        cmd: String,
        ready: String,
    },
    /// Ctrl-C to the foreground command.
    Interrupt { line: usize },
}

/// Reads the steps of the page. Only `sh` and `text` blocks and `test:` comments count.
fn parse(md: &str) -> Result<Vec<Step>, String> {
    let mut steps = Vec::new();
    let mut lines = md.lines().enumerate().map(|(i, l)| (i + 1, l)).peekable();
    let mut pending_foreground: Option<String> = None;
    // Whether the last thing read was a `sh` block that a `text` block may follow.
    let mut after_sh = false;
    while let Some((n, line)) = lines.next() {
        let t = line.trim();
        if let Some(rest) = t.strip_prefix("<!-- test:") {
            let directive = rest
                .strip_suffix("-->")
                .ok_or_else(|| format!("line {n}: a test directive ends on its own line"))?
                .trim();
            if directive == "interrupt" {
                steps.push(Step::Interrupt { line: n });
            } else if let Some(url) = directive.strip_prefix("foreground ready=") {
                pending_foreground = Some(url.trim().to_string());
            } else {
                return Err(format!("line {n}: unknown test directive {directive:?}"));
            }
            after_sh = false;
            continue;
        }
        let Some(info) = t.strip_prefix("```") else {
            if !t.is_empty() {
                after_sh = false;
            }
            continue;
        };
        let lang = info.split_whitespace().next().unwrap_or("").to_string();
        let mut body = String::new();
        loop {
            match lines.next() {
                Some((_, l)) if l.trim() == "```" => break,
                Some((_, l)) => {
                    body.push_str(l);
                    body.push('\n');
                }
                None => return Err(format!("line {n}: code block not closed")),
            }
        }
        match lang.as_str() {
            "sh" => {
                if let Some(ready) = pending_foreground.take() {
                    steps.push(Step::Foreground {
                        line: n,
                        cmd: body,
                        ready,
                    });
                    after_sh = false;
                } else {
                    steps.push(Step::Run {
                        line: n,
                        cmd: body,
                        expected: None,
                    });
                    after_sh = true;
                }
            }
            "text" if after_sh => {
                if let Some(Step::Run { expected, .. }) = steps.last_mut() {
                    *expected = Some(body);
                }
                after_sh = false;
            }
            "text" => return Err(format!("line {n}: a text block that follows no sh block")),
            _ => after_sh = false,
        }
        if pending_foreground.is_some() && lang != "sh" {
            return Err(format!(
                "line {n}: a foreground directive must come right before a sh block"
            ));
        }
    }
    if pending_foreground.is_some() {
        return Err("a foreground directive with no sh block after it".into());
    }
    Ok(steps)
}

/// Whether `actual` is what `expected` shows, with the `...` wildcards of the module doc.
fn output_matches(expected: &str, actual: &str) -> bool {
    let clean = |s: &str| -> Vec<String> {
        let mut v: Vec<String> = s.lines().map(|l| l.trim_end().to_string()).collect();
        while v.last().is_some_and(|l| l.is_empty()) {
            v.pop();
        }
        v
    };
    let (e, a) = (clean(expected), clean(actual));
    lines_match(&e, &a)
}

fn lines_match(exp: &[String], act: &[String]) -> bool {
    match exp.split_first() {
        None => act.is_empty(),
        Some((e, rest)) if e == "..." => (0..=act.len()).any(|i| lines_match(rest, &act[i..])),
        Some((e, rest)) => {
            !act.is_empty() && line_matches(e, &act[0]) && lines_match(rest, &act[1..])
        }
    }
}

fn line_matches(pattern: &str, s: &str) -> bool {
    let parts: Vec<&str> = pattern.split("...").collect();
    if parts.len() == 1 {
        return pattern == s;
    }
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if s.len() < first.len() + last.len() || !s.starts_with(first) || !s.ends_with(last) {
        return false;
    }
    let mut rest = &s[first.len()..s.len() - last.len()];
    for mid in &parts[1..parts.len() - 1] {
        match rest.find(mid) {
            Some(i) => rest = &rest[i + mid.len()..],
            None => return false,
        }
    }
    true
}

/// The recipe of the Makefile's `run` target with `$(CONFIG)` replaced by its default.
fn make_run_recipe() -> String {
    let mk = std::fs::read_to_string(Path::new(ROOT).join("Makefile")).expect("read Makefile");
    let config = mk
        .lines()
        .find_map(|l| l.strip_prefix("CONFIG ?="))
        .expect("the Makefile sets CONFIG ?= ...")
        .trim()
        .to_string();
    let mut lines = mk.lines().skip_while(|l| !l.starts_with("run:"));
    lines.next().expect("the Makefile has a run target");
    let recipe: Vec<&str> = lines
        .take_while(|l| l.starts_with('\t'))
        .map(str::trim)
        .collect();
    assert_eq!(
        recipe.len(),
        1,
        "the run target is one command after its prerequisites: {recipe:?}"
    );
    let cmd = recipe[0].replace("$(CONFIG)", &config);
    assert!(
        cmd.starts_with("./target/release/gatehouse "),
        "make run runs the release binary: {cmd}"
    );
    cmd
}

fn free_ports() -> Vec<String> {
    // Held together so that the three differ.
    let held: Vec<TcpListener> = PORTS
        .iter()
        .map(|_| TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port"))
        .collect();
    held.iter()
        .map(|l| l.local_addr().expect("local address").port().to_string())
        .collect()
}

fn substitute_ports(s: &str, ports: &[String]) -> String {
    let mut s = s.to_string();
    for (from, to) in PORTS.iter().zip(ports) {
        s = s.replace(from, to);
    }
    s
}

fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// What the reader types, turned into what the test runs.
fn command(cmd: &str, ports: &[String], make_run: &str) -> String {
    let bin = shell_quote(BIN);
    let cmd = substitute_ports(cmd, ports);
    let cmd = cmd
        .lines()
        .map(|l| if l.trim() == "make run" { make_run } else { l })
        .collect::<Vec<_>>()
        .join("\n");
    cmd.replace("./target/release/gatehouse", &bin)
}

/// The scratch directory: conf/ and geoip-fixtures/ as in a checkout, on the test's ports.
fn scratch(ports: &[String]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("temp dir");
    for sub in ["conf", "geoip-fixtures"] {
        std::fs::create_dir(dir.path().join(sub)).expect("mkdir");
        for e in std::fs::read_dir(Path::new(ROOT).join(sub)).expect("read dir") {
            let p = e.expect("dir entry").path();
            let name = p.file_name().expect("file name").to_owned();
            let to = dir.path().join(sub).join(&name);
            match p.extension().and_then(|x| x.to_str()) {
                Some("yaml") => {
                    let text = std::fs::read_to_string(&p).expect("read config");
                    let text = substitute_ports(&text, ports).replace("0.0.0.0:", "127.0.0.1:");
                    std::fs::write(&to, text).expect("write config");
                }
                Some("mmdb") => {
                    std::fs::copy(&p, &to).expect("copy database");
                }
                _ => {}
            }
        }
    }
    dir
}

fn bash(cmd: &str, dir: &Path, out: &Path, err: &Path) -> Command {
    let mut c = Command::new("bash");
    c.arg("-c")
        .arg(cmd)
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(out).expect("create output file"))
        .stderr(std::fs::File::create(err).expect("create error file"))
        // The page's outputs assume gatehouse's default log level and a direct curl.
        .env_remove("RUST_LOG")
        .env_remove("http_proxy")
        .env_remove("HTTP_PROXY")
        .env_remove("https_proxy")
        .env_remove("HTTPS_PROXY")
        .env_remove("all_proxy")
        .env_remove("ALL_PROXY")
        .process_group(0);
    c
}

fn signal_group(pgid: u32, sig: &str) {
    let _ = Command::new("bash")
        .arg("-c")
        .arg(format!("kill -{sig} -- -{pgid}"))
        .stderr(Stdio::null())
        .status();
}

fn wait_timeout(child: &mut Child, timeout: Duration) -> Option<std::process::ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(s) = child.try_wait().expect("wait for a child") {
            return Some(s);
        }
        if Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// GET `url` (plain http, an ip:port host); whether it answered 200.
fn answers_200(url: &str) -> bool {
    let Some(rest) = url.strip_prefix("http://") else {
        panic!("ready URL must be http://ip:port/path: {url}");
    };
    let (host, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let Ok(mut s) = TcpStream::connect(host) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    let req = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
    if s.write_all(req.as_bytes()).is_err() {
        return false;
    }
    let mut buf = String::new();
    let _ = s.read_to_string(&mut buf);
    buf.starts_with("HTTP/1.1 200")
}

/// Whether process `pid` runs (not a zombie) the binary of this test.
fn is_our_gatehouse(pid: u32) -> bool {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let state = stat.rsplit(')').next().unwrap_or("").trim_start();
    if state.is_empty() || state.starts_with('Z') {
        return false;
    }
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    cmdline.starts_with(BIN.as_bytes())
}

/// Processes started by the tutorial's commands, stopped whatever happens.
#[derive(Default)]
struct Processes {
    foreground: Option<Child>,
    /// Process ids the commands wrote to `gatehouse.pid`.
    background: Vec<u32>,
}

impl Processes {
    fn stop_foreground(&mut self) {
        if let Some(mut c) = self.foreground.take() {
            signal_group(c.id(), "KILL");
            let _ = c.wait();
        }
    }

    /// Waits for the background processes to exit by themselves (the tutorial stops them);
    /// an error names those still running.
    fn wait_background(&mut self, timeout: Duration) -> Result<(), String> {
        let deadline = Instant::now() + timeout;
        while self.background.iter().any(|&p| is_our_gatehouse(p)) {
            if Instant::now() > deadline {
                return Err(format!(
                    "still running at the end of the tutorial: {:?}",
                    self.background
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        self.background.clear();
        Ok(())
    }
}

impl Drop for Processes {
    fn drop(&mut self) {
        self.stop_foreground();
        for &pid in &self.background {
            if is_our_gatehouse(pid) {
                let _ = Command::new("bash")
                    .arg("-c")
                    .arg(format!("kill -KILL {pid}"))
                    .status();
            }
        }
    }
}

/// Runs every step on `ports`; an error says which step failed and how.
fn run_tutorial(steps: &[Step], ports: &[String], dir: &Path) -> Result<(), String> {
    let make_run = make_run_recipe();
    let mut procs = Processes::default();
    for (i, step) in steps.iter().enumerate() {
        let out = dir.join(format!(".step-{i}.out"));
        let err = dir.join(format!(".step-{i}.err"));
        match step {
            Step::Run {
                line,
                cmd,
                expected,
            } => {
                let script = command(cmd, ports, &make_run);
                let mut child = bash(&script, dir, &out, &err).spawn().expect("run bash");
                let status = wait_timeout(&mut child, STEP_TIMEOUT);
                if status.is_none() {
                    signal_group(child.id(), "KILL");
                    let _ = child.wait();
                }
                let stdout = std::fs::read_to_string(&out).unwrap_or_default();
                let stderr = std::fs::read_to_string(&err).unwrap_or_default();
                if let Ok(pid) = std::fs::read_to_string(dir.join("gatehouse.pid")) {
                    if let Ok(pid) = pid.trim().parse() {
                        if !procs.background.contains(&pid) {
                            procs.background.push(pid);
                        }
                    }
                }
                let want = substitute_ports(expected.as_deref().unwrap_or(""), ports);
                let problem = match status {
                    None => Some(format!("did not finish within {STEP_TIMEOUT:?}")),
                    Some(s) if !s.success() => Some(format!("exited with {s}")),
                    Some(_) if !output_matches(&want, &stdout) => {
                        Some("printed something else than the page shows".to_string())
                    }
                    Some(_) => None,
                };
                if let Some(problem) = problem {
                    return Err(format!(
                        "docs/tutorial.md line {line}: the command\n{script}\n{problem}.\n\
                         --- expected ---\n{want}--- stdout ---\n{stdout}\n--- stderr ---\n{stderr}"
                    ));
                }
            }
            Step::Foreground { line, cmd, ready } => {
                procs.stop_foreground();
                let script = command(cmd, ports, &make_run);
                let ready = substitute_ports(ready, ports);
                let mut child = bash(&script, dir, &dir.join("foreground.log"), &err)
                    .spawn()
                    .expect("run bash");
                let deadline = Instant::now() + STEP_TIMEOUT;
                while !answers_200(&ready) {
                    if let Some(s) = child.try_wait().expect("wait") {
                        return Err(format!(
                            "docs/tutorial.md line {line}: {script} exited with {s} before {ready} answered"
                        ));
                    }
                    if Instant::now() > deadline {
                        return Err(format!(
                            "docs/tutorial.md line {line}: {ready} did not answer 200 within {STEP_TIMEOUT:?}"
                        ));
                    }
                    std::thread::sleep(Duration::from_millis(50));
                }
                procs.foreground = Some(child);
            }
            Step::Interrupt { line } => {
                let Some(mut child) = procs.foreground.take() else {
                    return Err(format!(
                        "docs/tutorial.md line {line}: an interrupt with nothing in the foreground"
                    ));
                };
                signal_group(child.id(), "INT");
                if wait_timeout(&mut child, INTERRUPT_TIMEOUT).is_none() {
                    signal_group(child.id(), "KILL");
                    let _ = child.wait();
                    return Err(format!(
                        "docs/tutorial.md line {line}: Ctrl-C (SIGINT) did not stop gatehouse \
                         within {INTERRUPT_TIMEOUT:?}"
                    ));
                }
            }
        }
    }
    if procs.foreground.is_some() {
        return Err("the tutorial leaves its foreground command running".into());
    }
    procs.wait_background(STEP_TIMEOUT)
}

/// Whether a gatehouse log in `dir` says that a port was taken.
fn port_was_taken(dir: &Path) -> bool {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return false;
    };
    entries.flatten().any(|e| {
        let p: PathBuf = e.path();
        p.extension().is_some_and(|x| x == "log" || x == "err")
            && std::fs::read_to_string(&p).is_ok_and(|t| t.contains("is in use"))
    })
}

#[test]
fn the_tutorial_runs_as_written() {
    let md = std::fs::read_to_string(Path::new(ROOT).join("docs/tutorial.md"))
        .expect("read docs/tutorial.md");
    let steps = parse(&md).unwrap_or_else(|e| panic!("docs/tutorial.md: {e}"));
    // The page must still be made of steps this test runs, not of blocks it skips.
    let runs = steps
        .iter()
        .filter(|s| {
            matches!(
                s,
                Step::Run {
                    expected: Some(_),
                    ..
                }
            )
        })
        .count();
    assert!(
        runs >= 10,
        "only {runs} commands with an output in the tutorial"
    );
    let mut failures = String::new();
    for attempt in 1..=ATTEMPTS {
        let ports = free_ports();
        let dir = scratch(&ports);
        match run_tutorial(&steps, &ports, dir.path()) {
            Ok(()) => return,
            Err(e) if port_was_taken(dir.path()) && attempt < ATTEMPTS => {
                let _ = writeln!(failures, "attempt {attempt} on ports {ports:?}: {e}");
            }
            Err(e) => panic!("{failures}{e}"),
        }
    }
}

#[test]
fn wildcards_match_what_they_say() {
    assert!(output_matches("a\nb\n", "a\nb\n"));
    assert!(output_matches("a\nb", "a\r\nb  \n\n"));
    assert!(!output_matches("a\nb\n", "a\nc\n"));
    assert!(!output_matches("a\n", "a\nb\n"));
    // `...` on its own line: any number of lines, none included.
    assert!(output_matches("a\n...\nd\n", "a\nb\nc\nd\n"));
    assert!(output_matches("a\n...\nd\n", "a\nd\n"));
    assert!(!output_matches("a\n...\nd\n", "a\nb\n"));
    // `...` in a line: any text on that line, and only there.
    assert!(line_matches(
        "Date: ...",
        "Date: Tue, 01 Dec 2026 10:19:22 GMT"
    ));
    assert!(line_matches("x...y...z", "x1y2z"));
    assert!(line_matches("x...y...z", "xyz"));
    assert!(!line_matches("x...y...z", "x1z"));
    assert!(!line_matches("ab...ba", "aba"));
    assert!(!line_matches("Date: ...", "Server: x"));
}

#[test]
fn the_page_is_read_as_described() {
    let md = "\
prose\n\
<!-- test: foreground ready=http://127.0.0.1:9901/ready -->\n\
```sh\nmake run\n```\n\
```sh\ncurl x\n```\n\n```text\nout\n```\n\
```yaml\nnot: run\n```\n\
```sh\ntouch f\n```\n";
    assert_eq!(
        parse(md).unwrap(),
        vec![
            Step::Foreground {
                line: 3,
                cmd: "make run\n".into(),
                ready: "http://127.0.0.1:9901/ready".into()
            },
            Step::Run {
                line: 6,
                cmd: "curl x\n".into(),
                expected: Some("out\n".into())
            },
            Step::Run {
                line: 16,
                cmd: "touch f\n".into(),
                expected: None
            },
        ]
    );
    let text_after_prose = format!("{md}prose\n```text\nout\n```\n");
    assert!(
        parse(&text_after_prose).is_err(),
        "a text block after prose belongs to no command"
    );
    assert!(parse("<!-- test: frobnicate -->\n").is_err());
    assert_eq!(
        command("make run", &free_ports(), &make_run_recipe()),
        format!("{} -c conf/gatehouse.yaml", shell_quote(BIN))
    );
}

/// GitHub's anchor of a heading: lower case, spaces to `-`, punctuation other than `-` and
/// `_` dropped.
fn anchor(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter_map(|c| match c {
            ' ' => Some('-'),
            c if c.is_alphanumeric() || c == '-' || c == '_' => Some(c),
            _ => None,
        })
        .collect()
}

/// The anchors of a markdown file's headings (outside code blocks).
fn anchors(md: &str) -> Vec<String> {
    let mut in_code = false;
    let mut v = Vec::new();
    for l in md.lines() {
        if l.trim_start().starts_with("```") {
            in_code = !in_code;
        } else if !in_code && l.starts_with('#') {
            v.push(anchor(l.trim_start_matches('#').replace('\\', "").as_str()));
        }
    }
    v
}

/// The targets of the inline links `[text](target)` of a markdown file, outside code.
fn links(md: &str) -> Vec<String> {
    let mut in_code = false;
    let mut v = Vec::new();
    for l in md.lines() {
        if l.trim_start().starts_with("```") {
            in_code = !in_code;
            continue;
        }
        if in_code {
            continue;
        }
        let mut rest = l;
        while let Some(i) = rest.find("](") {
            let after = &rest[i + 2..];
            match after.find(')') {
                Some(j) => {
                    v.push(after[..j].to_string());
                    rest = &after[j..];
                }
                None => break,
            }
        }
    }
    v
}

#[test]
fn every_link_of_the_readme_and_the_docs_resolves() {
    let root = Path::new(ROOT);
    let mut pages = vec![root.join("README.md"), root.join("CHANGELOG.md")];
    for e in std::fs::read_dir(root.join("docs")).expect("docs/") {
        let p = e.expect("dir entry").path();
        if p.extension().is_some_and(|x| x == "md") {
            pages.push(p);
        }
    }
    let mut broken = Vec::new();
    let mut checked = 0;
    for page in &pages {
        let md = std::fs::read_to_string(page).expect("read page");
        for target in links(&md) {
            if target.starts_with("http://") || target.starts_with("https://") {
                continue;
            }
            checked += 1;
            let (file, frag) = match target.split_once('#') {
                Some((f, a)) => (f, Some(a)),
                None => (target.as_str(), None),
            };
            let path = if file.is_empty() {
                page.clone()
            } else {
                page.parent().expect("parent").join(file)
            };
            if !path.exists() {
                broken.push(format!("{}: {target} (no such file)", page.display()));
                continue;
            }
            if let Some(frag) = frag {
                let text = std::fs::read_to_string(&path).unwrap_or_default();
                if !anchors(&text).iter().any(|a| a == frag) {
                    broken.push(format!("{}: {target} (no such heading)", page.display()));
                }
            }
        }
    }
    assert!(checked > 50, "only {checked} links found");
    assert!(broken.is_empty(), "broken links:\n{}", broken.join("\n"));
    let readme = std::fs::read_to_string(root.join("README.md")).expect("README.md");
    let n = readme.lines().count();
    assert!(
        n <= 250,
        "README.md has {n} lines; it is a front page (at most 250)"
    );
}

/// The keys of a YAML config, commented-out examples included (a `#` that starts a line's
/// text before column 20; comments further right are prose).
fn config_keys(yaml: &str) -> Vec<String> {
    let ident = |s: &str| -> Option<String> {
        let s = s.trim_start();
        let end = s
            .find(|c: char| !(c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'))
            .unwrap_or(s.len());
        let (name, after) = s.split_at(end);
        (!name.is_empty() && after.starts_with(':')).then(|| name.to_string())
    };
    let mut keys: Vec<String> = Vec::new();
    for l in yaml.lines() {
        let text = match l.find('#') {
            Some(i) if l[..i].trim().is_empty() && i < 20 => &l[i + 1..],
            Some(i) => &l[..i],
            None => l,
        };
        let text = text.trim_start().trim_start_matches("- ");
        let mut found: Vec<String> = ident(text).into_iter().collect();
        // Keys of a flow mapping: `{ listen: "...", timeout: 1s }`.
        if let Some(i) = text.find('{') {
            for part in text[i..].split(['{', ',']).skip(1) {
                found.extend(ident(part));
            }
        }
        for k in found {
            if !keys.contains(&k) {
                keys.push(k);
            }
        }
    }
    keys
}

#[test]
fn every_key_of_the_example_config_is_in_the_configuration_page() {
    let root = Path::new(ROOT);
    let yaml = std::fs::read_to_string(root.join("conf/gatehouse.yaml")).expect("config");
    let page = std::fs::read_to_string(root.join("docs/configuration.md")).expect("page");
    let keys = config_keys(&yaml);
    assert!(keys.len() > 80, "only {} keys found: {keys:?}", keys.len());
    let named = |k: &str| {
        page.match_indices(k).any(|(i, _)| {
            let before = page[..i].chars().next_back();
            let after = page[i + k.len()..].chars().next();
            matches!(before, Some('`' | '.' | ' '))
                && matches!(after, Some('`' | '.' | ',' | '[' | ' '))
        })
    };
    let missing: Vec<&String> = keys.iter().filter(|k| !named(k)).collect();
    assert!(
        missing.is_empty(),
        "keys of conf/gatehouse.yaml that docs/configuration.md does not name: {missing:?}"
    );
}
