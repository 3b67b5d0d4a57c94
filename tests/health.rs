//! `grpc.health.v1.Health` and server reflection on real branches.

mod common;

use std::time::Duration;

use bank::bootstrap::standalone::{start, RunningBranch};
use common::channel;
use tokio::time::Instant;
use tonic::transport::Channel;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;

/// Bound on any one call in these tests.
const CALL_DEADLINE: Duration = Duration::from_secs(5);

/// Bound on a cluster forming and every branch reporting SERVING.
const FORM_DEADLINE: Duration = Duration::from_secs(60);

async fn check(client: &mut HealthClient<Channel>, service: &str) -> ServingStatus {
    let mut request = tonic::Request::new(HealthCheckRequest {
        service: service.to_string(),
    });
    request.set_timeout(CALL_DEADLINE);
    let reply = client.check(request).await.expect("health check answered");
    reply.into_inner().status()
}

/// Waits, through the Watch stream, until `service` reports `wanted`.
async fn wait_for_status(
    client: &mut HealthClient<Channel>,
    service: &str,
    wanted: ServingStatus,
    deadline: Instant,
) {
    let mut request = tonic::Request::new(HealthCheckRequest {
        service: service.to_string(),
    });
    request.set_timeout(deadline.saturating_duration_since(Instant::now()));
    let mut stream = client
        .watch(request)
        .await
        .expect("watch answered")
        .into_inner();
    loop {
        let next = tokio::time::timeout_at(deadline, stream.message())
            .await
            .unwrap_or_else(|_| panic!("{service:?} not {wanted:?} in time"));
        let status = next
            .expect("watch stream healthy")
            .expect("watch stream open")
            .status();
        if status == wanted {
            return;
        }
    }
}

/// A branch alone is NOT_SERVING (no cluster, no leader); once all three branches are up and
/// the cluster forms, every branch reports SERVING, for the server and for each service.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn branches_report_serving_once_the_cluster_forms() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut listeners = common::loopback_listeners(&[1, 2, 3]).await;
    let addresses = common::addresses_of(&listeners);
    let mut take = |id| {
        let listener = listeners.remove(&id).expect("listener");
        common::standalone_config(id, listener, &addresses, dir.path(), 100)
    };

    // Branch 2 alone: it serves, but is in no membership and knows no leader.
    let mut running: Vec<RunningBranch> = vec![start(take(2)).await.expect("branch 2 starts")];
    let mut health = HealthClient::new(channel(addresses[&2]));
    for service in ["", "Branch", "bank.peer.v1.Peer"] {
        assert_eq!(
            check(&mut health, service).await,
            ServingStatus::NotServing,
            "service {service:?}"
        );
    }

    // The others come up; branch 1 (the lowest) creates the cluster.
    running.push(start(take(3)).await.expect("branch 3 starts"));
    running.push(start(take(1)).await.expect("branch 1 starts"));
    let deadline = Instant::now() + FORM_DEADLINE;
    wait_for_status(&mut health, "", ServingStatus::Serving, deadline).await;
    for (&id, &addr) in &addresses {
        let mut client = HealthClient::new(channel(addr));
        for service in ["", "Branch", "bank.peer.v1.Peer"] {
            wait_for_status(&mut client, service, ServingStatus::Serving, deadline).await;
            assert_eq!(
                check(&mut client, service).await,
                ServingStatus::Serving,
                "branch {id}, service {service:?}"
            );
        }
    }
    for branch in running {
        branch.shutdown().await;
    }
}

/// Reflection lists every service a branch serves, on v1 and v1alpha.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reflection_lists_every_service() {
    let cluster = common::start_cluster(1, 0).await;
    let addr = cluster.addresses()[&1];

    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
    use tonic_reflection::pb::v1::ServerReflectionRequest;
    let mut client = ServerReflectionClient::new(channel(addr));
    let mut request = tonic::Request::new(tokio_stream::iter([ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    }]));
    request.set_timeout(CALL_DEADLINE);
    let mut replies = client
        .server_reflection_info(request)
        .await
        .expect("reflection answered")
        .into_inner();
    let reply = tokio::time::timeout(CALL_DEADLINE, replies.message())
        .await
        .expect("reflection reply in time")
        .expect("reflection stream healthy")
        .expect("one reply");
    let Some(MessageResponse::ListServicesResponse(list)) = reply.message_response else {
        panic!("not a service list: {reply:?}");
    };
    let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    for wanted in [
        "Branch",
        "bank.peer.v1.Peer",
        "grpc.health.v1.Health",
        "grpc.reflection.v1.ServerReflection",
    ] {
        assert!(
            names.iter().any(|n| n == wanted),
            "{wanted} not in {names:?}"
        );
    }

    use tonic_reflection::pb::v1alpha::server_reflection_client::ServerReflectionClient as AlphaClient;
    use tonic_reflection::pb::v1alpha::server_reflection_request::MessageRequest as AlphaRequest;
    use tonic_reflection::pb::v1alpha::server_reflection_response::MessageResponse as AlphaResponse;
    let mut alpha = AlphaClient::new(channel(addr));
    let mut request = tonic::Request::new(tokio_stream::iter([
        tonic_reflection::pb::v1alpha::ServerReflectionRequest {
            host: String::new(),
            message_request: Some(AlphaRequest::ListServices(String::new())),
        },
    ]));
    request.set_timeout(CALL_DEADLINE);
    let mut replies = alpha
        .server_reflection_info(request)
        .await
        .expect("v1alpha reflection answered")
        .into_inner();
    let reply = tokio::time::timeout(CALL_DEADLINE, replies.message())
        .await
        .expect("v1alpha reply in time")
        .expect("v1alpha stream healthy")
        .expect("one reply");
    let Some(AlphaResponse::ListServicesResponse(list)) = reply.message_response else {
        panic!("not a service list: {reply:?}");
    };
    assert!(list.service.iter().any(|s| s.name == "bank.peer.v1.Peer"));
    cluster.shutdown().await;
}
