//! The automatic response policy: isolates the device of an attributed detection when the
//! tenant's thresholds are met, never otherwise, at most once per (tenant, device, detection)
//! across replicas, within an hourly cap per tenant; dry-run records what it would do.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration as StdDuration;

use culprit_bus::{Delivery, QueueName, Subscriber};
use culprit_mde::IsolationType;
use culprit_model::Duration;
use culprit_proto::v1 as pb;
use culprit_settings::{PolicyTenantSettings, ResponsePolicySettings};
use prost::Message;

use crate::GatewayError;
use crate::ctx::Ctx;
use crate::response::{Act, act, audit, conclude, device_of, draft, mde_status};
use crate::stores::{AuditRecord, Outcome, ScheduledRelease};
use crate::watch::subject;

/// The policy's actor name in audit records and MDE comments.
pub const POLICY_ACTOR: &str = "policy";
const CLAIM_TTL: StdDuration = StdDuration::from_secs(30 * 86_400);
const RELEASE_TICK: StdDuration = StdDuration::from_secs(5);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Off,
    DryRun,
    Enforce,
}

/// The validated policy settings.
#[derive(Clone, Debug)]
pub struct PolicyConfig {
    pub mode: Mode,
    pub isolation: IsolationType,
    exclude_tags: Vec<String>,
    patterns: Vec<String>,
    pub max_per_hour: u32,
    pub auto_release: Option<Duration>,
    tenants: BTreeMap<String, PolicyTenantSettings>,
}

impl PolicyConfig {
    /// Validates every key, naming it.
    pub fn from_settings(s: &ResponsePolicySettings) -> Result<Self, GatewayError> {
        let key = |k: &str| format!("gateway.policy.{k}");
        let mode = match s.mode.as_str() {
            "off" => Mode::Off,
            "dry_run" => Mode::DryRun,
            "enforce" => Mode::Enforce,
            other => {
                return Err(GatewayError::config(
                    key("mode"),
                    format!("{other:?} is not one of off, dry_run, enforce"),
                ));
            }
        };
        let isolation = match s.isolation_type.as_str() {
            "full" => IsolationType::Full,
            "selective" => IsolationType::Selective,
            other => {
                return Err(GatewayError::config(
                    key("isolation_type"),
                    format!("{other:?} is not full or selective"),
                ));
            }
        };
        for (name, t) in &s.tenants {
            let bad = |f: &str, why: &str| {
                GatewayError::config(key(&format!("tenants.{name}.{f}")), why.to_owned())
            };
            if t.min_threat > 100 {
                return Err(bad("min_threat", "must be 0-100"));
            }
            if t.min_certainty > 100 {
                return Err(bad("min_certainty", "must be 0-100"));
            }
            if !(0.0..=1.0).contains(&t.min_confidence) {
                return Err(bad("min_confidence", "must be 0-1"));
            }
        }
        Ok(PolicyConfig {
            mode,
            isolation,
            exclude_tags: s.exclude_tags.iter().map(|t| t.to_lowercase()).collect(),
            patterns: s
                .exclude_name_patterns
                .iter()
                .map(|p| p.to_lowercase())
                .collect(),
            max_per_hour: s.max_isolations_per_hour,
            auto_release: (s.auto_release_after_secs > 0).then(|| {
                Duration::from_seconds(i64::try_from(s.auto_release_after_secs).unwrap_or(i64::MAX))
            }),
            tenants: s.tenants.clone(),
        })
    }

    /// Why a device is excluded, if it is.
    fn exclusion(&self, name: &str, tags: &[String]) -> Option<String> {
        if let Some(t) = tags
            .iter()
            .find(|t| self.exclude_tags.contains(&t.to_lowercase()))
        {
            return Some(format!("device carries excluded tag `{t}`"));
        }
        let lower = name.to_lowercase();
        self.patterns
            .iter()
            .find(|p| glob(p.as_bytes(), lower.as_bytes()))
            .map(|p| format!("device name `{name}` matches excluded pattern `{p}`"))
    }
}

/// `*` any run, `?` one character; iterative with one backtrack point (linear enough).
fn glob(p: &[u8], s: &[u8]) -> bool {
    let (mut pi, mut si) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while si < s.len() {
        match p.get(pi) {
            Some(b'*') => {
                star = Some((pi, si));
                pi += 1;
            }
            Some(&c) if c == b'?' || c == s[si] => {
                pi += 1;
                si += 1;
            }
            _ => match star {
                Some((sp, ss)) => {
                    pi = sp + 1;
                    si = ss + 1;
                    star = Some((sp, ss + 1));
                }
                None => return false,
            },
        }
    }
    p[pi.min(p.len())..].iter().all(|&c| c == b'*')
}

/// What the policy did with one answer.
#[derive(Clone, Debug, PartialEq)]
pub enum Decision {
    /// Not the policy's business (mode off, tenant not configured, already decided); not
    /// audited.
    Skipped(String),
    /// Declined, with the reason (audited).
    Denied(String),
    /// Would have isolated (audited).
    DryRun,
    /// Isolated: the MDE action id (audited).
    Isolated(String),
    /// Tried and failed (audited).
    Failed(String),
    /// A transient failure before anything was claimed: deliver again later.
    Retry(String),
}

/// The policy engine.
#[derive(Debug, Clone)]
pub struct Policy {
    pub(crate) ctx: Arc<Ctx>,
    pub(crate) cfg: PolicyConfig,
}

fn comment(c: &pb::Correlation) -> String {
    let d = c.detection.clone().unwrap_or_default();
    let p = c.probable.clone().unwrap_or_default();
    format!(
        "Culprit automatic response: {} (threat {}, certainty {}); probable process {} (PID {}) with confidence {:.2}; detection {}",
        d.detection_type,
        d.threat.unwrap_or(0),
        d.certainty.unwrap_or(0),
        p.file_name,
        p.process_id,
        p.confidence,
        c.detection_key
    )
}

impl Policy {
    /// Decides on one answer and acts (or records) accordingly.
    pub async fn decide(&self, c: &pb::Correlation) -> Decision {
        if self.cfg.mode == Mode::Off {
            return Decision::Skipped("policy is off".into());
        }
        let Some(t) = self.cfg.tenants.get(&c.tenant) else {
            return Decision::Skipped(format!("tenant `{}` has no policy thresholds", c.tenant));
        };
        let mut rec = draft(POLICY_ACTOR, Act::Isolate(self.cfg.isolation), &comment(c));
        rec.tenant.clone_from(&c.tenant);
        rec.detection_key = Some(c.detection_key.clone());
        rec.device_id = c.device.as_ref().map(|d| d.device_id.clone());
        let decision = self.evaluate(c, t, &mut rec).await;
        if let Decision::Denied(reason) = &decision {
            self.record(rec, Outcome::Denied, "FAILED_PRECONDITION", reason)
                .await;
        }
        decision
    }

    async fn record(&self, mut rec: AuditRecord, outcome: Outcome, code: &str, detail: &str) {
        rec.at = self.ctx.h.clock.now();
        rec.outcome = outcome;
        rec.code = code.to_owned();
        rec.detail = detail.to_owned();
        audit(self.ctx.h.stores.as_ref(), &rec).await;
    }

    async fn evaluate(
        &self,
        c: &pb::Correlation,
        t: &PolicyTenantSettings,
        rec: &mut AuditRecord,
    ) -> Decision {
        if c.status != pb::Status::Attributed as i32 {
            let s = pb::Status::try_from(c.status).map_or("unknown", |s| s.as_str_name());
            return Decision::Denied(format!(
                "status is {s}: only attributed answers are acted on"
            ));
        }
        let device = match device_of(c) {
            Ok(d) => d,
            Err(s) => return Decision::Denied(s.message().to_owned()),
        };
        if let Some(why) = below_thresholds(c, t) {
            return Decision::Denied(why);
        }
        let client = match self.ctx.mde(&c.tenant) {
            Ok(cl) => cl,
            Err(s) => return Decision::Denied(s.message().to_owned()),
        };
        let machine = match client.machine(&device).await {
            Ok(m) => m,
            Err(e) if e.is_retryable() => return Decision::Retry(e.to_string()),
            Err(e) => return Decision::Denied(mde_status(e).message().to_owned()),
        };
        let name = machine
            .computer_dns_name
            .clone()
            .or_else(|| c.device.as_ref().map(|d| d.device_name.clone()))
            .unwrap_or_default();
        if let Some(why) = self.cfg.exclusion(&name, &machine.machine_tags) {
            return Decision::Denied(why);
        }
        self.claim_and_act(c, &device, rec).await
    }

    async fn claim_and_act(
        &self,
        c: &pb::Correlation,
        device: &str,
        rec: &mut AuditRecord,
    ) -> Decision {
        let h = &self.ctx.h;
        let scope = if self.cfg.mode == Mode::DryRun {
            "policy-dry-run"
        } else {
            "policy"
        };
        let claim = format!("{}|{device}|{}", c.tenant, c.detection_key);
        match h.idempotency.first_seen(scope, &claim, CLAIM_TTL).await {
            Ok(true) => {}
            Ok(false) => {
                return Decision::Skipped("already decided (redelivery or another replica)".into());
            }
            Err(e) => return Decision::Retry(e.to_string()),
        }
        let now = h.clock.now();
        match h
            .stores
            .try_take(scope, &c.tenant, now, self.cfg.max_per_hour)
            .await
        {
            Ok(true) => {}
            Ok(false) => {
                return Decision::Denied(format!(
                    "hourly cap of {} isolations for tenant `{}` reached",
                    self.cfg.max_per_hour, c.tenant
                ));
            }
            Err(e) => return Decision::Failed(format!("isolation counter unavailable: {e}")),
        }
        if self.cfg.mode == Mode::DryRun {
            let detail = format!(
                "dry run: would isolate device {device} ({:?})",
                self.cfg.isolation
            );
            self.record(rec.clone(), Outcome::DryRun, "OK", &detail)
                .await;
            return Decision::DryRun;
        }
        rec.device_id = Some(device.to_owned());
        let result = self
            .act_audited(rec.clone(), Act::Isolate(self.cfg.isolation))
            .await;
        match result {
            Ok(a) => {
                self.schedule_release(c, device).await;
                Decision::Isolated(a.id)
            }
            Err(s) => Decision::Failed(s.message().to_owned()),
        }
    }

    async fn schedule_release(&self, c: &pb::Correlation, device: &str) {
        let Some(after) = self.cfg.auto_release else {
            return;
        };
        let release = ScheduledRelease {
            tenant: c.tenant.clone(),
            device_id: device.to_owned(),
            detection_key: c.detection_key.clone(),
            due: self.ctx.h.clock.now() + after,
        };
        if let Err(e) = self.ctx.h.stores.schedule(&release).await {
            tracing::error!(error = %e, device, "automatic release could not be scheduled");
        }
    }

    /// Acts as the policy on the record's device and audits the attempt.
    async fn act_audited(
        &self,
        rec: AuditRecord,
        what: Act,
    ) -> Result<pb::MachineAction, tonic::Status> {
        let device = rec.device_id.clone().unwrap_or_default();
        let result = act(
            &self.ctx,
            &rec.tenant,
            &device,
            what,
            &rec.comment,
            POLICY_ACTOR,
            rec.detection_key.as_deref(),
        )
        .await;
        audit(
            self.ctx.h.stores.as_ref(),
            &conclude(&self.ctx, rec, &result),
        )
        .await;
        result
    }

    /// Performs the automatic releases that are due; returns how many were attempted.
    pub async fn release_due(&self) -> usize {
        let due = match self
            .ctx
            .h
            .stores
            .take_due(self.ctx.h.clock.now(), 100)
            .await
        {
            Ok(d) => d,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read due automatic releases");
                return 0;
            }
        };
        for r in &due {
            let text = format!(
                "Culprit automatic release after isolation for detection {}",
                r.detection_key
            );
            let mut rec = draft(POLICY_ACTOR, Act::Release, &text);
            rec.tenant.clone_from(&r.tenant);
            rec.device_id = Some(r.device_id.clone());
            rec.detection_key = Some(r.detection_key.clone());
            let _ = self.act_audited(rec, Act::Release).await;
        }
        due.len()
    }

    /// Handles one delivery of the policy queue and settles it.
    pub async fn handle(&self, d: Delivery) {
        let event = match pb::CorrelationEvent::decode(d.message.payload.as_slice()) {
            Ok(e) => e,
            Err(e) => {
                let reason = format!("not a culprit.v1.CorrelationEvent: {e}");
                if let Err(e) = d.dead_letter(&reason).await {
                    tracing::warn!(error = %e, "dead-lettering failed");
                }
                return;
            }
        };
        let decision = match subject(&event) {
            Some(c) => self.decide(c).await,
            None => Decision::Skipped("event without an answer".into()),
        };
        tracing::debug!(message_id = %d.message.message_id, ?decision, "policy decision");
        let settled = match decision {
            Decision::Retry(reason) => d.retry(&reason).await,
            _ => d.ack().await,
        };
        if let Err(e) = settled {
            tracing::warn!(error = %e, "policy delivery could not be settled");
        }
    }

    /// Consumes the policy queue and runs due releases until shutdown.
    pub(crate) async fn run(self, subscriber: Arc<dyn Subscriber>) {
        let shutdown = self.ctx.shutdown.clone();
        let mut consumer = match subscriber.subscribe(QueueName::Policy, 8).await {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(error = %e, "response policy cannot consume its queue");
                return;
            }
        };
        let mut tick = tokio::time::interval(RELEASE_TICK);
        loop {
            tokio::select! {
                d = consumer.next() => match d {
                    Some(d) => self.handle(d).await,
                    None => return,
                },
                _ = tick.tick(), if self.cfg.auto_release.is_some() => {
                    self.release_due().await;
                }
                _ = crate::ctx::stopped(shutdown.clone()) => return,
            }
        }
    }
}

/// Why the answer is below the tenant's thresholds, if it is.
fn below_thresholds(c: &pb::Correlation, t: &PolicyTenantSettings) -> Option<String> {
    let d = c.detection.clone().unwrap_or_default();
    let confidence = c.probable.as_ref().map_or(0.0, |p| p.confidence);
    match (d.threat, d.certainty) {
        (Some(th), Some(ce)) if th >= t.min_threat && ce >= t.min_certainty => {}
        (th, ce) => {
            return Some(format!(
                "threat {th:?} / certainty {ce:?} below the tenant's thresholds {} / {}",
                t.min_threat, t.min_certainty
            ));
        }
    }
    (confidence < t.min_confidence).then(|| {
        format!(
            "attribution confidence {confidence:.2} below the tenant's threshold {:.2}",
            t.min_confidence
        )
    })
}

#[cfg(test)]
mod tests {
    use super::glob;

    #[test]
    fn globs() {
        for (p, s, want) in [
            ("dc*", "dc01.corp", true),
            ("dc*", "mkt01", false),
            ("*-srv-*", "web-srv-01", true),
            ("mkt0?.*", "mkt01.pandalab.com", true),
            ("*", "", true),
            ("a*b*c", "axxbyyc", true),
            ("a*b*c", "axxbyy", false),
            ("", "x", false),
        ] {
            assert_eq!(glob(p.as_bytes(), s.as_bytes()), want, "{p} vs {s}");
        }
    }
}
