//! `culprit.v1.CorrelationService`: answers by key, listings, the watch stream, submission.

use std::collections::BTreeSet;
use std::sync::Arc;

use base64::Engine;
use culprit_bus::{HEADER_SCHEMA_VERSION, Message, Topic};
use culprit_cache::{ResultFilter, StoredResult};
use culprit_model::{Detection, DetectionKey, SourceKind};
use culprit_proto::convert::{status_from_proto, timestamp_from_proto};
use culprit_proto::v1 as pb;
use culprit_proto::v1::correlation_service_server::CorrelationService;
use prost::Message as _;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use crate::auth::{Principal, Scope};
use crate::ctx::{Ctx, SubmitError, decode_correlation, tenant_of_key, unavailable};
use crate::status::{correlation_not_found, invalid, invalid_convert};
use crate::watch::{WatchFilter, spawn_watch};

const DEFAULT_PAGE: usize = 50;
const MAX_PAGE: usize = 500;
/// How many stored answers a lookup by source id scans at most.
const SOURCE_SCAN_LIMIT: usize = 5_000;
const SUBMIT_DEDUP_TTL: std::time::Duration = std::time::Duration::from_secs(7 * 86_400);
/// The `culprit.v1.Detection` schema version in the bus header (the one every service uses).
pub const DETECTION_SCHEMA_VERSION: &str = culprit_proto::schema::DETECTION;

/// The correlation service over the shared context.
#[derive(Debug, Clone)]
pub struct CorrelationApi {
    pub(crate) ctx: Arc<Ctx>,
}

impl CorrelationApi {
    fn principal<T>(&self, req: &Request<T>, scope: Scope) -> Result<Arc<Principal>, Status> {
        let p = self.ctx.keys.authenticate(req)?;
        p.require_scope(scope)?;
        Ok(p)
    }

    /// The stored bytes (an encoded `culprit.v1.Correlation`) of the answer `selector` names,
    /// after authentication and the tenant check. GetCorrelation serves them as they are.
    pub(crate) async fn stored_answer<T>(
        &self,
        request: &Request<T>,
        selector: Option<&pb::get_correlation_request::Selector>,
    ) -> Result<Vec<u8>, Status> {
        let p = self.principal(request, Scope::Read)?;
        match selector {
            Some(pb::get_correlation_request::Selector::DetectionKey(key)) => {
                p.require_tenant(tenant_of_key(key, "detection_key")?)?;
                self.ctx.stored(key).await
            }
            Some(pb::get_correlation_request::Selector::SourceRef(r)) => {
                self.by_source(&p, r).await
            }
            None => Err(invalid("selector", "give detection_key or source_ref")),
        }
    }

    async fn by_source(&self, p: &Principal, r: &pb::SourceRef) -> Result<Vec<u8>, Status> {
        let tenant = p.single_tenant(&r.tenant, "source_ref.tenant")?;
        let source = source_of(r.source)?;
        if r.source_id.is_empty() {
            return Err(invalid("source_ref.source_id", "required"));
        }
        // EVE and Zeek detections have one revision, "0": try it without a scan.
        let direct = DetectionKey::new(source, &tenant, &r.source_id, "0");
        if let Some(bytes) = self.get_bytes(&direct).await? {
            return Ok(bytes);
        }
        let prefix = format!("{source}:{tenant}:{}:", r.source_id);
        let filter = ResultFilter {
            tenant: Some(tenant.clone()),
            ..ResultFilter::default()
        };
        let mut token: Option<String> = None;
        let mut scanned = 0;
        // Newest first, so the first match is the newest answer.
        while scanned < SOURCE_SCAN_LIMIT {
            let page = self
                .ctx
                .h
                .results
                .list(&filter, token.as_deref(), 1000)
                .await
                .map_err(|e| unavailable("result store", &e))?;
            scanned += page.items.len();
            if let Some(hit) = page
                .items
                .into_iter()
                .find(|i| i.key.0.starts_with(&prefix))
            {
                return Ok(hit.bytes);
            }
            match page.next_page_token {
                Some(t) => token = Some(t),
                None => break,
            }
        }
        Err(correlation_not_found(
            format!(
                "no answer (yet) for {source} detection `{}` of tenant `{tenant}`",
                r.source_id
            ),
            &prefix,
        ))
    }

    async fn get_bytes(&self, key: &DetectionKey) -> Result<Option<Vec<u8>>, Status> {
        self.ctx
            .h
            .results
            .get(key)
            .await
            .map_err(|e| unavailable("result store", &e))
    }
}

fn source_of(v: i32) -> Result<SourceKind, Status> {
    match pb::SourceKind::try_from(v) {
        Ok(pb::SourceKind::Vectra) => Ok(SourceKind::Vectra),
        Ok(pb::SourceKind::Suricata) => Ok(SourceKind::Suricata),
        Ok(pb::SourceKind::Zeek) => Ok(SourceKind::Zeek),
        _ => Err(invalid(
            "source_ref.source",
            format!("{v} is not a known source"),
        )),
    }
}

/// The listing's filters, validated.
struct ListFilter {
    tenants: Option<BTreeSet<String>>,
    statuses: BTreeSet<i32>,
    before: Option<culprit_model::Timestamp>,
    store: ResultFilter,
    fingerprint: String,
}

#[derive(Serialize, Deserialize)]
struct PageToken {
    /// The store's own token.
    s: String,
    /// Fingerprint of the filters the token was issued for.
    f: String,
}

fn list_filter(p: &Principal, r: &pb::ListCorrelationsRequest) -> Result<ListFilter, Status> {
    let tenants = p.narrow(&r.tenants)?;
    let statuses = r
        .statuses
        .iter()
        .enumerate()
        .map(|(i, s)| {
            status_from_proto(&format!("statuses[{i}]"), *s)
                .map(|_| *s)
                .map_err(|e| invalid_convert("", &e))
        })
        .collect::<Result<BTreeSet<i32>, Status>>()?;
    let time = |f: &str, t: &Option<prost_types::Timestamp>| {
        t.as_ref()
            .map(|t| timestamp_from_proto(f, t))
            .transpose()
            .map_err(|e| invalid_convert("", &e))
    };
    let after = time("computed_after", &r.computed_after)?;
    let before = time("computed_before", &r.computed_before)?;
    if let Some(c) = r.min_confidence
        && !(0.0..=1.0).contains(&c)
    {
        return Err(invalid("min_confidence", format!("{c} is not in [0, 1]")));
    }
    let only = |set: &Option<BTreeSet<String>>| match set {
        Some(s) if s.len() == 1 => s.iter().next().cloned(),
        _ => None,
    };
    let store = ResultFilter {
        tenant: only(&tenants),
        device_id: (!r.device_id.is_empty()).then(|| r.device_id.clone()),
        status: match statuses.iter().collect::<Vec<_>>().as_slice() {
            [one] => status_from_proto("statuses", **one).ok(),
            _ => None,
        },
        min_confidence: r.min_confidence,
        since: after,
    };
    let canonical = format!(
        "{tenants:?}|{}|{statuses:?}|{after:?}|{before:?}|{:?}",
        r.device_id, r.min_confidence
    );
    let fingerprint = Sha256::digest(canonical.as_bytes())
        .iter()
        .take(8)
        .map(|b| format!("{b:02x}"))
        .collect();
    Ok(ListFilter {
        tenants,
        statuses,
        before,
        store,
        fingerprint,
    })
}

impl ListFilter {
    fn keeps(&self, item: &StoredResult) -> bool {
        let status = pb::Status::from(item.meta.status) as i32;
        self.tenants
            .as_ref()
            .is_none_or(|t| t.contains(&item.meta.tenant))
            && (self.statuses.is_empty() || self.statuses.contains(&status))
            && self.before.is_none_or(|b| item.meta.computed_at < b)
    }

    fn decode_token(&self, token: &str) -> Result<Option<String>, Status> {
        if token.is_empty() {
            return Ok(None);
        }
        let bad = || invalid("page_token", "not a token this server issued");
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(token)
            .map_err(|_| bad())?;
        let t: PageToken = serde_json::from_slice(&bytes).map_err(|_| bad())?;
        if t.f != self.fingerprint {
            return Err(invalid(
                "page_token",
                "issued for different filters; repeat the first request's filters",
            ));
        }
        Ok(Some(t.s))
    }

    fn encode_token(&self, store_token: String) -> String {
        let t = PageToken {
            s: store_token,
            f: self.fingerprint.clone(),
        };
        base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(serde_json::to_vec(&t).unwrap_or_default())
    }
}

#[tonic::async_trait]
impl CorrelationService for CorrelationApi {
    async fn get_correlation(
        &self,
        request: Request<pb::GetCorrelationRequest>,
    ) -> Result<Response<pb::GetCorrelationResponse>, Status> {
        // The server routes this method to a pass-through codec (see `fast`); this decoding
        // path serves embedders that call the service directly.
        let bytes = self
            .stored_answer(&request, request.get_ref().selector.as_ref())
            .await?;
        Ok(Response::new(pb::GetCorrelationResponse {
            correlation: Some(decode_correlation("requested", &bytes)?),
        }))
    }

    async fn list_correlations(
        &self,
        request: Request<pb::ListCorrelationsRequest>,
    ) -> Result<Response<pb::ListCorrelationsResponse>, Status> {
        let p = self.principal(&request, Scope::Read)?;
        let r = request.get_ref();
        let filter = list_filter(&p, r)?;
        let size = match r.page_size as usize {
            0 => DEFAULT_PAGE,
            n => n.min(MAX_PAGE),
        };
        let token = filter.decode_token(&r.page_token)?;
        let page = self
            .ctx
            .h
            .results
            .list(&filter.store, token.as_deref(), size)
            .await
            .map_err(|e| unavailable("result store", &e))?;
        // Filters the store cannot apply shorten a page; the token still continues the scan.
        let correlations = page
            .items
            .iter()
            .filter(|i| filter.keeps(i))
            .map(|i| decode_correlation(i.key.as_str(), &i.bytes))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Response::new(pb::ListCorrelationsResponse {
            correlations,
            next_page_token: page
                .next_page_token
                .map(|t| filter.encode_token(t))
                .unwrap_or_default(),
        }))
    }

    type WatchCorrelationsStream = ReceiverStream<Result<pb::CorrelationEvent, Status>>;

    async fn watch_correlations(
        &self,
        request: Request<pb::WatchCorrelationsRequest>,
    ) -> Result<Response<Self::WatchCorrelationsStream>, Status> {
        let p = self.principal(&request, Scope::Read)?;
        let r = request.into_inner();
        let filter = WatchFilter::new(&p, &r)?;
        let rx = spawn_watch(self.ctx.clone(), filter, r.after_position, r.from_oldest).await?;
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    async fn submit_detection(
        &self,
        request: Request<pb::SubmitDetectionRequest>,
    ) -> Result<Response<pb::SubmitDetectionResponse>, Status> {
        let p = self.principal(&request, Scope::Submit)?;
        let detections = match request.into_inner().payload {
            Some(pb::submit_detection_request::Payload::Detection(d)) => {
                let d = Detection::try_from(d).map_err(|e| invalid_convert("detection", &e))?;
                vec![d]
            }
            Some(pb::submit_detection_request::Payload::Raw(raw)) => parse_raw(&raw)?,
            None => return Err(invalid("payload", "give detection or raw")),
        };
        for d in &detections {
            p.require_tenant(&d.tenant)?;
        }
        let mut out = Vec::with_capacity(detections.len());
        for d in &detections {
            out.push(self.publish(d).await?);
        }
        Ok(Response::new(pb::SubmitDetectionResponse {
            detections: out,
        }))
    }
}

impl CorrelationApi {
    /// Hands one detection to the ingest path when one is configured, else publishes it here.
    async fn publish(&self, d: &Detection) -> Result<pb::SubmittedDetection, Status> {
        let Some(sink) = &self.ctx.h.submit else {
            return self.publish_here(d).await;
        };
        match sink.submit(d.clone()).await {
            Ok(s) => Ok(pb::SubmittedDetection {
                detection_key: s.key.0,
                duplicate: s.duplicate,
                warnings: s.warnings,
            }),
            Err(SubmitError::Unavailable(e)) => Err(unavailable(
                "ingest publisher",
                &SubmitError::Unavailable(e),
            )),
            Err(SubmitError::Invalid(e)) => Err(invalid("detection", e)),
        }
    }

    /// Publishes once per detection key (the key is the message id, as ingest does).
    async fn publish_here(&self, d: &Detection) -> Result<pb::SubmittedDetection, Status> {
        let key = d.key();
        let first = self
            .ctx
            .h
            .idempotency
            .first_seen("gateway-submit", key.as_str(), SUBMIT_DEDUP_TTL)
            .await
            .map_err(|e| unavailable("idempotency store", &e))?;
        if first {
            let payload = pb::Detection::from(d).encode_to_vec();
            let priority = u8::try_from((d.priority() / 1000).min(9)).unwrap_or(9);
            let msg = Message::new(key.as_str(), payload)
                .with_header(HEADER_SCHEMA_VERSION, DETECTION_SCHEMA_VERSION)
                .with_priority(priority);
            if let Err(e) = self.ctx.h.publisher.publish(Topic::Detections, msg).await {
                // Give the claim back so the client's retry publishes: nothing lost behind it.
                if let Err(f) = self
                    .ctx
                    .h
                    .idempotency
                    .forget("gateway-submit", key.as_str())
                    .await
                {
                    tracing::warn!(error = %f, key = %key, "could not release a submit claim");
                }
                return Err(unavailable("bus", &e));
            }
            culprit_metrics::metrics().detection_ingested(d.source.as_str(), &d.tenant);
        }
        Ok(pb::SubmittedDetection {
            detection_key: key.0,
            duplicate: !first,
            warnings: d.warnings.clone(),
        })
    }
}

/// Parses a raw body as ingest would. Any record that fails (other than one that is not a
/// detection at all) fails the call, naming where, so nothing is half-submitted.
fn parse_raw(raw: &pb::RawDetection) -> Result<Vec<Detection>, Status> {
    use culprit_ingest::{suricata, vectra, vectra_syslog, zeek};
    if raw.tenant.trim().is_empty() {
        return Err(invalid("raw.tenant", "required"));
    }
    let t = raw.tenant.as_str();
    let parsed = match pb::RawFormat::try_from(raw.format) {
        Ok(pb::RawFormat::VectraJson) => {
            vectra::parse_json(&raw.body, t).map_err(|e| invalid("raw.body", e))?
        }
        Ok(pb::RawFormat::VectraCef) => vectra_syslog::parse_lines(&raw.body, t),
        Ok(pb::RawFormat::SuricataEve) => suricata::parse_lines(&raw.body, t),
        Ok(pb::RawFormat::Zeek) => zeek::parse_notice(&raw.body, t),
        _ => {
            return Err(invalid(
                "raw.format",
                format!("{} is not a supported format", raw.format),
            ));
        }
    };
    let mut good = Vec::new();
    let mut errors = Vec::new();
    for p in parsed {
        match p.detection {
            Ok(d) => good.push(d),
            Err(e) if e.is_skip() => {}
            Err(e) => errors.push(format!("record {}: {e}", p.raw_index)),
        }
    }
    if !errors.is_empty() {
        let shown: Vec<_> = errors.iter().take(5).cloned().collect();
        return Err(invalid(
            "raw.body",
            format!(
                "{} record(s) rejected, nothing submitted: {}",
                errors.len(),
                shown.join("; ")
            ),
        ));
    }
    if good.is_empty() {
        return Err(invalid("raw.body", "no detection in the input"));
    }
    Ok(good)
}
