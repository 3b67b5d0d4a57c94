//! `--http ADDR` (alias `--metrics`): the HTTP listener of [`bank::web`], started before the
//! command runs, and what the commands tell it: which cluster to show, the buttons that break
//! a local cluster ([`LocalControl`]), and the customer events of `bank run` ([`PageObserver`]).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

use anyhow::{Context, Result};
use tokio::sync::Mutex;

use bank::bootstrap::local::LocalCluster;
use bank::course::runner::{Observer, SeenEvent};
use bank::web::control::{Acted, Action, Control};
use bank::web::{Activity, Feed, View, Web};
use bank::BranchId;

/// A local cluster the page may break, shared with the command that runs it; `None` once
/// it has shut down.
pub type SharedCluster = Arc<Mutex<Option<LocalCluster>>>;

/// Starts the listener if `--http` was given.
pub async fn start(addr: Option<SocketAddr>) -> Result<Option<Web>> {
    let Some(addr) = addr else { return Ok(None) };
    let web = Web::start(addr)
        .await
        .with_context(|| format!("--http: cannot listen on {addr}"))?;
    let local = web.local_addr();
    eprintln!("bank: live page at http://{local}/ (metrics at http://{local}/metrics)");
    Ok(Some(web))
}

/// Where this process reaches a listener bound to `listen` (an unspecified address is
/// reached on loopback).
fn reachable(listen: SocketAddr) -> SocketAddr {
    match listen.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => (Ipv4Addr::LOCALHOST, listen.port()).into(),
        IpAddr::V6(ip) if ip.is_unspecified() => (Ipv6Addr::LOCALHOST, listen.port()).into(),
        _ => listen,
    }
}

/// `bank branch`: the page asks this branch, then every member it knows. No buttons.
pub fn show_branch(
    web: Option<&Web>,
    listen: SocketAddr,
    tls: Option<tonic::transport::ClientTlsConfig>,
) {
    if let Some(web) = web {
        web.show(View {
            ask: vec![reachable(listen).to_string()],
            control: None,
            tls,
        });
    }
}

/// `bank server`, `bank run`: the page asks the local cluster's branches, and may break them.
pub fn show_local(web: Option<&Web>, cluster: &SharedCluster, addresses: Vec<SocketAddr>) {
    if let Some(web) = web {
        web.show(View {
            ask: addresses.iter().map(ToString::to_string).collect(),
            control: Some(Arc::new(LocalControl(cluster.clone()))),
            tls: None,
        });
    }
}

/// The page's buttons on a local cluster.
struct LocalControl(SharedCluster);

impl Control for LocalControl {
    fn act(&self, action: Action, branch: BranchId) -> Acted<'_> {
        Box::pin(async move {
            let mut cluster = self.0.lock().await;
            let Some(cluster) = cluster.as_mut() else {
                return Err("the cluster has shut down".to_string());
            };
            let done = match action {
                Action::Stop => cluster.stop(branch).await,
                Action::Restart => cluster.restart(branch).await,
                Action::Cut => cluster.cut(branch),
                Action::Heal => cluster.heal(branch),
            };
            done.map_err(|e| e.to_string())
        })
    }

    fn cut_off(&self) -> Vec<BranchId> {
        // Busy (a stop or restart in progress): no marks this once rather than a wait.
        match self.0.try_lock() {
            Ok(cluster) => cluster
                .as_ref()
                .map(LocalCluster::cut_off)
                .unwrap_or_default(),
            Err(_) => Vec::new(),
        }
    }
}

/// Hands `bank run`'s customer events to the page, with the leader the branch that received
/// each one knew then (where it forwarded the event).
pub struct PageObserver {
    pub feed: Feed,
    pub cluster: SharedCluster,
}

impl Observer for PageObserver {
    fn seen(&self, event: &SeenEvent) {
        // Never waits: if a button holds the cluster, the feed's last poll says.
        let leader = self.cluster.try_lock().ok().and_then(|cluster| {
            let branch = cluster.as_ref()?.branch(event.branch)?;
            branch.branch.view().leader
        });
        self.feed.record(Activity {
            at_ms: 0,
            customer: event.customer,
            event_id: event.event_id,
            branch: event.branch,
            interface: event.interface,
            money: event.money,
            result: if event.success { "success" } else { "fail" },
            balance: event.balance,
            leader,
        });
    }
}
