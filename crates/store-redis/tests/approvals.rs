//! The replicas' shared approvals in a real `redis-server` (`approvals.rs`): what each Lua
//! script promises. A verdict request is taken exactly once or withdrawn, never both; an entry
//! is listed only while it lives and its replica's heartbeat does; an ended entry answers with
//! how it ended; a replica without a heartbeat is down.

#![allow(clippy::unwrap_used, clippy::panic, reason = "tests fail by panicking")]

use std::sync::Arc;
use std::time::Duration;

use tollgate_store_redis::approvals::{RedisApprovals, Sent, valid_replica_name};
use tollgate_store_redis::testing::RedisServer;
use tollgate_store_redis::{RedisOptions, RedisStore};

fn replica(url: &str, name: &str) -> RedisApprovals {
    let store = RedisStore::open(url, RedisOptions::default()).unwrap();
    RedisApprovals::new(Arc::new(store), name).unwrap()
}

#[test]
fn a_request_is_taken_once_or_withdrawn_never_both() {
    let dir = tempfile::tempdir().unwrap();
    let server = RedisServer::start(dir.path()).unwrap();
    let (a, b) = (replica(&server.url(), "a"), replica(&server.url(), "b"));
    a.heartbeat().unwrap();
    a.publish(1, r#"{"id": 1}"#, Duration::from_secs(60))
        .unwrap();
    a.publish(2, r#"{"id": 2}"#, Duration::from_secs(60))
        .unwrap();

    // Withdrawn before it was taken: never taken.
    let Sent::Queued(first) = b.send("a", 1, "first").unwrap() else {
        panic!("not queued");
    };
    assert!(b.cancel(&first).unwrap(), "withdrawn");
    assert_eq!(a.take().unwrap(), vec![]);

    // Taken: cannot be withdrawn, and its answer comes back.
    let Sent::Queued(second) = b.send("a", 2, "second").unwrap() else {
        panic!("not queued");
    };
    assert_eq!(
        a.take().unwrap(),
        vec![(second.clone(), "second".to_owned())]
    );
    assert!(!b.cancel(&second).unwrap(), "taken already");
    assert_eq!(a.take().unwrap(), vec![], "taken once");
    assert_eq!(b.answer_of(&second).unwrap(), None);
    a.answer(&second, "done").unwrap();
    assert_eq!(b.answer_of(&second).unwrap().as_deref(), Some("done"));
}

#[test]
fn entries_are_listed_while_they_and_their_replica_live() {
    let dir = tempfile::tempdir().unwrap();
    let server = RedisServer::start(dir.path()).unwrap();
    let (a, b) = (replica(&server.url(), "a"), replica(&server.url(), "b"));
    a.publish(1, "one", Duration::from_secs(60)).unwrap();
    b.publish(1, "b-one", Duration::from_millis(200)).unwrap();
    // No heartbeat yet: nobody is listed, and a verdict finds the replica down.
    assert!(b.list().unwrap().is_empty());
    assert_eq!(b.send("a", 1, "x").unwrap(), Sent::Down);
    a.heartbeat().unwrap();
    b.heartbeat().unwrap();
    let mut listed = a.list().unwrap();
    listed.sort_by(|x, y| x.replica.cmp(&y.replica));
    assert_eq!(
        listed
            .iter()
            .map(|l| (l.replica.as_str(), l.id, l.entry.as_str()))
            .collect::<Vec<_>>(),
        [("a", 1, "one"), ("b", 1, "b-one")]
    );
    assert!(listed[0].remaining > Duration::from_secs(59));
    // b's entry expires at its deadline.
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(a.list().unwrap().len(), 1);
    // An ended entry is not listed, and a verdict for it hears how it ended.
    a.unpublish(1, "alice approved it at 1.000s").unwrap();
    assert!(a.list().unwrap().is_empty());
    assert_eq!(
        b.send("a", 1, "x").unwrap(),
        Sent::Ended("alice approved it at 1.000s".to_owned())
    );
    assert_eq!(b.send("a", 7, "x").unwrap(), Sent::Gone);
    // A replica that leaves is down at once.
    a.publish(2, "two", Duration::from_secs(60)).unwrap();
    a.leave().unwrap();
    assert_eq!(b.send("a", 2, "x").unwrap(), Sent::Down);
    assert!(b.list().unwrap().is_empty());
}

#[test]
fn replica_names_are_plain() {
    for good in ["a", "gw-1.eu_west", &"x".repeat(64)] {
        assert!(valid_replica_name(good), "{good}");
    }
    for bad in ["", "a:b", "a b", "a@b", "é", &"x".repeat(65)] {
        assert!(!valid_replica_name(bad), "{bad}");
    }
}
