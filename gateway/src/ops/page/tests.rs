//! The status page without a network: escaping, language choice, assets,
//! highlighting, and a store that cannot be read.

use std::path::Path as FsPath;
use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use liandong_core::registry::Registry;
use sha2::{Digest, Sha256};
use tower::ServiceExt;

use super::assets::{ASSETS, REFRESH_SCRIPT, base64, script_hash};
use super::render::{duration, escape, page};
use super::*;
use crate::config::OpsSettings;
use crate::policy::{Policy, Rules};
use crate::routing::DeliverySettings;
use crate::store::Store;
use crate::store::tests::new_notification;

const REGISTRY: &str = include_str!("../../../../deploy/dev/agencies.toml");

async fn state(dir: &tempfile::TempDir) -> OpsState {
    let url = format!("sqlite://{}", dir.path().join("test.db").display());
    let store = Store::connect(&url, 2).await.unwrap();
    let rules = Rules {
        registry: Registry::parse(REGISTRY, FsPath::new("agencies.toml")).unwrap(),
        policy: Policy::default_policy(),
    };
    let gateway = Arc::new(Gateway::new(
        store,
        rules,
        0,
        DeliverySettings::default(),
        Arc::new(crate::supervision::GatewayKey::generate()),
    ));
    OpsState {
        gateway,
        settings: OpsSettings {
            listen: None,
            ready_certificate_days: 1,
        },
    }
}

async fn get(
    state: &OpsState,
    uri: &str,
    accept_language: Option<&str>,
) -> (StatusCode, HeaderMap, String) {
    let mut request = Request::get(uri);
    if let Some(value) = accept_language {
        request = request.header(header::ACCEPT_LANGUAGE, value);
    }
    let response = super::super::http::router(state.clone())
        .oneshot(request.body(Body::empty()).unwrap())
        .await
        .unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    let body = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .unwrap();
    (status, headers, String::from_utf8(body.to_vec()).unwrap())
}

/// A page with one of everything, every text field set to `text`.
fn data_with(text: &str) -> PageData {
    let at = Some(prost_types::Timestamp {
        seconds: 1_795_000_000,
        nanos: 0,
    });
    PageData {
        now: time::OffsetDateTime::from_unix_timestamp(1_795_000_600).unwrap(),
        status: pb::GatewayStatus {
            version: text.into(),
            started_at: at,
            uptime_seconds: 600,
            store_backend: text.into(),
            store_bytes: 3 << 20,
            store_healthy: true,
            high_water: 41,
            notifications: 40,
            connections: 2,
            streams: 1,
            certificates: vec![pb::CertificateExpiry {
                what: text.into(),
                not_after: at,
                days_left: 300,
            }],
            audit: Some(pb::AuditState {
                rows: 7,
                head_at: at,
                checkpoint_row: 5,
                checkpoint_at: at,
                rows_since_checkpoint: 2,
            }),
            disabled_agencies: vec![text.into()],
            breaches_open: 1,
        },
        status_read: true,
        agencies: Some(vec![pb::AgencyActivity {
            id: text.into(),
            name: text.into(),
            role: text.into(),
            connections: 1,
            connected_since: at,
            streams: 1,
            last_publish: at,
            last_refusal: at,
            last_refusal_reason: text.into(),
            state: Some(pb::AgencyState {
                agency: text.into(),
                disabled: true,
                reason: text.into(),
                disabled_by: text.into(),
                disabled_at: at,
                changed: false,
            }),
        }]),
        rates: Some(vec![PublishCounts {
            agency: text.into(),
            last_5_minutes: 3,
            last_hour: 12,
        }]),
        lagging: Some(vec![pb::SubscriptionState {
            owner: text.into(),
            name: text.into(),
            filter: text.into(),
            acked_through: 3,
            lag_messages: 38,
            lag_capped: false,
            lag_seconds: 90,
            in_flight: 4,
            connected: true,
            updated_at: at,
            held_by: text.into(),
        }]),
        breaches: Some(vec![pb::Signal {
            kind: pb::SignalKind::OpenBreach as i32,
            case_ref: text.into(),
            state: 0,
            since: at,
            region: text.into(),
            agency: text.into(),
            rule: text.into(),
            detail: text.into(),
        }]),
    }
}

/// The value shown on the overview card `id`.
fn card_value<'a>(html: &'a str, id: &str) -> &'a str {
    let card = html
        .split(&format!("id=\"{id}\">"))
        .nth(1)
        .unwrap_or_else(|| panic!("no card {id}"));
    let value = card.split("<div class=\"v\">").nth(1).unwrap();
    &value[..value.find("</div>").unwrap()]
}

#[test]
fn escape_covers_the_five_html_specials() {
    assert_eq!(
        escape(r#"<a href="x" title='y'>&amp;</a>"#),
        "&lt;a href=&quot;x&quot; title=&#39;y&#39;&gt;&amp;amp;&lt;/a&gt;"
    );
    assert_eq!(escape("案件 140423 — ok"), "案件 140423 — ok");
}

#[test]
fn a_hostile_value_anywhere_on_the_page_is_shown_as_text() {
    let hostile = r#"<script>alert("x")</script><img src=x onerror='y'>&"#;
    for lang in Lang::ALL {
        let html = page(&data_with(hostile), lang);
        assert!(!html.contains("<script>alert"), "{lang:?}: raw script");
        assert!(!html.contains("<img src=x"), "{lang:?}: raw img");
        assert!(
            html.contains("&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;&lt;img src=x onerror=&#39;y&#39;&gt;&amp;"),
            "{lang:?}: escaped value missing"
        );
        // The one script is the page's own refresh script.
        assert_eq!(html.matches("<script").count(), 1);
        assert!(html.contains(&format!("<script>{REFRESH_SCRIPT}</script>")));
    }
}

#[test]
fn language_comes_from_the_query_then_accept_language_then_chinese() {
    assert_eq!(choose_lang(Some("lang=en"), Some("zh-CN")), Lang::En);
    assert_eq!(choose_lang(Some("x=1&lang=zh"), Some("en-US,en")), Lang::Zh);
    assert_eq!(choose_lang(Some("lang=EN-gb"), None), Lang::En);
    // An unknown value is ignored, not a default to English.
    assert_eq!(choose_lang(Some("lang=fr"), Some("en")), Lang::En);
    assert_eq!(choose_lang(Some("lang=fr"), None), Lang::Zh);
    assert_eq!(choose_lang(None, Some("en-US,en;q=0.9")), Lang::En);
    assert_eq!(choose_lang(None, Some("en;q=0.5, zh-CN;q=0.8")), Lang::Zh);
    assert_eq!(choose_lang(None, Some("fr-FR, en;q=0.3")), Lang::En);
    assert_eq!(choose_lang(None, Some("en;q=0")), Lang::Zh);
    assert_eq!(choose_lang(None, Some("de, fr")), Lang::Zh);
    assert_eq!(choose_lang(None, Some("")), Lang::Zh);
    assert_eq!(choose_lang(None, None), Lang::Zh);
}

#[test]
fn every_label_has_a_text_in_both_languages() {
    for label in Label::ALL {
        let (zh, en) = (label.text(Lang::Zh), label.text(Lang::En));
        assert!(!zh.trim().is_empty() && !en.trim().is_empty(), "{label:?}");
        assert_ne!(zh, en, "{label:?} is not translated");
        assert_eq!(
            zh.contains("{n}"),
            en.contains("{n}"),
            "{label:?}: placeholders differ"
        );
        assert_eq!(zh.contains("{x}"), en.contains("{x}"), "{label:?}");
    }
}

#[test]
fn the_page_links_to_the_other_language() {
    let zh = page(&data_with("v"), Lang::Zh);
    assert!(zh.starts_with("<!doctype html>\n<html lang=\"zh-CN\">"));
    assert!(zh.contains("href=\"?lang=en\""));
    assert!(zh.contains(">English</a>"));
    assert!(zh.contains(Label::Overview.text(Lang::Zh)));
    let en = page(&data_with("v"), Lang::En);
    assert!(en.starts_with("<!doctype html>\n<html lang=\"en\">"));
    assert!(en.contains("href=\"?lang=zh\""));
    assert!(en.contains(">中文</a>"));
    assert!(en.contains(Label::Overview.text(Lang::En)));
    assert!(!en.contains(Label::Overview.text(Lang::Zh)));
}

#[test]
fn problems_are_highlighted() {
    let mut data = data_with("v");
    data.status.certificates = vec![
        pb::CertificateExpiry {
            what: "server certificate".into(),
            not_after: None,
            days_left: 5,
        },
        pb::CertificateExpiry {
            what: "CRL of dev CA".into(),
            not_after: None,
            days_left: -1,
        },
        pb::CertificateExpiry {
            what: "CA dev".into(),
            not_after: None,
            days_left: 3000,
        },
    ];
    let html = page(&data, Lang::En);
    assert!(html.contains("class=\"alerts bad\""));
    assert!(html.contains("1 subscription(s) behind."));
    assert!(html.contains("1 deadline(s) breached."));
    assert!(html.contains("2 certificate(s) or CRL(s) expire within 14 days"));
    assert!(html.contains("<tr class=\"warn\"><td>server certificate</td>"));
    assert!(html.contains("<tr class=\"bad\"><td>CRL of dev CA</td>"));
    assert!(html.contains("<tr><td>CA dev</td>"));
    assert!(html.contains("<td class=\"n lag\">38</td>"));

    let mut calm = data_with("v");
    calm.status.disabled_agencies.clear();
    calm.lagging = Some(vec![]);
    calm.breaches = Some(vec![]);
    let html = page(&calm, Lang::En);
    assert!(html.contains("class=\"alerts ok\""), "{html}");
    assert!(html.contains(Label::NoLag.text(Lang::En)));
    assert!(html.contains(Label::NoBreaches.text(Lang::En)));
}

#[test]
fn lagging_subscriptions_are_listed_worst_first() {
    let sub = |name: &str, lag_messages, lag_seconds| pb::SubscriptionState {
        owner: "cz-psb".into(),
        name: name.into(),
        lag_messages,
        lag_seconds,
        ..Default::default()
    };
    let mut subs = vec![
        sub("a", 1, 9),
        sub("b", 50, 1),
        sub("c", 50, 30),
        sub("d", 2, 0),
    ];
    sort_worst_first(&mut subs);
    let names: Vec<&str> = subs.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["c", "b", "d", "a"]);
}

#[test]
fn durations_read_in_both_languages() {
    assert_eq!(duration(0, Lang::En), "0s");
    assert_eq!(duration(65, Lang::En), "1min 5s");
    assert_eq!(duration(3_600, Lang::En), "1h");
    assert_eq!(duration(90_061, Lang::En), "1d 1h");
    assert_eq!(duration(90_061, Lang::Zh), "1天1小时");
    assert_eq!(duration(59, Lang::Zh), "59秒");
}

#[test]
fn the_script_hash_allows_exactly_the_inline_script() {
    assert_eq!(base64(b""), "");
    assert_eq!(base64(b"f"), "Zg==");
    assert_eq!(base64(b"fo"), "Zm8=");
    assert_eq!(base64(b"foobar"), "Zm9vYmFy");
    let html = page(&data_with("v"), Lang::Zh);
    let inline = html
        .split("<script>")
        .nth(1)
        .and_then(|rest| rest.split("</script>").next())
        .unwrap();
    assert_eq!(
        script_hash(),
        format!("sha256-{}", base64(&Sha256::digest(inline.as_bytes())))
    );
}

#[tokio::test]
async fn assets_are_served_typed_and_cacheable_and_unknown_ones_are_not_found() {
    let dir = tempfile::tempdir().unwrap();
    let state = state(&dir).await;
    for asset in ASSETS {
        let (status, headers, body) = get(&state, &format!("/assets/{}", asset.name), None).await;
        assert_eq!(status, StatusCode::OK, "{}", asset.name);
        assert_eq!(headers[header::CONTENT_TYPE], asset.content_type);
        assert!(
            headers[header::CACHE_CONTROL]
                .to_str()
                .unwrap()
                .contains("max-age=")
        );
        assert_eq!(body.as_bytes(), asset.body);
    }
    for missing in [
        "/assets/nope.css",
        "/assets/..%2Fpage.rs",
        "/assets/refresh.js",
        "/assets/",
    ] {
        let (status, _, _) = get(&state, missing, None).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{missing}");
    }
}

#[tokio::test]
async fn the_page_shows_the_store_and_speaks_the_asked_language() {
    let dir = tempfile::tempdir().unwrap();
    let state = state(&dir).await;
    for id in ["n1", "n2", "n3"] {
        state
            .gateway
            .store
            .publish(&new_notification("cz-eeb", id, "case-1", "x"))
            .await
            .unwrap();
    }
    let (status, headers, html) = get(&state, "/", Some("en-GB,en;q=0.9")).await;
    assert_eq!(status, StatusCode::OK, "{html}");
    assert_eq!(headers[header::CONTENT_LANGUAGE], "en");
    assert_eq!(headers[header::CACHE_CONTROL], "no-store");
    let policy = headers[header::CONTENT_SECURITY_POLICY].to_str().unwrap();
    assert!(policy.contains(&script_hash()), "{policy}");
    assert!(html.contains("<html lang=\"en\">"));
    assert_eq!(card_value(&html, "high-water"), "3");
    assert_eq!(card_value(&html, "notifications"), "3");
    assert!(html.contains("<tr data-rate=\"cz-eeb\"><td><code>cz-eeb</code></td><td class=\"n\">3</td><td class=\"n\">3</td>"), "{html}");
    assert!(html.contains("<tr data-agency=\"cz-psb\""));

    let (status, headers, html) = get(&state, "/?lang=zh", Some("en")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers[header::CONTENT_LANGUAGE], "zh-CN");
    assert!(html.contains("最高序号"));
}

#[tokio::test]
async fn an_unreadable_store_still_renders_a_503_page_saying_so_in_both_languages() {
    let dir = tempfile::tempdir().unwrap();
    let state = state(&dir).await;
    state.gateway.store.close().await;
    for (query, lang) in [("?lang=zh", Lang::Zh), ("?lang=en", Lang::En)] {
        let (status, _, html) = get(&state, &format!("/{query}"), None).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert!(
            html.contains(Label::StoreUnreadable.text(Lang::Zh)),
            "{html}"
        );
        assert!(html.contains(Label::StoreUnreadable.text(Lang::En)));
        assert!(html.contains(Label::SectionUnavailable.text(lang)));
        // What the process knows by itself is still shown.
        assert!(html.contains(env!("CARGO_PKG_VERSION")));
        assert!(html.contains("<div class=\"card bad\" id=\"store\">"));
        // Figures the store holds are not guessed.
        for card in ["high-water", "notifications", "breaches-open", "disabled"] {
            assert_eq!(card_value(&html, card), "—", "{card}");
        }
    }
}
