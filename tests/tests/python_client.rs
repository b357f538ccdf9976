//! The Python client kit (`examples/python`) against the real gateway: the
//! contract is usable from a non-Rust stack.
//!
//! Starts a test bed, generates the Python stubs into a temporary directory
//! with `grpc_tools.protoc`, and runs `examples/python/test_client.py`
//! (the client kit) or `examples/python/test_signing.py` (signing with the
//! key files `liandong-certs init` writes, against a gateway that checks
//! signatures), streaming its output.
//!
//! The interpreter is a project-local virtual environment, never the
//! system's Python: `LIANDONG_PYTHON` when set (`scripts/test` sets it to
//! `target/py-venv/bin/python` after installing
//! `examples/python/requirements.txt` there), else `target/py-venv` when it
//! exists. Without a usable one the test skips with a message saying how to
//! make it, unless `LIANDONG_REQUIRE_PYTHON=1` makes that a failure.

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use liandong_tests::Testbed;

/// Longest the Python suite may run.
const SUITE_TIMEOUT: Duration = Duration::from_secs(300);

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ sits in the workspace")
        .to_owned()
}

/// Names the interpreter to use.
const PYTHON_VAR: &str = "LIANDONG_PYTHON";

/// The project-local virtual environment's interpreter.
fn venv_python() -> PathBuf {
    workspace().join("target/py-venv/bin/python")
}

/// The interpreter: `LIANDONG_PYTHON`, else the project-local venv's.
fn interpreter() -> PathBuf {
    std::env::var_os(PYTHON_VAR).map_or_else(venv_python, PathBuf::from)
}

fn python() -> Command {
    let mut command = Command::new(interpreter());
    command
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .env("PYTHONUNBUFFERED", "1")
        .stdin(Stdio::null());
    command
}

/// Why the Python side cannot run here, if it cannot.
fn missing_python() -> Option<String> {
    let make_it = "scripts/test makes it; by hand: python3 -m venv target/py-venv && \
                   target/py-venv/bin/python -m pip install -r examples/python/requirements.txt";
    let interpreter = interpreter();
    match python()
        .args([
            "-c",
            "import grpc, grpc_tools, google.protobuf, cryptography",
        ])
        .output()
    {
        Err(error) => Some(format!(
            "the Python interpreter {} cannot be run ({error}); {make_it}",
            interpreter.display()
        )),
        Ok(out) if !out.status.success() => Some(format!(
            "{} lacks grpcio/grpcio-tools/protobuf/cryptography ({}); {make_it}",
            interpreter.display(),
            String::from_utf8_lossy(&out.stderr)
                .lines()
                .last()
                .unwrap_or("import failed")
        )),
        Ok(_) => None,
    }
}

/// Forwards a child's output line by line (captured by the test harness
/// unless `--nocapture`, shown on failure either way).
fn forward(
    stream: impl Read + Send + 'static,
    prefix: &'static str,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        for line in BufReader::new(stream).lines() {
            match line {
                Ok(line) => eprintln!("{prefix}{line}"),
                Err(_) => break,
            }
        }
    })
}

/// Says why the Python side cannot run, and whether the test should skip
/// (true) or fail for it.
fn skip_without_python() -> bool {
    let Some(reason) = missing_python() else {
        return false;
    };
    if std::env::var("LIANDONG_REQUIRE_PYTHON").as_deref() == Ok("1") {
        panic!("LIANDONG_REQUIRE_PYTHON=1 but {reason}");
    }
    // Written to the handle itself: `eprintln!` is captured by the test
    // harness and shown only for failures, and a skip must be seen.
    let _ = writeln!(
        std::io::stderr(),
        "SKIPPED python_client: {reason} (set LIANDONG_REQUIRE_PYTHON=1 to make this fail)"
    );
    true
}

/// The Python stubs generated with `grpc_tools.protoc` into a temporary
/// directory.
fn generate_stubs(root: &Path) -> tempfile::TempDir {
    let stubs = tempfile::tempdir().expect("temporary directory");
    let generated = python()
        .args(["-m", "grpc_tools.protoc", "-I"])
        .arg(root.join("proto"))
        .arg(format!("--python_out={}", stubs.path().display()))
        .arg(format!("--grpc_python_out={}", stubs.path().display()))
        .args(["liandong/v1/exchange.proto", "liandong/v1/options.proto"])
        .output()
        .expect("run grpc_tools.protoc");
    assert!(
        generated.status.success(),
        "generating the Python stubs failed: {}",
        String::from_utf8_lossy(&generated.stderr)
    );
    stubs
}

/// Runs `examples/python/<script> -v` against the test bed's gateway,
/// streaming its output, and fails the test when it fails.
fn run_python_suite(bed: &Testbed, script: &str, env: &[(&str, &str)]) {
    let root = workspace();
    let stubs = generate_stubs(&root);
    // `localhost`, so that gRPC's host name check matches the gateway
    // certificate's SAN.
    let target = format!("localhost:{}", bed.gateway.addr.port());
    eprintln!("running examples/python/{script} against {target}");
    let mut child = python()
        .arg(root.join("examples/python").join(script))
        .arg("-v")
        .current_dir(&root)
        .env("LIANDONG_GATEWAY", &target)
        .env("LIANDONG_PKI", &bed.pki.dir)
        .env("LIANDONG_STUBS", stubs.path())
        .envs(env.iter().copied())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the Python interpreter");
    let out = forward(child.stdout.take().expect("piped"), "[python] ");
    let err = forward(child.stderr.take().expect("piped"), "[python] ");

    let deadline = Instant::now() + SUITE_TIMEOUT;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for the Python suite") {
            break Some(status);
        }
        if Instant::now() > deadline {
            child.kill().expect("stop the Python suite");
            child.wait().expect("reap the Python suite");
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let _ = out.join();
    let _ = err.join();
    match status {
        Some(status) if status.success() => {}
        Some(status) => panic!(
            "the Python suite {script} failed ({status}); gateway log:\n{}",
            bed.log()
        ),
        None => panic!(
            "the Python suite {script} did not finish within {SUITE_TIMEOUT:?}; gateway log:\n{}",
            bed.log()
        ),
    }
}

#[test]
fn python_client_kit_against_the_real_gateway() {
    if skip_without_python() {
        return;
    }
    let bed = Testbed::start().expect("start the test bed");
    run_python_suite(&bed, "test_client.py", &[]);
}

/// Signing from Python (`liandong_client.Signer`, with the PKCS#8 v1
/// `<id>.signing.pem` that `liandong-certs init` writes and the
/// `cryptography` package) against a gateway whose registry lists every
/// agency's key, so it checks each signature: a signed notification is
/// accepted and its delivery verifies in Python; tampered, unsigned and
/// wrongly signed ones are refused (`examples/python/test_signing.py`).
#[test]
fn python_signed_notification_is_accepted_and_verifies() {
    if liandong_tests::skip_unless_sqlite("signature checks do not depend on the store backend")
        || skip_without_python()
    {
        return;
    }
    let bed = Testbed::start().expect("start the test bed");
    bed.pki
        .register_signing_keys()
        .expect("register the signing keys");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    runtime.block_on(bed.reload_rules());
    run_python_suite(&bed, "test_signing.py", &[("LIANDONG_SIGNING_E2E", "1")]);
    // Only the correctly signed notification was stored: the tampered,
    // unsigned and wrongly signed ones changed nothing.
    assert_eq!(runtime.block_on(bed.stored_count()), 1, "{}", bed.log());
}
