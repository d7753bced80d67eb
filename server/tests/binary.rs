//! The `shoal-server` binary as operators start it: flags over environment, the
//! loopback-only rule without tokens, and a graceful stop on SIGTERM.

use std::io::{Read, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn get(port: u16, path: &str) -> Option<String> {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut body = String::new();
    s.read_to_string(&mut body).ok()?;
    Some(body)
}

#[test]
fn flags_win_over_env_and_sigterm_stops_it_cleanly() {
    let exe = env!("CARGO_BIN_EXE_shoal-server");
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut child = Command::new(exe)
        .args(["--warehouse", dir.path().to_str().unwrap()])
        .args(["--listen", &format!("127.0.0.1:{port}")])
        // The flag wins over the environment.
        .env("SHOAL_LISTEN", "127.0.0.1:1")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let health = loop {
        if let Some(h) = get(port, "/healthz") {
            break h;
        }
        assert!(Instant::now() < deadline, "the server did not come up");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(health.starts_with("HTTP/1.1 200"), "{health}");
    let tables = get(port, "/v1/tables").unwrap();
    assert!(tables.starts_with("HTTP/1.1 200"), "{tables}");
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(30);
    let exit = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < deadline, "no exit after SIGTERM");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(exit.success(), "SIGTERM exits 0: {exit:?}");
}

#[test]
fn a_public_address_without_tokens_is_refused() {
    let exe = env!("CARGO_BIN_EXE_shoal-server");
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(exe)
        .args(["--warehouse", dir.path().to_str().unwrap()])
        .args(["--listen", "0.0.0.0:0"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--insecure"), "{err}");
}
