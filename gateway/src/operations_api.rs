//! The `liandong.v1.Operations` service: status, agencies, subscriptions
//! and their lag, disabling and enabling an agency, moving a
//! subscription's position, breaches, audit verification and reports —
//! for operator certificates only.
//!
//! Every request's caller was resolved once by `identity::ResolveCaller`.
//! A caller whose registry role is not `OPERATOR` is refused with
//! `PERMISSION_DENIED`, an unknown one with `UNAUTHENTICATED`; each refusal
//! is recorded in the audit log before it is answered. The operator's role
//! is checked again on every call, under the registry in force then.
//!
//! - [`view`]: what operators read (status, agencies, subscriptions,
//!   breaches, audit verification, reports).
//! - [`control`]: what operators change (disable, enable, seek), each
//!   audited with the operator who made it.

use std::pin::Pin;
use std::sync::Arc;

use futures::Stream;
use tonic::{Request, Response, Status};

use liandong_core::domain::{AgencyId, Role};
use liandong_core::pb;
use liandong_core::pb::operations_server::Operations;

use crate::Gateway;
use crate::audit;
use crate::error::ApiError;
use crate::identity::Caller;
use crate::reports::ReportSettings;

pub mod control;
pub mod view;

/// The Operations service over a running gateway.
#[derive(Debug, Clone)]
pub struct OperationsService {
    gateway: Arc<Gateway>,
    settings: Arc<ReportSettings>,
}

/// The operator a request is answered for.
#[derive(Debug, Clone)]
pub struct Operator {
    /// Its registered agency id.
    pub id: AgencyId,
    /// The peer address the request came from.
    pub peer: Option<std::net::SocketAddr>,
}

impl OperationsService {
    /// The service for `gateway`, counting reports with `settings`.
    pub fn new(gateway: Arc<Gateway>, settings: ReportSettings) -> Self {
        Self {
            gateway,
            settings: Arc::new(settings),
        }
    }

    /// The operator the request is answered for, or its refusal (audited).
    async fn operator<T>(&self, request: &Request<T>) -> Result<Operator, Status> {
        let caller = Caller::of(request.extensions());
        let error = match &caller {
            Caller::Agency(principal) => match principal.agency.role {
                Role::Operator => {
                    return Ok(Operator {
                        id: principal.agency.id.clone(),
                        peer: peer_of(request),
                    });
                }
                _ => ApiError::PermissionDenied(format!(
                    "{} may not use the Operations service: it is for operator certificates only",
                    principal.agency.id
                )),
            },
            Caller::Refused { error, .. } => ApiError::from(error.clone()),
        };
        Err(self.refuse(&caller, peer_of(request), error).await)
    }

    /// Answers `result`: a refusal (a bad field) is recorded in the audit
    /// log first; a failure of the gateway is answered as it is.
    async fn answer<T, R>(
        &self,
        request: &Request<R>,
        result: Result<T, ApiError>,
    ) -> Result<Response<T>, Status> {
        match result {
            Ok(answer) => Ok(Response::new(answer)),
            Err(error) => Err(self
                .refuse(&Caller::of(request.extensions()), peer_of(request), error)
                .await),
        }
    }

    /// Records `error` for `caller` in the audit log and answers it.
    async fn refuse(
        &self,
        caller: &Caller,
        peer: Option<std::net::SocketAddr>,
        error: ApiError,
    ) -> Status {
        if let Some(entry) = audit::operations_refused(caller, &error)
            && let Err(cause) = self
                .gateway
                .store
                .append_audit(&[entry.with_peer(peer)])
                .await
        {
            tracing::error!(error = %cause, "could not record a refusal in the audit log");
        }
        error.into()
    }
}

/// The address of the verified connection a request came over (tonic's
/// `remote_addr` knows none on the gateway's own TLS connections).
fn peer_of<T>(request: &Request<T>) -> Option<std::net::SocketAddr> {
    request
        .extensions()
        .get::<crate::identity::PeerIdentity>()
        .map(|peer| peer.remote_addr)
}

/// The stream `VerifyAudit` answers with.
pub type ProgressStream =
    Pin<Box<dyn Stream<Item = Result<pb::AuditVerifyProgress, Status>> + Send + 'static>>;

#[tonic::async_trait]
impl Operations for OperationsService {
    async fn get_status(
        &self,
        request: Request<pb::StatusRequest>,
    ) -> Result<Response<pb::GatewayStatus>, Status> {
        self.operator(&request).await?;
        self.answer(&request, view::status(&self.gateway).await)
            .await
    }

    async fn list_agencies(
        &self,
        request: Request<pb::ListAgenciesRequest>,
    ) -> Result<Response<pb::AgencyList>, Status> {
        self.operator(&request).await?;
        self.answer(&request, view::agencies(&self.gateway).await)
            .await
    }

    async fn list_subscriptions(
        &self,
        request: Request<pb::ListSubscriptionsRequest>,
    ) -> Result<Response<pb::SubscriptionList>, Status> {
        self.operator(&request).await?;
        let answer = view::subscriptions(&self.gateway, request.get_ref()).await;
        self.answer(&request, answer).await
    }

    async fn disable_agency(
        &self,
        request: Request<pb::DisableAgencyRequest>,
    ) -> Result<Response<pb::AgencyState>, Status> {
        let operator = self.operator(&request).await?;
        control::disable(&self.gateway, &operator, request.into_inner())
            .await
            .map(Response::new)
    }

    async fn enable_agency(
        &self,
        request: Request<pb::EnableAgencyRequest>,
    ) -> Result<Response<pb::AgencyState>, Status> {
        let operator = self.operator(&request).await?;
        control::enable(&self.gateway, &operator, request.into_inner())
            .await
            .map(Response::new)
    }

    async fn seek_subscription(
        &self,
        request: Request<pb::SeekSubscriptionRequest>,
    ) -> Result<Response<pb::SubscriptionState>, Status> {
        let operator = self.operator(&request).await?;
        control::seek(&self.gateway, &operator, request.into_inner())
            .await
            .map(Response::new)
    }

    async fn list_breaches(
        &self,
        request: Request<pb::ListBreachesRequest>,
    ) -> Result<Response<pb::SignalsResponse>, Status> {
        self.operator(&request).await?;
        let answer = view::breaches(&self.gateway, &self.settings, request.get_ref()).await;
        self.answer(&request, answer).await
    }

    type VerifyAuditStream = ProgressStream;

    async fn verify_audit(
        &self,
        request: Request<pb::VerifyAuditRequest>,
    ) -> Result<Response<Self::VerifyAuditStream>, Status> {
        self.operator(&request).await?;
        view::verify_audit(self.gateway.clone())
            .await
            .map(Response::new)
    }

    async fn get_report(
        &self,
        request: Request<pb::ReportRequest>,
    ) -> Result<Response<pb::StatisticsReport>, Status> {
        self.operator(&request).await?;
        let answer = view::report(&self.gateway, &self.settings, request.get_ref()).await;
        self.answer(&request, answer).await
    }
}
