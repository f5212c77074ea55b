//! The attribution engine (pure) and its service.
