//! The Compose example (examples/compose) run for real: the image built from
//! the Dockerfile around this build's binary, three `demo-backend` replicas
//! of service `api`, and a usherd that finds them by the service name through
//! Docker's DNS. Under traffic, `api` is scaled to 5 and to 2 with no failed
//! request, and one replica is killed; usherd follows each change within
//! its refresh + 2 s.
//!
//! Needs Docker, docker-compose and, when debian:bookworm-slim is missing,
//! debootstrap and root (tests/docker/base-image.sh); tests/run.sh installs
//! the packages. Without Docker the test fails and says so. Everything it
//! starts is removed by its project name, also when it fails.

mod support;

use std::time::{Duration, Instant, SystemTime};

use support::compose::*;

/// The example's `[upstreams.api.discovery] refresh`.
const REFRESH: Duration = Duration::from_secs(1);
/// How long usherd may take to follow a change the replicas made.
const FOLLOW_LIMIT: Duration = Duration::from_secs(REFRESH.as_secs() + 2);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compose_example_follows_scaling_and_a_killed_replica_without_failed_requests() {
    let started = Instant::now();
    require_docker();
    check_config("usherd.toml");
    base_image();
    eprintln!("base image ready after {:.1?}", started.elapsed());

    let project = Project::new("docker-compose.yml");
    let usherd = project.up(3).await;
    eprintln!("image built, project up after {:.1?}", started.elapsed());
    let three = project.replicas().await;
    assert_eq!(three.len(), 3, "{three:?}");
    // usherd starts with the containers: allow for its start, then one refresh.
    PoolWatch::start(&usherd)
        .settles_on(&three, Duration::from_secs(30))
        .await;
    usherd.all_answer(&three, Duration::from_secs(10)).await;
    eprintln!("3 replicas answer after {:.1?}", started.elapsed());

    let traffic = Traffic::start(&usherd.url);

    let (change, watch) = (SystemTime::now(), PoolWatch::start(&usherd));
    project
        .compose(&["up", "-d", "--no-build", "--scale", "api=5"])
        .await;
    let five = project.replicas().await;
    assert_eq!(five.len(), 5, "{five:?}");
    let seen = watch.settles_on(&five, FOLLOW_LIMIT).await;
    let settled = Instant::now();
    let last_started = project.last_event("start", change).await;
    report_follow("scaled to 5", seen, last_started, FOLLOW_LIMIT);
    usherd.all_answer(&five, Duration::from_secs(10)).await;
    traffic
        .settled_since(settled, Duration::from_secs(15))
        .await;

    let (change, watch) = (SystemTime::now(), PoolWatch::start(&usherd));
    project
        .compose(&["up", "-d", "--no-build", "--scale", "api=2"])
        .await;
    let two = project.replicas().await;
    assert_eq!(two.len(), 2, "{two:?}");
    let seen = watch.settles_on(&two, FOLLOW_LIMIT).await;
    let settled = Instant::now();
    let last_stopped = project.last_event("die", change).await;
    report_follow("scaled to 2", seen, last_stopped, FOLLOW_LIMIT);
    usherd.all_answer(&two, Duration::from_secs(10)).await;
    traffic
        .settled_since(settled, Duration::from_secs(15))
        .await;

    let (killed, survivor) = (&two[0], &two[1]);
    let (change, watch) = (SystemTime::now(), PoolWatch::start(&usherd));
    must_async("docker", vec!["kill".into(), killed.id.clone()], Vec::new()).await;
    let survivor = std::slice::from_ref(survivor);
    let seen = watch.settles_on(survivor, FOLLOW_LIMIT).await;
    let died = project.last_event("die", change).await;
    report_follow(
        &format!("killed {}", killed.name()),
        seen,
        died,
        FOLLOW_LIMIT,
    );
    usherd.all_answer(survivor, Duration::from_secs(10)).await;

    let (sent, failures) = traffic.stop().await;
    eprintln!(
        "{sent} requests during the changes, {} failed",
        failures.len()
    );
    assert!(sent > 200, "only {sent} requests during the changes");
    assert!(
        failures.is_empty(),
        "{} of {sent} requests failed:\n{}",
        failures.len(),
        failures.join("\n")
    );

    project.down_and_verify();
    eprintln!("done after {:.1?}", started.elapsed());
}
