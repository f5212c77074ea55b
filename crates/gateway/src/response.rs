//! `culprit.v1.ResponseService` and the [`act`] path it shares with the automatic policy:
//! resolve the device, refuse no-ops, call MDE, map every outcome to one gRPC code, audit.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration as StdDuration;

use culprit_mde::{IsolationState, IsolationType, MdeClient, MdeError};
use culprit_proto::convert::timestamp_to_proto;
use culprit_proto::v1 as pb;
use culprit_proto::v1::response_service_server::ResponseService;
use tonic::{Code, Request, Response, Status};

use crate::auth::{Principal, Scope};
use crate::ctx::{Ctx, tenant_of_key};
use crate::status::{Refusal, invalid, reason};
use crate::stores::{AuditRecord, AuditSink, Outcome};

/// Metadata key carrying the pending action's id with ALREADY_EXISTS.
pub const ACTION_ID_METADATA: &str = "x-culprit-action-id";
/// Metadata key carrying the MDE error kind (`forbidden`, `not_found`, ...).
pub const ERROR_KIND_METADATA: &str = "x-culprit-error-kind";

/// The response service over the shared context.
#[derive(Debug, Clone)]
pub struct ResponseApi {
    pub(crate) ctx: Arc<Ctx>,
}

/// What to do to a device.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Act {
    Isolate(IsolationType),
    Release,
}

impl Act {
    fn name(self) -> &'static str {
        match self {
            Act::Isolate(_) => "isolate",
            Act::Release => "release",
        }
    }
    fn isolation(self) -> Option<String> {
        match self {
            Act::Isolate(t) => Some(format!("{t:?}")),
            Act::Release => None,
        }
    }
}

/// What the caller asked for, before validation (auth is checked first).
#[derive(Clone, Copy, Debug)]
enum Asked {
    Isolate(i32),
    Release,
}

impl Asked {
    /// The act the audit record names before the request is validated.
    fn template(self) -> Act {
        match self {
            Asked::Isolate(raw) => Act::Isolate(isolation_of(raw).unwrap_or(IsolationType::Full)),
            Asked::Release => Act::Release,
        }
    }
}

/// An audit record being filled in as the attempt proceeds.
pub(crate) fn draft(actor: &str, act: Act, comment: &str) -> AuditRecord {
    AuditRecord {
        at: culprit_model::Timestamp::default(),
        actor: actor.to_owned(),
        action: act.name().to_owned(),
        tenant: String::new(),
        device_id: None,
        detection_key: None,
        isolation_type: act.isolation(),
        comment: comment.to_owned(),
        outcome: Outcome::Denied,
        code: String::new(),
        detail: String::new(),
        action_id: None,
    }
}

/// Logs the record (the structured log is the second copy) and appends it to the trail.
pub(crate) async fn audit(sink: &dyn AuditSink, rec: &AuditRecord) {
    tracing::info!(
        target: "culprit::audit",
        actor = %rec.actor,
        action = %rec.action,
        tenant = %rec.tenant,
        device_id = rec.device_id.as_deref().unwrap_or(""),
        detection_key = rec.detection_key.as_deref().unwrap_or(""),
        isolation_type = rec.isolation_type.as_deref().unwrap_or(""),
        comment = %rec.comment,
        outcome = ?rec.outcome,
        code = %rec.code,
        detail = %rec.detail,
        action_id = rec.action_id.as_deref().unwrap_or(""),
        "response attempt"
    );
    if let Err(e) = sink.record(rec).await {
        tracing::error!(target: "culprit::audit", error = %e, "audit trail append failed; the log line above is the record");
    }
}

/// Completes a record from the attempt's result.
pub(crate) fn conclude(
    ctx: &Ctx,
    mut rec: AuditRecord,
    result: &Result<pb::MachineAction, Status>,
) -> AuditRecord {
    rec.at = ctx.h.clock.now();
    match result {
        Ok(a) => {
            rec.outcome = Outcome::Allowed;
            rec.code = "OK".into();
            rec.action_id = Some(a.id.clone());
            rec.detail = format!("MDE action {} created", a.id);
        }
        Err(s) => {
            rec.outcome = match s.code() {
                Code::Unavailable | Code::Internal | Code::Unknown | Code::DeadlineExceeded => {
                    Outcome::Failed
                }
                _ => Outcome::Denied,
            };
            rec.code = format!("{:?}", s.code());
            rec.detail = s.message().to_owned();
            rec.action_id = s
                .metadata()
                .get(ACTION_ID_METADATA)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
        }
    }
    rec
}

/// One gRPC code per MDE failure, as the issue fixes them, with details a client can act on.
pub(crate) fn mde_status(e: MdeError) -> Status {
    let kind = e.kind();
    let msg = e.to_string();
    let r =
        match &e {
            MdeError::NotFound { what, .. } => {
                Refusal::new(Code::NotFound, reason::MDE_NOT_FOUND, msg).meta("what", what.clone())
            }
            MdeError::Ambiguous { what, ids, .. } => Refusal::new(
                Code::FailedPrecondition,
                reason::DEVICE_AMBIGUOUS,
                msg.clone(),
            )
            .meta("device_ids", ids.join(","))
            .precondition("DEVICE_AMBIGUOUS", what, &msg),
            MdeError::AlreadyIsolated { machine_id, .. } => Refusal::new(
                Code::FailedPrecondition,
                reason::ALREADY_ISOLATED,
                msg.clone(),
            )
            .meta("device_id", machine_id.clone())
            .precondition("DEVICE_STATE", machine_id, &msg),
            MdeError::Forbidden { missing_role, .. } => {
                let role = missing_role.as_deref().unwrap_or("Machine.Isolate");
                let m = format!("Culprit's MDE application lacks the `{role}` role: {msg}");
                Refusal::new(
                    Code::FailedPrecondition,
                    reason::MDE_ROLE_MISSING,
                    m.clone(),
                )
                .meta("missing_role", role)
                .precondition("MDE_ROLE", role, &m)
            }
            MdeError::ActiveRequestAlreadyExists {
                pending_action_id,
                machine_id,
                ..
            } => {
                let r = Refusal::new(Code::AlreadyExists, reason::ACTION_PENDING, msg)
                    .meta("device_id", machine_id.clone());
                match pending_action_id {
                    Some(id) => r
                        .meta("action_id", id.clone())
                        .header(ACTION_ID_METADATA, id),
                    None => r,
                }
            }
            MdeError::Unauthorized { .. }
            | MdeError::InvalidClient { .. }
            | MdeError::UnauthorizedClient { .. }
            | MdeError::UnknownTenant { .. }
            | MdeError::TokenRejected { .. }
            | MdeError::InvalidConfig { .. } => {
                let m = format!("Culprit's MDE credentials for this tenant are not usable: {msg}");
                Refusal::new(Code::FailedPrecondition, reason::MDE_CREDENTIALS, m.clone())
                    .precondition("MDE_CREDENTIALS", "tenant", &m)
            }
            MdeError::InvalidInput { field, reason: why } => {
                Refusal::new(Code::InvalidArgument, reason::MDE_REJECTED, msg)
                    .meta("field", *field)
                    .field(field, why)
            }
            MdeError::BadRequest { code, .. } => {
                Refusal::new(Code::InvalidArgument, reason::MDE_REJECTED, msg)
                    .meta("mde_code", code.clone())
            }
            MdeError::Throttled { retry_after, .. } => {
                Refusal::new(Code::Unavailable, reason::UNAVAILABLE, msg)
                    .meta("dependency", "mde")
                    .retry_after(retry_after.unwrap_or(StdDuration::from_secs(1)))
            }
            _ if e.is_retryable() => Refusal::new(Code::Unavailable, reason::UNAVAILABLE, msg)
                .meta("dependency", "mde")
                .retry_after(StdDuration::from_secs(1)),
            _ => Refusal::new(Code::Internal, reason::INTERNAL, msg),
        };
    r.meta("mde_error", kind)
        .header(ERROR_KIND_METADATA, kind)
        .build()
}

fn action_status(s: &culprit_mde::ActionStatus) -> pb::ActionStatus {
    use culprit_mde::ActionStatus as A;
    match s {
        A::Pending => pb::ActionStatus::Pending,
        A::InProgress => pb::ActionStatus::InProgress,
        A::Succeeded => pb::ActionStatus::Succeeded,
        A::Failed => pb::ActionStatus::Failed,
        A::TimeOut => pb::ActionStatus::TimeOut,
        A::Cancelled => pb::ActionStatus::Cancelled,
        A::Other(_) => pb::ActionStatus::Unspecified,
    }
}

/// MDE's action as the API returns it. `requestor` is Culprit's caller when known.
pub(crate) fn action_to_proto(
    a: &culprit_mde::MachineAction,
    tenant: &str,
    requestor: Option<&str>,
    detection_key: Option<&str>,
) -> pb::MachineAction {
    let action_type = if a.action_type.eq_ignore_ascii_case("isolate") {
        pb::ActionType::Isolate
    } else if a.action_type.eq_ignore_ascii_case("unisolate") {
        pb::ActionType::Release
    } else {
        pb::ActionType::Unspecified
    };
    let isolation = match a.scope.as_deref() {
        Some(s) if s.eq_ignore_ascii_case("full") => pb::IsolationType::Full,
        Some(s) if s.eq_ignore_ascii_case("selective") => pb::IsolationType::Selective,
        _ => pb::IsolationType::Unspecified,
    };
    pb::MachineAction {
        id: a.id.clone(),
        tenant: tenant.to_owned(),
        r#type: action_type.into(),
        isolation_type: isolation.into(),
        status: action_status(&a.status).into(),
        device_id: a.machine_id.clone().unwrap_or_default(),
        device_name: a.computer_dns_name.clone().unwrap_or_default(),
        requestor: requestor
            .map(str::to_owned)
            .or_else(|| a.requestor.clone())
            .unwrap_or_default(),
        comment: a.requestor_comment.clone().unwrap_or_default(),
        detection_key: detection_key.unwrap_or_default().to_owned(),
        created_at: a.created.map(timestamp_to_proto),
        updated_at: a.last_update.map(timestamp_to_proto),
    }
}

/// Refuses the no-ops: a pending action, isolating an isolated device, releasing a free one.
async fn check_state(client: &MdeClient, device_id: &str, act: Act) -> Result<(), Status> {
    let state = client
        .isolation_state(device_id)
        .await
        .map_err(mde_status)?;
    match (state, act) {
        (IsolationState::Pending(a), _) => Err(Refusal::new(
            Code::AlreadyExists,
            reason::ACTION_PENDING,
            format!(
                "device {device_id} already has a pending {} action {}",
                a.action_type, a.id
            ),
        )
        .meta("action_id", a.id.clone())
        .meta("device_id", device_id)
        .header(ACTION_ID_METADATA, &a.id)
        .build()),
        (IsolationState::Isolated(a), Act::Isolate(_)) => Err(Refusal::new(
            Code::FailedPrecondition,
            reason::ALREADY_ISOLATED,
            format!("device {device_id} is already isolated (action {})", a.id),
        )
        .meta("action_id", a.id.clone())
        .meta("device_id", device_id)
        .precondition("DEVICE_STATE", device_id, "already isolated")
        .build()),
        (IsolationState::NotIsolated(_), Act::Release) => Err(Refusal::new(
            Code::FailedPrecondition,
            reason::NOT_ISOLATED,
            format!("device {device_id} is not isolated: nothing to release"),
        )
        .meta("device_id", device_id)
        .precondition("DEVICE_STATE", device_id, "not isolated")
        .build()),
        _ => Ok(()),
    }
}

/// Performs `act` on a device of `tenant` (the device must exist and the act change something).
pub(crate) async fn act(
    ctx: &Ctx,
    tenant: &str,
    device_id: &str,
    act: Act,
    comment: &str,
    actor: &str,
    detection_key: Option<&str>,
) -> Result<pb::MachineAction, Status> {
    let client = ctx.mde(tenant)?;
    client.machine(device_id).await.map_err(mde_status)?;
    check_state(client, device_id, act).await?;
    let action = match act {
        Act::Isolate(t) => client.isolate(device_id, t, comment).await,
        Act::Release => client.release(device_id, comment).await,
    }
    .map_err(mde_status)?;
    Ok(action_to_proto(&action, tenant, Some(actor), detection_key))
}

/// The device a target names: its id, or the unambiguous device of a detection's answer.
async fn resolve_target(
    ctx: &Ctx,
    p: &Principal,
    target: Option<&pb::DeviceTarget>,
    rec: &mut AuditRecord,
) -> Result<(String, String), Status> {
    use pb::device_target::Target;
    let t = target.ok_or_else(|| invalid("target", "required"))?;
    match &t.target {
        Some(Target::DeviceId(id)) if !id.is_empty() => {
            let tenant = p.single_tenant(&t.tenant, "target.tenant")?;
            rec.tenant.clone_from(&tenant);
            rec.device_id = Some(id.clone());
            Ok((tenant, id.clone()))
        }
        Some(Target::DetectionKey(key)) if !key.is_empty() => {
            let tenant = tenant_of_key(key, "target.detection_key")?;
            rec.tenant = tenant.to_owned();
            rec.detection_key = Some(key.clone());
            p.require_tenant(tenant)?;
            let c = ctx.correlation(key).await?;
            let device = device_of(&c)?;
            rec.device_id = Some(device.clone());
            Ok((tenant.to_owned(), device))
        }
        _ => Err(invalid(
            "target",
            "give device_id (with tenant) or detection_key",
        )),
    }
}

/// The answer's device, refusing ambiguity and absence.
pub(crate) fn device_of(c: &pb::Correlation) -> Result<String, Status> {
    if c.status == pb::Status::DeviceAmbiguous as i32 || c.devices.len() > 1 {
        let ids: Vec<&str> = c.devices.iter().map(|d| d.device_id.as_str()).collect();
        let m = format!(
            "detection `{}` matches several devices ({}): name one by device_id",
            c.detection_key,
            ids.join(", ")
        );
        return Err(Refusal::new(
            Code::FailedPrecondition,
            reason::DEVICE_AMBIGUOUS,
            m.clone(),
        )
        .meta("detection_key", c.detection_key.clone())
        .meta("device_ids", ids.join(","))
        .precondition("DEVICE_AMBIGUOUS", &c.detection_key, &m)
        .build());
    }
    match &c.device {
        Some(d) if !d.device_id.is_empty() => Ok(d.device_id.clone()),
        _ => Err(Refusal::new(
            Code::NotFound,
            reason::MDE_NOT_FOUND,
            format!(
                "detection `{}` has no device in its answer",
                c.detection_key
            ),
        )
        .meta("detection_key", c.detection_key.clone())
        .build()),
    }
}

fn isolation_of(v: i32) -> Result<IsolationType, Status> {
    match pb::IsolationType::try_from(v) {
        Ok(pb::IsolationType::Full) => Ok(IsolationType::Full),
        Ok(pb::IsolationType::Selective) => Ok(IsolationType::Selective),
        _ => Err(invalid(
            "isolation_type",
            "ISOLATION_TYPE_FULL or ISOLATION_TYPE_SELECTIVE",
        )),
    }
}

impl ResponseApi {
    /// Authenticates, resolves and acts, filling `rec` as it learns who and what.
    async fn attempt(
        &self,
        metadata: &Request<()>,
        target: Option<&pb::DeviceTarget>,
        asked: Asked,
        comment: &str,
        rec: &mut AuditRecord,
    ) -> Result<pb::MachineAction, Status> {
        let p = self.ctx.keys.authenticate(metadata)?;
        rec.actor.clone_from(&p.key_id);
        p.require_scope(Scope::Respond)?;
        let what = match asked {
            Asked::Isolate(raw) => Act::Isolate(isolation_of(raw)?),
            Asked::Release => Act::Release,
        };
        if comment.trim().is_empty() {
            return Err(invalid(
                "comment",
                "required (why, shown in Defender and the audit trail)",
            ));
        }
        let (tenant, device) = resolve_target(&self.ctx, &p, target, rec).await?;
        let key = rec.detection_key.clone();
        act(
            &self.ctx,
            &tenant,
            &device,
            what,
            comment,
            &p.key_id,
            key.as_deref(),
        )
        .await
    }

    async fn audited(
        &self,
        metadata: Request<()>,
        target: Option<&pb::DeviceTarget>,
        asked: Asked,
        comment: &str,
    ) -> Result<pb::MachineAction, Status> {
        let mut rec = draft("unauthenticated", asked.template(), comment);
        if let Asked::Isolate(raw) = asked
            && isolation_of(raw).is_err()
        {
            rec.isolation_type = Some(format!("invalid ({raw})"));
        }
        let deadline = grpc_deadline(&metadata);
        let attempt = self.attempt(&metadata, target, asked, comment, &mut rec);
        let result = within(deadline, attempt).await;
        audit(
            self.ctx.h.stores.as_ref(),
            &conclude(&self.ctx, rec, &result),
        )
        .await;
        result
    }
}

/// Answer a little before the client's deadline, so the attempt is audited (tonic's own
/// timeout would drop the handler without a record) and the client, whose own timer started
/// earlier, most often reads a real DEADLINE_EXCEEDED: a tenth of the deadline, 20 to 250 ms.
fn deadline_margin(d: StdDuration) -> StdDuration {
    (d / 10).clamp(StdDuration::from_millis(20), StdDuration::from_millis(250))
}

async fn within(
    deadline: Option<StdDuration>,
    attempt: impl Future<Output = Result<pb::MachineAction, Status>>,
) -> Result<pb::MachineAction, Status> {
    let Some(d) = deadline else {
        return attempt.await;
    };
    tokio::time::timeout(d.saturating_sub(deadline_margin(d)), attempt)
        .await
        .unwrap_or_else(|_| {
            Err(Refusal::new(
                Code::DeadlineExceeded,
                reason::DEADLINE,
                "the deadline passed before MDE answered: the action may have been created, check the device's actions",
            )
            .build())
        })
}

/// The client's `grpc-timeout` (`<digits><H|M|S|m|u|n>`).
fn grpc_deadline<T>(req: &Request<T>) -> Option<StdDuration> {
    let v = req.metadata().get("grpc-timeout")?.to_str().ok()?;
    let (n, unit) = v.split_at(v.len().checked_sub(1)?);
    let n: u64 = n.parse().ok()?;
    Some(match unit {
        "H" => StdDuration::from_secs(n.saturating_mul(3600)),
        "M" => StdDuration::from_secs(n.saturating_mul(60)),
        "S" => StdDuration::from_secs(n),
        "m" => StdDuration::from_millis(n),
        "u" => StdDuration::from_micros(n),
        "n" => StdDuration::from_nanos(n),
        _ => return None,
    })
}

fn metadata_only<T>(req: &Request<T>) -> Request<()> {
    let mut r = Request::new(());
    *r.metadata_mut() = req.metadata().clone();
    r
}

#[tonic::async_trait]
impl ResponseService for ResponseApi {
    async fn isolate_device(
        &self,
        request: Request<pb::IsolateDeviceRequest>,
    ) -> Result<Response<pb::IsolateDeviceResponse>, Status> {
        let meta = metadata_only(&request);
        let r = request.into_inner();
        let asked = Asked::Isolate(r.isolation_type);
        let action = self
            .audited(meta, r.target.as_ref(), asked, &r.comment)
            .await?;
        Ok(Response::new(pb::IsolateDeviceResponse {
            action: Some(action),
        }))
    }

    async fn release_device(
        &self,
        request: Request<pb::ReleaseDeviceRequest>,
    ) -> Result<Response<pb::ReleaseDeviceResponse>, Status> {
        let meta = metadata_only(&request);
        let r = request.into_inner();
        let action = self
            .audited(meta, r.target.as_ref(), Asked::Release, &r.comment)
            .await?;
        Ok(Response::new(pb::ReleaseDeviceResponse {
            action: Some(action),
        }))
    }

    async fn get_action(
        &self,
        request: Request<pb::GetActionRequest>,
    ) -> Result<Response<pb::GetActionResponse>, Status> {
        let p = self.ctx.keys.authenticate(&request)?;
        p.require_scope(Scope::Read)?;
        let r = request.get_ref();
        let tenant = p.single_tenant(&r.tenant, "tenant")?;
        if r.action_id.trim().is_empty() {
            return Err(invalid("action_id", "required"));
        }
        let client = self.ctx.mde(&tenant)?;
        let a = client.action(&r.action_id).await.map_err(mde_status)?;
        Ok(Response::new(pb::GetActionResponse {
            action: Some(action_to_proto(&a, &tenant, None, None)),
        }))
    }
}
