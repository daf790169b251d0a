//! The message pipeline: one chain runner for both directions, and the failure policy.
//!
//! Owns running a hook over a session's stages in order (`beforeSend` in priority order,
//! `afterReceive` in the same or the reverse order), what each direction hands a plugin (built
//! once per hook and lent to each plugin in turn until one changes the message) and
//! accepts back (the message and metadata out, the response in; returned metadata is merged
//! for the later plugins and becomes request-template variables), and the failure policy: a
//! failed hook tells the plugin (`onError`), a non-critical plugin's change is skipped, counted
//! and published as `plugin.hook_failed`, a critical one fails the message; each hook's
//! outcome is recorded only when the caller asked for outcomes. Also the `onConnect`
//! chain, streamed answers (`onChunk` for each chunk, on to the client, cancelled when the
//! client goes away) and the transcript row of a message. Does not own calling a plugin
//! (`plugin::call`) nor the session's lifecycle (`actor`).

use std::collections::BTreeSet;
use std::time::{Instant, SystemTime};

use futures::StreamExt;
use serde::Serialize;
use serde_json::{Map, Value};
use tokio::sync::mpsc;

use super::{SessionError, Stage};
use crate::broker::events;
use crate::broker::BrokerHandle;
use crate::connector::{
    self, ChunkStream, Connector, ConnectorConfig, ConnectorError, ConnectorResponse, StreamItem,
};
use crate::plugin::call::{self, CallError};
use crate::plugin::host::PluginHost;
use crate::plugin::Hook;
use crate::store::writer::Write;
use crate::target::Target;

/// What became of one hook call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    /// The plugin's change was taken.
    Ok,
    /// The plugin has no such hook; its input passed through.
    Passthrough,
    /// The hook failed; its change (if any) was skipped.
    Failed,
}

/// A hook outcome in a message's answer.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct HookOutcome {
    pub plugin: String,
    pub hook: Hook,
    pub outcome: Outcome,
    pub duration_ms: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl Outcome {
    fn name(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Passthrough => "passthrough",
            Outcome::Failed => "failed",
        }
    }
}

impl HookOutcome {
    /// As its `Serialize` shows it, built directly and moved in (one per hook of a message
    /// whose caller asked for outcomes).
    pub fn into_json(self) -> Value {
        let mut out = Map::with_capacity(5);
        out.insert("plugin".into(), Value::String(self.plugin));
        out.insert("hook".into(), Value::String(self.hook.name().into()));
        out.insert("outcome".into(), Value::String(self.outcome.name().into()));
        out.insert("durationMs".into(), Value::from(self.duration_ms));
        if let Some(error) = self.error {
            out.insert("error".into(), Value::String(error));
        }
        Value::Object(out)
    }
}

/// Calls one hook of one stage; the stage's context comes back changed on success. `input` is
/// asked for only if the stage's plugin has the hook, and lent. The hook may run for its own
/// timeout, or less when the message's `deadline` comes first ([`call::hook_budget`]); without
/// a deadline no clock is read here.
pub(super) async fn call_stage<'i>(
    host: &PluginHost,
    stage: &mut Stage,
    hook: Hook,
    input: impl FnOnce() -> &'i Value,
    deadline: Option<Instant>,
) -> Result<Option<Value>, CallError> {
    let budget = match deadline {
        Some(_) => call::hook_budget(stage.timeout, deadline, Instant::now()),
        None => stage.timeout,
    };
    call::hook(
        host,
        &stage.module,
        &stage.info.id,
        hook,
        input,
        &mut stage.ctx,
        budget,
    )
    .await
}

/// Tells a stage's plugin that its hook failed.
pub(super) fn notify(host: &PluginHost, stage: &Stage, hook: Hook, error: &str) {
    call::notify_error(host, &stage.module, &stage.info.id, hook, error, &stage.ctx);
}

/// What a session cannot open past: a plugin an operator disabled (a conflict until it is
/// enabled), one that is not running otherwise (restarting or failed: unavailable); any other
/// failure of `hook` is the plugin's.
pub(super) fn open_failed(
    host: &PluginHost,
    stage: &Stage,
    hook: Hook,
    error: CallError,
) -> SessionError {
    if let CallError::NotRunning(_) = error {
        let plugin = stage.info.id.clone();
        return if host.is_disabled(&stage.module) {
            SessionError::PluginDisabled(plugin)
        } else {
            SessionError::PluginUnavailable(plugin)
        };
    }
    let error = error.to_string();
    notify(host, stage, hook, &error);
    hook_failed(stage, hook, error)
}

pub(super) fn hook_failed(stage: &Stage, hook: Hook, message: String) -> SessionError {
    SessionError::HookFailed {
        plugin: stage.info.id.clone(),
        hook: hook.name(),
        message,
    }
}

/// The metadata key under which a plugin lists keys of its metadata that are for later plugins
/// and the request template only (`{"$private": ["messages"]}`): like every `$`-key they never
/// reach the reply or the transcript. The conversation plugins list their history this way, so
/// a row does not carry the whole conversation.
pub const PRIVATE_KEYS: &str = "$private";

/// One message on its way through the pipeline: what `beforeSend` chains (the message), what
/// `afterReceive` chains (the response), and the metadata plugins add on the way.
#[derive(Default)]
pub(super) struct Exchange {
    pub message: String,
    /// What the caller sent with the message, plus the session's own keys.
    pub metadata: Map<String, Value>,
    /// Metadata returned by plugins: merged in order, seen by later plugins, and the request
    /// template's variables.
    pub extensions: Map<String, Value>,
    pub response: Value,
    /// Keys plugins listed under [`PRIVATE_KEYS`], from every plugin that listed some.
    pub private: BTreeSet<String>,
    /// The input lent to the plugins of the hook running now: built when the first of them
    /// asks, then lent to each next one as long as none changes the exchange (a plugin that
    /// answers `None` costs no copy). Dropped by every change.
    pub(super) lent: Option<(Hook, Value)>,
}

impl Exchange {
    /// What `hook` lends a plugin: built once, then lent again until the exchange changes.
    fn input(&mut self, hook: Hook) -> &Value {
        if !matches!(&self.lent, Some((lent, _)) if *lent == hook) {
            self.lent = Some((hook, self.build_input(hook)));
        }
        &self.lent.as_ref().expect("just built").1
    }

    /// Sets the upstream answer `afterReceive` chains.
    pub fn respond(&mut self, response: Value) {
        self.response = response;
        self.lent = None;
    }

    /// What `hook` hands a plugin. Built directly: `json!` would copy every value through a
    /// serializer.
    fn build_input(&self, hook: Hook) -> Value {
        let mut input = Map::with_capacity(2);
        match hook {
            Hook::BeforeSend => {
                let mut seen = self.metadata.clone();
                seen.extend(self.extensions.iter().map(|(k, v)| (k.clone(), v.clone())));
                input.insert("message".into(), Value::String(self.message.clone()));
                input.insert("metadata".into(), Value::Object(seen));
            }
            _ => {
                input.insert("response".into(), self.response.clone());
            }
        }
        Value::Object(input)
    }

    /// Takes a plugin's answer to `hook`, or says what is wrong with it.
    /// The answer's parts are moved in, not copied.
    fn accept(&mut self, hook: Hook, out: Value) -> Result<(), String> {
        let mut out = match out {
            Value::Object(out) => out,
            _ => Map::new(),
        };
        // Whatever is taken below, the lent input no longer shows the exchange.
        self.lent = None;
        match hook {
            Hook::BeforeSend => match out.shift_remove("message") {
                Some(Value::String(changed)) => {
                    self.message = changed;
                    self.take_metadata(out.get("metadata"));
                    Ok(())
                }
                _ => Err("beforeSend must return { message: string, metadata? }".into()),
            },
            _ => match out.shift_remove("response") {
                Some(changed) if changed.get("content").is_some_and(Value::is_string) => {
                    self.response = changed;
                    self.take_metadata(out.get("metadata"));
                    Ok(())
                }
                _ => Err("afterReceive must return { response: { content: string, metadata }, metadata? }".into()),
            },
        }
    }

    /// Variables the caller set for this message (a front door's whole request): they reach
    /// plugins and the connector as plugins' metadata does, under the same privacy rules.
    pub fn seed(&mut self, variables: Map<String, Value>) {
        if !variables.is_empty() {
            self.take_metadata(Some(&Value::Object(variables)));
        }
    }

    /// Merges a plugin's metadata and remembers the keys it lists as private.
    fn take_metadata(&mut self, metadata: Option<&Value>) {
        self.lent = None;
        merge(&mut self.extensions, metadata);
        if let Some(keys) = metadata
            .and_then(|m| m.get(PRIVATE_KEYS))
            .and_then(Value::as_array)
        {
            self.private
                .extend(keys.iter().filter_map(Value::as_str).map(str::to_owned));
        }
    }

    /// The reply's metadata: what plugins returned, then the answer's own (usage, timings),
    /// without `$`-keys (directives for this send: `$headers` may hold a fresh token), the
    /// private keys, or the raw upstream body and headers. Each message's row then holds that
    /// message's metadata only, never the conversation so far.
    pub fn reply_metadata(&self) -> Map<String, Value> {
        let public = |k: &str| !k.starts_with('$') && !self.private.contains(k);
        let mut out: Map<String, Value> = self
            .extensions
            .iter()
            .filter(|(k, _)| public(k))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        if let Some(meta) = self.response.get("metadata").and_then(Value::as_object) {
            for (k, v) in meta {
                if k != "rawResponse" && k != "headers" && public(k) {
                    out.insert(k.clone(), v.clone());
                }
            }
        }
        out
    }
}

/// Runs `hook` (`beforeSend` or `afterReceive`) over `stages` in `order`, chaining the
/// exchange. A critical plugin's failure ends the chain with its error.
pub(super) struct Chain<'a> {
    pub host: &'a PluginHost,
    pub broker: &'a BrokerHandle,
    pub session_id: &'a str,
    /// Each hook's outcome, when the caller asked for them (the REST reply's `plugins`);
    /// `None`: none is recorded, nor is any hook's duration measured for it.
    pub outcomes: Option<Vec<HookOutcome>>,
    /// The message's one deadline, when it has one: no hook runs past it.
    pub deadline: Option<Instant>,
}

impl Chain<'_> {
    /// When a hook began, if its outcome is recorded (else no clock is read for it).
    fn began(&self) -> Option<Instant> {
        self.outcomes.as_ref().map(|_| Instant::now())
    }

    fn record(
        &mut self,
        stage: &Stage,
        hook: Hook,
        outcome: Outcome,
        began: Option<Instant>,
        error: Option<String>,
    ) {
        if let (Some(outcomes), Some(began)) = (&mut self.outcomes, began) {
            outcomes.push(HookOutcome {
                plugin: stage.info.id.clone(),
                hook,
                outcome,
                duration_ms: elapsed_ms(began),
                error,
            });
        }
    }
}

impl Chain<'_> {
    pub async fn run(
        &mut self,
        stages: &mut [Stage],
        order: impl Iterator<Item = usize>,
        hook: Hook,
        exchange: &mut Exchange,
    ) -> Result<(), SessionError> {
        for i in order {
            let stage = &mut stages[i];
            let began = self.began();
            let lend = &mut *exchange;
            let input = move || {
                let lend = lend;
                lend.input(hook)
            };
            let result = match call_stage(self.host, stage, hook, input, self.deadline).await {
                Ok(None) => Ok(Outcome::Passthrough),
                Ok(Some(out)) => exchange.accept(hook, out).map(|()| Outcome::Ok),
                Err(error) => Err(error.to_string()),
            };
            match result {
                Ok(outcome) => self.record(stage, hook, outcome, began, None),
                Err(error) => {
                    if let Some(fatal) = self.failed(stage, hook, error, began) {
                        return Err(fatal);
                    }
                }
            }
        }
        Ok(())
    }

    /// A failed hook: tell the plugin, count it, report it; the message fails if the plugin is
    /// critical.
    fn failed(
        &mut self,
        stage: &mut Stage,
        hook: Hook,
        error: String,
        began: Option<Instant>,
    ) -> Option<SessionError> {
        notify(self.host, stage, hook, &error);
        stage.failures += 1;
        if !stage.critical {
            self.host
                .metrics()
                .hook_bypassed(&stage.module, hook.name());
        }
        self.broker.emit(&events::PluginHookFailed {
            plugin: stage.info.id.clone(),
            hook: hook.name().into(),
            session_id: self.session_id.to_string(),
            error: error.clone(),
            critical: stage.critical,
        });
        self.record(stage, hook, Outcome::Failed, began, Some(error.clone()));
        stage.critical.then(|| hook_failed(stage, hook, error))
    }
}

impl Chain<'_> {
    /// Runs `onChunk` over the stages that have it, in order; each may rewrite the chunk (an
    /// empty one is dropped). A failing hook leaves the chunk as it was, under the usual
    /// failure policy, except that a chunk is never held back by a critical plugin: the answer
    /// is already on its way.
    pub async fn on_chunk(
        &mut self,
        stages: &mut [Stage],
        mut chunk: String,
        index: u64,
    ) -> String {
        for stage in stages
            .iter_mut()
            .filter(|s| s.info.hooks.contains(Hook::OnChunk))
        {
            let began = self.began();
            let mut slot = None;
            let slot_ref = &mut slot;
            let chunk_now = &chunk;
            let input = move || {
                let slot = slot_ref;
                let mut input = Map::with_capacity(2);
                input.insert("chunk".into(), Value::String(chunk_now.clone()));
                input.insert("index".into(), Value::from(index));
                &*slot.insert(Value::Object(input))
            };
            let called = call_stage(self.host, stage, Hook::OnChunk, input, self.deadline).await;
            drop(slot);
            match called {
                Ok(None) => {}
                Ok(Some(out)) => match out.get("chunk").and_then(Value::as_str) {
                    Some(changed) => chunk = changed.to_string(),
                    None => {
                        let error = "onChunk must return { chunk: string }".to_string();
                        self.failed(stage, Hook::OnChunk, error, began);
                    }
                },
                Err(error) => {
                    self.failed(stage, Hook::OnChunk, error.to_string(), began);
                }
            }
            if chunk.is_empty() {
                break;
            }
        }
        chunk
    }
}

/// What a streaming client receives, in order: chunks, then one `Done` or one `Failed`.
#[derive(Debug)]
pub enum StreamEvent {
    /// A piece of the answer, after `onChunk`.
    Chunk {
        index: u64,
        content: String,
    },
    /// The reply: the assembled content after `afterReceive`, metadata and hook outcomes.
    Done(Value),
    Failed(SessionError),
}

/// The streamed middle of a message: reads the connector's stream, runs `onChunk` for each
/// chunk and sends what is left to the client, when one streams. Answers with the assembled
/// answer (what a streaming client received) and its metadata. Stops, dropping the upstream
/// call, when the client goes away; an upstream that breaks off mid-answer is an error that
/// says how far it got.
pub(super) async fn stream_answer(
    chain: &mut Chain<'_>,
    stages: &mut [Stage],
    mut stream: ChunkStream,
    client: Option<&mpsc::Sender<StreamEvent>>,
) -> Result<ConnectorResponse, SessionError> {
    let mut content = String::new();
    let mut index = 0;
    loop {
        let item = match client {
            Some(client) => tokio::select! {
                biased;
                _ = client.closed() => return Err(SessionError::ClientGone),
                item = stream.next() => item,
            },
            None => stream.next().await,
        };
        match item {
            Some(Ok(StreamItem::Delta(text))) => {
                let text = chain.on_chunk(stages, text, index).await;
                if text.is_empty() {
                    continue;
                }
                content.push_str(&text);
                if let Some(client) = client {
                    let chunk = StreamEvent::Chunk {
                        index,
                        content: text,
                    };
                    if client.send(chunk).await.is_err() {
                        return Err(SessionError::ClientGone);
                    }
                }
                index += 1;
            }
            Some(Ok(StreamItem::Done(metadata))) => {
                return Ok(ConnectorResponse {
                    content,
                    metadata: *metadata,
                })
            }
            Some(Err(ConnectorError::StreamBroken(why)))
            | Some(Err(ConnectorError::Unreachable(why)))
                if index > 0 =>
            {
                let why = format!("{why} (after {index} chunks)");
                return Err(SessionError::Upstream(ConnectorError::StreamBroken(why)));
            }
            Some(Err(error)) => return Err(SessionError::Upstream(error)),
            None => {
                let why = format!("the stream ended without finishing (after {index} chunks)");
                return Err(SessionError::Upstream(ConnectorError::StreamBroken(why)));
            }
        }
    }
}

/// The `onConnect` chain (each plugin gets the config the one before it returned), then a new
/// connector with the final config (made by `make` when the session was opened with one).
/// Used to open, and once more after an upstream 401. The config comes back when a plugin
/// changed it (it then holds credentials worth refreshing, and a parked session is rebuilt
/// from it).
pub(super) async fn connect_chain(
    host: &PluginHost,
    stages: &mut [Stage],
    target: &Target,
    make: Option<&super::MakeConnector>,
) -> Result<(Box<dyn Connector>, Option<ConnectorConfig>), SessionError> {
    let mut config = serde_json::to_value(target.connector_config()).unwrap_or(Value::Null);
    let mut changed_by_plugin = false;
    for stage in stages.iter_mut() {
        let error = match call_stage(host, stage, Hook::OnConnect, || &config, None).await {
            Ok(None) => continue,
            Ok(Some(changed)) => match serde_json::from_value::<ConnectorConfig>(changed.clone()) {
                Ok(parsed) => {
                    // The same checks a target gets: a plugin cannot slip in what an operator
                    // could not configure (a zero ping interval, an unreadable key file).
                    let problems = parsed.problems(&target.connector_type);
                    if problems.is_empty() {
                        changed_by_plugin |= changed != config;
                        config = changed;
                        continue;
                    }
                    let listed: Vec<String> =
                        problems.iter().map(|(f, m)| format!("{f}: {m}")).collect();
                    format!(
                        "onConnect returned an invalid connector config: {}",
                        listed.join("; ")
                    )
                }
                Err(e) => format!("onConnect returned an invalid connector config: {e}"),
            },
            Err(error) => return Err(open_failed(host, stage, Hook::OnConnect, error)),
        };
        notify(host, stage, Hook::OnConnect, &error);
        return Err(hook_failed(stage, Hook::OnConnect, error));
    }
    let config: ConnectorConfig = serde_json::from_value(config).expect("checked above");
    let settled = changed_by_plugin.then(|| config.clone());
    let connector = connect_with(target, make, config).await?;
    Ok((connector, settled))
}

/// A connector for `target` with `config` (made by `make` when the session was opened with
/// one): the end of the `onConnect` chain, and a parked session's wake.
pub(super) async fn connect_with(
    target: &Target,
    make: Option<&super::MakeConnector>,
    config: ConnectorConfig,
) -> Result<Box<dyn Connector>, SessionError> {
    match make {
        Some(make) => make(config),
        None => connector::connect(&target.connector_type, config).await,
    }
    .map_err(SessionError::Upstream)
}

/// The transcript write for one message and its outcome.
pub(super) fn transcript(
    session_id: &str,
    index: u64,
    sent: String,
    result: &Result<Value, SessionError>,
) -> Write {
    let at = crate::util::rfc3339(SystemTime::now());
    match result {
        Ok(reply) => {
            let metadata = &reply["metadata"];
            let usage = metadata.get("tokenUsage").filter(|u| !u.is_null()).cloned();
            Write::Exchange {
                session_id: session_id.to_string(),
                index,
                sent,
                received: reply["content"].as_str().map(str::to_owned),
                metadata: Some(metadata.clone()),
                response_time_ms: metadata["responseTimeMs"].as_u64(),
                token_usage: usage,
                error: None,
                at,
            }
        }
        Err(error) => Write::Exchange {
            session_id: session_id.to_string(),
            index,
            sent,
            received: None,
            metadata: None,
            response_time_ms: None,
            token_usage: None,
            error: Some(error.to_string()),
            at,
        },
    }
}

pub(super) fn merge(into: &mut Map<String, Value>, from: Option<&Value>) {
    if let Some(Value::Object(map)) = from {
        for (k, v) in map {
            into.insert(k.clone(), v.clone());
        }
    }
}

pub(super) fn elapsed_ms(since: Instant) -> f64 {
    (since.elapsed().as_secs_f64() * 1000.0 * 1000.0).round() / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn an_outcome_built_directly_reads_as_its_serialization() {
        let outcomes = [
            HookOutcome {
                plugin: "audit".into(),
                hook: Hook::BeforeSend,
                outcome: Outcome::Ok,
                duration_ms: 0.125,
                error: None,
            },
            HookOutcome {
                plugin: "p".into(),
                hook: Hook::AfterReceive,
                outcome: Outcome::Failed,
                duration_ms: 3.0,
                error: Some("boom".into()),
            },
            HookOutcome {
                plugin: "q".into(),
                hook: Hook::OnChunk,
                outcome: Outcome::Passthrough,
                duration_ms: f64::NAN,
                error: None,
            },
        ];
        for outcome in &outcomes {
            let direct = outcome.clone().into_json();
            let serialized = serde_json::to_value(outcome).unwrap();
            assert_eq!(direct, serialized);
            // Key order too: the reply and the transcript show them as they always did.
            assert_eq!(direct.to_string(), serialized.to_string());
        }
    }

    fn exchange() -> Exchange {
        Exchange {
            message: "hi".into(),
            metadata: json!({ "sessionId": "s" }).as_object().cloned().unwrap(),
            ..Exchange::default()
        }
    }

    #[test]
    fn private_and_dollar_keys_reach_later_plugins_but_not_the_reply() {
        let mut ex = exchange();
        let history = json!([{ "role": "user", "content": "hi" }]);
        ex.accept(
            Hook::BeforeSend,
            json!({ "message": "hi", "metadata": { "messages": history, "model": "m", "$private": ["messages"], "$headers": { "a": "b" } } }),
        )
        .unwrap();
        // A later plugin lists nothing private: the first one's list still holds.
        ex.accept(
            Hook::BeforeSend,
            json!({ "message": "hi", "metadata": { "tag": 1, "$private": [] } }),
        )
        .unwrap();
        assert_eq!(ex.input(Hook::BeforeSend)["metadata"]["messages"], history);
        assert_eq!(
            ex.extensions["messages"], history,
            "the template's variable"
        );
        ex.response = json!({ "content": "a", "metadata": { "responseTimeMs": 3, "rawResponse": { "messages": history }, "headers": {} } });
        assert_eq!(
            Value::Object(ex.reply_metadata()),
            json!({ "model": "m", "tag": 1, "responseTimeMs": 3 })
        );
    }

    #[test]
    fn the_input_is_built_once_and_lent_until_the_exchange_changes() {
        let mut ex = exchange();
        let first: *const Value = ex.input(Hook::BeforeSend);
        let again: *const Value = ex.input(Hook::BeforeSend);
        assert_eq!(first, again, "plugins that change nothing share one input");
        let lent = ex.input(Hook::BeforeSend).to_string();
        assert_eq!(lent, ex.build_input(Hook::BeforeSend).to_string());
        ex.accept(
            Hook::BeforeSend,
            json!({ "message": "HI", "metadata": { "k": 1 } }),
        )
        .unwrap();
        assert_eq!(
            ex.input(Hook::BeforeSend)["message"],
            "HI",
            "a change is seen"
        );
        assert_eq!(ex.input(Hook::BeforeSend)["metadata"]["k"], 1);
        ex.respond(json!({ "content": "a", "metadata": {} }));
        assert_eq!(ex.input(Hook::AfterReceive)["response"]["content"], "a");
        ex.respond(json!({ "content": "b", "metadata": {} }));
        assert_eq!(ex.input(Hook::AfterReceive)["response"]["content"], "b");
    }

    #[test]
    fn before_send_sees_the_metadata_so_far_and_its_changes_chain() {
        let mut ex = exchange();
        ex.accept(
            Hook::BeforeSend,
            json!({ "message": "HI", "metadata": { "model": "m" } }),
        )
        .unwrap();
        let input = ex.input(Hook::BeforeSend);
        assert_eq!(input["message"], "HI");
        assert_eq!(input["metadata"], json!({ "sessionId": "s", "model": "m" }));
        let err = ex
            .accept(Hook::BeforeSend, json!({ "text": "x" }))
            .unwrap_err();
        assert!(err.contains("beforeSend must return"), "{err}");
        assert_eq!(ex.message, "HI", "a refused answer changes nothing");
    }

    #[test]
    fn after_receive_takes_a_response_with_text_content_only() {
        let mut ex = exchange();
        ex.response = json!({ "content": "a", "metadata": {} });
        assert_eq!(ex.input(Hook::AfterReceive)["response"]["content"], "a");
        assert!(ex
            .accept(Hook::AfterReceive, json!({ "response": { "content": 1 } }))
            .is_err());
        ex.accept(
            Hook::AfterReceive,
            json!({ "response": { "content": "b" }, "metadata": { "k": 1 } }),
        )
        .unwrap();
        assert_eq!(ex.response["content"], "b");
        assert_eq!(ex.extensions["k"], 1);
    }
}
