//! The Supervision handlers without a network: who is answered as what,
//! and a failing store.

use std::path::Path;

use liandong_core::domain::AgencyId;
use liandong_core::registry::Registry;
use tonic::Code;

use super::*;
use crate::identity::Principal;
use crate::policy::{Policy, Rules};
use crate::routing::DeliverySettings;
use crate::store::Store;

const REGISTRY: &str = include_str!("../../../deploy/dev/agencies.toml");

async fn service(dir: &tempfile::TempDir) -> SupervisionService {
    let url = format!("sqlite://{}", dir.path().join("test.db").display());
    let store = Store::connect(&url, 2).await.unwrap();
    let rules = Rules {
        registry: Registry::parse(REGISTRY, Path::new("agencies.toml")).unwrap(),
        policy: Policy::default_policy(),
    };
    let gateway = Arc::new(Gateway::new(
        store,
        rules,
        0,
        DeliverySettings::default(),
        Arc::new(crate::supervision::GatewayKey::generate()),
    ));
    SupervisionService::new(gateway, ReportSettings::default())
}

/// A request as `ResolveCaller` hands it over, from `agency`.
fn from<T>(service: &SupervisionService, agency: &str, message: T) -> Request<T> {
    let agency = service
        .gateway
        .rules()
        .registry
        .get(&AgencyId::parse("id", agency).unwrap())
        .unwrap()
        .clone();
    let mut request = Request::new(message);
    request
        .extensions_mut()
        .insert(Caller::Agency(Principal { agency }));
    request
}

fn november() -> pb::ReportRequest {
    pb::ReportRequest {
        from: "2026-11-01".into(),
        to: "2026-11-30".into(),
        region: String::new(),
    }
}

#[tokio::test]
async fn operators_see_all_and_procuratorates_read_as_themselves() {
    let dir = tempfile::tempdir().unwrap();
    let service = service(&dir).await;
    let report = service
        .get_report(from(&service, "cz-ops", november()))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(report.reader, "");
    let report = service
        .get_report(from(&service, "cz-procuratorate", november()))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(report.reader, "cz-procuratorate");
    assert_eq!(
        (report.from.as_str(), report.to.as_str()),
        ("2026-11-01", "2026-11-30")
    );
}

#[tokio::test]
async fn a_failing_store_is_answered_unavailable() {
    let dir = tempfile::tempdir().unwrap();
    let service = service(&dir).await;
    service.gateway.store.close().await;
    let status = service
        .get_report(from(&service, "cz-procuratorate", november()))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unavailable);
    assert_eq!(
        status.message(),
        "the gateway's store is unavailable; nothing was written, retry later"
    );
    let status = service
        .list_signals(from(&service, "cz-ops", pb::SignalsRequest::default()))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unavailable);
}
