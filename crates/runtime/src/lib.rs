//! Shutdown, draining and backoff shared by every service.
