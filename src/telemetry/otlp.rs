//! The trace exporter (feature `otlp`): spans batched by the OpenTelemetry SDK, encoded as
//! OTLP protobuf by `opentelemetry-otlp`, and posted by awc on a thread of their own.
//!
//! Owns the pipeline from a closed span to the collector: the tracing layer, the sampler
//! (parent-based, so a caller's decision is kept), the `service.name` resource, the batch
//! processor and its flush at exit, and the HTTP client. The client is awc over the rustls
//! configuration every outgoing connection uses (`connector::tls`), so the exporter brings no
//! second HTTP or TLS stack; awc needs an actix system, which the SDK's batch thread is not,
//! so requests are handed to a dedicated `otlp-export` thread that runs one. Does not own
//! the spans (`api`, `session`, `plugin::call`) nor `traceparent` (`trace_context`).

use std::collections::HashMap;
use std::time::Duration;

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_http::{Bytes, HttpClient, HttpError, Request, Response};
use opentelemetry_otlp::{Protocol, WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::trace::{Sampler, SdkTracerProvider};
use opentelemetry_sdk::Resource;
use tokio::sync::{mpsc, oneshot};
use tracing_subscriber::filter::Targets;
use tracing_subscriber::Layer;

use super::Export;
use crate::settings::TelemetrySettings;

/// Longest one export may take before it is given up (the batch is dropped, as the SDK does).
const EXPORT_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest the exit waits for the last spans to reach the collector.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(5);
/// Most of a collector's answer read (it is a small protobuf or JSON status).
const MAX_ANSWER_BYTES: usize = 64 << 10;

/// The running trace pipeline: what `main` keeps to flush at exit.
pub struct Pipeline {
    provider: SdkTracerProvider,
    endpoint: String,
}

impl Pipeline {
    /// Builds the exporter for `export` (never `Off`) and the provider around it.
    pub fn start(settings: &TelemetrySettings, export: &Export) -> Result<Pipeline, String> {
        let headers: HashMap<String, String> = settings
            .otlp_headers
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let mut builder = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_http_client(AwcClient::start())
            .with_protocol(Protocol::HttpBinary)
            .with_headers(headers);
        let endpoint = match export {
            Export::To(url) => {
                builder = builder.with_endpoint(url.clone());
                crate::util::loggable_url(url)
            }
            Export::FromEnvironment(name) => std::env::var(name)
                .map(|url| crate::util::loggable_url(&url))
                .unwrap_or_default(),
            Export::Off => return Err("no endpoint".into()),
        };
        let exporter = builder.build().map_err(|e| e.to_string())?;
        let name = super::service_name(
            &settings.service_name,
            std::env::var("OTEL_SERVICE_NAME").ok(),
        );
        let provider = SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            .with_sampler(Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(
                settings.sample_ratio,
            ))))
            .with_resource(Resource::builder().with_service_name(name).build())
            .build();
        Ok(Pipeline { provider, endpoint })
    }

    /// The tracing layer that turns this crate's spans into OpenTelemetry spans. Only the
    /// crate's own spans and events (info and up): a dependency's debug spans (h2, sqlx) would
    /// cost on every request and mean nothing to an operator.
    pub fn layer<S>(&self) -> impl Layer<S> + Send + Sync
    where
        S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a> + Send + Sync,
    {
        tracing_opentelemetry::layer()
            .with_tracer(self.provider.tracer("switchyard"))
            .with_tracked_inactivity(false)
            .with_threads(false)
            .with_location(false)
            .with_filter(Targets::new().with_target("switchyard", tracing::Level::INFO))
    }

    /// The endpoint as logs may show it.
    pub fn shown_endpoint(&self) -> &str {
        &self.endpoint
    }

    /// Exports what is still queued, then stops the batch thread and the client; waits at
    /// most [`FLUSH_TIMEOUT`] (the process is already past its shutdown deadline's work).
    pub fn shutdown(self) {
        if let Err(error) = self.provider.shutdown_with_timeout(FLUSH_TIMEOUT) {
            tracing::warn!(%error, "The last spans could not be exported.");
        }
    }
}

/// One export handed to the client thread, with where its answer goes.
struct Job {
    request: Request<Bytes>,
    answer: oneshot::Sender<Result<Response<Bytes>, String>>,
}

/// The exporter's HTTP client: a handle on the `otlp-export` thread.
#[derive(Debug, Clone)]
struct AwcClient {
    jobs: mpsc::UnboundedSender<Job>,
}

impl AwcClient {
    /// Starts the client thread; it ends when the exporter (the last handle) is dropped.
    fn start() -> AwcClient {
        let (jobs, mut queue) = mpsc::unbounded_channel::<Job>();
        let thread = std::thread::Builder::new()
            .name("otlp-export".into())
            .spawn(move || {
                actix_web::rt::System::new().block_on(async move {
                    let client = crate::connector::http::client();
                    let mut failing = false;
                    while let Some(job) = queue.recv().await {
                        let answer = post(&client, job.request).await;
                        // One line when exports start failing and one when they recover, not
                        // one per batch (the SDK drops a failed batch; nothing piles up).
                        match (&answer, failing) {
                            (Err(error), false) => {
                                tracing::warn!(%error, "Traces could not be exported; dropping them until the collector answers.");
                                failing = true;
                            }
                            (Ok(_), true) => {
                                tracing::info!("Traces are exported again.");
                                failing = false;
                            }
                            _ => {}
                        }
                        let _ = job.answer.send(answer);
                    }
                })
            });
        if let Err(error) = thread {
            // Exports then fail one by one (the queue's receiver is gone); the service runs.
            tracing::error!(%error, "The trace export thread could not start.");
        }
        AwcClient { jobs }
    }
}

/// Posts one export; a status other than 2xx is an error that names it.
async fn post(client: &awc::Client, request: Request<Bytes>) -> Result<Response<Bytes>, String> {
    let (parts, body) = request.into_parts();
    let method = awc::http::Method::from_bytes(parts.method.as_str().as_bytes())
        .map_err(|e| e.to_string())?;
    let mut outgoing = client
        .request(method, parts.uri.to_string())
        .timeout(EXPORT_TIMEOUT);
    for (name, value) in &parts.headers {
        let value = awc::http::header::HeaderValue::from_bytes(value.as_bytes())
            .map_err(|e| e.to_string())?;
        outgoing = outgoing.insert_header((name.as_str(), value));
    }
    let mut answer = outgoing.send_body(body).await.map_err(|e| e.to_string())?;
    let status = answer.status();
    let bytes = answer
        .body()
        .limit(MAX_ANSWER_BYTES)
        .await
        .unwrap_or_default();
    if !status.is_success() {
        return Err(format!("the collector answered {status}"));
    }
    Response::builder()
        .status(status.as_u16())
        .body(bytes)
        .map_err(|e| e.to_string())
}

#[async_trait::async_trait]
impl HttpClient for AwcClient {
    async fn send_bytes(&self, request: Request<Bytes>) -> Result<Response<Bytes>, HttpError> {
        let (answer, answered) = oneshot::channel();
        self.jobs
            .send(Job { request, answer })
            .map_err(|_| "the trace export thread is gone")?;
        match answered.await {
            Ok(answer) => answer.map_err(HttpError::from),
            Err(_) => Err("the trace export thread is gone".into()),
        }
    }
}
