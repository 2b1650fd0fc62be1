//! Prometheus metrics (prometheus-client, OpenMetrics text) served over HTTP on the
//! configured address: the daemon's view of every real (state, weight, checks) and, read
//! from the maps at each scrape, the data path's counters.

use std::{
    convert::Infallible,
    net::SocketAddr,
    sync::{Arc, atomic::AtomicU64},
};

use bytes::Bytes;
use http_body_util::Full;
use hyper::{
    Request, Response, StatusCode, body::Incoming, header::CONTENT_TYPE, service::service_fn,
};
use hyper_util::rt::TokioIo;
use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, NoLabelSet},
    metrics::{MetricType, counter::Counter, family::Family, gauge::Gauge},
    registry::Registry,
};

use super::{Guard, config::service_label, maps::Reader};

pub type Labels = Vec<(&'static str, String)>;

pub fn real_labels(service: &str, real: &str) -> Labels {
    vec![("service", service.to_owned()), ("real", real.to_owned())]
}

pub fn service_labels(service: &str) -> Labels {
    vec![("service", service.to_owned())]
}

/// The daemon's own metrics.
pub struct Metrics {
    pub registry: Registry,
    pub real_up: Family<Labels, Gauge>,
    pub real_weight: Family<Labels, Gauge>,
    pub check_duration: Family<Labels, Gauge<f64, AtomicU64>>,
    pub checks: Family<Labels, Counter>,
    pub check_failures: Family<Labels, Counter>,
    pub transitions: Family<Labels, Counter>,
    pub service_reals_up: Family<Labels, Gauge>,
    pub service_fallback: Family<Labels, Gauge>,
    pub reloads: Family<Labels, Counter>,
    pub last_reload_ok: Gauge,
    pub bgp_up: Gauge,
    pub bgp_announced: Gauge,
    pub bgp_errors: Counter,
}

/// One real's check counters, held by its check task.
#[derive(Clone, Debug, Default)]
pub struct CheckMetrics {
    pub checks: Counter,
    pub failures: Counter,
    pub duration: Gauge<f64, AtomicU64>,
}

impl Metrics {
    pub fn new(reader: Option<Reader>) -> Self {
        let mut registry = Registry::default();
        let m = Self {
            real_up: Family::default(),
            real_weight: Family::default(),
            check_duration: Family::default(),
            checks: Family::default(),
            check_failures: Family::default(),
            transitions: Family::default(),
            service_reals_up: Family::default(),
            service_fallback: Family::default(),
            reloads: Family::default(),
            last_reload_ok: Gauge::default(),
            bgp_up: Gauge::default(),
            bgp_announced: Gauge::default(),
            bgp_errors: Counter::default(),
            registry: Registry::default(),
        };
        registry.register(
            "director_real_up",
            "1 when the health checks say the real server is UP",
            m.real_up.clone(),
        );
        registry.register(
            "director_real_weight",
            "Weight the daemon last wrote for the real server (0 = quiescent)",
            m.real_weight.clone(),
        );
        registry.register(
            "director_real_check_duration_seconds",
            "How long the last health check of the real server took",
            m.check_duration.clone(),
        );
        registry.register(
            "director_real_checks",
            "Health checks run against the real server",
            m.checks.clone(),
        );
        registry.register(
            "director_real_check_failures",
            "Health checks of the real server that failed",
            m.check_failures.clone(),
        );
        registry.register(
            "director_real_transitions",
            "Times the real server went UP or DOWN",
            m.transitions.clone(),
        );
        registry.register(
            "director_service_reals_up",
            "Real servers of the service that are UP",
            m.service_reals_up.clone(),
        );
        registry.register(
            "director_service_fallback_active",
            "1 while the fallback server takes the service's traffic",
            m.service_fallback.clone(),
        );
        registry.register(
            "director_config_reloads",
            "Configuration reloads, by result (ok or error)",
            m.reloads.clone(),
        );
        registry.register(
            "director_config_last_reload_successful",
            "1 when the last reload (or the start) applied its file",
            m.last_reload_ok.clone(),
        );
        m.last_reload_ok.set(1);
        if let Some(reader) = reader {
            registry.register_collector(Box::new(DatapathCollector { reader }));
        }
        Self { registry, ..m }
    }

    /// The BGP speaker's metrics, registered only when the file has a `[bgp]` section.
    pub fn register_bgp(&mut self) {
        self.registry.register(
            "director_bgp_up",
            "1 while BIRD answers on its control socket and took the last configuration",
            self.bgp_up.clone(),
        );
        self.registry.register(
            "director_bgp_announced_vips",
            "VIPs in the routes the daemon gives BIRD to announce",
            self.bgp_announced.clone(),
        );
        self.registry.register(
            "director_bgp_errors",
            "Times BIRD could not be reached or refused the configuration",
            self.bgp_errors.clone(),
        );
    }

    pub fn check_metrics(&self, service: &str, real: &str) -> CheckMetrics {
        let l = real_labels(service, real);
        CheckMetrics {
            checks: self.checks.get_or_create_owned(&l),
            failures: self.check_failures.get_or_create_owned(&l),
            duration: self.check_duration.get_or_create_owned(&l),
        }
    }

    /// Forget a real (removed by a reload).
    pub fn remove_real(&self, service: &str, real: &str) {
        let l = real_labels(service, real);
        for f in [&self.real_up, &self.real_weight] {
            f.remove(&l);
        }
        self.check_duration.remove(&l);
        for f in [&self.checks, &self.check_failures, &self.transitions] {
            f.remove(&l);
        }
    }

    pub fn remove_service(&self, service: &str) {
        let l = service_labels(service);
        self.service_reals_up.remove(&l);
        self.service_fallback.remove(&l);
    }

    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail; a collector's error ends the text early.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

/// The data path's counters, read from the maps at each scrape.
struct DatapathCollector {
    reader: Reader,
}

impl std::fmt::Debug for DatapathCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DatapathCollector")
    }
}

fn counter_family(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    rows: &[(Labels, u64)],
) -> Result<(), std::fmt::Error> {
    if rows.is_empty() {
        return Ok(());
    }
    let mut me = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
    for (labels, v) in rows {
        me.encode_family(labels)?
            .encode_counter::<NoLabelSet, _, u64>(v, None)?;
    }
    Ok(())
}

impl Collector for DatapathCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let snap = match (self.reader)() {
            Ok(s) => s,
            Err(e) => {
                log::warn!(
                    "metrics: reading the data path's counters: {}",
                    crate::with_causes(&e)
                );
                return Ok(());
            }
        };
        let outcomes: Vec<(Labels, u64)> = snap
            .stats
            .iter()
            .map(|(s, v)| (vec![("outcome", s.name().to_owned())], *v))
            .collect();
        counter_family(
            &mut encoder,
            "director_datapath_packets",
            "Packets the XDP program handled, by outcome (drops by reason)",
            &outcomes,
        )?;
        let mut conns = Vec::new();
        let mut pkts = Vec::new();
        let mut bytes = Vec::new();
        let mut rconns = Vec::new();
        let mut rpkts = Vec::new();
        let mut rbytes = Vec::new();
        for v in &snap.services {
            let svc = service_label(&v.spec.addr);
            let l = service_labels(&svc);
            conns.push((l.clone(), v.stats.conns));
            for (dir, p, b) in [
                ("in", v.stats.pkts_in, v.stats.bytes_in),
                ("out", v.stats.pkts_out, v.stats.bytes_out),
            ] {
                let mut ld = l.clone();
                ld.push(("direction", dir.to_owned()));
                pkts.push((ld.clone(), p));
                bytes.push((ld, b));
            }
            for r in &v.reals {
                let rl = real_labels(&svc, &SocketAddr::new(r.spec.addr, r.spec.port).to_string());
                rconns.push((rl.clone(), r.stats.conns));
                for (dir, p, b) in [
                    ("in", r.stats.pkts_in, r.stats.bytes_in),
                    ("out", r.stats.pkts_out, r.stats.bytes_out),
                ] {
                    let mut ld = rl.clone();
                    ld.push(("direction", dir.to_owned()));
                    rpkts.push((ld.clone(), p));
                    rbytes.push((ld, b));
                }
            }
        }
        counter_family(
            &mut encoder,
            "director_service_connections",
            "New connections scheduled by the service",
            &conns,
        )?;
        counter_family(
            &mut encoder,
            "director_service_packets",
            "Packets of the service (in: from clients; out: NAT replies)",
            &pkts,
        )?;
        counter_family(
            &mut encoder,
            "director_service_bytes",
            "Bytes of the service (in: from clients; out: NAT replies)",
            &bytes,
        )?;
        counter_family(
            &mut encoder,
            "director_real_connections",
            "New connections scheduled to the real server",
            &rconns,
        )?;
        counter_family(
            &mut encoder,
            "director_real_packets",
            "Packets forwarded to (in) or from (out, NAT) the real server",
            &rpkts,
        )?;
        counter_family(
            &mut encoder,
            "director_real_bytes",
            "Bytes forwarded to (in) or from (out, NAT) the real server",
            &rbytes,
        )?;
        Ok(())
    }
}

const CONTENT: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
/// Scrapes served at once; more wait for a slot.
const MAX_SCRAPES: usize = 4;

/// Why the metrics endpoint could not be served.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("binding the metrics endpoint {addr}: {cause}")]
    Bind {
        addr: SocketAddr,
        cause: std::io::Error,
    },
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// Serve `GET /metrics` on `addr` until the returned guard is dropped.
pub async fn serve(
    addr: SocketAddr,
    metrics: Arc<Metrics>,
) -> Result<(SocketAddr, Guard), ServeError> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|cause| ServeError::Bind { addr, cause })?;
    let local = listener.local_addr()?;
    if !local.ip().is_loopback() {
        log::warn!("metrics: serving on {local}, which is not a loopback address");
    }
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_SCRAPES));
    let task = tokio::spawn(async move {
        let mut conns = tokio::task::JoinSet::new();
        loop {
            let (stream, _) = match listener.accept().await {
                Ok(x) => x,
                Err(_) => {
                    // Out of descriptors or similar: back off instead of spinning.
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    continue;
                }
            };
            while conns.try_join_next().is_some() {}
            let Ok(permit) = slots.clone().acquire_owned().await else {
                return;
            };
            let metrics = metrics.clone();
            conns.spawn(async move {
                let _permit = permit;
                let svc = service_fn(move |req: Request<Incoming>| {
                    let metrics = metrics.clone();
                    async move { Ok::<_, Infallible>(respond(req, metrics).await) }
                });
                let _ = tokio::time::timeout(
                    std::time::Duration::from_secs(30),
                    hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc),
                )
                .await;
            });
        }
    });
    Ok((local, Guard::new(task)))
}

async fn respond(req: Request<Incoming>, metrics: Arc<Metrics>) -> Response<Full<Bytes>> {
    if req.uri().path() != "/metrics" {
        return Response::builder()
            .status(StatusCode::NOT_FOUND)
            .body(Full::new(Bytes::from_static(b"not found: try /metrics\n")))
            .unwrap_or_default();
    }
    // Reading the maps is blocking work.
    let text = tokio::task::spawn_blocking(move || metrics.encode())
        .await
        .unwrap_or_default();
    Response::builder()
        .header(CONTENT_TYPE, CONTENT)
        .body(Full::new(Bytes::from(text)))
        .unwrap_or_default()
}
