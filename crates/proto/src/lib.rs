//! Generated protobuf and gRPC types for `culprit.v1`, the descriptor set for gRPC
//! reflection, and conversions to and from the domain types of `culprit-model`.

pub mod convert;

/// The `culprit.v1` package: messages, enums, `*_client` and `*_server` modules.
#[allow(
    missing_debug_implementations,
    unused_qualifications,
    clippy::all,
    clippy::pedantic
)]
pub mod v1 {
    tonic::include_proto!("culprit.v1");
}

/// Encoded `FileDescriptorSet` of every `culprit.v1` file and its imports, for
/// `tonic-reflection`.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/culprit_descriptor.bin"));

pub use convert::{ConvertError, TelemetryBundle};

/// Values of the bus's schema-version header (`x-culprit-schema-version`): the full name of
/// the protobuf message a payload holds. Every publisher and consumer uses these, so a reader
/// can tell a payload it does not understand from a broken one.
pub mod schema {
    /// `culprit.v1.Detection`, on the detections topic.
    pub const DETECTION: &str = "culprit.v1.Detection";
    /// `culprit.v1.TelemetryBundle`, on the telemetry topic.
    pub const TELEMETRY_BUNDLE: &str = "culprit.v1.TelemetryBundle";
    /// `culprit.v1.CorrelationEvent`, on the correlations topic.
    pub const CORRELATION_EVENT: &str = "culprit.v1.CorrelationEvent";
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;

    fn service<'a>(
        set: &'a prost_types::FileDescriptorSet,
        name: &str,
    ) -> &'a prost_types::ServiceDescriptorProto {
        set.file
            .iter()
            .filter(|f| f.package() == "culprit.v1")
            .flat_map(|f| &f.service)
            .find(|s| s.name() == name)
            .unwrap_or_else(|| panic!("service {name} is not in the descriptor set"))
    }

    fn methods(s: &prost_types::ServiceDescriptorProto) -> Vec<&str> {
        s.method.iter().map(|m| m.name()).collect()
    }

    #[test]
    fn descriptor_set_describes_both_services_for_reflection() {
        let set = prost_types::FileDescriptorSet::decode(FILE_DESCRIPTOR_SET).unwrap();
        let corr = service(&set, "CorrelationService");
        assert_eq!(
            methods(corr),
            [
                "GetCorrelation",
                "ListCorrelations",
                "WatchCorrelations",
                "SubmitDetection"
            ]
        );
        let streaming: Vec<&str> = corr
            .method
            .iter()
            .filter(|m| m.server_streaming())
            .map(|m| m.name())
            .collect();
        assert_eq!(streaming, ["WatchCorrelations"]);
        let resp = service(&set, "ResponseService");
        assert_eq!(
            methods(resp),
            ["IsolateDevice", "ReleaseDevice", "GetAction"]
        );
        // Reflection clients resolve imported types from the same set.
        assert!(
            set.file
                .iter()
                .any(|f| f.name() == "google/protobuf/timestamp.proto")
        );
    }

    #[test]
    fn generated_services_carry_the_package_name() {
        use tonic::server::NamedService;
        use v1::correlation_service_server::CorrelationServiceServer;
        use v1::response_service_server::ResponseServiceServer;
        fn name<S: NamedService>() -> &'static str {
            S::NAME
        }
        assert_eq!(
            name::<CorrelationServiceServer<()>>(),
            "culprit.v1.CorrelationService"
        );
        assert_eq!(
            name::<ResponseServiceServer<()>>(),
            "culprit.v1.ResponseService"
        );
    }
}
