//! Generated protobuf and gRPC types for culprit.v1.
