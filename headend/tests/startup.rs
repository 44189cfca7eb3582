//! Start-up failures as a supervisor sees them: `headend serve` exits with status 1 and says why on
//! its last stderr line, with secrets masked (Kubernetes shows that line as the pod's last state).

use std::process::Command;

/// Runs `headend serve` with `env` (and no logs but errors); returns (exit code, stderr).
fn serve(env: &[(&str, &str)]) -> (Option<i32>, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_headend"));
    cmd.arg("serve")
        .env_remove("RUST_BACKTRACE")
        .env_remove("HEADEND_CONFIG")
        .env("RUST_LOG", "error")
        .env("HEADEND_HTTP__LISTEN", "127.0.0.1:0");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("headend runs");
    (out.status.code(), String::from_utf8_lossy(&out.stderr).into_owned())
}

fn last_line(stderr: &str) -> &str {
    stderr.trim_end().lines().last().unwrap_or("")
}

#[test]
fn a_bad_mqtt_url_stops_the_start_with_one_line_and_no_password() {
    let (code, stderr) = serve(&[
        ("MQTT_URL", "mqtt://meter-gw:s3cret-pw@127.0.0.1:notaport"),
        // Never reached: the broker URL is checked first.
        ("DATABASE_URL", "postgres://postgres@127.0.0.1:1/none"),
    ]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(!stderr.contains("s3cret-pw"), "the password is masked: {stderr}");
    let line = last_line(&stderr);
    assert!(line.starts_with("headend: invalid MQTT URL \"mqtt://meter-gw:********@127.0.0.1:notaport\""), "{stderr}");
    assert!(!stderr.contains("Stack backtrace") && !stderr.contains("Caused by"), "{stderr}");
}

#[test]
fn an_unreachable_database_stops_the_start_after_its_timeout_with_one_line() {
    let (code, stderr) = serve(&[
        ("DATABASE_URL", "postgres://headend:db-s3cret@127.0.0.1:1/none"),
        ("HEADEND_DATABASE__CONNECT_TIMEOUT", "1s"),
        ("HEADEND_MQTT__ENABLED", "false"),
    ]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(!stderr.contains("db-s3cret"), "{stderr}");
    let line = last_line(&stderr);
    assert!(line.starts_with("headend: connecting to the database: "), "{stderr}");
}
