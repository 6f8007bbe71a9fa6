//! The test object store is a real S3 API (moto) reached through object_store's S3 client, with
//! atomic create-if-absent.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use futures_util::TryStreamExt;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload, path::Path};
use oxbow_tests::{s3, unique_name};

#[tokio::test]
async fn objects_round_trip_and_create_is_atomic() {
    let store = s3::bucket().unwrap();
    let prefix = unique_name("smoke");
    let path = Path::from(format!(
        "{prefix}/state/payments/0/0000000000000001-w0.snap"
    ));

    store
        .put(&path, PutPayload::from_static(b"snapshot bytes"))
        .await
        .unwrap();
    let read = store.get(&path).await.unwrap().bytes().await.unwrap();
    assert_eq!(&read[..], b"snapshot bytes");

    let listed: Vec<_> = store
        .list(Some(&Path::from(prefix.clone())))
        .try_collect()
        .await
        .unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].size, 14);

    let create = PutOptions {
        mode: PutMode::Create,
        ..Default::default()
    };
    let marker = Path::from(format!("{prefix}/savepoints/sp-1/worker-0.json"));
    store
        .put_opts(&marker, PutPayload::from_static(b"{}"), create.clone())
        .await
        .unwrap();
    let again = store
        .put_opts(&marker, PutPayload::from_static(b"{\"other\":1}"), create)
        .await;
    assert!(
        matches!(again, Err(object_store::Error::AlreadyExists { .. })),
        "{again:?}"
    );
    assert_eq!(
        &store.get(&marker).await.unwrap().bytes().await.unwrap()[..],
        b"{}"
    );
}
