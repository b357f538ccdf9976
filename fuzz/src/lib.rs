//! What the adapter fuzz targets share: one tokio runtime and one real
//! [`Acceptor`] over a store in a temporary directory, signing as `cz-psb`
//! with a key made at start, built once per fuzzing process.

use std::sync::{Arc, OnceLock};

use liandong_adapter::daemon::accept::Acceptor;
use liandong_adapter::signer::Signer;
use liandong_adapter::store::Store;
use liandong_core::domain::AgencyId;
use ring::rand::SystemRandom;
use ring::signature::Ed25519KeyPair;
use tokio::runtime::Runtime;
use tokio::sync::Notify;

/// The agency the fuzzed adapter publishes as.
pub const AGENCY: &str = "cz-psb";

/// The HTTP source's bearer token in the fuzzed adapter.
pub const HTTP_TOKEN: &str = "fuzzing-token-0123456789abcdef";

/// Largest encoded notification the acceptor takes (the adapter's default).
pub const MAX_BYTES: u64 = 262_144;

/// A runtime and an acceptor committing to a real store.
pub struct Adapter {
    /// Runs the acceptor's futures.
    pub runtime: Runtime,
    /// What the folder and HTTP sources hand their input to.
    pub acceptor: Acceptor,
    /// The HTTP source's token, read from a 0600 file like the daemon's.
    pub token: liandong_adapter::daemon::source::http::HttpToken,
    /// Keeps the store's directory alive for the whole run.
    _dir: tempfile::TempDir,
}

/// The process-wide adapter, made on first use.
pub fn adapter() -> &'static Adapter {
    static ADAPTER: OnceLock<Adapter> = OnceLock::new();
    ADAPTER.get_or_init(|| {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a tokio runtime");
        let dir = tempfile::tempdir().expect("a temporary directory");
        let store = runtime
            .block_on(Store::open(&dir.path().join("state").join("adapter.db")))
            .expect("open the adapter store");
        let der = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new())
            .expect("the system random source works");
        let agency = AgencyId::parse("agency", AGENCY).expect("a valid agency id");
        let signer = Signer::from_pkcs8(agency, der.as_ref()).expect("a generated key loads");
        // No practical limit on pending rows: every input reaches the
        // whole accept path instead of `outbox full`.
        let acceptor = Acceptor::new(
            store,
            Arc::new(signer),
            u64::MAX / 2,
            MAX_BYTES,
            Arc::new(Notify::new()),
        );
        let token_file = dir.path().join("http.token");
        {
            use std::io::Write as _;
            use std::os::unix::fs::OpenOptionsExt as _;
            let mut file = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&token_file)
                .expect("create the token file");
            file.write_all(format!("{HTTP_TOKEN}\n").as_bytes())
                .expect("write the token file");
        }
        let token = liandong_adapter::daemon::source::http::HttpToken::load(&token_file)
            .expect("the token file loads");
        Adapter {
            runtime,
            acceptor,
            token,
            _dir: dir,
        }
    })
}
