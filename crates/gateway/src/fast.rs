//! GetCorrelation without decoding and re-encoding the answer: the store already holds an
//! encoded `culprit.v1.Correlation`, and a `GetCorrelationResponse` is that message as field 1,
//! so the stored bytes are written behind a two-to-four byte header. Every other method of the
//! service goes to the generated server unchanged.

use std::convert::Infallible;
use std::task::{Context, Poll};

use culprit_proto::v1 as pb;
use culprit_proto::v1::correlation_service_server::CorrelationServiceServer;
use prost::bytes::{Buf, BufMut};
use prost::encoding::{DecodeContext, WireType};
use prost::{DecodeError, Message};
use tonic::body::Body;
use tonic::codegen::{BoxFuture, Service, StdError, http};
use tonic::server::{Grpc, NamedService, UnaryService};
use tonic::{Request, Response, Status};

use crate::correlation::CorrelationApi;

const GET_PATH: &str = "/culprit.v1.CorrelationService/GetCorrelation";

/// A `culprit.v1.GetCorrelationResponse` whose `correlation` stays encoded: the server writes
/// stored bytes as they are, and a client that only forwards answers can skip decoding them.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct RawGetCorrelationResponse {
    /// An encoded `culprit.v1.Correlation`.
    pub correlation: Vec<u8>,
}

impl std::fmt::Debug for RawGetCorrelationResponse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RawGetCorrelationResponse")
            .field("correlation_bytes", &self.correlation.len())
            .finish()
    }
}

impl Message for RawGetCorrelationResponse {
    fn encode_raw(&self, buf: &mut impl BufMut) {
        prost::encoding::bytes::encode(1, &self.correlation, buf);
    }

    fn merge_field(
        &mut self,
        tag: u32,
        wire_type: WireType,
        buf: &mut impl Buf,
        ctx: DecodeContext,
    ) -> Result<(), DecodeError> {
        if tag == 1 {
            prost::encoding::bytes::merge(wire_type, &mut self.correlation, buf, ctx)
        } else {
            prost::encoding::skip_field(wire_type, tag, buf, ctx)
        }
    }

    fn encoded_len(&self) -> usize {
        prost::encoding::bytes::encoded_len(1, &self.correlation)
    }

    fn clear(&mut self) {
        self.correlation.clear();
    }
}

/// The correlation service as the server mounts it.
#[derive(Debug, Clone)]
pub(crate) struct FastCorrelationService {
    api: CorrelationApi,
    inner: CorrelationServiceServer<CorrelationApi>,
}

impl FastCorrelationService {
    pub fn new(api: CorrelationApi) -> Self {
        FastCorrelationService {
            inner: CorrelationServiceServer::new(api.clone()),
            api,
        }
    }
}

impl NamedService for FastCorrelationService {
    const NAME: &'static str = <CorrelationServiceServer<CorrelationApi> as NamedService>::NAME;
}

struct GetStored(CorrelationApi);

impl UnaryService<pb::GetCorrelationRequest> for GetStored {
    type Response = RawGetCorrelationResponse;
    type Future = BoxFuture<Response<RawGetCorrelationResponse>, Status>;

    fn call(&mut self, request: Request<pb::GetCorrelationRequest>) -> Self::Future {
        let api = self.0.clone();
        Box::pin(async move {
            let correlation = api
                .stored_answer(&request, request.get_ref().selector.as_ref())
                .await?;
            Ok(Response::new(RawGetCorrelationResponse { correlation }))
        })
    }
}

impl<B> Service<http::Request<B>> for FastCorrelationService
where
    B: tonic::codegen::Body + Send + 'static,
    B::Error: Into<StdError> + Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        if req.uri().path() != GET_PATH {
            return self.inner.call(req);
        }
        let method = GetStored(self.api.clone());
        Box::pin(async move {
            // Same limits as the generated server's defaults (4 MiB in, no compression).
            let codec = tonic_prost::ProstCodec::<
                RawGetCorrelationResponse,
                pb::GetCorrelationRequest,
            >::default();
            Ok(Grpc::new(codec).unary(method, req).await)
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn raw_response_is_byte_identical_to_the_decoded_one() {
        let c = pb::Correlation {
            detection_key: "vectra:acme:1:0".into(),
            tenant: "acme".into(),
            explanation: "x".repeat(300),
            ..Default::default()
        };
        let typed = pb::GetCorrelationResponse {
            correlation: Some(c.clone()),
        }
        .encode_to_vec();
        let raw = RawGetCorrelationResponse {
            correlation: c.encode_to_vec(),
        };
        assert_eq!(raw.encode_to_vec(), typed);
        assert_eq!(raw.encoded_len(), typed.len());
        let back = RawGetCorrelationResponse::decode(typed.as_slice()).unwrap();
        assert_eq!(back, raw);
        assert_eq!(
            pb::Correlation::decode(back.correlation.as_slice()).unwrap(),
            c
        );
    }
}
