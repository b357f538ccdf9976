use std::os::unix::fs::PermissionsExt as _;

use crate::config::PartialGateway;

use super::*;

fn config(dir: &Path, source: &str) -> DaemonConfig {
    let text = format!(
        "agency = \"cz-psb\"\nsigning_key = \"k.pk8\"\n\
         [gateway]\nurl = \"https://127.0.0.1:7443\"\nca = \"ca.crt\"\ncert = \"a.crt\"\nkey = \"a.key\"\n\
         {source}"
    );
    let file = dir.join("adapter.toml");
    std::fs::write(&file, &text).unwrap();
    DaemonConfig::load(&file, PartialGateway::default()).unwrap()
}

const HTTP: &str = "[[source]]\nkind = \"http\"\nlisten = \"127.0.0.1:7601\"\ntoken_file = \"secrets/http.token\"\n";

#[test]
fn a_new_token_file_is_private_and_an_existing_one_is_kept() {
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path(), HTTP);
    let path = dir.path().join("secrets/http.token");
    let mut out = Vec::new();
    http_token(&config, &mut out).unwrap();
    let answer: serde_json::Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(answer["created"], true);
    assert_eq!(answer["token_file"], path.display().to_string());
    let mode = std::fs::metadata(&path).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    let token = std::fs::read_to_string(&path).unwrap();
    assert_eq!(token.trim().len(), 2 * TOKEN_BYTES);
    assert!(!String::from_utf8_lossy(&out).contains(token.trim()));
    HttpToken::load(&path).unwrap();

    let mut out = Vec::new();
    http_token(&config, &mut out).unwrap();
    let answer: serde_json::Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(answer["created"], false);
    assert_eq!(std::fs::read_to_string(&path).unwrap(), token, "kept");

    // An existing file others may read is refused, not silently used.
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    let err = http_token(&config, &mut Vec::new()).unwrap_err();
    assert!(err.message().contains("chmod 600"), "{}", err.message());
    assert_eq!(err.exit_code(), crate::error::exit::USAGE);
}

#[test]
fn a_link_at_the_token_file_is_not_followed() {
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path(), HTTP);
    let victim = dir.path().join("victim");
    std::fs::write(&victim, "precious").unwrap();
    std::fs::create_dir(dir.path().join("secrets")).unwrap();
    std::os::unix::fs::symlink(&victim, dir.path().join("secrets/http.token")).unwrap();
    let err = http_token(&config, &mut Vec::new()).unwrap_err();
    assert!(err.message().contains("symbolic link"), "{}", err.message());
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious");
}

#[test]
fn a_config_without_an_http_source_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let err = http_token(&config(dir.path(), ""), &mut Vec::new()).unwrap_err();
    assert!(
        err.message()
            .ends_with("adapter.toml: missing field `source (kind = \"http\")`"),
        "{}",
        err.message()
    );
}
