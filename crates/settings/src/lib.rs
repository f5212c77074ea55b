//! Typed, layered configuration with secrets.
