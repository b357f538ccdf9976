use serde::Deserialize;

use super::*;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
struct Shape {
    name: String,
    server: Option<Server>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
struct Server {
    port: u16,
}

fn refused(text: &str) -> (Location, String) {
    match parse::<Shape>(Path::new("etc/x.toml"), text).unwrap_err() {
        FileError::Syntax {
            location, reason, ..
        } => (location, reason),
        other => panic!("{other:?}"),
    }
}

#[test]
fn an_unknown_key_is_named_with_its_line_column_and_table() {
    let text = "name = \"a\"\n\n[server]\nport = 1\nprot = 2\n";
    let (location, reason) = refused(text);
    assert_eq!(
        location,
        Location {
            line: 5,
            column: 1,
            table: Some("server".into())
        }
    );
    assert!(reason.contains("prot"), "{reason}");
    let message = parse::<Shape>(Path::new("etc/x.toml"), text)
        .unwrap_err()
        .to_string();
    assert!(
        message.starts_with("etc/x.toml:5:1: in [server]: "),
        "{message}"
    );
    assert!(!message.contains('\n'), "one line: {message}");
}

#[test]
fn bad_toml_and_wrong_types_are_located() {
    let (location, _) = refused("name = \"a\"\n[server]\nport = \"x\"\n");
    assert_eq!((location.line, location.column), (3, 8));
    let (location, _) = refused("name = \"a\"\n[server\n");
    assert_eq!(location.line, 2);
    assert_eq!(
        location.table, None,
        "an error on a header is not inside it"
    );
}

#[test]
fn an_unreadable_file_says_what_it_is() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("absent.toml");
    let error = read(&path, "registry").unwrap_err();
    assert!(matches!(error, FileError::Read { .. }), "{error:?}");
    assert!(
        error
            .to_string()
            .starts_with(&format!("{}: cannot read registry: ", path.display())),
        "{error}"
    );
}

#[test]
fn location_counts_lines_columns_and_the_enclosing_table() {
    let text = "a = 1\n[gateway] # main\nurl = 2\n  ca = 3\n";
    let at = |needle: &str| Location::of(text, text.find(needle).unwrap());
    assert_eq!(
        at("a ="),
        Location {
            line: 1,
            column: 1,
            table: None
        }
    );
    assert_eq!(at("[gateway]").table, None);
    assert_eq!(
        at("ca"),
        Location {
            line: 4,
            column: 3,
            table: Some("gateway".into())
        }
    );
    assert_eq!(Location::of(text, 10_000).line, 5);
}
