//! Trace export over OTLP/HTTP, against the real executable (only `main` installs the
//! exporter) and a mock collector that decodes what it receives: one span per request,
//! message, hook and upstream call, linked as parent and child in the caller's trace, with the
//! attributes an operator searches by; nothing leaves without an endpoint; a bad endpoint is a
//! settings error that names its key. Built with `--features otlp` (as CI runs them), the
//! export tests run; without it, the refusal of an endpoint is what is tested.

use std::process::Command;

#[cfg(feature = "otlp")]
use crate::logs::{spawn, stop, until};
#[cfg(feature = "otlp")]
use crate::mock::MockUpstream;

const BIN: &str = env!("CARGO_BIN_EXE_switchyard");

#[test]
fn an_endpoint_that_is_not_an_http_url_is_a_settings_error_naming_its_key() {
    let data = tempfile::tempdir().unwrap();
    let out = Command::new(BIN)
        .args(["--bind", "127.0.0.1:0"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env("SWITCHYARD__DATA__DIR", data.path())
        .env("SWITCHYARD__TELEMETRY__OTLP_ENDPOINT", "collector:4318")
        .env("SWITCHYARD__TELEMETRY__SAMPLE_RATIO", "2")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("telemetry.otlp_endpoint: 'collector:4318' is not an http(s) URL"),
        "{stderr}"
    );
    assert!(
        stderr.contains("telemetry.sample_ratio: 2 must be between 0.0 and 1.0"),
        "{stderr}"
    );
}

/// A build without the exporter refuses an endpoint instead of ignoring it.
#[cfg(not(feature = "otlp"))]
#[test]
fn a_build_without_the_otlp_feature_refuses_an_endpoint() {
    let data = tempfile::tempdir().unwrap();
    let out = Command::new(BIN)
        .args(["--bind", "127.0.0.1:0"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env("SWITCHYARD__DATA__DIR", data.path())
        .env(
            "SWITCHYARD__TELEMETRY__OTLP_ENDPOINT",
            "http://127.0.0.1:4318",
        )
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("telemetry.otlp_endpoint: this build cannot export traces: it lacks the `otlp` cargo feature"),
        "{stderr}"
    );
}

#[cfg(feature = "otlp")]
mod export {
    use std::collections::HashMap;
    use std::sync::{Arc, Mutex};

    use actix_web::{web, App, HttpResponse};
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use opentelemetry_proto::tonic::common::v1::any_value::Value as Any;
    use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
    use opentelemetry_proto::tonic::trace::v1::Span;
    use prost::Message;
    use serde_json::{json, Value};

    use super::*;

    /// A mock OTLP/HTTP collector: every `POST /v1/traces` body, decoded.
    #[derive(Clone, Default)]
    struct Collector {
        received: Arc<Mutex<Vec<ExportTraceServiceRequest>>>,
        authorization: Arc<Mutex<Vec<String>>>,
    }

    impl Collector {
        fn start() -> (String, Collector) {
            let collector = Collector::default();
            let state = collector.clone();
            let (base, _handle) = crate::mock::serve(move || {
                let state = state.clone();
                App::new().route(
                    "/v1/traces",
                    web::post().to(move |req: actix_web::HttpRequest, body: web::Bytes| {
                        let state = state.clone();
                        async move {
                            assert_eq!(
                                req.headers().get("content-type").unwrap(),
                                "application/x-protobuf"
                            );
                            if let Some(auth) = req.headers().get("authorization") {
                                let auth = auth.to_str().unwrap().to_string();
                                state.authorization.lock().unwrap().push(auth);
                            }
                            let request = ExportTraceServiceRequest::decode(body).unwrap();
                            state.received.lock().unwrap().push(request);
                            // An empty ExportTraceServiceResponse.
                            HttpResponse::Ok()
                                .content_type("application/x-protobuf")
                                .finish()
                        }
                    }),
                )
            });
            (base, collector)
        }

        fn exports(&self) -> Vec<ExportTraceServiceRequest> {
            self.received.lock().unwrap().clone()
        }

        /// Every span received, with the `service.name` of its resource.
        fn spans(&self) -> Vec<(String, Span)> {
            let mut spans = Vec::new();
            for export in self.exports() {
                for resource in export.resource_spans {
                    let service = resource
                        .resource
                        .as_ref()
                        .and_then(|r| text(&r.attributes, "service.name"))
                        .unwrap_or_default();
                    for scope in resource.scope_spans {
                        for span in scope.spans {
                            spans.push((service.clone(), span));
                        }
                    }
                }
            }
            spans
        }
    }

    fn text(
        attributes: &[opentelemetry_proto::tonic::common::v1::KeyValue],
        key: &str,
    ) -> Option<String> {
        attributes
            .iter()
            .find(|kv| kv.key == key)
            .and_then(|kv| kv.value.as_ref()?.value.as_ref())
            .map(|v| match v {
                Any::StringValue(s) => s.clone(),
                Any::IntValue(i) => i.to_string(),
                Any::DoubleValue(d) => d.to_string(),
                Any::BoolValue(b) => b.to_string(),
                other => format!("{other:?}"),
            })
    }

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// Starts the service with `env`, opens a session with response-logger on a mock
    /// upstream, sends one message (with `traceparent` when given), and stops it (SIGTERM).
    /// Answers the session id and what the upstream received.
    async fn one_message(
        env: Vec<(&'static str, String)>,
        traceparent: Option<&str>,
    ) -> (String, Vec<crate::mock::Recorded>) {
        let mock = MockUpstream::start().await;
        let data = tempfile::tempdir().unwrap();
        let targets = data.path().join("targets.toml");
        let target = json!({ "targets": [crate::sessions::target("chat", &mock, "/chat")] });
        std::fs::write(&targets, toml::to_string(&target).unwrap()).unwrap();
        let mut env = env;
        env.push((
            "SWITCHYARD__SESSIONS__TARGETS_FILE",
            targets.display().to_string(),
        ));
        let (child, rx) = spawn("json", &data, &env);
        let mut lines = Vec::new();
        let listening: Value =
            serde_json::from_str(&until(&rx, "\"Listening.\"", &mut lines)).unwrap();
        let addr = listening["addr"].as_str().unwrap().to_string();
        until(&rx, "\"Ready.\"", &mut lines);

        let client = awc::Client::default();
        let mut resp = client
            .post(format!("http://{addr}/api/sessions"))
            .send_json(&json!({ "targetId": "chat", "plugins": [{ "id": "response-logger" }] }))
            .await
            .unwrap();
        let session: Value = resp.json().await.unwrap();
        assert_eq!(resp.status(), 201, "{session}");
        let session_id = session["id"].as_str().unwrap().to_string();
        let mut request = client.post(format!("http://{addr}/api/sessions/{session_id}/messages"));
        if let Some(traceparent) = traceparent {
            request = request.insert_header(("traceparent", traceparent));
        }
        let mut resp = request
            .send_json(&json!({ "message": "hi" }))
            .await
            .unwrap();
        let body = resp.body().await.unwrap();
        assert_eq!(resp.status(), 200, "{body:?}");
        let upstream = mock.requests("/chat");
        // The process exits only once the exporter has flushed (main's exit path).
        let done = actix_web::rt::task::spawn_blocking(move || stop(child));
        done.await.unwrap();
        (session_id, upstream)
    }

    #[actix_web::test]
    async fn request_message_hook_and_upstream_spans_reach_the_collector_in_the_callers_trace() {
        // Hooks on the session's thread (the default) and on the plugin's own actor, where
        // the hook span is carried in `CallHook`.
        spans_of_one_message(None).await;
        spans_of_one_message(Some("false")).await;
    }

    async fn spans_of_one_message(on_session_thread: Option<&str>) {
        let (collector_url, collector) = Collector::start();
        let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
        let caller_span = "00f067aa0ba902b7";
        let mut env = vec![
            ("SWITCHYARD__TELEMETRY__OTLP_ENDPOINT", collector_url),
            (
                "SWITCHYARD__TELEMETRY__OTLP_HEADERS",
                "{ authorization = \"Bearer collector-token\" }".to_string(),
            ),
            ("OTEL_SERVICE_NAME", "switchyard-it".to_string()),
        ];
        if let Some(flag) = on_session_thread {
            env.push((
                "SWITCHYARD__PLUGINS__SCRIPT__HOOKS_ON_SESSION_THREAD",
                flag.to_string(),
            ));
        }
        let traceparent = format!("00-{trace_id}-{caller_span}-01");
        let (session_id, upstream) = one_message(env, Some(&traceparent)).await;

        let spans = collector.spans();
        let named = |name: &str| -> Vec<&Span> {
            spans
                .iter()
                .map(|(_, s)| s)
                .filter(|s| s.name == name)
                .collect()
        };
        let names: Vec<&str> = spans.iter().map(|(_, s)| s.name.as_str()).collect();
        let request = spans
            .iter()
            .map(|(_, s)| s)
            .find(|s| s.name.starts_with("POST ") && s.name.ends_with("/messages"))
            .unwrap_or_else(|| panic!("no request span in {names:?}"));
        let message = named("message");
        assert_eq!(message.len(), 1, "{names:?}");
        let message = message[0];
        let upstream_spans = named("upstream");
        assert_eq!(upstream_spans.len(), 1, "{names:?}");
        let upstream_span = upstream_spans[0];
        let hooks = named("plugin_hook");
        let after_receive = hooks
            .iter()
            .find(|s| text(&s.attributes, "hook").as_deref() == Some("afterReceive"))
            .unwrap_or_else(|| panic!("no afterReceive hook span in {hooks:?}"));

        // The caller's trace, and the parent links: caller > request > message > hook, upstream.
        assert_eq!(hex(&request.trace_id), trace_id);
        assert_eq!(hex(&request.parent_span_id), caller_span);
        assert_eq!(request.kind, SpanKind::Server as i32);
        for span in [message, upstream_span, after_receive] {
            assert_eq!(hex(&span.trace_id), trace_id, "{}", span.name);
        }
        assert_eq!(message.parent_span_id, request.span_id);
        assert_eq!(after_receive.parent_span_id, message.span_id);
        assert_eq!(upstream_span.parent_span_id, message.span_id);

        // What an operator searches by.
        assert_eq!(text(&message.attributes, "session.id"), Some(session_id));
        assert_eq!(
            text(&message.attributes, "target.id").as_deref(),
            Some("chat")
        );
        assert_eq!(
            text(&after_receive.attributes, "plugin").as_deref(),
            Some("response-logger")
        );
        assert_eq!(
            text(&upstream_span.attributes, "target.id").as_deref(),
            Some("chat")
        );
        assert_eq!(
            text(&upstream_span.attributes, "connector.type").as_deref(),
            Some("HTTP_REST")
        );
        assert_eq!(
            text(&upstream_span.attributes, "status").as_deref(),
            Some("ok")
        );
        let latency: f64 = text(&upstream_span.attributes, "latency_ms")
            .expect("latency_ms")
            .parse()
            .unwrap();
        assert!(latency > 0.0 && latency < 2000.0, "{latency}");
        assert_eq!(upstream_span.kind, SpanKind::Client as i32);
        assert!(spans.iter().all(|(service, _)| service == "switchyard-it"));
        let authorization = collector.authorization.lock().unwrap().clone();
        assert!(
            !authorization.is_empty()
                && authorization.iter().all(|a| a == "Bearer collector-token"),
            "{authorization:?}"
        );

        // The upstream joined the trace as the upstream span's child.
        let sent = upstream[0]
            .header("traceparent")
            .expect("traceparent on the upstream request");
        assert_eq!(
            sent,
            format!("00-{trace_id}-{}-01", hex(&upstream_span.span_id))
        );
    }

    #[actix_web::test]
    async fn without_an_endpoint_nothing_is_exported_and_nothing_propagated_but_the_standard_variable_turns_it_on(
    ) {
        let (collector_url, collector) = Collector::start();
        let traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let (_, upstream) = one_message(Vec::new(), Some(traceparent)).await;
        assert_eq!(upstream[0].header("traceparent"), None);
        // The process has exited: anything it would have exported has arrived by now.
        assert!(collector.exports().is_empty());

        let env = vec![("OTEL_EXPORTER_OTLP_ENDPOINT", collector_url)];
        one_message(env, None).await;
        let spans = collector.spans();
        let names: HashMap<&str, usize> = spans.iter().fold(HashMap::new(), |mut n, (_, s)| {
            *n.entry(s.name.as_str()).or_default() += 1;
            n
        });
        assert_eq!(names.get("message"), Some(&1), "{names:?}");
        assert_eq!(names.get("upstream"), Some(&1), "{names:?}");
        assert!(spans.iter().all(|(service, _)| service == "switchyard"));
    }
}
