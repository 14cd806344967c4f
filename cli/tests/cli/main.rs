//! Integration tests of the `patchpanda` operator command: the built binary,
//! run as an operator would run it, each test on its own local home.
//!
//! Secrets are seeded through the command itself (`secrets add`), never via
//! library calls, so these tests hold the command to the contract (docs/design.md).
//!
//! One module per topic; the harness (a sandboxed home, the built binary,
//! a small HTTP server) is here.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE, URL_SAFE_NO_PAD};
use serde_json::Value;
use tempfile::TempDir;

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures");
const GITHUB_VECTOR: &str =
    "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17";

mod backup;
mod bus;
mod debug_logs;
mod health;
mod rotate;
mod rotation_ops;
mod secrets;
mod token;
mod usage;
mod webhook;

// ---------------------------------------------------------------------------
// Harness
// ---------------------------------------------------------------------------

/// One test's local state: a temp folder holding the home and scratch files.
struct Sandbox {
    dir: TempDir,
}

impl Sandbox {
    fn new() -> Self {
        Self {
            dir: tempfile::tempdir().expect("temp dir"),
        }
    }

    /// The default home of this sandbox.
    fn home(&self) -> PathBuf {
        self.dir.path().join("home")
    }

    /// Another home in the same sandbox.
    fn home_named(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn file(&self, name: &str, bytes: &[u8]) -> PathBuf {
        let p = self.dir.path().join(name);
        std::fs::write(&p, bytes).expect("write scratch file");
        p
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn pp(&self) -> Pp {
        Pp::new(&self.home())
    }

    fn at(&self, home: &Path) -> Pp {
        Pp::new(home)
    }
}

/// A `patchpanda` invocation on one home, with a clean environment.
struct Pp {
    cmd: Command,
    stdin: Option<Vec<u8>>,
}

impl Pp {
    fn new(home: &Path) -> Self {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_patchpanda"));
        for (k, _) in std::env::vars_os() {
            if k.to_string_lossy().starts_with("PATCHPANDA_") {
                cmd.env_remove(&k);
            }
        }
        for k in [
            "DEBUG",
            "GOOGLE_CLOUD_PROJECT",
            "GITHUB_APP_ID",
            "GITHUB_API_URL",
            "RUST_LOG",
        ] {
            cmd.env_remove(k);
        }
        cmd.env("PATCHPANDA_BACKEND", "local")
            .env("PATCHPANDA_HOME", home);
        // Keep the default `./.patchpanda` out of the repo, should a test's
        // home ever be ignored.
        if let Some(parent) = home.parent() {
            cmd.current_dir(parent);
        }
        Self { cmd, stdin: None }
    }

    fn env(mut self, k: &str, v: &str) -> Self {
        self.cmd.env(k, v);
        self
    }

    fn stdin(mut self, bytes: &[u8]) -> Self {
        self.stdin = Some(bytes.to_vec());
        self
    }

    fn run<S: AsRef<std::ffi::OsStr>>(mut self, args: &[S]) -> Run {
        let shown: Vec<String> = args
            .iter()
            .map(|a| a.as_ref().to_string_lossy().into_owned())
            .collect();
        self.cmd.args(args);
        self.cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
        self.cmd.stdin(if self.stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        });
        let mut child = self.cmd.spawn().expect("spawn patchpanda");
        if let Some(bytes) = self.stdin.take() {
            let mut w = child.stdin.take().expect("stdin pipe");
            // The command may exit before reading everything (on a usage
            // error); a broken pipe is then expected.
            let _ = w.write_all(&bytes);
        }
        let out = child.wait_with_output().expect("wait for patchpanda");
        Run {
            args: shown.join(" "),
            code: out.status.code().unwrap_or(-1),
            out: out.stdout,
            err: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }
}

#[derive(Debug)]
struct Run {
    args: String,
    code: i32,
    out: Vec<u8>,
    err: String,
}

impl Run {
    fn stdout(&self) -> String {
        String::from_utf8_lossy(&self.out).into_owned()
    }

    #[track_caller]
    fn ok(self) -> Self {
        assert_eq!(
            self.code,
            0,
            "`patchpanda {}` failed ({}):\nstdout: {}\nstderr: {}",
            self.args,
            self.code,
            self.stdout(),
            self.err
        );
        self
    }

    #[track_caller]
    fn json(&self) -> Value {
        serde_json::from_slice(&self.out).unwrap_or_else(|e| {
            panic!(
                "`patchpanda {}` printed no JSON ({e}): {}",
                self.args,
                self.stdout()
            )
        })
    }

    /// Exit 1 with exactly one `patchpanda: ` line on stderr; returns it.
    #[track_caller]
    fn fails_one_line(&self) -> String {
        assert_eq!(
            self.code,
            1,
            "`patchpanda {}` should fail with 1, got {}:\nstdout: {}\nstderr: {}",
            self.args,
            self.code,
            self.stdout(),
            self.err
        );
        let lines: Vec<&str> = self.err.lines().collect();
        assert_eq!(
            lines.len(),
            1,
            "`patchpanda {}`: want one stderr line, got {:?}",
            self.args,
            self.err
        );
        assert!(
            lines[0].starts_with("patchpanda: "),
            "`patchpanda {}`: {:?}",
            self.args,
            lines[0]
        );
        assert!(
            lines[0].len() > "patchpanda: ".len() + 5,
            "an empty failure line: {:?}",
            lines[0]
        );
        lines[0].to_string()
    }

    #[track_caller]
    fn usage_error(&self) {
        assert_eq!(
            self.code, 2,
            "`patchpanda {}` should be a usage error (2), got {}: {}",
            self.args, self.code, self.err
        );
        assert!(
            !self.err.trim().is_empty(),
            "a usage error says what is wrong"
        );
        assert!(
            self.out.is_empty(),
            "a usage error prints nothing on stdout: {}",
            self.stdout()
        );
    }
}

/// Adds a version from a file; returns the command's run.
fn add(pp: Pp, sb: &Sandbox, name: &str, value: &[u8]) -> Run {
    let f = sb.file(&format!("value-{}", rand_suffix()), value);
    pp.run(&[
        "secrets".as_ref(),
        "add".as_ref(),
        name.as_ref(),
        "--data-file".as_ref(),
        f.as_os_str(),
    ])
}

fn access(pp: Pp, name: &str, version: &str) -> Run {
    pp.run(&["secrets", "access", name, "--version", version])
}

fn rand_suffix() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    format!(
        "{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// Everything `secrets list --json` and `secrets versions --json` show, to
/// prove that a failed command changed nothing.
fn snapshot(home: &Path) -> String {
    let list = Pp::new(home).run(&["secrets", "list", "--json"]).ok();
    let mut out = list.stdout();
    let parsed = list.json();
    for s in parsed.as_array().expect("list --json is an array") {
        let name = s["name"].as_str().expect("name");
        out.push_str(
            &Pp::new(home)
                .run(&["secrets", "versions", name, "--json"])
                .ok()
                .stdout(),
        );
    }
    out
}

/// A home like production after a disaster: the KMS key survives (it lives
/// outside Secret Manager), the secrets do not. Copies only the keyring.
fn copy_kms_only(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("create home");
    std::fs::set_permissions(to, std::fs::Permissions::from_mode(0o700)).expect("chmod home");
    let mut copied = 0;
    for name in ["kms.db", "kms.db-wal"] {
        let src = from.join(name);
        if src.exists() {
            std::fs::copy(&src, to.join(name)).expect("copy keyring");
            copied += 1;
        }
    }
    assert!(copied > 0, "no kms.db in {}", from.display());
}

/// Three consecutive ports nothing listens on.
fn unused_port_base() -> u16 {
    for _ in 0..50 {
        let p = TcpListener::bind("127.0.0.1:0")
            .expect("bind")
            .local_addr()
            .expect("addr")
            .port();
        if p > 65_000 {
            continue;
        }
        let free = (0..3).all(|i| TcpListener::bind(("127.0.0.1", p + i)).is_ok());
        if free {
            return p;
        }
    }
    panic!("no three free consecutive ports");
}

/// A request seen by [`MiniServer`].
#[derive(Debug, Clone)]
struct Seen {
    method: String,
    path: String,
    headers: BTreeMap<String, String>,
    body: Vec<u8>,
}

/// A tiny HTTP/1.1 server on 127.0.0.1:0 answering every request the same.
struct MiniServer {
    port: u16,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl MiniServer {
    fn start(status: u16, body: &'static str) -> Self {
        Self::start_guarded(status, body, None)
    }

    /// Like a private Cloud Run service: 401 unless the request carries
    /// `Authorization: Bearer <token>`.
    fn requiring_bearer(token: &'static str, status: u16, body: &'static str) -> Self {
        Self::start_guarded(status, body, Some(token))
    }

    fn start_guarded(status: u16, body: &'static str, bearer: Option<&'static str>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut s) = stream else { continue };
                let mut authorized = bearer.is_none();
                if let Some(req) = read_request(&mut s) {
                    let sent = req.headers.get("authorization").cloned();
                    authorized |= bearer.is_some_and(|t| sent == Some(format!("Bearer {t}")));
                    log.lock().unwrap_or_else(|p| p.into_inner()).push(req);
                }
                let (status, body) = if authorized {
                    (status, body)
                } else {
                    (401, "unauthorized")
                };
                let reply = format!(
                    "HTTP/1.1 {status} X\r\ncontent-type: text/plain\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = s.write_all(reply.as_bytes());
            }
        });
        Self { port, seen }
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

fn read_request(s: &mut TcpStream) -> Option<Seen> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let n = s.read(&mut chunk).ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let mut lines = head.lines();
    let mut first = lines.next()?.split(' ');
    let method = first.next()?.to_string();
    let path = first.next()?.to_string();
    let headers: BTreeMap<String, String> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let len: usize = headers
        .get("content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let mut body = buf[head_end..].to_vec();
    while body.len() < len {
        let n = s.read(&mut chunk).ok()?;
        if n == 0 {
            break;
        }
        body.extend_from_slice(&chunk[..n]);
    }
    Some(Seen {
        method,
        path,
        headers,
        body,
    })
}

/// A home with both required secrets, as `patchpanda dev` would seed them.
fn seeded(sb: &Sandbox, home: &Path, webhook: &[u8], key: &[u8]) {
    add(sb.at(home), sb, "webhook-secret", webhook).ok();
    add(sb.at(home), sb, "github-private-key", key).ok();
}

fn b64url_json(part: &str) -> Value {
    let bytes = URL_SAFE_NO_PAD.decode(part).expect("base64url JWT part");
    serde_json::from_slice(&bytes).expect("JWT part is JSON")
}

/// An ID token as Google's token endpoint returns it (never checked here).
const GOOGLE_ID_TOKEN: &str =
    "eyJhbGciOiJSUzI1NiIsImtpZCI6ImsxIn0.eyJhdWQiOiJjaWQiLCJlbWFpbCI6Im9wQGV4YW1wbGUuY29tIn0.c2ln";

/// gcloud's user credentials (`gcloud auth application-default login`),
/// with the token endpoint pointed at a stand-in for oauth2.googleapis.com
/// that answers every refresh with [`GOOGLE_ID_TOKEN`]. Returns the ADC
/// file and the stand-in.
fn gcloud_user_adc(sb: &Sandbox) -> (PathBuf, MiniServer) {
    let oauth = MiniServer::start(
        200,
        r#"{"access_token":"ya29.test","id_token":"eyJhbGciOiJSUzI1NiIsImtpZCI6ImsxIn0.eyJhdWQiOiJjaWQiLCJlbWFpbCI6Im9wQGV4YW1wbGUuY29tIn0.c2ln","token_type":"Bearer","expires_in":3600}"#,
    );
    let adc = serde_json::json!({
        "type": "authorized_user",
        "client_id": "cid.apps.googleusercontent.com",
        "client_secret": "csecret",
        "refresh_token": "1//refresh",
        "token_uri": oauth.url("/token"),
    });
    let path = sb.file("adc.json", adc.to_string().as_bytes());
    (path, oauth)
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && haystack.windows(needle.len()).any(|w| w == needle)
}
