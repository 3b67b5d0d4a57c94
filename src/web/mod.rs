//! The web layer: the process's one HTTP listener (`--http ADDR`, formerly `--metrics`), for
//! people and for Prometheus.
//!
//! - `GET /metrics`: the metrics registry ([`crate::server::metrics`]) as OpenMetrics text.
//! - `GET /`, `/app.js`, `/style.css`: a live page of the cluster, hand-written files in
//!   `page/` embedded in the binary (no build step, nothing fetched from the internet).
//! - `GET /events`: server-sent events, one JSON [`snapshot::Snapshot`] per update, from the
//!   [`feed`], which polls the cluster (`client::status`) while anyone watches.
//! - `POST /control/{stop|restart|cut|heal}/{id}`: the page's buttons, through a
//!   [`control::Control`] the command line wires in for a local cluster on loopback; refused
//!   with 403 otherwise.
//! - Anything else: 404.
//!
//! The listener starts before any cluster exists (the command line starts it first), so
//! which cluster the page shows is told later: [`Web::show`].

pub mod control;
pub mod feed;
pub mod snapshot;

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use tokio::sync::watch;
use tokio_stream::StreamExt;

use crate::server::metrics;
use control::{Action, CONTROL_HEADER};
pub use feed::{Feed, View};
pub use snapshot::Activity;

/// Bound on the listener draining at [`Web::stop`].
const STOP_DEADLINE: Duration = Duration::from_secs(2);

/// Bound on one button's action (a restart waits for the branch to serve).
const CONTROL_DEADLINE: Duration = Duration::from_secs(15);

const INDEX_HTML: &str = include_str!("page/index.html");
const APP_JS: &str = include_str!("page/app.js");
const STYLE_CSS: &str = include_str!("page/style.css");

/// The page's size in bytes: HTML, script and styles.
pub const PAGE_BYTES: usize = INDEX_HTML.len() + APP_JS.len() + STYLE_CSS.len();

/// The HTTP listener running in the background.
pub struct Web {
    addr: SocketAddr,
    feed: Feed,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
    feed_task: tokio::task::JoinHandle<()>,
}

impl Web {
    /// Binds `addr` and serves until [`Web::stop`].
    pub async fn start(addr: SocketAddr) -> std::io::Result<Web> {
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let feed = Feed::new(addr.ip().is_loopback());
        let (stop, stopped) = watch::channel(false);
        let feed_task = tokio::spawn(feed.clone().run(stop.subscribe()));
        let mut signal = stopped;
        let task = tokio::spawn(serve(listener, feed.clone(), async move {
            // An error means the sender is gone: stop as well.
            let _ = signal.wait_for(|stop| *stop).await;
        }));
        Ok(Web {
            addr,
            feed,
            stop,
            task,
            feed_task,
        })
    }

    /// The address it serves on (the bound port when started on port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The feed, to tell it the cluster ([`Feed::show`]) or record customer events.
    pub fn feed(&self) -> &Feed {
        &self.feed
    }

    /// Shows `view` on the page from the next update on.
    pub fn show(&self, view: View) {
        self.feed.show(view);
    }

    /// Stops serving: open requests finish, bounded by a short deadline; event streams end.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        self.feed.show(View::default());
        self.feed.close_streams();
        let mut task = self.task;
        match tokio::time::timeout(STOP_DEADLINE, &mut task).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(e))) => tracing::warn!("HTTP listener stopped with an error: {e}"),
            Ok(Err(e)) => tracing::warn!("HTTP listener task failed: {e}"),
            Err(_) => {
                tracing::warn!("HTTP listener did not drain in {STOP_DEADLINE:?}");
                task.abort();
            }
        }
        let mut feed_task = self.feed_task;
        if tokio::time::timeout(STOP_DEADLINE, &mut feed_task)
            .await
            .is_err()
        {
            feed_task.abort();
        }
    }
}

/// Serves the page, its event stream, the control buttons and `/metrics` on `listener`
/// until `shutdown` completes.
pub async fn serve(
    listener: tokio::net::TcpListener,
    feed: Feed,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let app = Router::new()
        .route("/metrics", get(scrape))
        .route(
            "/",
            get(|| async { page("text/html; charset=utf-8", INDEX_HTML) }),
        )
        .route(
            "/app.js",
            get(|| async { page("text/javascript; charset=utf-8", APP_JS) }),
        )
        .route(
            "/style.css",
            get(|| async { page("text/css; charset=utf-8", STYLE_CSS) }),
        )
        .route("/events", get(events))
        .route("/control/{action}/{id}", post(control))
        .fallback(|| async { (StatusCode::NOT_FOUND, "not found\n") })
        .with_state(feed);
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
}

fn page(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}

async fn scrape() -> Response {
    match metrics::global().render() {
        Ok(text) => ([(header::CONTENT_TYPE, metrics::CONTENT_TYPE)], text).into_response(),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("metrics do not encode: {e}\n"),
        )
            .into_response(),
    }
}

/// `GET /events`: the feed's snapshots as server-sent events, or 503 past the cap.
async fn events(State(feed): State<Feed>) -> Response {
    let Ok(receiver) = feed.subscribe() else {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            [(header::RETRY_AFTER, "5")],
            format!(
                "too many live pages open (at most {}); close one and retry\n",
                feed::CLIENTS_MAX
            ),
        )
            .into_response();
    };
    let stream = tokio_stream::wrappers::ReceiverStream::new(receiver)
        .map(|text| Ok::<Event, Infallible>(Event::default().data(&*text)));
    Sse::new(stream)
        .keep_alive(KeepAlive::default())
        .into_response()
}

/// `POST /control/{action}/{id}`: a button.
async fn control(
    State(feed): State<Feed>,
    Path((action, id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    let Some(control) = feed.control() else {
        return (
            StatusCode::FORBIDDEN,
            "controls are only offered for a local cluster (bank server, bank run) with the \
             page on a loopback address\n",
        )
            .into_response();
    };
    if !headers.contains_key(CONTROL_HEADER) {
        return (
            StatusCode::FORBIDDEN,
            format!("a control request needs the {CONTROL_HEADER} header\n"),
        )
            .into_response();
    }
    let Some(action) = Action::parse(&action) else {
        return (
            StatusCode::NOT_FOUND,
            format!("no action {action:?}: stop, restart, cut or heal\n"),
        )
            .into_response();
    };
    let Ok(id) = id.parse::<crate::BranchId>() else {
        return (
            StatusCode::BAD_REQUEST,
            format!("{id:?} is not a branch id\n"),
        )
            .into_response();
    };
    match tokio::time::timeout(CONTROL_DEADLINE, control.act(action, id)).await {
        Ok(Ok(())) => (StatusCode::OK, format!("{} {id}: done\n", action.name())).into_response(),
        Ok(Err(why)) => (
            StatusCode::CONFLICT,
            format!("{} {id}: {why}\n", action.name()),
        )
            .into_response(),
        Err(_) => (
            StatusCode::GATEWAY_TIMEOUT,
            format!(
                "{} {id}: not done within {CONTROL_DEADLINE:?}\n",
                action.name()
            ),
        )
            .into_response(),
    }
}
