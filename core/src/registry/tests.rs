use super::*;

const GOOD: &str = r#"
[[agency]]
id = "cz-psb"
name = "长治市公安局"
role = "POLICE"
region = "140400"
clearance = "CONFIDENTIAL"

[[agency]]
id = "cz-psb-xiangyuan"
name = "襄垣县公安局"
role = "POLICE"
region = "140423"
parent = "cz-psb"
clearance = "RESTRICTED"
"#;

fn parse(text: &str) -> Result<Registry, RegistryError> {
    Registry::parse(text, Path::new("agencies.toml"))
}

#[test]
fn good_registry_loads_with_default_identities() {
    let registry = parse(GOOD).unwrap();
    let branch = registry
        .by_identity("urn:liandong:agency:cz-psb-xiangyuan")
        .unwrap();
    assert_eq!(branch.clearance, Confidentiality::Restricted);
    let city: AgencyId = "cz-psb".parse().unwrap();
    assert!(registry.is_ancestor(&city, &branch.id));
    assert!(!registry.is_ancestor(&branch.id, &city));
}

#[test]
fn entry_errors_name_file_entry_and_field() {
    let bad = GOOD.replace("region = \"140423\"", "region = \"14042\"");
    let message = parse(&bad).unwrap_err().to_string();
    assert_eq!(
        message,
        "agencies.toml: agency[1] (cz-psb-xiangyuan): region: must be a six-digit GB/T 2260 code"
    );
    let bad = GOOD.replace("parent = \"cz-psb\"", "parent = \"cz-nobody\"");
    let message = parse(&bad).unwrap_err().to_string();
    assert!(
        message.contains("agency[1] (cz-psb-xiangyuan): parent: names cz-nobody"),
        "{message}"
    );
    let bad = GOOD.replace("clearance = \"RESTRICTED\"", "clearance = \"SECRET\"");
    assert!(
        parse(&bad)
            .unwrap_err()
            .to_string()
            .contains("clearance: must be one of")
    );
}

#[test]
fn duplicates_unknown_keys_and_empty_files_are_refused() {
    let twice = format!(
        "{GOOD}{}",
        &GOOD[GOOD.find("[[agency]]").unwrap()..GOOD.find("\n\n[[agency]]").unwrap()]
    );
    assert!(
        parse(&twice)
            .unwrap_err()
            .to_string()
            .contains("id: is registered twice")
    );
    let unknown = GOOD.replace(
        "role = \"POLICE\"\nregion = \"140400\"",
        "role = \"POLICE\"\nregoin = \"140400\"",
    );
    assert!(matches!(
        parse(&unknown).unwrap_err(),
        RegistryError::File(FileError::Syntax { .. })
    ));
    assert!(matches!(
        parse("").unwrap_err(),
        RegistryError::Empty { .. }
    ));
}

#[test]
fn an_agency_cannot_take_the_gateway_sender_id() {
    let bad = GOOD.replace("id = \"cz-psb-xiangyuan\"", "id = \"liandong-gateway\"");
    let message = parse(&bad).unwrap_err().to_string();
    assert_eq!(
        message,
        "agencies.toml: agency[1] (liandong-gateway): id: liandong-gateway is reserved for the gateway's own notifications"
    );
}
