//! The `liandong.v1.Supervision` service: supervision signals and
//! statistics reports, for procuratorates and operators.
//!
//! Every request's caller was resolved once by `identity::ResolveCaller`
//! (as for Exchange). A procuratorate is answered as a reader: counts and
//! signals cover only what the policy in force lets it see now. An operator
//! is answered with everything. Any other caller is refused with
//! `PERMISSION_DENIED`; an unknown caller with `UNAUTHENTICATED`; a bad date,
//! region or kind with `INVALID_ARGUMENT` naming the field. Every refusal is
//! recorded in the audit log (`SUPERVISION_REFUSED`) before it is answered.
//! Statuses are built by `error` only.

use std::sync::Arc;

use tonic::{Request, Response, Status};

use liandong_core::domain::{Instant, Role};
use liandong_core::pb;
use liandong_core::pb::supervision_server::Supervision;

use crate::Gateway;
use crate::audit;
use crate::error::ApiError;
use crate::identity::Caller;
use crate::reports::{self, ReportSettings, SignalQuery, Viewer};

/// The Supervision service over a running gateway.
#[derive(Debug, Clone)]
pub struct SupervisionService {
    gateway: Arc<Gateway>,
    settings: Arc<ReportSettings>,
}

impl SupervisionService {
    /// The service for `gateway`, counting with `settings`.
    pub fn new(gateway: Arc<Gateway>, settings: ReportSettings) -> Self {
        Self {
            gateway,
            settings: Arc::new(settings),
        }
    }

    /// Who the request is answered for, or its refusal (audited).
    async fn viewer<T>(&self, request: &Request<T>) -> Result<Viewer, Status> {
        let caller = Caller::of(request.extensions());
        let error = match &caller {
            Caller::Agency(principal) => match principal.agency.role {
                Role::Operator => return Ok(Viewer::Operator),
                Role::Procuratorate => return Ok(Viewer::Reader(principal.agency.clone())),
                _ => ApiError::PermissionDenied(format!(
                    "{} may not use the Supervision service: it is for procuratorates and operators",
                    principal.agency.id
                )),
            },
            Caller::Refused { error, .. } => ApiError::from(error.clone()),
        };
        Err(self.refuse(&caller, error).await)
    }

    /// Records `error` for `caller` in the audit log and answers it.
    async fn refuse(&self, caller: &Caller, error: ApiError) -> Status {
        if let Some(entry) = audit::supervision_refused(caller, &error)
            && let Err(cause) = self.gateway.store.append_audit(&[entry]).await
        {
            tracing::error!(error = %cause, "could not record a refusal in the audit log");
        }
        error.into()
    }
}

#[tonic::async_trait]
impl Supervision for SupervisionService {
    async fn list_signals(
        &self,
        request: Request<pb::SignalsRequest>,
    ) -> Result<Response<pb::SignalsResponse>, Status> {
        let viewer = self.viewer(&request).await?;
        let query = match SignalQuery::try_from(request.get_ref().clone()) {
            Ok(query) => query,
            Err(error) => {
                let caller = Caller::of(request.extensions());
                return Err(self.refuse(&caller, error.into()).await);
            }
        };
        let mut conn = self
            .gateway
            .store
            .read_connection()
            .await
            .map_err(ApiError::from)?;
        let signals = reports::signals::signals(
            &mut conn,
            &self.gateway.rules(),
            &viewer,
            &self.settings.supervision,
            &query,
            Instant::now(),
        )
        .await
        .map_err(ApiError::from)?;
        Ok(Response::new(pb::SignalsResponse { signals }))
    }

    async fn get_report(
        &self,
        request: Request<pb::ReportRequest>,
    ) -> Result<Response<pb::StatisticsReport>, Status> {
        let viewer = self.viewer(&request).await?;
        let answer = reports::answer(
            &self.gateway.store,
            &self.gateway.rules(),
            &viewer,
            &self.settings,
            request.get_ref(),
        )
        .await;
        match answer {
            Ok(report) => Ok(Response::new(report)),
            Err(error) => {
                let caller = Caller::of(request.extensions());
                Err(self.refuse(&caller, error).await)
            }
        }
    }
}

#[cfg(test)]
mod tests;
