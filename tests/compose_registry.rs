//! The registry variant of the Compose example (examples/compose/
//! docker-compose.registry.yml and usherd-registry.toml) run for real: three
//! `demo-backend` replicas of service `api` that register with usherd's
//! built-in registry, and usherd routing to them. All three answer through
//! the published loopback port; then, under traffic, `api` is scaled to 1:
//! the two stopped replicas deregister on SIGTERM, usherd drops them, and no
//! request fails.
//!
//! Needs what tests/compose.rs needs (Docker, docker-compose, the base
//! image). Everything it starts is removed by its project name, also when it
//! fails.

mod support;

use std::time::{Duration, Instant, SystemTime};

use support::compose::*;

/// A replica deregisters before it stops; usherd's registry source sees
/// that at once (a blocking query): the pool has shrunk, at the latest,
/// this long after the last stopped container died.
const FOLLOW_LIMIT: Duration = Duration::from_secs(2);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compose_registry_example_follows_registrations_without_failed_requests() {
    let started = Instant::now();
    require_docker();
    check_config("usherd-registry.toml");
    base_image();
    eprintln!("base image ready after {:.1?}", started.elapsed());

    let project = Project::new("docker-compose.registry.yml");
    let usherd = project.up(3).await;
    eprintln!("image built, project up after {:.1?}", started.elapsed());
    let three = project.replicas().await;
    assert_eq!(three.len(), 3, "{three:?}");
    // A replica that started before usherd answered registers at its next
    // turn, 3 s later.
    PoolWatch::start(&usherd)
        .settles_on(&three, Duration::from_secs(30))
        .await;
    usherd.all_answer(&three, Duration::from_secs(10)).await;
    eprintln!("3 replicas answer after {:.1?}", started.elapsed());

    let traffic = Traffic::start(&usherd.url);
    // Some traffic over all three before the change.
    tokio::time::sleep(Duration::from_secs(1)).await;

    let (change, watch) = (SystemTime::now(), PoolWatch::start(&usherd));
    project
        .compose(&["up", "-d", "--no-build", "--scale", "api=1"])
        .await;
    let one = project.replicas().await;
    assert_eq!(one.len(), 1, "{one:?}");
    let seen = watch.settles_on(&one, Duration::from_secs(15)).await;
    let settled = Instant::now();
    let last_stopped = project.last_event("die", change).await;
    report_follow("scaled to 1", seen, last_stopped, FOLLOW_LIMIT);
    usherd.all_answer(&one, Duration::from_secs(10)).await;
    traffic
        .settled_since(settled, Duration::from_secs(15))
        .await;
    // Traffic to the one left, for a moment more.
    tokio::time::sleep(Duration::from_secs(1)).await;

    let (sent, failures) = traffic.stop().await;
    eprintln!(
        "{sent} requests during the change, {} failed",
        failures.len()
    );
    assert!(sent > 100, "only {sent} requests during the change");
    assert!(
        failures.is_empty(),
        "{} of {sent} requests failed:\n{}",
        failures.len(),
        failures.join("\n")
    );

    project.down_and_verify();
    eprintln!("done after {:.1?}", started.elapsed());
}
