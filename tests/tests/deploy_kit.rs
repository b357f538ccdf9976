//! The deployment kit under `deploy/` (systemd units, the container
//! recipe, the compose file, the Kubernetes manifests) checked offline,
//! without a container engine or a cluster:
//!
//! - the systemd units pass `systemd-analyze verify` (pointed at the
//!   binaries this workspace builds) and `systemd-analyze security` within
//!   an exposure of 1.5, the users they run as are made by the sysusers
//!   file, and the production configs they run fit the directories the
//!   units give them;
//! - every Kubernetes manifest deserializes into the API's own types
//!   (`k8s-openapi`) with no field the API does not know, and what holds
//!   the kit together holds: probes on the ops port's real routes, ports
//!   equal to the ones the configuration (with the pod's environment)
//!   listens on, every file the configuration names mounted from a
//!   ConfigMap or Secret of the kit that has that key, the registry and
//!   policy parsing, a non-root read-only pod; and a real gateway started
//!   from the ConfigMap's configuration, with the Secrets' files laid out as
//!   the pod mounts them, answers the probes and drains within the pod's
//!   grace;
//! - the compose file: two gateway replicas on one database URL, the jobs
//!   ordered by completion, the adapters' configurations accepted by the
//!   adapter's own parser and naming files the PKI job writes;
//! - the Containerfile: multi-stage, every shipped binary built with
//!   `--locked`, a numeric non-root user, an exec-form entrypoint.
//!
//! `systemd-analyze` and `systemd-sysusers` come with systemd. Without them
//! their checks fail when `LIANDONG_REQUIRE_OPS_TOOLS=1` (as in CI) and
//! are otherwise skipped with a loud message; the other checks run anyway.

mod ops_http;

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{
    ConfigMap, Container, Namespace, PodSpec, Probe, Secret, Service, Volume, VolumeMount,
};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde_json::Value;

use liandong_adapter::DaemonConfig;
use liandong_adapter::config::PartialGateway;
use liandong_adapter::config::daemon::{SinkSettings, SourceSettings};
use liandong_core::registry::Registry;
use liandong_gateway::config::{DEFAULT_OPS_LISTEN, GatewayConfig};
use liandong_gateway::policy::Policy;
use liandong_tests::{Backend, GatewayProcess};

// ---------------------------------------------------------------------
// Shared helpers
// ---------------------------------------------------------------------

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the workspace")
        .to_owned()
}

fn read(relative: &str) -> String {
    std::fs::read_to_string(workspace().join(relative))
        .unwrap_or_else(|e| panic!("read {relative}: {e}"))
}

/// The kit's directory.
fn kit() -> PathBuf {
    workspace().join("deploy")
}

fn read_kit(relative: &str) -> String {
    let path = kit().join(relative);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

fn tools_required() -> bool {
    std::env::var("LIANDONG_REQUIRE_OPS_TOOLS").is_ok_and(|v| v == "1")
}

/// Runs `tool args` (with `stdin` fed in when given); `None` when the tool
/// is not installed and not required (a loud skip), a failure when it is
/// required.
fn run_tool(tool: &str, args: &[&str], stdin: Option<&[u8]>) -> Option<std::process::Output> {
    let mut command = Command::new(tool);
    command
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    match command.spawn() {
        Ok(mut child) => {
            if let Some(input) = stdin {
                child
                    .stdin
                    .take()
                    .expect("stdin is piped")
                    .write_all(input)
                    .unwrap_or_else(|e| panic!("feed {tool}: {e}"));
            }
            Some(
                child
                    .wait_with_output()
                    .unwrap_or_else(|e| panic!("run {tool}: {e}")),
            )
        }
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            assert!(
                !tools_required(),
                "LIANDONG_REQUIRE_OPS_TOOLS=1 but {tool} is not installed (Debian: apt-get install systemd)"
            );
            // Written to the handle itself: the harness captures
            // `eprintln!`, and a skip must be seen.
            let _ = writeln!(
                std::io::stderr(),
                "SKIPPED: {tool} {} — {tool} is not installed (Debian package `systemd`; \
                 LIANDONG_REQUIRE_OPS_TOOLS=1 makes this a failure)",
                args.join(" ")
            );
            None
        }
        Err(error) => panic!("run {tool}: {error}"),
    }
}

/// Every document of a YAML file (empty ones left out), as JSON values.
fn yaml_documents(relative: &str) -> Vec<Value> {
    use serde::Deserialize as _;
    let text = read_kit(relative);
    let mut documents = Vec::new();
    for (index, document) in serde_norway::Deserializer::from_str(&text).enumerate() {
        let value = Value::deserialize(document)
            .unwrap_or_else(|e| panic!("{relative}: document {index} is not valid YAML: {e}"));
        if !value.is_null() {
            documents.push(value);
        }
    }
    documents
}

/// `/a/b/c` is `/a/b` or below it.
fn is_within(path: &Path, dir: &Path) -> bool {
    path.starts_with(dir)
}

/// The port of a socket-address string such as `0.0.0.0:7443`.
fn port_of(address: std::net::SocketAddr) -> i32 {
    i32::from(address.port())
}

// ---------------------------------------------------------------------
// The binaries the workspace ships
// ---------------------------------------------------------------------

/// The binary targets of the workspace's packages, apart from the test
/// package's own tools (the demo, the bench, the fault harness).
fn shipped_binaries() -> BTreeSet<String> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let output = Command::new(cargo)
        .args([
            "metadata",
            "--format-version",
            "1",
            "--no-deps",
            "--offline",
        ])
        .current_dir(workspace())
        .output()
        .expect("run cargo metadata");
    assert!(
        output.status.success(),
        "cargo metadata: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let metadata: Value = serde_json::from_slice(&output.stdout).expect("cargo metadata's JSON");
    let mut binaries = BTreeSet::new();
    for package in metadata["packages"].as_array().expect("packages") {
        if package["name"] == "liandong-tests" {
            continue;
        }
        for target in package["targets"].as_array().expect("targets") {
            if target["kind"]
                .as_array()
                .is_some_and(|kinds| kinds.iter().any(|k| k == "bin"))
            {
                binaries.insert(target["name"].as_str().expect("a name").to_owned());
            }
        }
    }
    binaries
}

#[test]
fn the_workspace_ships_three_binaries() {
    assert_eq!(
        shipped_binaries(),
        liandong_tests::PROGRAMS.map(String::from).into(),
        "the kit (Containerfile, units, compose) covers these three, and the tests build \
         them (liandong_tests::PROGRAMS); a new binary needs its place in both"
    );
}

// ---------------------------------------------------------------------
// systemd
// ---------------------------------------------------------------------

/// A unit file: `(section, key) -> values`, every assignment kept in order.
struct Unit {
    name: String,
    entries: BTreeMap<(String, String), Vec<String>>,
}

impl Unit {
    fn load(name: &str) -> Self {
        let text = read_kit(&format!("systemd/{name}"));
        let mut entries: BTreeMap<(String, String), Vec<String>> = BTreeMap::new();
        let mut section = String::new();
        for (number, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
                continue;
            }
            if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
                section = name.to_owned();
                continue;
            }
            let (key, value) = line
                .split_once('=')
                .unwrap_or_else(|| panic!("{name}:{}: not key=value: {line}", number + 1));
            entries
                .entry((section.clone(), key.trim().to_owned()))
                .or_default()
                .push(value.trim().to_owned());
        }
        Self {
            name: name.to_owned(),
            entries,
        }
    }

    fn all(&self, key: &str) -> &[String] {
        self.entries
            .get(&("Service".to_owned(), key.to_owned()))
            .map_or(&[], Vec::as_slice)
    }

    /// The last value of `[Service] key` (what systemd uses).
    fn get(&self, key: &str) -> Option<&str> {
        self.all(key).last().map(String::as_str)
    }

    fn expect(&self, key: &str) -> &str {
        self.get(key)
            .unwrap_or_else(|| panic!("{}: [Service] {key}= is missing", self.name))
    }

    fn seconds(&self, key: &str) -> u64 {
        let value = self.expect(key);
        value
            .strip_suffix('s')
            .unwrap_or(value)
            .parse()
            .unwrap_or_else(|_| panic!("{}: {key}={value} is not a number of seconds", self.name))
    }

    /// `/etc/<ConfigurationDirectory>`.
    fn configuration_directory(&self) -> PathBuf {
        Path::new("/etc").join(self.expect("ConfigurationDirectory"))
    }

    /// `/var/lib/<StateDirectory>`.
    fn state_directory(&self) -> PathBuf {
        Path::new("/var/lib").join(self.expect("StateDirectory"))
    }

    /// The word after `--config` in ExecStart.
    fn config_path(&self) -> PathBuf {
        let exec = self.expect("ExecStart");
        let words: Vec<&str> = exec.split_whitespace().collect();
        let at = words
            .iter()
            .position(|w| *w == "--config")
            .unwrap_or_else(|| panic!("{}: ExecStart has no --config: {exec}", self.name));
        PathBuf::from(words[at + 1])
    }
}

const UNITS: [&str; 2] = ["liandong-gateway.service", "liandong-adapter.service"];

/// Hardening every unit carries, with the value it must have.
const HARDENING: &[(&str, &str)] = &[
    ("NoNewPrivileges", "yes"),
    ("ProtectSystem", "strict"),
    ("ProtectHome", "yes"),
    ("PrivateTmp", "yes"),
    ("PrivateDevices", "yes"),
    ("RestrictAddressFamilies", "AF_INET AF_INET6 AF_UNIX"),
    ("CapabilityBoundingSet", ""),
    ("LockPersonality", "yes"),
    ("MemoryDenyWriteExecute", "yes"),
    ("RestrictNamespaces", "yes"),
    ("RestrictSUIDSGID", "yes"),
    ("ProtectKernelTunables", "yes"),
    ("ProtectKernelModules", "yes"),
    ("ProtectControlGroups", "yes"),
    ("SystemCallArchitectures", "native"),
];

#[test]
fn systemd_units_carry_the_hardening_and_restart_policy() {
    for name in UNITS {
        let unit = Unit::load(name);
        for (key, value) in HARDENING {
            assert_eq!(
                unit.get(key),
                Some(*value),
                "{name}: [Service] {key}= must be {value:?}"
            );
        }
        assert!(
            unit.all("SystemCallFilter")
                .first()
                .is_some_and(|first| first == "@system-service"),
            "{name}: SystemCallFilter=@system-service first"
        );
        assert_eq!(unit.get("KillSignal"), Some("SIGTERM"), "{name}");
        assert_eq!(unit.get("Restart"), Some("on-failure"), "{name}");
        let user = unit.expect("User");
        assert!(
            user != "root" && unit.get("DynamicUser").is_none_or(|d| d == "no"),
            "{name}: a dedicated static user (sysusers), not root"
        );
        assert_eq!(
            unit.get("Group"),
            Some(user),
            "{name}: the user's own group"
        );
        unit.configuration_directory();
        unit.state_directory();
        assert!(
            unit.get("ReadWritePaths").is_none(),
            "{name}: writes go to StateDirectory only"
        );
    }
}

#[test]
fn the_gateway_unit_fits_the_production_gateway_config() {
    let unit = Unit::load("liandong-gateway.service");
    assert_eq!(
        unit.get("ExecReload"),
        Some("/bin/kill -HUP $MAINPID"),
        "the gateway reloads on SIGHUP"
    );
    let config_path = unit.config_path();
    let etc = unit.configuration_directory();
    let state = unit.state_directory();
    assert!(
        is_within(&config_path, &etc),
        "{} is not in the unit's ConfigurationDirectory",
        config_path.display()
    );
    assert!(
        unit.expect("ExecStart").contains(" serve "),
        "ExecStart runs serve"
    );
    for pre in unit.all("ExecStartPre") {
        if !pre.is_empty() {
            assert!(
                pre.contains(" migrate --config ")
                    && pre.ends_with(&*config_path.to_string_lossy()),
                "ExecStartPre is the migration of the same config: {pre}"
            );
        }
    }
    // deploy/production/gateway.toml is the file installed there.
    let config = GatewayConfig::parse(&read_kit("production/gateway.toml"), &config_path, |_| None)
        .expect("deploy/production/gateway.toml parses at the unit's config path");
    let mut reads = vec![
        config.registry.clone(),
        config.tls.ca.clone(),
        config.tls.cert.clone(),
        config.tls.key.clone(),
        config.signing_key.clone(),
    ];
    reads.extend(config.policy.clone());
    reads.extend(config.tls.crls.iter().cloned());
    reads.extend(config.mechanism.deadlines.clone());
    reads.extend(config.mechanism.calendar.iter().cloned());
    for path in &reads {
        assert!(
            is_within(path, &etc),
            "the gateway reads {} outside {} (ProtectSystem=strict leaves it readable, but the operator's files live there)",
            path.display(),
            etc.display()
        );
    }
    let mut writes = vec![config.audit.checkpoint_file.clone()];
    if let Some(file) = config.database_url.strip_prefix("sqlite://") {
        writes.push(PathBuf::from(file.split('?').next().unwrap_or(file)));
    }
    for path in &writes {
        assert!(
            is_within(path, &state),
            "the gateway writes {} outside its StateDirectory {} (read-only under ProtectSystem=strict)",
            path.display(),
            state.display()
        );
    }
    assert!(
        port_of(config.listen) >= 1024 && config.ops.listen.is_none_or(|ops| port_of(ops) >= 1024),
        "CapabilityBoundingSet= is empty: no port below 1024"
    );
    assert!(
        unit.seconds("TimeoutStopSec") > config.shutdown_grace.as_secs() + 5,
        "TimeoutStopSec={}s must leave the gateway its {}s grace and the final checkpoint",
        unit.seconds("TimeoutStopSec"),
        config.shutdown_grace.as_secs()
    );
}

#[test]
fn the_adapter_unit_fits_the_production_adapter_config() {
    let unit = Unit::load("liandong-adapter.service");
    assert!(
        unit.get("ExecReload").is_none(),
        "the adapter has no SIGHUP handler: a kill -HUP reload would end it"
    );
    let config_path = unit.config_path();
    let etc = unit.configuration_directory();
    let state = unit.state_directory();
    assert!(
        unit.expect("ExecStart").ends_with(" run"),
        "ExecStart runs the daemon"
    );
    let config = DaemonConfig::parse(
        &config_path,
        &read_kit("production/adapter.toml"),
        PartialGateway::default(),
    )
    .expect("deploy/production/adapter.toml parses at the unit's config path");
    let mut reads = vec![
        config.signing_key.clone(),
        config.gateway.ca.clone(),
        config.gateway.cert.clone(),
        config.gateway.key.clone(),
    ];
    let mut writes = vec![config.outbox.path.clone()];
    for source in &config.sources {
        match source {
            SourceSettings::Folder(folder) => writes.push(folder.path.clone()),
            SourceSettings::Http(http) => {
                reads.push(http.token_file.clone());
                assert!(
                    http.listen.port() >= 1024,
                    "CapabilityBoundingSet= is empty"
                );
            }
        }
    }
    let sinks = config
        .subscriptions
        .iter()
        .map(|s| &s.sink)
        .chain(config.dead_letter_sink.as_ref());
    for sink in sinks {
        match sink {
            SinkSettings::Folder(folder) => writes.push(folder.path.clone()),
            SinkSettings::Webhook(webhook) => reads.extend(webhook.ca.clone()),
            SinkSettings::Stdout => {}
        }
    }
    if let Some(verify) = &config.verify {
        reads.push(verify.registry.clone());
        if verify.on_failure == liandong_adapter::config::daemon::OnFailure::Reject {
            writes.extend(config.subscriptions.iter().map(|s| s.rejected.clone()));
        }
    }
    for path in &reads {
        assert!(
            is_within(path, &etc),
            "the adapter reads {} outside {}",
            path.display(),
            etc.display()
        );
    }
    for path in &writes {
        assert!(
            is_within(path, &state),
            "the adapter writes {} outside its StateDirectory {}",
            path.display(),
            state.display()
        );
    }
    // The pusher waits up to 5 s for its receipts at SIGTERM.
    assert!(unit.seconds("TimeoutStopSec") > 5);
}

/// The units in a directory of their own, their ExecStart binaries
/// replaced by the ones this workspace builds (`verify` checks that each
/// command exists and is executable).
fn units_with_built_binaries(dir: &Path) -> Vec<PathBuf> {
    let gateway = liandong_tests::binary("liandong-gateway");
    let adapter = liandong_tests::binary("liandong-adapter");
    UNITS
        .iter()
        .map(|name| {
            let text = read_kit(&format!("systemd/{name}"))
                .replace(
                    "/usr/local/bin/liandong-gateway",
                    &gateway.to_string_lossy(),
                )
                .replace(
                    "/usr/local/bin/liandong-adapter",
                    &adapter.to_string_lossy(),
                );
            let path = dir.join(name);
            std::fs::write(&path, text).expect("write the unit copy");
            path
        })
        .collect()
}

#[test]
fn systemd_units_pass_systemd_analyze_verify() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let units = units_with_built_binaries(dir.path());
    let mut args = vec!["verify".to_owned(), "--man=no".to_owned()];
    args.extend(units.iter().map(|p| p.to_string_lossy().into_owned()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let Some(output) = run_tool("systemd-analyze", &args, None) else {
        return;
    };
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success() && stderr.trim().is_empty(),
        "systemd-analyze verify: {}\n{stderr}{}",
        output.status,
        String::from_utf8_lossy(&output.stdout)
    );
}

/// The most `systemd-analyze security` may rate a unit's exposure (0 is
/// the least exposed, 10 the most; below 2 is "OK").
const MAX_EXPOSURE: f64 = 1.5;

#[test]
fn systemd_units_rate_low_exposure_in_systemd_analyze_security() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    for unit in units_with_built_binaries(dir.path()) {
        let unit = unit.to_string_lossy().into_owned();
        let threshold = format!("--threshold={}", (MAX_EXPOSURE * 10.0) as u32);
        let Some(output) = run_tool(
            "systemd-analyze",
            &["security", "--offline=true", &threshold, &unit],
            None,
        ) else {
            return;
        };
        let stdout = String::from_utf8_lossy(&output.stdout);
        let exposure: f64 = stdout
            .lines()
            .find_map(|line| {
                line.split_once("Overall exposure level for ")?
                    .1
                    .split_once(": ")
            })
            .and_then(|(_, rest)| rest.split_whitespace().next()?.parse().ok())
            .unwrap_or_else(|| panic!("no exposure level in:\n{stdout}"));
        let _ = writeln!(std::io::stderr(), "{unit}: exposure {exposure}");
        assert!(
            output.status.success() && exposure <= MAX_EXPOSURE,
            "{unit}: exposure {exposure} above {MAX_EXPOSURE}:\n{stdout}{}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
}

#[test]
fn sysusers_file_makes_the_units_users_and_groups() {
    let root = tempfile::tempdir().expect("a temporary directory");
    std::fs::create_dir(root.path().join("etc")).expect("etc");
    let conf = read_kit("systemd/liandong.sysusers.conf");
    let root_arg = format!("--root={}", root.path().display());
    let Some(output) = run_tool("systemd-sysusers", &[&root_arg, "-"], Some(conf.as_bytes()))
    else {
        return;
    };
    assert!(
        output.status.success(),
        "systemd-sysusers: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let names = |file: &str| -> BTreeSet<String> {
        std::fs::read_to_string(root.path().join("etc").join(file))
            .unwrap_or_default()
            .lines()
            .filter_map(|line| line.split(':').next())
            .map(String::from)
            .collect()
    };
    let (users, groups) = (names("passwd"), names("group"));
    for name in UNITS {
        let unit = Unit::load(name);
        assert!(
            users.contains(unit.expect("User")),
            "{name}: User={} is not made by liandong.sysusers.conf ({users:?})",
            unit.expect("User")
        );
        assert!(
            groups.contains(unit.expect("Group")),
            "{name}: Group={} is not made by liandong.sysusers.conf ({groups:?})",
            unit.expect("Group")
        );
    }
}

// ---------------------------------------------------------------------
// Kubernetes
// ---------------------------------------------------------------------

/// Deserializes `document` into the API type `T`, refusing any field the
/// type does not have (a typo the API server would drop silently, or
/// reject under strict field validation).
fn typed<T: serde::de::DeserializeOwned>(document: &Value, what: &str) -> T {
    let mut unknown = Vec::new();
    let value: T = serde_ignored::deserialize(document.clone(), |path| {
        unknown.push(path.to_string());
    })
    .unwrap_or_else(|e| panic!("{what}: not a valid {}: {e}", std::any::type_name::<T>()));
    assert!(
        unknown.is_empty(),
        "{what}: fields the Kubernetes API does not have: {unknown:?}"
    );
    value
}

/// Every object of the kit's manifests, typed.
#[derive(Default)]
struct Manifests {
    namespaces: Vec<Namespace>,
    config_maps: Vec<ConfigMap>,
    secrets: Vec<Secret>,
    deployments: Vec<Deployment>,
    services: Vec<Service>,
    budgets: Vec<PodDisruptionBudget>,
    network_policies: Vec<NetworkPolicy>,
    jobs: Vec<Job>,
}

/// The manifests of the kit (`kustomization.yaml` apart).
const MANIFESTS: [&str; 8] = [
    "namespace.yaml",
    "configmap.yaml",
    "secrets.yaml",
    "deployment.yaml",
    "service.yaml",
    "pdb.yaml",
    "networkpolicy.yaml",
    "migrate-job.yaml",
];

impl Manifests {
    fn load() -> Self {
        let mut kit = Self::default();
        let listed: BTreeSet<String> = std::fs::read_dir(kit_path("kubernetes"))
            .expect("deploy/kubernetes")
            .map(|e| {
                e.expect("an entry")
                    .file_name()
                    .to_string_lossy()
                    .into_owned()
            })
            .filter(|name| name.ends_with(".yaml") && name != "kustomization.yaml")
            .collect();
        assert_eq!(
            listed,
            MANIFESTS.map(String::from).into(),
            "the manifests of deploy/kubernetes"
        );
        for file in MANIFESTS {
            for (index, document) in yaml_documents(&format!("kubernetes/{file}"))
                .into_iter()
                .enumerate()
            {
                let what = format!("kubernetes/{file} document {index}");
                let kind = document["kind"].as_str().unwrap_or_default().to_owned();
                match kind.as_str() {
                    "Namespace" => kit.namespaces.push(typed(&document, &what)),
                    "ConfigMap" => kit.config_maps.push(typed(&document, &what)),
                    "Secret" => kit.secrets.push(typed(&document, &what)),
                    "Deployment" => kit.deployments.push(typed(&document, &what)),
                    "Service" => kit.services.push(typed(&document, &what)),
                    "PodDisruptionBudget" => kit.budgets.push(typed(&document, &what)),
                    "NetworkPolicy" => kit.network_policies.push(typed(&document, &what)),
                    "Job" => kit.jobs.push(typed(&document, &what)),
                    other => panic!("{what}: a kind the kit does not expect: {other:?}"),
                }
                let namespace = document["metadata"]["namespace"].as_str();
                if kind != "Namespace" {
                    assert_eq!(namespace, Some("liandong"), "{what}: namespace");
                }
            }
        }
        kit
    }

    fn deployment(&self) -> &Deployment {
        assert_eq!(self.deployments.len(), 1, "one Deployment");
        &self.deployments[0]
    }

    fn pod(&self) -> &PodSpec {
        self.deployment()
            .spec
            .as_ref()
            .and_then(|s| s.template.spec.as_ref())
            .expect("the Deployment's pod spec")
    }

    fn gateway_container(&self) -> &Container {
        let pod = self.pod();
        assert_eq!(pod.containers.len(), 1, "one container per gateway pod");
        &pod.containers[0]
    }

    fn pod_labels(&self) -> BTreeMap<String, String> {
        self.deployment()
            .spec
            .as_ref()
            .and_then(|s| s.template.metadata.as_ref())
            .and_then(|m| m.labels.clone())
            .expect("the pod template's labels")
    }

    fn config_map(&self, name: &str) -> &ConfigMap {
        self.config_maps
            .iter()
            .find(|c| c.metadata.name.as_deref() == Some(name))
            .unwrap_or_else(|| panic!("no ConfigMap {name} in the kit"))
    }

    fn secret(&self, name: &str) -> &Secret {
        self.secrets
            .iter()
            .find(|s| s.metadata.name.as_deref() == Some(name))
            .unwrap_or_else(|| panic!("no Secret {name} in the kit"))
    }

    /// The keys a Secret holds (`data` and `stringData`).
    fn secret_keys(&self, name: &str) -> BTreeSet<String> {
        let secret = self.secret(name);
        secret
            .data
            .iter()
            .flat_map(|d| d.keys())
            .chain(secret.string_data.iter().flat_map(|d| d.keys()))
            .cloned()
            .collect()
    }

    /// The text a Secret's key holds.
    fn secret_value(&self, name: &str, key: &str) -> String {
        let secret = self.secret(name);
        if let Some(text) = secret.string_data.as_ref().and_then(|d| d.get(key)) {
            return text.clone();
        }
        let bytes = secret
            .data
            .as_ref()
            .and_then(|d| d.get(key))
            .unwrap_or_else(|| panic!("Secret {name} has no key {key}"));
        String::from_utf8(bytes.0.clone()).expect("a UTF-8 value")
    }

    /// The container's environment, with `secretKeyRef` and
    /// `configMapKeyRef` values taken from the kit's objects (which must
    /// have them).
    fn environment(&self, container: &Container) -> BTreeMap<String, String> {
        let mut env = BTreeMap::new();
        for var in container.env.iter().flatten() {
            let value = match (&var.value, &var.value_from) {
                (Some(value), None) => value.clone(),
                (None, Some(from)) => {
                    if let Some(secret) = &from.secret_key_ref {
                        assert!(
                            self.secret_keys(&secret.name).contains(&secret.key),
                            "env {}: Secret {} has no key {}",
                            var.name,
                            secret.name,
                            secret.key
                        );
                        self.secret_value(&secret.name, &secret.key)
                    } else if let Some(map) = &from.config_map_key_ref {
                        self.config_map(&map.name)
                            .data
                            .as_ref()
                            .and_then(|d| d.get(&map.key))
                            .unwrap_or_else(|| {
                                panic!(
                                    "env {}: ConfigMap {} has no key {}",
                                    var.name, map.name, map.key
                                )
                            })
                            .clone()
                    } else {
                        panic!("env {}: a source the kit does not use", var.name)
                    }
                }
                _ => panic!("env {}: a value or a valueFrom", var.name),
            };
            env.insert(var.name.clone(), value);
        }
        env
    }
}

fn kit_path(relative: &str) -> PathBuf {
    kit().join(relative)
}

/// What a volume mount provides.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Mounted {
    /// Files from a ConfigMap (name, keys).
    ConfigMap(String, BTreeSet<String>),
    /// Files from a Secret (name, keys).
    Secret(String, BTreeSet<String>),
    /// A writable directory of the pod's own.
    Writable,
}

/// The mounts of `container`, each with what it provides, after checking
/// that every volume exists, every ConfigMap and Secret is in the kit and
/// has the keys an `items` list names, no configuration is mounted with
/// `subPath` (its updates would never arrive) and no mount lies inside
/// another.
fn mounts(
    kit: &Manifests,
    container: &Container,
    volumes: &[Volume],
) -> Vec<(PathBuf, Mounted, VolumeMount)> {
    let mut found = Vec::new();
    for mount in container.volume_mounts.iter().flatten() {
        let volume = volumes
            .iter()
            .find(|v| v.name == mount.name)
            .unwrap_or_else(|| panic!("mount {}: no volume of that name", mount.name));
        let mounted = if let Some(map) = &volume.config_map {
            let name = map.name.clone();
            let keys: BTreeSet<String> = kit
                .config_map(&name)
                .data
                .iter()
                .flat_map(|d| d.keys().cloned())
                .collect();
            Mounted::ConfigMap(name, select_items(&keys, map.items.as_deref(), &mount.name))
        } else if let Some(secret) = &volume.secret {
            let name = secret.secret_name.clone().expect("a secretName");
            let keys = kit.secret_keys(&name);
            Mounted::Secret(
                name,
                select_items(&keys, secret.items.as_deref(), &mount.name),
            )
        } else if volume.empty_dir.is_some() || volume.persistent_volume_claim.is_some() {
            assert_ne!(
                mount.read_only,
                Some(true),
                "mount {}: a writable volume mounted read-only",
                mount.name
            );
            Mounted::Writable
        } else {
            panic!("volume {}: a kind the kit does not use", volume.name)
        };
        if matches!(mounted, Mounted::ConfigMap(..) | Mounted::Secret(..)) {
            assert!(
                mount.sub_path.is_none() && mount.sub_path_expr.is_none(),
                "mount {}: subPath freezes a ConfigMap or Secret (no updates, so no reload)",
                mount.name
            );
            assert_eq!(
                mount.read_only,
                Some(true),
                "mount {}: configuration is mounted readOnly",
                mount.name
            );
        }
        found.push((PathBuf::from(&mount.mount_path), mounted, mount.clone()));
    }
    for (a, ..) in &found {
        for (b, ..) in &found {
            assert!(
                a == b || !a.starts_with(b),
                "{} is mounted inside {}: the runtime cannot make a mount point in a read-only volume",
                a.display(),
                b.display()
            );
        }
    }
    found
}

fn select_items(
    keys: &BTreeSet<String>,
    items: Option<&[k8s_openapi::api::core::v1::KeyToPath]>,
    mount: &str,
) -> BTreeSet<String> {
    match items {
        None => keys.clone(),
        Some(items) => items
            .iter()
            .map(|item| {
                assert!(
                    keys.contains(&item.key),
                    "mount {mount}: no key {} to project",
                    item.key
                );
                item.path.clone()
            })
            .collect(),
    }
}

/// What provides `path` in the container: the mount it lies in, and, for
/// a ConfigMap or Secret, whether it is one of its keys.
fn provided<'a>(mounts: &'a [(PathBuf, Mounted, VolumeMount)], path: &Path) -> Option<&'a Mounted> {
    mounts
        .iter()
        .find(|(at, ..)| path.starts_with(at))
        .map(|(_, mounted, _)| mounted)
}

fn assert_readable(mounts: &[(PathBuf, Mounted, VolumeMount)], path: &Path, what: &str) {
    let (at, mounted, _) = mounts
        .iter()
        .find(|(at, ..)| path.starts_with(at))
        .unwrap_or_else(|| panic!("{what}: {} is in no mounted volume", path.display()));
    let relative = path
        .strip_prefix(at)
        .expect("within")
        .to_string_lossy()
        .into_owned();
    match mounted {
        Mounted::ConfigMap(name, keys) | Mounted::Secret(name, keys) => assert!(
            keys.contains(&relative),
            "{what}: {} is not a key of {name} mounted at {} (keys {keys:?})",
            path.display(),
            at.display()
        ),
        Mounted::Writable => panic!(
            "{what}: {} is in a writable scratch volume, not in the configuration",
            path.display()
        ),
    }
}

/// The word after `--config` in a container's arguments.
fn config_argument(container: &Container) -> PathBuf {
    let args: Vec<&String> = container
        .command
        .iter()
        .flatten()
        .chain(container.args.iter().flatten())
        .collect();
    let at = args
        .iter()
        .position(|a| *a == "--config")
        .unwrap_or_else(|| panic!("container {}: no --config argument", container.name));
    PathBuf::from(args[at + 1])
}

/// The text of the file at `path` from the ConfigMap mounted over it.
fn config_map_file(
    kit: &Manifests,
    mounts: &[(PathBuf, Mounted, VolumeMount)],
    path: &Path,
) -> String {
    assert_readable(mounts, path, "--config");
    let (at, mounted, _) = mounts
        .iter()
        .find(|(at, ..)| path.starts_with(at))
        .expect("mounted");
    let Mounted::ConfigMap(name, _) = mounted else {
        panic!("{} is not from a ConfigMap", path.display())
    };
    let key = path.strip_prefix(at).expect("within").to_string_lossy();
    kit.config_map(name)
        .data
        .as_ref()
        .and_then(|d| d.get(key.as_ref()))
        .cloned()
        .expect("the key")
}

/// The gateway's configuration as a pod sees it: the ConfigMap's file at
/// its mounted path, with the container's environment.
fn pod_config(
    kit: &Manifests,
    container: &Container,
    mounts: &[(PathBuf, Mounted, VolumeMount)],
) -> GatewayConfig {
    let path = config_argument(container);
    let text = config_map_file(kit, mounts, &path);
    let env = kit.environment(container);
    GatewayConfig::parse(&text, &path, |key| env.get(key).cloned()).unwrap_or_else(|e| {
        panic!("the ConfigMap's gateway configuration, as the pod reads it: {e}")
    })
}

/// The container port a probe or a Service's targetPort names.
fn container_port(container: &Container, port: &IntOrString, what: &str) -> i32 {
    let ports = container.ports.as_deref().unwrap_or_default();
    let found = match port {
        IntOrString::Int(number) => ports.iter().find(|p| p.container_port == *number),
        IntOrString::String(name) => ports.iter().find(|p| p.name.as_deref() == Some(name)),
    };
    found
        .unwrap_or_else(|| {
            panic!(
                "{what}: port {port:?} is not a port of container {}",
                container.name
            )
        })
        .container_port
}

fn probe_target(probe: Option<&Probe>, what: &str) -> (String, IntOrString) {
    let get = probe
        .and_then(|p| p.http_get.as_ref())
        .unwrap_or_else(|| panic!("{what}: an httpGet probe"));
    (
        get.path.clone().unwrap_or_else(|| "/".into()),
        get.port.clone(),
    )
}

fn selector_matches(
    selector: &BTreeMap<String, String>,
    labels: &BTreeMap<String, String>,
) -> bool {
    !selector.is_empty() && selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}

#[test]
fn kubernetes_manifests_are_valid_api_objects() {
    let kit = Manifests::load();
    assert_eq!(kit.namespaces.len(), 1);
    assert_eq!(kit.config_maps.len(), 1);
    assert_eq!(kit.deployments.len(), 1);
    assert_eq!(kit.services.len(), 1);
    assert_eq!(kit.budgets.len(), 1);
    assert_eq!(kit.network_policies.len(), 1);
    assert_eq!(kit.jobs.len(), 1);
    assert!(!kit.secrets.is_empty());

    // kustomization.yaml applies everything but the placeholders and the
    // job that runs before each rollout.
    let kustomization = &yaml_documents("kubernetes/kustomization.yaml")[0];
    let resources: BTreeSet<String> = kustomization["resources"]
        .as_array()
        .expect("resources")
        .iter()
        .map(|r| r.as_str().expect("a file").to_owned())
        .collect();
    let expected: BTreeSet<String> = MANIFESTS
        .iter()
        .filter(|m| !matches!(**m, "secrets.yaml" | "migrate-job.yaml"))
        .map(|m| m.to_string())
        .collect();
    assert_eq!(resources, expected, "kustomization.yaml's resources");
}

#[test]
fn kubernetes_deployment_holds_together_with_the_gateway_config() {
    let kit = Manifests::load();
    let deployment = kit.deployment();
    let spec = deployment.spec.as_ref().expect("spec");
    let pod = kit.pod();
    let container = kit.gateway_container();
    let labels = kit.pod_labels();
    assert!(
        spec.replicas.unwrap_or(1) >= 2,
        "at least two replicas behind the Service"
    );
    assert!(
        selector_matches(
            spec.selector.match_labels.as_ref().expect("matchLabels"),
            &labels
        ),
        "the Deployment's selector matches its pods"
    );

    // The configuration the pod runs, with the files it names.
    let mounts = mounts(&kit, container, pod.volumes.as_deref().unwrap_or_default());
    let config = pod_config(&kit, container, &mounts);
    assert!(
        config.database_url.starts_with("postgres"),
        "replicas share PostgreSQL, not a SQLite file in one pod"
    );
    let config_path = config_argument(container);
    let config_dir = config_path.parent().expect("a directory");
    let registry = config_map_file(&kit, &mounts, &config.registry);
    Registry::parse(&registry, &config.registry).expect("the ConfigMap's registry parses");
    let policy = config
        .policy
        .clone()
        .expect("the kit names its policy file");
    Policy::parse(&config_map_file(&kit, &mounts, &policy), &policy)
        .expect("the ConfigMap's policy parses");
    assert!(config.registry.starts_with(config_dir));
    let mut reads = vec![
        ("tls.ca", config.tls.ca.clone()),
        ("tls.cert", config.tls.cert.clone()),
        ("tls.key", config.tls.key.clone()),
        ("signing.key", config.signing_key.clone()),
    ];
    reads.extend(config.tls.crls.iter().map(|c| ("tls.crls", c.clone())));
    reads.extend(
        config
            .mechanism
            .deadlines
            .iter()
            .map(|p| ("mechanism.deadlines", p.clone())),
    );
    reads.extend(
        config
            .mechanism
            .calendar
            .iter()
            .map(|p| ("mechanism.calendar", p.clone())),
    );
    for (field, path) in &reads {
        assert_readable(&mounts, path, field);
    }
    for (field, path) in [
        ("tls.key", &config.tls.key),
        ("signing.key", &config.signing_key),
    ] {
        assert!(
            matches!(provided(&mounts, path), Some(Mounted::Secret(..))),
            "{field}: a private key comes from a Secret"
        );
    }
    assert_eq!(
        provided(&mounts, &config.audit.checkpoint_file),
        Some(&Mounted::Writable),
        "audit.checkpoint_file {} must be in a writable volume (the root file system is read-only)",
        config.audit.checkpoint_file.display()
    );

    // Ports: gRPC and ops as the configuration (with the pod's
    // environment) listens, the ops port on every interface for the
    // kubelet.
    let ops = config.ops.listen.expect("the ops port is on");
    assert!(
        ops.ip().is_unspecified(),
        "the ops port must listen on the pod's interfaces for the kubelet's probes, not {ops}"
    );
    assert!(
        config.listen.ip().is_unspecified(),
        "gRPC on the pod's interfaces"
    );
    let grpc_port = container_port(container, &IntOrString::String("grpc".into()), "grpc");
    assert_eq!(
        grpc_port,
        port_of(config.listen),
        "the grpc containerPort is `listen`'s"
    );
    let (ready_path, ready_port) =
        probe_target(container.readiness_probe.as_ref(), "readinessProbe");
    let (live_path, live_port) = probe_target(container.liveness_probe.as_ref(), "livenessProbe");
    assert_eq!(
        ready_path, "/readyz",
        "readiness is /readyz (the store and certificates)"
    );
    assert_eq!(
        live_path, "/healthz",
        "liveness is /healthz: on /readyz a database outage would restart every replica"
    );
    let mut probe_ports = vec![
        container_port(container, &ready_port, "readinessProbe"),
        container_port(container, &live_port, "livenessProbe"),
    ];
    if let Some(startup) = container.startup_probe.as_ref() {
        let (path, port) = probe_target(Some(startup), "startupProbe");
        assert_eq!(path, "/healthz");
        probe_ports.push(container_port(container, &port, "startupProbe"));
    }
    for port in probe_ports {
        assert_eq!(
            port,
            port_of(ops),
            "probes go to the ops port the gateway listens on"
        );
    }

    // The Service: TCP straight to the gRPC port, nothing else exposed.
    let service = &kit.services[0];
    let service_spec = service.spec.as_ref().expect("spec");
    assert!(
        selector_matches(service_spec.selector.as_ref().expect("selector"), &labels),
        "the Service selects the gateway's pods"
    );
    let ports = service_spec.ports.as_deref().unwrap_or_default();
    assert_eq!(ports.len(), 1, "the Service exposes the gRPC port only");
    let port = &ports[0];
    assert_eq!(port.protocol.as_deref().unwrap_or("TCP"), "TCP");
    assert!(
        port.app_protocol.is_none(),
        "no appProtocol: the load balancer must pass TCP through, not speak HTTP/2 or TLS"
    );
    let target = port
        .target_port
        .clone()
        .unwrap_or(IntOrString::Int(port.port));
    assert_eq!(
        container_port(container, &target, "the Service's targetPort"),
        grpc_port,
        "the Service targets the gRPC port"
    );
    assert!(matches!(
        service_spec.type_.as_deref(),
        Some("LoadBalancer" | "ClusterIP" | "NodePort")
    ));

    // Draining: the pod's grace covers the preStop pause and the
    // gateway's own.
    let pre_stop = container
        .lifecycle
        .as_ref()
        .and_then(|l| l.pre_stop.as_ref())
        .and_then(|p| p.sleep.as_ref())
        .map_or(0, |sleep| sleep.seconds);
    let termination = pod.termination_grace_period_seconds.unwrap_or(30);
    assert!(
        termination > pre_stop + config.shutdown_grace.as_secs() as i64,
        "terminationGracePeriodSeconds {termination} must exceed preStop {pre_stop} + grace_seconds {}",
        config.shutdown_grace.as_secs()
    );

    // Resources.
    let resources = container.resources.as_ref().expect("resources");
    for (what, set) in [
        ("requests", &resources.requests),
        ("limits", &resources.limits),
    ] {
        let set = set.as_ref().unwrap_or_else(|| panic!("resources.{what}"));
        for resource in ["cpu", "memory"] {
            assert!(set.contains_key(resource), "resources.{what}.{resource}");
        }
    }

    // Security.
    assert_restricted(pod, container, "the gateway");
    assert!(
        pod.automount_service_account_token == Some(false),
        "the gateway needs no Kubernetes API token"
    );

    // Spreading, and the disruption budget.
    let spread = pod.topology_spread_constraints.iter().flatten().any(|c| {
        c.when_unsatisfiable == "DoNotSchedule"
            && c.topology_key == "kubernetes.io/hostname"
            && c.label_selector
                .as_ref()
                .and_then(|s| s.match_labels.as_ref())
                .is_some_and(|s| selector_matches(s, &labels))
    });
    let anti_affinity = pod
        .affinity
        .as_ref()
        .and_then(|a| a.pod_anti_affinity.as_ref())
        .is_some();
    assert!(
        spread || anti_affinity,
        "the replicas must be kept on different nodes"
    );
    let budget = kit.budgets[0].spec.as_ref().expect("spec");
    assert_eq!(budget.min_available, Some(IntOrString::Int(1)));
    assert!(selector_matches(
        budget
            .selector
            .as_ref()
            .and_then(|s| s.match_labels.as_ref())
            .expect("matchLabels"),
        &labels
    ));

    // The NetworkPolicy: gRPC open, the ops port only from somewhere named.
    let policy = kit.network_policies[0].spec.as_ref().expect("spec");
    assert!(selector_matches(
        policy
            .pod_selector
            .as_ref()
            .and_then(|s| s.match_labels.as_ref())
            .expect("podSelector"),
        &labels
    ));
    let mut grpc_open = false;
    for rule in policy.ingress.iter().flatten() {
        for port in rule.ports.iter().flatten() {
            let number = container_port(
                container,
                port.port.as_ref().expect("a port"),
                "NetworkPolicy",
            );
            if number == port_of(ops) {
                assert!(
                    rule.from.as_ref().is_some_and(|f| !f.is_empty()),
                    "the ops port has no authentication: only named peers may reach it"
                );
            }
            if number == grpc_port && rule.from.as_ref().is_none_or(|f| f.is_empty()) {
                grpc_open = true;
            }
        }
    }
    assert!(
        grpc_open,
        "the NetworkPolicy lets agencies reach the gRPC port"
    );
}

/// The restricted Pod Security Standard's essentials.
fn assert_restricted(pod: &PodSpec, container: &Container, what: &str) {
    let pod_security = pod.security_context.as_ref();
    let security = container
        .security_context
        .as_ref()
        .unwrap_or_else(|| panic!("{what}: a container securityContext"));
    assert!(
        security.run_as_non_root == Some(true)
            || pod_security.and_then(|s| s.run_as_non_root) == Some(true),
        "{what}: runAsNonRoot"
    );
    let uid = security
        .run_as_user
        .or(pod_security.and_then(|s| s.run_as_user));
    assert!(
        uid.is_some_and(|uid| uid > 0),
        "{what}: a numeric non-root runAsUser"
    );
    assert_eq!(
        security.read_only_root_filesystem,
        Some(true),
        "{what}: readOnlyRootFilesystem"
    );
    assert_eq!(
        security.allow_privilege_escalation,
        Some(false),
        "{what}: allowPrivilegeEscalation"
    );
    let caps = security.capabilities.as_ref().expect("capabilities");
    assert_eq!(
        caps.drop.as_deref(),
        Some(&["ALL".to_owned()][..]),
        "{what}: drop ALL"
    );
    assert!(
        caps.add.as_ref().is_none_or(|a| a.is_empty()),
        "{what}: no capability added"
    );
    let seccomp = security
        .seccomp_profile
        .as_ref()
        .or(pod_security.and_then(|s| s.seccomp_profile.as_ref()))
        .map(|p| p.type_.as_str());
    assert_eq!(
        seccomp,
        Some("RuntimeDefault"),
        "{what}: seccomp RuntimeDefault"
    );
    assert_eq!(
        uid,
        Some(i64::from(containerfile_user().0)),
        "{what}: runAsUser is the image's USER"
    );
}

#[test]
fn kubernetes_migration_job_runs_the_same_image_and_database() {
    let kit = Manifests::load();
    let job = &kit.jobs[0];
    let pod = job
        .spec
        .as_ref()
        .and_then(|s| s.template.spec.as_ref())
        .expect("the Job's pod");
    assert!(matches!(
        pod.restart_policy.as_deref(),
        Some("Never" | "OnFailure")
    ));
    let container = &pod.containers[0];
    let gateway = kit.gateway_container();
    assert_eq!(
        container.image, gateway.image,
        "the migration runs the gateway's image"
    );
    let args: Vec<&str> = container
        .args
        .iter()
        .flatten()
        .map(String::as_str)
        .collect();
    assert_eq!(args.first(), Some(&"migrate"), "the Job runs `migrate`");
    let mounts = mounts(&kit, container, pod.volumes.as_deref().unwrap_or_default());
    let config = pod_config(&kit, container, &mounts);
    let gateway_mounts = mounts_of_gateway(&kit);
    let serving = pod_config(&kit, gateway, &gateway_mounts);
    assert_eq!(
        config.database_url, serving.database_url,
        "the Job migrates the database the replicas serve"
    );
    assert_restricted(pod, container, "the migration job");
}

fn mounts_of_gateway(kit: &Manifests) -> Vec<(PathBuf, Mounted, VolumeMount)> {
    mounts(
        kit,
        kit.gateway_container(),
        kit.pod().volumes.as_deref().unwrap_or_default(),
    )
}

/// The development PKI file that stands in for each key of the Secrets
/// the gateway's pod mounts, when a real gateway is started from the kit.
const DEV_PKI_FOR_SECRETS: &[(&str, &str, &str)] = &[
    ("liandong-gateway-tls", "ca.pem", "ca.crt"),
    ("liandong-gateway-tls", "gateway.pem", "gateway.crt"),
    ("liandong-gateway-tls", "gateway.key", "gateway.key"),
    ("liandong-gateway-crl", "agencies-ca.crl", "ca.crl"),
    (
        "liandong-gateway-signing",
        "gateway.signing.pk8",
        "gateway.signing.pk8",
    ),
];

/// A PostgreSQL database of this test's own (`ld_bed_…`, like the test
/// beds', so a crashed run's leftovers are swept the same way), dropped at
/// the end.
struct ScratchDatabase {
    server: String,
    name: String,
    url: String,
}

impl ScratchDatabase {
    async fn create() -> Self {
        use sqlx::Connection;
        let server = std::env::var(liandong_tests::POSTGRES_URL_VAR)
            .unwrap_or_else(|_| liandong_tests::DEFAULT_POSTGRES_URL.to_owned());
        let seconds = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        let name = format!(
            "{}{seconds}_{}_kit",
            liandong_tests::POSTGRES_DATABASE_PREFIX,
            std::process::id()
        );
        let mut conn = sqlx::PgConnection::connect(&server)
            .await
            .unwrap_or_else(|e| panic!("PostgreSQL at {server}: {e}"));
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&mut conn)
            .await
            .expect("create the database");
        conn.close().await.expect("close");
        let (base, _) = server.rsplit_once('/').expect("a database URL");
        let url = format!("{base}/{name}");
        Self { server, name, url }
    }

    async fn drop_now(self) {
        use sqlx::Connection;
        let mut conn = sqlx::PgConnection::connect(&self.server)
            .await
            .expect("connect");
        sqlx::query(&format!(
            "DROP DATABASE IF EXISTS {} WITH (FORCE)",
            self.name
        ))
        .execute(&mut conn)
        .await
        .expect("drop the database");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_started_as_the_pod_runs_answers_its_probes_and_drains_in_time() {
    let kit = Manifests::load();
    let container = kit.gateway_container();
    let pod = kit.pod();
    let mounts = mounts_of_gateway(&kit);
    let root = tempfile::tempdir().expect("a temporary directory");
    let inside = |path: &Path| root.path().join(path.strip_prefix("/").expect("absolute"));

    // The ConfigMap's registry gets a development PKI; its files take the
    // place of the Secrets' keys.
    let config_path = config_argument(container);
    let registry_text = config_map_file(
        &kit,
        &mounts,
        &pod_config(&kit, container, &mounts).registry,
    );
    let pki = root.path().join("dev-pki");
    std::fs::create_dir_all(&pki).expect("mkdir");
    std::fs::write(pki.join("agencies.toml"), &registry_text).expect("write");
    liandong_certs::init(&pki.join("agencies.toml"), &pki.join("out"), false)
        .expect("a development PKI for the kit's registry");

    // Every mount laid out under the root as the pod sees it.
    for (at, mounted, _) in &mounts {
        let dir = inside(at);
        std::fs::create_dir_all(&dir).expect("mkdir");
        match mounted {
            Mounted::ConfigMap(name, keys) => {
                let data = kit.config_map(name).data.clone().unwrap_or_default();
                for key in keys {
                    let mut text = data[key].clone();
                    // Absolute paths into the pod's mounts point under the
                    // root here.
                    for (other, ..) in &mounts {
                        text = text.replace(
                            &format!("\"{}/", other.display()),
                            &format!("\"{}/", inside(other).display()),
                        );
                    }
                    std::fs::write(dir.join(key), text).expect("write");
                }
            }
            Mounted::Secret(name, keys) => {
                for key in keys {
                    let (.., file) = DEV_PKI_FOR_SECRETS
                        .iter()
                        .find(|(secret, k, _)| secret == name && k == key)
                        .unwrap_or_else(|| {
                            panic!("Secret {name} key {key}: no development PKI file stands in for it here")
                        });
                    std::fs::copy(pki.join("out").join(file), dir.join(key)).expect("copy");
                }
            }
            Mounted::Writable => {}
        }
    }

    // The pod's environment, with the database of this test and ports the
    // test may bind (loopback, chosen by the kernel).
    let scratch = match Backend::from_env() {
        Backend::Postgres => Some(ScratchDatabase::create().await),
        Backend::Sqlite => None,
    };
    let database_url = match &scratch {
        Some(db) => db.url.clone(),
        None => format!("sqlite://{}", root.path().join("kit.db").display()),
    };
    let env_values = kit.environment(container);
    let mut env: Vec<(&str, Option<&str>)> = env_values
        .iter()
        .filter(|(name, _)| {
            !matches!(
                name.as_str(),
                "LIANDONG_OPS_LISTEN" | "LIANDONG_LISTEN" | "LIANDONG_DATABASE_URL"
            )
        })
        .map(|(name, value)| (name.as_str(), Some(value.as_str())))
        .collect();
    env.push(("LIANDONG_LISTEN", Some("127.0.0.1:0")));
    env.push(("LIANDONG_DATABASE_URL", Some(&database_url)));
    let config_file = inside(&config_path);
    let parsed = GatewayConfig::load(&config_file, |key| {
        env.iter()
            .find(|(name, _)| *name == key)
            .and_then(|(_, v)| v.map(String::from))
    })
    .expect("the laid-out configuration parses");
    for path in [
        &parsed.registry,
        &parsed.tls.ca,
        &parsed.signing_key,
        &parsed.audit.checkpoint_file,
    ] {
        assert!(
            path.starts_with(root.path()),
            "{} escaped the laid-out pod",
            path.display()
        );
    }
    let log = root.path().join("gateway.log");
    let mut gateway = GatewayProcess::start_with(&config_file, &log, &[], &env)
        .expect("the gateway starts from the kit's configuration and Secrets' layout");
    let ops = gateway.ops_url();

    // Every probe the pod has answers 200 on its path.
    let probes = [
        ("startupProbe", container.startup_probe.as_ref()),
        ("livenessProbe", container.liveness_probe.as_ref()),
        ("readinessProbe", container.readiness_probe.as_ref()),
    ];
    for (what, probe) in probes {
        let Some(probe) = probe else { continue };
        let (path, _) = probe_target(Some(probe), what);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let (status, body) = ops_http::get(&ops, &path).await;
            if status == 200 {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{what} {path}: {status} {body}\nlog:\n{}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    // The gRPC port is the gateway's TLS endpoint: a plaintext client is
    // refused, and the refusal audited, which gives the drain an audit
    // head to sign.
    {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut tcp = tokio::net::TcpStream::connect(gateway.addr)
            .await
            .expect("connect to the gRPC port");
        tcp.write_all(b"GET / HTTP/1.1\r\nHost: gateway\r\n\r\n")
            .await
            .expect("write");
        let mut answer = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(30), tcp.read_to_end(&mut answer)).await;
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (_, metrics) = ops_http::get(&ops, "/metrics").await;
        if ops_http::value(&metrics, "liandong_audit_rows_since_checkpoint")
            .is_some_and(|rows| rows >= 1.0)
        {
            let backend = match Backend::from_env() {
                Backend::Postgres => "postgres",
                Backend::Sqlite => "sqlite",
            };
            assert!(
                metrics.contains(&format!("backend=\"{backend}\"")),
                "the gateway runs on the test's {backend} database"
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the refusal was not audited:\n{metrics}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // SIGTERM (after the preStop pause) ends it cleanly within the rest of
    // the pod's termination grace, signing the audit head into the pod's
    // writable volume.
    let pre_stop = container
        .lifecycle
        .as_ref()
        .and_then(|l| l.pre_stop.as_ref())
        .and_then(|p| p.sleep.as_ref())
        .map_or(0, |sleep| sleep.seconds);
    let budget = pod.termination_grace_period_seconds.unwrap_or(30) - pre_stop;
    gateway.signal(nix::sys::signal::Signal::SIGTERM);
    let status = gateway
        .wait(Duration::from_secs(budget as u64))
        .expect("the gateway ends within the pod's termination grace");
    assert!(
        status.success(),
        "SIGTERM ends the gateway with 0: {status}"
    );
    assert!(
        parsed.audit.checkpoint_file.exists(),
        "the final audit checkpoint was written to the pod's writable volume"
    );
    if let Some(db) = scratch {
        db.drop_now().await;
    }
}

// ---------------------------------------------------------------------
// Compose
// ---------------------------------------------------------------------

/// Properties of a service in the Compose Specification.
const COMPOSE_SERVICE_KEYS: &[&str] = &[
    "annotations",
    "attach",
    "blkio_config",
    "build",
    "cap_add",
    "cap_drop",
    "cgroup",
    "cgroup_parent",
    "command",
    "configs",
    "container_name",
    "cpu_count",
    "cpu_percent",
    "cpu_period",
    "cpu_quota",
    "cpu_rt_period",
    "cpu_rt_runtime",
    "cpu_shares",
    "cpus",
    "cpuset",
    "credential_spec",
    "depends_on",
    "deploy",
    "develop",
    "device_cgroup_rules",
    "devices",
    "dns",
    "dns_opt",
    "dns_search",
    "domainname",
    "entrypoint",
    "env_file",
    "environment",
    "expose",
    "extends",
    "external_links",
    "extra_hosts",
    "gpus",
    "group_add",
    "healthcheck",
    "hostname",
    "image",
    "init",
    "ipc",
    "isolation",
    "label_file",
    "labels",
    "links",
    "logging",
    "mac_address",
    "mem_limit",
    "mem_reservation",
    "mem_swappiness",
    "memswap_limit",
    "network_mode",
    "networks",
    "oom_kill_disable",
    "oom_score_adj",
    "pid",
    "pids_limit",
    "platform",
    "ports",
    "post_start",
    "pre_stop",
    "privileged",
    "profiles",
    "pull_policy",
    "read_only",
    "restart",
    "runtime",
    "scale",
    "secrets",
    "security_opt",
    "shm_size",
    "stdin_open",
    "stop_grace_period",
    "stop_signal",
    "storage_opt",
    "sysctls",
    "tmpfs",
    "tty",
    "ulimits",
    "user",
    "userns_mode",
    "uts",
    "volumes",
    "volumes_from",
    "working_dir",
];

/// A service of the compose file.
struct ComposeService {
    name: String,
    spec: serde_json::Map<String, Value>,
}

impl ComposeService {
    fn strings(&self, key: &str) -> Vec<String> {
        match self.spec.get(key) {
            None => Vec::new(),
            Some(Value::Array(items)) => items
                .iter()
                .map(|i| i.as_str().expect("a string").to_owned())
                .collect(),
            Some(Value::String(text)) => text.split_whitespace().map(String::from).collect(),
            Some(other) => panic!("{}: {key}: {other}", self.name),
        }
    }

    /// The program and its arguments: entrypoint (the image's, the gateway,
    /// when not set) then command.
    fn argv(&self) -> Vec<String> {
        let mut argv = self.strings("entrypoint");
        if argv.is_empty() {
            argv.push("/usr/local/bin/liandong-gateway".into());
        }
        argv.extend(self.strings("command"));
        argv
    }

    fn runs_our_image(&self) -> bool {
        self.spec.contains_key("build") || self.spec["image"].as_str() == Some("liandong:dev")
    }

    fn environment(&self) -> BTreeMap<String, String> {
        match self.spec.get("environment") {
            None => BTreeMap::new(),
            Some(Value::Object(map)) => map
                .iter()
                .map(|(k, v)| {
                    let v = match v {
                        Value::String(s) => s.clone(),
                        other => other.to_string(),
                    };
                    (k.clone(), v)
                })
                .collect(),
            Some(Value::Array(items)) => items
                .iter()
                .map(|i| {
                    let (k, v) = i.as_str().expect("KEY=value").split_once('=').expect("=");
                    (k.to_owned(), v.to_owned())
                })
                .collect(),
            Some(other) => panic!("{}: environment: {other}", self.name),
        }
    }

    /// `(source, target, read_only)` of each short-form volume.
    fn volumes(&self) -> Vec<(String, PathBuf, bool)> {
        self.strings("volumes")
            .iter()
            .map(|v| {
                let parts: Vec<&str> = v.split(':').collect();
                assert!(
                    (2..=3).contains(&parts.len()),
                    "{}: volume {v}: SOURCE:TARGET[:ro]",
                    self.name
                );
                let read_only = parts
                    .get(2)
                    .is_some_and(|o| o.split(',').any(|o| o == "ro"));
                (parts[0].to_owned(), PathBuf::from(parts[1]), read_only)
            })
            .collect()
    }

    fn depends_on(&self) -> BTreeMap<String, (String, bool)> {
        self.spec
            .get("depends_on")
            .and_then(Value::as_object)
            .map(|deps| {
                deps.iter()
                    .map(|(name, spec)| {
                        (
                            name.clone(),
                            (
                                spec["condition"]
                                    .as_str()
                                    .unwrap_or("service_started")
                                    .to_owned(),
                                spec["required"].as_bool().unwrap_or(true),
                            ),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    fn config_path(&self) -> PathBuf {
        let argv = self.argv();
        let at = argv
            .iter()
            .position(|a| a == "--config")
            .unwrap_or_else(|| panic!("{}: no --config", self.name));
        PathBuf::from(&argv[at + 1])
    }

    /// The bind-mounted host file at `target` in the container.
    fn bound_file(&self, target: &Path) -> PathBuf {
        let (source, ..) = self
            .volumes()
            .into_iter()
            .find(|(_, at, _)| at == target)
            .unwrap_or_else(|| panic!("{}: nothing is mounted at {}", self.name, target.display()));
        assert!(
            source.starts_with('.') || source.starts_with('/'),
            "{}: {source} is a named volume, not a file of the kit",
            self.name
        );
        kit_path("compose").join(source)
    }

    /// The mount `path` lies in: `(source, mount point, read_only)`.
    fn mount_of(&self, path: &Path) -> (String, PathBuf, bool) {
        self.volumes()
            .into_iter()
            .filter(|(_, at, _)| path.starts_with(at))
            .max_by_key(|(_, at, _)| at.components().count())
            .unwrap_or_else(|| panic!("{}: {} is in no mounted volume", self.name, path.display()))
    }
}

struct Compose {
    services: Vec<ComposeService>,
    volumes: BTreeSet<String>,
}

impl Compose {
    fn load() -> Self {
        let documents = yaml_documents("compose/compose.yaml");
        assert_eq!(documents.len(), 1, "one YAML document");
        let top = documents[0].as_object().expect("a mapping");
        for key in top.keys() {
            assert!(
                matches!(
                    key.as_str(),
                    "name" | "services" | "volumes" | "networks" | "configs" | "secrets"
                ) || key.starts_with("x-"),
                "compose.yaml: unknown top-level key {key}"
            );
        }
        let services = top["services"]
            .as_object()
            .expect("services")
            .iter()
            .map(|(name, spec)| {
                let spec = spec.as_object().expect("a service mapping").clone();
                for key in spec.keys() {
                    assert!(
                        COMPOSE_SERVICE_KEYS.contains(&key.as_str()) || key.starts_with("x-"),
                        "compose.yaml: service {name}: {key} is not a Compose service property"
                    );
                }
                ComposeService {
                    name: name.clone(),
                    spec,
                }
            })
            .collect();
        let volumes = top
            .get("volumes")
            .and_then(Value::as_object)
            .map(|v| v.keys().cloned().collect())
            .unwrap_or_default();
        Self { services, volumes }
    }

    fn service(&self, name: &str) -> &ComposeService {
        self.services
            .iter()
            .find(|s| s.name == name)
            .unwrap_or_else(|| panic!("compose.yaml has no service {name}"))
    }

    fn running(&self, program: &str, subcommand: &str) -> Vec<&ComposeService> {
        self.services
            .iter()
            .filter(|s| {
                let argv = s.argv();
                argv[0].ends_with(program) && argv.iter().any(|a| a == subcommand)
            })
            .collect()
    }
}

/// What the compose file's PKI job writes, made by running
/// `liandong-certs init` as the job would into a temporary directory.
struct PkiJob {
    /// Holds the files for the test's duration.
    _dir: tempfile::TempDir,
    /// The files `init` wrote.
    files: PathBuf,
    /// Where the job writes them (`--out`).
    out: PathBuf,
    /// The named volume mounted there.
    volume: String,
}

impl PkiJob {
    fn run(compose: &Compose) -> Self {
        let jobs = compose.running("liandong-certs", "init");
        assert_eq!(jobs.len(), 1, "one PKI job");
        let job = jobs[0];
        let argv = job.argv();
        let flag = |name: &str| {
            let at = argv
                .iter()
                .position(|a| a == name)
                .unwrap_or_else(|| panic!("{}: no {name}", job.name));
            PathBuf::from(&argv[at + 1])
        };
        let registry = job.bound_file(&flag("--registry"));
        let out = flag("--out");
        let (volume, at, read_only) = job.mount_of(&out);
        assert!(
            at == out && !read_only && compose.volumes.contains(&volume),
            "{}: --out {} must be a writable named volume of its own",
            job.name,
            out.display()
        );
        let dir = tempfile::tempdir().expect("a temporary directory");
        let files = dir.path().join("pki");
        liandong_certs::init(&registry, &files, false).expect("the PKI job's init");
        Self {
            _dir: dir,
            files,
            out,
            volume,
        }
    }
}

/// `path` in `service` is a file the PKI job writes (through the PKI
/// volume, mounted read-only where the job wrote it), or a file of the kit
/// bound there read-only.
fn assert_compose_file(service: &ComposeService, path: &Path, pki: &PkiJob, what: &str) {
    let (source, at, read_only) = service.mount_of(path);
    assert!(
        read_only,
        "{}: {what} {} is mounted read-only",
        service.name,
        path.display()
    );
    if source.starts_with('.') || source.starts_with('/') {
        assert_eq!(at, path, "{}: {what}: a bound file", service.name);
        assert!(
            service.bound_file(&at).is_file(),
            "{}: {what}: {source} does not exist",
            service.name
        );
    } else {
        assert_eq!(
            source,
            pki.volume,
            "{}: {what} {} comes from a volume the PKI job does not write",
            service.name,
            path.display()
        );
        assert_eq!(
            at, pki.out,
            "{}: the PKI volume at the job's path",
            service.name
        );
        let relative = path.strip_prefix(&at).expect("within");
        assert!(
            pki.files.join(relative).is_file(),
            "{}: {what} {} is not a file liandong-certs init writes",
            service.name,
            path.display()
        );
    }
}

fn assert_compose_writable(compose: &Compose, service: &ComposeService, path: &Path, what: &str) {
    let (source, _, read_only) = service.mount_of(path);
    assert!(
        !read_only && compose.volumes.contains(&source),
        "{}: {what} {} must be in a writable named volume",
        service.name,
        path.display()
    );
}

#[test]
fn compose_runs_two_gateway_replicas_on_one_database_after_the_jobs() {
    let compose = Compose::load();
    let pki = PkiJob::run(&compose);
    let gateways = compose.running("liandong-gateway", "serve");
    assert_eq!(gateways.len(), 2, "two gateway replicas");
    let postgres = compose.service("postgres");
    let postgres_env = postgres.environment();
    let migrations = compose.running("liandong-gateway", "migrate");
    assert_eq!(migrations.len(), 1, "one migration job");
    let migrate = migrations[0];

    let mut urls = BTreeSet::new();
    let mut aliases = BTreeSet::new();
    for service in gateways.iter().copied().chain([migrate]) {
        let config_path = service.config_path();
        let text = std::fs::read_to_string(service.bound_file(&config_path))
            .expect("the gateway config of compose");
        let env = service.environment();
        let config = GatewayConfig::parse(&text, &config_path, |k| env.get(k).cloned())
            .unwrap_or_else(|e| panic!("{}: {e}", service.name));
        urls.insert(config.database_url.clone());
        if service.name == migrate.name {
            assert_eq!(
                migrate.depends_on().get("postgres").map(|d| d.0.as_str()),
                Some("service_healthy"),
                "the migration waits for a healthy PostgreSQL"
            );
            continue;
        }
        // What each replica reads, and writes.
        let mut reads = vec![
            ("tls.ca", config.tls.ca.clone()),
            ("tls.cert", config.tls.cert.clone()),
            ("tls.key", config.tls.key.clone()),
            ("signing.key", config.signing_key.clone()),
            ("registry", config.registry.clone()),
        ];
        reads.extend(config.policy.clone().map(|p| ("policy", p)));
        reads.extend(config.tls.crls.iter().map(|c| ("tls.crls", c.clone())));
        for (what, path) in &reads {
            assert_compose_file(service, path, &pki, what);
        }
        Registry::load(&service.bound_file(&config.registry)).expect("the registry parses");
        assert_compose_writable(
            &compose,
            service,
            &config.audit.checkpoint_file,
            "audit.checkpoint_file",
        );
        assert!(
            !gateways
                .iter()
                .filter(|other| other.name != service.name)
                .any(|other| other.mount_of(&config.audit.checkpoint_file).0
                    == service.mount_of(&config.audit.checkpoint_file).0),
            "{}: each replica's state volume is its own",
            service.name
        );
        assert_eq!(
            service
                .depends_on()
                .get(&migrate.name)
                .map(|d| d.0.as_str()),
            Some("service_completed_successfully"),
            "{}: starts after the migration completed",
            service.name
        );
        let ops = config.ops.listen.expect("the ops port is on");
        for port in service.strings("ports") {
            let parts: Vec<&str> = port.split(':').collect();
            assert_eq!(
                parts.len(),
                3,
                "{}: HOST_IP:HOST_PORT:PORT ({port})",
                service.name
            );
            assert_eq!(
                parts[0], "127.0.0.1",
                "{}: published on the host's loopback only",
                service.name
            );
            let inner: u16 = parts[2].parse().expect("a port");
            assert!(
                inner == config.listen.port() || inner == ops.port(),
                "{}: {port} publishes a port the gateway does not listen on",
                service.name
            );
        }
        assert!(
            ops.ip().is_unspecified(),
            "the ops port reachable through the published port"
        );
        let grace = compose_seconds(service.spec.get("stop_grace_period"));
        assert!(
            grace > config.shutdown_grace.as_secs(),
            "{}: stop_grace_period {grace}s must exceed grace_seconds {}",
            service.name,
            config.shutdown_grace.as_secs()
        );
        if let Some(networks) = service.spec.get("networks").and_then(Value::as_object) {
            for network in networks.values() {
                for alias in network["aliases"].as_array().into_iter().flatten() {
                    aliases.insert(alias.as_str().expect("an alias").to_owned());
                }
            }
        }
        assert_eq!(config.listen.port(), 7443);
    }
    assert_eq!(
        urls.len(),
        1,
        "every replica and the migration use one database: {urls:?}"
    );
    let url = urls.into_iter().next().expect("one");
    assert!(
        url.starts_with(&format!(
            "postgres://{}:{}@postgres:5432/{}",
            postgres_env["POSTGRES_USER"],
            postgres_env["POSTGRES_PASSWORD"],
            postgres_env["POSTGRES_DB"]
        )),
        "the database URL {url} is the compose PostgreSQL's"
    );
    assert!(
        aliases.contains("gateway"),
        "the replicas share the alias the adapters use"
    );

    // Health checks only where the image has the tool: our image has no
    // shell and no HTTP client.
    for service in &compose.services {
        if service.runs_our_image() {
            assert!(
                !service.spec.contains_key("healthcheck"),
                "{}: the distroless image cannot run a health check command",
                service.name
            );
            if let Some(build) = service.spec.get("build") {
                let context = kit_path("compose").join(build["context"].as_str().expect("context"));
                assert!(
                    context
                        .join(build["dockerfile"].as_str().expect("dockerfile"))
                        .is_file(),
                    "{}: the build's Containerfile exists",
                    service.name
                );
            }
        }
        for (source, ..) in service.volumes() {
            if source.starts_with('.') || source.starts_with('/') {
                assert!(
                    kit_path("compose").join(&source).exists(),
                    "{}: bind source {source} does not exist",
                    service.name
                );
            } else {
                assert!(
                    compose.volumes.contains(&source),
                    "{}: volume {source} is not declared",
                    service.name
                );
            }
        }
        for (dependency, (condition, required)) in service.depends_on() {
            let other = compose.service(&dependency);
            assert!(
                !(required && other.spec.contains_key("profiles")),
                "{}: depends on {dependency}, which runs only under a profile: `required: false`, \
                 or a plain `up` refuses to start",
                service.name
            );
            if condition == "service_healthy" {
                assert!(
                    other.spec.contains_key("healthcheck"),
                    "{}: waits for {dependency} to be healthy, which has no healthcheck",
                    service.name
                );
            }
        }
    }
    assert!(postgres.spec.contains_key("healthcheck"));
}

/// A compose duration (`30s`, `1m30s`) in seconds; 10 when unset (the
/// default).
fn compose_seconds(value: Option<&Value>) -> u64 {
    let Some(text) = value.and_then(Value::as_str) else {
        return 10;
    };
    let mut total = 0;
    let mut number = String::new();
    for c in text.chars() {
        if c.is_ascii_digit() {
            number.push(c);
            continue;
        }
        let n: u64 = number.parse().expect("a number");
        number.clear();
        total += match c {
            'h' => n * 3600,
            'm' => n * 60,
            's' => n,
            _ => panic!("duration {text}"),
        };
    }
    total
}

#[test]
fn compose_adapters_configs_parse_and_reach_the_replicas() {
    let compose = Compose::load();
    let pki = PkiJob::run(&compose);
    let adapters = compose.running("liandong-adapter", "run");
    let agencies: BTreeSet<String> = adapters
        .iter()
        .map(|service| {
            let config_path = service.config_path();
            let text = std::fs::read_to_string(service.bound_file(&config_path)).expect("read");
            let config = DaemonConfig::parse(&config_path, &text, PartialGateway::default())
                .unwrap_or_else(|e| panic!("{}: {e}", service.name));
            let url: http::Uri = config.gateway.url.parse().expect("a URL");
            let host = url.host().expect("a host");
            let reachable = compose.services.iter().any(|s| {
                s.name == host
                    || s.spec
                        .get("networks")
                        .and_then(Value::as_object)
                        .is_some_and(|n| n.values().any(|n| {
                            n["aliases"].as_array().is_some_and(|a| a.iter().any(|a| a == host))
                        }))
            });
            assert!(reachable, "{}: {host} is no service or alias", service.name);
            assert_eq!(url.port_u16(), Some(7443), "{}: the replicas' port", service.name);
            let name = config.gateway.server_name.clone().unwrap_or_else(|| host.to_owned());
            assert!(
                liandong_certs::GATEWAY_SANS.contains(&name.as_str()),
                "{}: {name} is not a name of the development gateway certificate",
                service.name
            );
            for (what, path) in [
                ("signing_key", &config.signing_key),
                ("gateway.ca", &config.gateway.ca),
                ("gateway.cert", &config.gateway.cert),
                ("gateway.key", &config.gateway.key),
            ] {
                assert_compose_file(service, path, &pki, what);
            }
            assert!(
                config.gateway.cert.ends_with(format!("{}.crt", config.agency)),
                "{}: the agency's own certificate",
                service.name
            );
            assert_compose_writable(&compose, service, &config.outbox.path, "outbox.path");
            for source in &config.sources {
                match source {
                    SourceSettings::Folder(folder) => {
                        assert_compose_writable(&compose, service, &folder.path, "source.path");
                    }
                    SourceSettings::Http(_) => panic!(
                        "{}: an HTTP source needs its token file made first; the compose adapters use drop folders",
                        service.name
                    ),
                }
            }
            for sink in config
                .subscriptions
                .iter()
                .map(|s| &s.sink)
                .chain(config.dead_letter_sink.as_ref())
            {
                if let SinkSettings::Folder(folder) = sink {
                    assert_compose_writable(&compose, service, &folder.path, "sink.path");
                }
            }
            let states: Vec<String> = adapters
                .iter()
                .map(|a| a.mount_of(&config.outbox.path).0)
                .collect();
            assert_eq!(
                states.iter().filter(|s| **s == service.mount_of(&config.outbox.path).0).count(),
                1,
                "{}: each adapter's state volume is its own",
                service.name
            );
            config.agency.as_str().to_owned()
        })
        .collect();
    assert_eq!(
        agencies,
        ["cz-eeb-xiangyuan", "cz-procuratorate", "cz-psb"]
            .map(String::from)
            .into(),
        "the dev agencies' adapters"
    );
}

// ---------------------------------------------------------------------
// Containerfile
// ---------------------------------------------------------------------

/// One instruction: keyword (upper case) and its arguments.
type Instruction = (String, String);

/// The Containerfile's stages, each a list of instructions (the first is
/// its FROM).
fn containerfile_stages() -> Vec<Vec<Instruction>> {
    let text = read_kit("container/Containerfile");
    let mut logical = Vec::new();
    let mut current = String::new();
    for line in text.lines() {
        let trimmed = line.trim();
        if trimmed.starts_with('#') || (trimmed.is_empty() && current.is_empty()) {
            continue;
        }
        match trimmed.strip_suffix('\\') {
            Some(head) => {
                current.push_str(head);
                current.push(' ');
            }
            None => {
                current.push_str(trimmed);
                logical.push(std::mem::take(&mut current));
            }
        }
    }
    assert!(
        current.is_empty(),
        "Containerfile ends inside a continued line"
    );
    let mut stages: Vec<Vec<Instruction>> = Vec::new();
    for line in logical {
        let (keyword, rest) = line.split_once(char::is_whitespace).unwrap_or((&line, ""));
        let instruction = (keyword.to_ascii_uppercase(), rest.trim().to_owned());
        if instruction.0 == "FROM" {
            stages.push(Vec::new());
        }
        stages
            .last_mut()
            .expect("the first instruction is FROM")
            .push(instruction);
    }
    stages
}

/// The final stage's USER as `(uid, gid)`.
fn containerfile_user() -> (u32, u32) {
    let stages = containerfile_stages();
    let last = stages.last().expect("a stage");
    let user = last
        .iter()
        .rev()
        .find(|(k, _)| k == "USER")
        .map(|(_, v)| v.clone())
        .expect("the final stage sets USER");
    let (uid, gid) = user.split_once(':').unwrap_or((&user, &user));
    let number = |text: &str| -> u32 {
        text.parse()
            .unwrap_or_else(|_| panic!("USER {user}: numeric, so runAsNonRoot can check it"))
    };
    (number(uid), number(gid))
}

#[test]
fn containerfile_builds_every_shipped_binary_into_a_non_root_distroless_image() {
    let stages = containerfile_stages();
    assert!(stages.len() >= 2, "a multi-stage build");
    let builder = &stages[0];
    let from = &builder[0].1;
    let (image, alias) = from
        .split_once(" AS ")
        .or_else(|| from.split_once(" as "))
        .expect("FROM … AS builder");
    let tag = image.rsplit_once(':').expect("a tagged image").1;
    assert!(
        image.contains("library/rust:") || image.starts_with("rust:"),
        "the official rust image: {image}"
    );
    let rustc = Command::new("rustc")
        .arg("--version")
        .output()
        .expect("rustc");
    let version = String::from_utf8_lossy(&rustc.stdout);
    let toolchain: Vec<&str> = version
        .split_whitespace()
        .nth(1)
        .expect("rustc x.y.z")
        .split('.')
        .collect();
    assert!(
        tag.starts_with(&format!("{}.{}", toolchain[0], toolchain[1])),
        "the builder ({tag}) must be the toolchain the workspace is built with ({version})"
    );
    let runs: Vec<&String> = builder
        .iter()
        .filter(|(k, _)| k == "RUN")
        .map(|(_, v)| v)
        .collect();
    let build = runs
        .iter()
        .find(|r| r.contains("cargo build"))
        .expect("a cargo build in the builder");
    assert!(
        build.contains("--release") && build.contains("--locked"),
        "{build}"
    );
    for binary in shipped_binaries() {
        assert!(
            build.contains(&format!("--bin {binary}")),
            "the image builds {binary}: {build}"
        );
        assert!(
            build.contains(&format!("target/release/{binary}")),
            "the builder hands {binary} on: {build}"
        );
    }

    let last = stages.last().expect("the final stage");
    assert!(
        last[0].1.contains("distroless"),
        "a distroless runtime: {}",
        last[0].1
    );
    assert!(
        !last.iter().any(|(k, _)| k == "RUN"),
        "the runtime image has no shell to RUN anything"
    );
    assert!(
        last.iter()
            .any(|(k, v)| k == "COPY" && v.contains(&format!("--from={}", alias.trim()))),
        "the runtime copies from the builder"
    );
    let (uid, gid) = containerfile_user();
    assert!(uid > 0 && gid > 0, "a non-root USER");
    let entrypoint = last
        .iter()
        .rev()
        .find(|(k, _)| k == "ENTRYPOINT")
        .map(|(_, v)| v.clone())
        .expect("ENTRYPOINT");
    let argv: Vec<String> = serde_json::from_str(&entrypoint)
        .unwrap_or_else(|_| panic!("ENTRYPOINT in exec form (a JSON array): {entrypoint}"));
    assert_eq!(argv, ["/usr/local/bin/liandong-gateway"]);
    let cmd = last
        .iter()
        .rev()
        .find(|(k, _)| k == "CMD")
        .map(|(_, v)| v.clone());
    if let Some(cmd) = cmd {
        let _: Vec<String> = serde_json::from_str(&cmd).expect("CMD in exec form");
    }
    let exposed: BTreeSet<u16> = last
        .iter()
        .filter(|(k, _)| k == "EXPOSE")
        .flat_map(|(_, v)| {
            v.split_whitespace()
                .map(|p| p.trim_end_matches("/tcp").parse().expect("a port"))
        })
        .collect();
    let production = GatewayConfig::parse(
        &read_kit("production/gateway.toml"),
        Path::new("/etc/liandong/gateway.toml"),
        |_| None,
    )
    .expect("the production config");
    let ops: std::net::SocketAddr = DEFAULT_OPS_LISTEN.parse().expect("an address");
    assert!(
        exposed.contains(&production.listen.port()) && exposed.contains(&ops.port()),
        "EXPOSE the gRPC and ops ports: {exposed:?}"
    );
}

#[test]
fn dockerignore_keeps_the_workspace_and_drops_the_build_output() {
    let patterns: Vec<String> = read(".dockerignore")
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| l.trim_start_matches('/').trim_end_matches('/').to_owned())
        .collect();
    let ignored = |path: &str| {
        patterns
            .iter()
            .any(|p| !p.starts_with('!') && glob_matches(p, path))
    };
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let output = Command::new(cargo)
        .args([
            "metadata",
            "--format-version",
            "1",
            "--no-deps",
            "--offline",
        ])
        .current_dir(workspace())
        .output()
        .expect("cargo metadata");
    let metadata: Value = serde_json::from_slice(&output.stdout).expect("JSON");
    let root = workspace();
    let mut needed = vec!["Cargo.toml".to_owned(), "Cargo.lock".to_owned()];
    for package in metadata["packages"].as_array().expect("packages") {
        let manifest = PathBuf::from(package["manifest_path"].as_str().expect("a path"));
        let relative = manifest.strip_prefix(&root).expect("in the workspace");
        needed.push(relative.to_string_lossy().into_owned());
        for target in package["targets"].as_array().expect("targets") {
            let source = PathBuf::from(target["src_path"].as_str().expect("src_path"));
            needed.push(
                source
                    .strip_prefix(&root)
                    .expect("within")
                    .to_string_lossy()
                    .into_owned(),
            );
        }
    }
    needed.push("proto/liandong/v1/exchange.proto".into());
    for path in &needed {
        assert!(
            !ignored(path),
            ".dockerignore drops {path}, which the build needs"
        );
    }
    assert!(
        ignored("target/release/liandong-gateway"),
        ".dockerignore keeps target/ out"
    );
    assert!(ignored(".git/HEAD"), ".dockerignore keeps .git out");
}

/// `.dockerignore` matching: a pattern matches a path or any directory
/// above it; `*` and `?` within one component, `**` across components.
fn glob_matches(pattern: &str, path: &str) -> bool {
    let pattern: Vec<&str> = pattern.split('/').collect();
    let path: Vec<&str> = path.split('/').collect();
    (1..=path.len()).any(|n| components_match(&pattern, &path[..n]))
}

fn components_match(pattern: &[&str], path: &[&str]) -> bool {
    match (pattern.first(), path.first()) {
        (None, None) => true,
        (Some(&"**"), _) => {
            components_match(&pattern[1..], path)
                || (!path.is_empty() && components_match(pattern, &path[1..]))
        }
        (Some(p), Some(c)) => {
            component_matches(p.as_bytes(), c.as_bytes())
                && components_match(&pattern[1..], &path[1..])
        }
        _ => false,
    }
}

fn component_matches(pattern: &[u8], text: &[u8]) -> bool {
    match (pattern.first(), text.first()) {
        (None, None) => true,
        (Some(b'*'), _) => {
            component_matches(&pattern[1..], text)
                || (!text.is_empty() && component_matches(pattern, &text[1..]))
        }
        (Some(b'?'), Some(_)) => component_matches(&pattern[1..], &text[1..]),
        (Some(p), Some(t)) => p == t && component_matches(&pattern[1..], &text[1..]),
        _ => false,
    }
}
