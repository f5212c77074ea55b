#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The checkpoint contract, on memory and on the local Redis.

mod common;

use culprit_cache::{CacheError, CheckpointStore, MAX_CHECKPOINT_LEN, MemoryCheckpoints};

async fn contract(store: &dyn CheckpointStore) {
    assert_eq!(store.load("vectra:a").await.unwrap(), None);
    store.save("vectra:a", "17").await.unwrap();
    store.save("vectra:b", "3").await.unwrap();
    assert_eq!(store.load("vectra:a").await.unwrap().as_deref(), Some("17"));
    store.save("vectra:a", "18").await.unwrap();
    assert_eq!(store.load("vectra:a").await.unwrap().as_deref(), Some("18"));
    assert_eq!(store.load("vectra:b").await.unwrap().as_deref(), Some("3"));

    let err = store.save("", "1").await.unwrap_err();
    assert!(
        matches!(
            err,
            CacheError::InvalidInput {
                field: "checkpoint name",
                ..
            }
        ),
        "{err}"
    );
    let long = "9".repeat(MAX_CHECKPOINT_LEN + 1);
    let err = store.save("vectra:a", &long).await.unwrap_err();
    assert!(err.to_string().contains("checkpoint value"), "{err}");
    assert_eq!(store.load("vectra:a").await.unwrap().as_deref(), Some("18"));
}

#[tokio::test]
async fn memory_checkpoints_keep_the_last_value_per_name() {
    contract(&MemoryCheckpoints::new()).await;
}

#[tokio::test]
async fn redis_checkpoints_survive_a_new_connection() {
    common::with_prefix(|prefix| async move {
        let url = common::redis_url();
        let store = common::connect(&url, &prefix).await;
        contract(&store).await;
        // A restarted process reads what the previous one saved.
        let again = common::connect(&url, &prefix).await;
        assert_eq!(again.load("vectra:a").await.unwrap().as_deref(), Some("18"));
    })
    .await;
}
