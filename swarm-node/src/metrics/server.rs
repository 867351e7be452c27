//! The HTTP side of `--metrics-addr`: `GET /metrics`, answered by reading
//! the daemon's numbers at that moment.

use std::{convert::Infallible, net::SocketAddr, sync::Arc};

use bytes::Bytes;
use futures::future::BoxFuture;
use http_body_util::Full;
use hyper::{Method, StatusCode, header, service::service_fn};
use hyper_util::rt::TokioIo;
use tokio::{net::TcpListener, sync::watch};
use tracing::{debug, info, warn};

/// Reads the daemon's numbers for one scrape, as the text format.
pub type Collect = Arc<dyn Fn() -> BoxFuture<'static, String> + Send + Sync>;

#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    #[error(
        "--metrics-addr {addr}: cannot listen there: {source} (give a free address and port of this host, e.g. 127.0.0.1:9323)"
    )]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

/// The bound metrics listener.
pub struct MetricsServer {
    listener: TcpListener,
}

impl MetricsServer {
    pub async fn bind(addr: SocketAddr) -> Result<Self, MetricsError> {
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| MetricsError::Bind { addr, source })?;
        info!(%addr, "serving Prometheus metrics at /metrics");
        Ok(Self { listener })
    }

    /// Answers scrapes until `shutdown` turns true.
    pub async fn serve(self, collect: Collect, shutdown: watch::Receiver<bool>) {
        let mut stopping = shutdown.clone();
        loop {
            tokio::select! {
                _ = stopping.wait_for(|stop| *stop) => return,
                accepted = self.listener.accept() => match accepted {
                    Ok((stream, _)) => {
                        let collect = collect.clone();
                        let mut stop = shutdown.clone();
                        tokio::spawn(async move {
                            let service = service_fn(move |request| {
                                let collect = collect.clone();
                                async move { Ok::<_, Infallible>(answer(&request, &collect).await) }
                            });
                            let connection = hyper::server::conn::http1::Builder::new()
                                .serve_connection(TokioIo::new(stream), service);
                            tokio::select! {
                                served = connection => if let Err(err) = served {
                                    debug!(error = %err, "metrics connection ended with an error");
                                },
                                _ = stop.wait_for(|stop| *stop) => {}
                            }
                        });
                    }
                    Err(err) => warn!(error = %err, "accepting a metrics connection failed"),
                },
            }
        }
    }
}

async fn answer<B>(request: &hyper::Request<B>, collect: &Collect) -> hyper::Response<Full<Bytes>> {
    let reply = |status: StatusCode, content_type: &str, body: String| {
        hyper::Response::builder()
            .status(status)
            .header(header::CONTENT_TYPE, content_type)
            .body(Full::new(Bytes::from(body)))
            .expect("a valid response")
    };
    match (request.method(), request.uri().path()) {
        (&Method::GET, "/metrics") => reply(StatusCode::OK, super::CONTENT_TYPE, collect().await),
        (_, "/metrics") => reply(
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain",
            "only GET /metrics is served\n".into(),
        ),
        _ => reply(
            StatusCode::NOT_FOUND,
            "text/plain",
            "metrics are at /metrics\n".into(),
        ),
    }
}
