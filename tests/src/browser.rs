//! A real headless Chromium (Debian's `chromium`), driven over WebDriver by Debian's
//! `chromedriver`: a page is loaded, read with scripts, and photographed. The WebDriver
//! protocol is plain HTTP with JSON, spoken here with a few lines over a TCP stream.

use crate::{Guarded, free_port};
use serde_json::{Value, json};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// A Chromium session.
pub struct Browser {
    driver: Option<Guarded>,
    port: u16,
    session: String,
    profile: PathBuf,
}

/// Chromium's flags as root in a sandboxed VM with no network but loopback: no sandbox (root),
/// no GPU, and nothing that phones home (it would fail, loudly and often).
const FLAGS: [&str; 10] = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--hide-scrollbars",
];

impl Browser {
    /// Starts chromedriver and a Chromium session with a window of `width`×`height`.
    pub fn start(width: u32, height: u32) -> Self {
        for bin in ["/usr/bin/chromium", "/usr/bin/chromedriver"] {
            assert!(
                Path::new(bin).exists(),
                "{bin} is missing: run scripts/install-deps (Debian's chromium and chromium-driver)"
            );
        }
        let port = free_port();
        let mut cmd = Command::new("/usr/bin/chromedriver");
        cmd.arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let driver = Guarded::spawn(cmd).expect("starting chromedriver");
        let profile = std::env::temp_dir().join(format!(
            "univrs-test-chromium-{}-{port}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&profile);
        std::fs::create_dir_all(&profile).unwrap();
        let mut args: Vec<String> = FLAGS.iter().map(|s| s.to_string()).collect();
        args.push(format!("--user-data-dir={}", profile.display()));
        args.push(format!("--window-size={width},{height}"));
        let deadline = Instant::now() + Duration::from_secs(30);
        let session = loop {
            match request(
                port,
                "POST",
                "/session",
                Some(json!({
                    "capabilities": {"alwaysMatch": {
                        "browserName": "chrome",
                        "goog:chromeOptions": {"binary": "/usr/bin/chromium", "args": args},
                    }}
                })),
            ) {
                Ok(v) if v["value"]["sessionId"].is_string() => {
                    break v["value"]["sessionId"].as_str().unwrap().to_string();
                }
                other => {
                    if Instant::now() > deadline {
                        kill_chromium(&profile);
                        panic!("no Chromium session: {other:?}");
                    }
                    std::thread::sleep(Duration::from_millis(200));
                }
            }
        };
        Self {
            driver: Some(driver),
            port,
            session,
            profile,
        }
    }

    fn call(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let path = format!("/session/{}{path}", self.session);
        let v = request(self.port, method, &path, body)
            .unwrap_or_else(|e| panic!("WebDriver {method} {path}: {e}"));
        if v["value"]["error"].is_string() {
            panic!("WebDriver {method} {path}: {}", v["value"]);
        }
        v["value"].clone()
    }

    /// Loads `url`.
    pub fn goto(&self, url: &str) {
        self.call("POST", "/url", Some(json!({ "url": url })));
    }

    /// Changes the window's size (a phone: 390×844).
    pub fn resize(&self, width: u32, height: u32) {
        self.call(
            "POST",
            "/window/rect",
            Some(json!({ "width": width, "height": height })),
        );
    }

    /// The value `script` (a function body) returns in the page.
    pub fn eval(&self, script: &str) -> Value {
        self.call(
            "POST",
            "/execute/sync",
            Some(json!({ "script": script, "args": [] })),
        )
    }

    /// Waits until `script` returns something truthy (the value), failing the test with `what`
    /// and the last value after `timeout`.
    pub fn wait_for(&self, what: &str, timeout: Duration, script: &str) -> Value {
        let start = Instant::now();
        loop {
            let v = self.eval(script);
            let truthy = match &v {
                Value::Null | Value::Bool(false) => false,
                Value::Number(n) => n.as_f64() != Some(0.0),
                Value::String(s) => !s.is_empty(),
                _ => true,
            };
            if truthy {
                return v;
            }
            assert!(
                start.elapsed() < timeout,
                "waited {timeout:?} for {what}; last: {v}"
            );
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    /// What the page gets wrong for people with screen readers, keyboards or weaker eyes
    /// (`a11y.js`): empty when nothing.
    pub fn accessibility_problems(&self) -> Vec<String> {
        let v = self.eval(include_str!("a11y.js"));
        serde_json::from_value(v).expect("a list of problems")
    }

    /// A screenshot of the window, saved as PNG at `path` and returned decoded.
    pub fn screenshot(&self, path: &Path) -> crate::png::Image {
        use base64::Engine;
        let v = self.call("GET", "/screenshot", None);
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(v.as_str().expect("a base64 screenshot"))
            .expect("base64");
        std::fs::write(path, &bytes).unwrap();
        crate::png::decode(&bytes).unwrap_or_else(|e| panic!("decoding {}: {e}", path.display()))
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // Closing the session quits Chromium; then chromedriver goes.
        let _ = request(
            self.port,
            "DELETE",
            &format!("/session/{}", self.session),
            None,
        );
        self.driver.take();
        kill_chromium(&self.profile);
    }
}

/// Kills what is left of the Chromium using `profile` (chromedriver leaves it behind when it
/// dies first), and removes the profile.
fn kill_chromium(profile: &Path) {
    let _ = Command::new("pkill")
        .args(["-f", &format!("user-data-dir={}", profile.display())])
        .status();
    let _ = std::fs::remove_dir_all(profile);
}

/// One HTTP/1.1 request to chromedriver on loopback, its JSON answer.
fn request(port: u16, method: &str, path: &str, body: Option<Value>) -> Result<Value, String> {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(Duration::from_secs(120)))
        .map_err(|e| e.to_string())?;
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .map_err(|e| e.to_string())?;
    // chromedriver keeps the connection open whatever the request says: read the head, then
    // exactly its Content-Length (or chunks up to the last one).
    let mut answer = Vec::new();
    let mut buf = [0u8; 65536];
    let (head_len, length, chunked) = loop {
        let n = s.read(&mut buf).map_err(|e| e.to_string())?;
        if n == 0 {
            return Err("closed before the answer's head".into());
        }
        answer.extend_from_slice(&buf[..n]);
        if let Some(i) = answer.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&answer[..i]).to_ascii_lowercase();
            let length = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse::<usize>().ok());
            break (i + 4, length, head.contains("transfer-encoding: chunked"));
        }
    };
    loop {
        let body = &answer[head_len..];
        let done = match length {
            Some(n) => body.len() >= n,
            None if chunked => body.ends_with(b"0\r\n\r\n"),
            None => false,
        };
        if done {
            break;
        }
        let n = s.read(&mut buf).map_err(|e| e.to_string())?;
        if n == 0 {
            break;
        }
        answer.extend_from_slice(&buf[..n]);
    }
    let rest = String::from_utf8_lossy(&answer[head_len..]).into_owned();
    let body = if chunked { dechunk(&rest) } else { rest };
    serde_json::from_str(&body).map_err(|e| format!("{e}: {body}"))
}

/// The body of a chunked HTTP answer.
fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = s.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        s = rest[n..].trim_start_matches("\r\n");
    }
    out
}
