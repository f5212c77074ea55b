//! The hunting backend that talks to Microsoft through the MDE/Graph client.

use culprit_mde::{MdeClient, MdeError};
use futures::future::BoxFuture;

use crate::{Answer, HuntError, HuntingBackend};

/// One tenant's client as a hunting backend.
#[derive(Debug)]
pub struct MdeBackend {
    client: MdeClient,
}

impl MdeBackend {
    pub fn new(client: MdeClient) -> Self {
        MdeBackend { client }
    }
    pub fn client(&self) -> &MdeClient {
        &self.client
    }
}

impl HuntingBackend for MdeBackend {
    fn hunt<'a>(&'a self, query: &'a str) -> BoxFuture<'a, Result<Answer, HuntError>> {
        Box::pin(async move {
            self.client
                .hunt(query, None)
                .await
                .map(|r| Answer {
                    table: r.table,
                    truncated: r.truncated,
                })
                .map_err(|e| classify(&e))
        })
    }
}

fn classify(e: &MdeError) -> HuntError {
    HuntError {
        kind: e.kind().to_owned(),
        message: e.to_string(),
        retryable: e.is_retryable(),
        split: matches!(
            e,
            MdeError::TooExpensive { .. } | MdeError::ResultTooLarge { .. }
        ),
        retry_after: e.retry_after(),
    }
}
