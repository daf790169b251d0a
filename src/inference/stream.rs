//! Streamed model answers: OpenAI `chat.completion.chunk` events (text deltas, `tool_calls`
//! fragments, the usage chunk, `[DONE]`) and Anthropic's message events (`message_start`,
//! `content_block_start`, `content_block_delta` with `text_delta` or `input_json_delta`,
//! `message_delta`, `message_stop`, `error`) read into text deltas as they arrive and the
//! whole answer at the end.
//!
//! Pure code, fed the events `connector::event_stream` frames from the bytes (so where the
//! byte stream is split does not matter). Does not own the HTTP exchange (the `Client`, in the
//! parent module) nor what the deltas are used for (`turn`).

use std::collections::BTreeMap;

use serde_json::{json, Value};

use super::{ChatResponse, Protocol, ToolCall};
use crate::broker::events::Usage;
use crate::connector::event_stream::SseEvent;

/// A tool call whose fragments are still arriving.
#[derive(Debug, Default, Clone)]
struct PartialCall {
    id: String,
    name: String,
    arguments: String,
}

/// Assembles one streamed answer.
#[derive(Debug)]
pub struct Assembler {
    protocol: Protocol,
    content: String,
    /// Tool calls by their index in the answer.
    calls: BTreeMap<u64, PartialCall>,
    usage: Usage,
    model: String,
    /// The stream said it is complete (`[DONE]`, a finish reason, `message_stop`).
    done: bool,
    /// The stream's last event came (`[DONE]`, `message_stop`): nothing more to read.
    ended: bool,
}

/// Why a stream cannot be read (the provider's own error message, or what is wrong).
pub type StreamError = String;

impl Assembler {
    pub fn new(protocol: Protocol) -> Self {
        Assembler {
            protocol,
            content: String::new(),
            calls: BTreeMap::new(),
            usage: Usage::default(),
            model: String::new(),
            done: false,
            ended: false,
        }
    }

    /// Reads one event; answers the text it adds (empty: none). An `error` event or a data
    /// line that is not JSON is an error.
    pub fn event(&mut self, event: &SseEvent) -> Result<String, StreamError> {
        let data = event.data.trim();
        if self.protocol == Protocol::OpenAi && data == "[DONE]" {
            self.done = true;
            self.ended = true;
            return Ok(String::new());
        }
        let json: Value =
            serde_json::from_str(data).map_err(|e| format!("a streamed event is not JSON: {e}"))?;
        if let Some(error) = json.get("error").filter(|e| !e.is_null()) {
            let message = error["message"]
                .as_str()
                .or(error.as_str())
                .unwrap_or("the provider reported an error mid-stream");
            return Err(message.to_string());
        }
        match self.protocol {
            Protocol::OpenAi => Ok(self.openai(&json)),
            Protocol::Anthropic => Ok(self.anthropic(event.kind(), &json)),
        }
    }

    fn openai(&mut self, chunk: &Value) -> String {
        if let Some(model) = chunk["model"].as_str() {
            self.model = model.to_string();
        }
        if let Some(u) = chunk.get("usage").filter(|u| u.is_object()) {
            let prompt = u["prompt_tokens"].as_u64().unwrap_or(0);
            let completion = u["completion_tokens"].as_u64().unwrap_or(0);
            self.usage = Usage {
                prompt_tokens: prompt,
                completion_tokens: completion,
                total_tokens: u["total_tokens"].as_u64().unwrap_or(prompt + completion),
            };
        }
        let Some(choice) = chunk["choices"]
            .as_array()
            .and_then(|c| c.iter().find(|c| c["index"].as_u64().unwrap_or(0) == 0))
        else {
            return String::new();
        };
        if choice["finish_reason"].is_string() {
            self.done = true;
        }
        let delta = &choice["delta"];
        for fragment in delta["tool_calls"].as_array().into_iter().flatten() {
            let index = fragment["index"].as_u64().unwrap_or(0);
            let call = self.calls.entry(index).or_default();
            if let Some(id) = fragment["id"].as_str() {
                call.id.push_str(id);
            }
            if let Some(name) = fragment["function"]["name"].as_str() {
                call.name.push_str(name);
            }
            if let Some(arguments) = fragment["function"]["arguments"].as_str() {
                call.arguments.push_str(arguments);
            }
        }
        let text = delta["content"].as_str().unwrap_or_default();
        self.content.push_str(text);
        text.to_string()
    }

    fn anthropic(&mut self, kind: &str, event: &Value) -> String {
        // The data's `type` names the event too; it wins over a missing `event:` line.
        let kind = event["type"].as_str().unwrap_or(kind);
        let index = event["index"].as_u64().unwrap_or(0);
        match kind {
            "message_start" => {
                let message = &event["message"];
                if let Some(model) = message["model"].as_str() {
                    self.model = model.to_string();
                }
                self.add_anthropic_usage(&message["usage"]);
                String::new()
            }
            "content_block_start" => {
                let block = &event["content_block"];
                match block["type"].as_str() {
                    Some("tool_use") => {
                        let input = &block["input"];
                        self.calls.insert(
                            index,
                            PartialCall {
                                id: block["id"].as_str().unwrap_or_default().to_string(),
                                name: block["name"].as_str().unwrap_or_default().to_string(),
                                // A whole input may come here; the deltas then add nothing.
                                arguments: match input {
                                    Value::Object(o) if !o.is_empty() => input.to_string(),
                                    _ => String::new(),
                                },
                            },
                        );
                        String::new()
                    }
                    Some("text") => {
                        let text = block["text"].as_str().unwrap_or_default();
                        self.content.push_str(text);
                        text.to_string()
                    }
                    _ => String::new(),
                }
            }
            "content_block_delta" => {
                let delta = &event["delta"];
                match delta["type"].as_str() {
                    Some("text_delta") => {
                        let text = delta["text"].as_str().unwrap_or_default();
                        self.content.push_str(text);
                        text.to_string()
                    }
                    Some("input_json_delta") => {
                        let part = delta["partial_json"].as_str().unwrap_or_default();
                        self.calls
                            .entry(index)
                            .or_default()
                            .arguments
                            .push_str(part);
                        String::new()
                    }
                    _ => String::new(),
                }
            }
            "message_delta" => {
                self.add_anthropic_usage(&event["usage"]);
                String::new()
            }
            "message_stop" => {
                self.done = true;
                self.ended = true;
                String::new()
            }
            _ => String::new(),
        }
    }

    /// Anthropic sends input tokens at the start and output tokens at the end (cumulative).
    fn add_anthropic_usage(&mut self, usage: &Value) {
        if let Some(input) = usage["input_tokens"].as_u64() {
            self.usage.prompt_tokens = input;
        }
        if let Some(output) = usage["output_tokens"].as_u64() {
            self.usage.completion_tokens = output;
        }
        self.usage.total_tokens = self.usage.prompt_tokens + self.usage.completion_tokens;
    }

    /// Whether the stream's last event came: nothing more needs reading.
    pub fn is_ended(&self) -> bool {
        self.ended
    }

    /// The whole answer. A stream that ended without saying it was complete was cut off.
    pub fn finish(self) -> Result<ChatResponse, StreamError> {
        if !self.done {
            return Err("the stream ended before the answer was complete".into());
        }
        let tool_calls = self
            .calls
            .into_values()
            .map(|c| ToolCall {
                id: c.id,
                name: c.name,
                // As in a whole answer: a broken JSON reaches the tool as a string and fails its
                // schema, which goes back to the model.
                arguments: if c.arguments.trim().is_empty() {
                    json!({})
                } else {
                    serde_json::from_str(&c.arguments).unwrap_or_else(|_| json!(c.arguments))
                },
            })
            .collect();
        Ok(ChatResponse {
            content: self.content,
            tool_calls,
            usage: self.usage,
            model: self.model,
            provider: String::new(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::connector::event_stream::SseParser;
    use proptest::prelude::*;

    /// An OpenAI stream: two text deltas, a tool call in fragments, the usage chunk, `[DONE]`.
    const OPENAI: &str = concat!(
        "data: {\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"model\":\"gpt-x\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"Hel\"}}]}\n\n",
        "data: {\"object\":\"chat.completion.chunk\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"lo é\"}}]}\n\n",
        "data: {\"object\":\"chat.completion.chunk\",\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"id\":\"call_1\",\"type\":\"function\",\"function\":{\"name\":\"add\",\"arguments\":\"\"}}]}}]}\n\n",
        "data: {\"object\":\"chat.completion.chunk\",\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"function\":{\"arguments\":\"{\\\"a\\\":\"}}]}}]}\n\n",
        "data: {\"object\":\"chat.completion.chunk\",\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"function\":{\"arguments\":\"1}\"}},{\"index\":1,\"id\":\"call_2\",\"function\":{\"name\":\"fail\",\"arguments\":\"\"}}]}}]}\n\n",
        "data: {\"object\":\"chat.completion.chunk\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"tool_calls\"}]}\n\n",
        "data: {\"object\":\"chat.completion.chunk\",\"choices\":[],\"usage\":{\"prompt_tokens\":11,\"completion_tokens\":7,\"total_tokens\":18}}\n\n",
        "data: [DONE]\n\n",
    );

    /// An Anthropic stream: text, a tool use with its input in pieces, usage at both ends.
    const ANTHROPIC: &str = concat!(
        "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"m\",\"model\":\"claude-x\",\"usage\":{\"input_tokens\":9,\"output_tokens\":1}}}\n\n",
        "event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n",
        "event: ping\ndata: {\"type\":\"ping\"}\n\n",
        "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"Hel\"}}\n\n",
        "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"lo é\"}}\n\n",
        "event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":0}\n\n",
        "event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":1,\"content_block\":{\"type\":\"tool_use\",\"id\":\"toolu_1\",\"name\":\"add\",\"input\":{}}}\n\n",
        "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":1,\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":\"{\\\"a\\\":\"}}\n\n",
        "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":1,\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":\"1}\"}}\n\n",
        "event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":1}\n\n",
        "event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"tool_use\"},\"usage\":{\"output_tokens\":6}}\n\n",
        "event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n",
    );

    /// Feeds `bytes` in pieces cut at `cuts`; answers the deltas and the result.
    fn read(
        protocol: Protocol,
        bytes: &[u8],
        cuts: &[usize],
    ) -> (Vec<String>, Result<ChatResponse, StreamError>) {
        let mut parser = SseParser::new();
        let mut assembler = Assembler::new(protocol);
        let mut deltas = Vec::new();
        let mut at = 0;
        let mut points: Vec<usize> = cuts.iter().map(|c| c % (bytes.len() + 1)).collect();
        points.sort_unstable();
        points.push(bytes.len());
        for point in points {
            for event in parser.feed(&bytes[at..point.max(at)]).unwrap() {
                match assembler.event(&event) {
                    Ok(text) if !text.is_empty() => deltas.push(text),
                    Ok(_) => {}
                    Err(e) => return (deltas, Err(e)),
                }
            }
            at = point.max(at);
        }
        (deltas, assembler.finish())
    }

    #[test]
    fn an_openai_stream_gives_its_deltas_tool_calls_and_usage() {
        let (deltas, answer) = read(Protocol::OpenAi, OPENAI.as_bytes(), &[]);
        assert_eq!(deltas, ["Hel", "lo é"]);
        let answer = answer.unwrap();
        assert_eq!(answer.content, "Hello é");
        assert_eq!(answer.model, "gpt-x");
        assert_eq!(answer.tool_calls.len(), 2);
        assert_eq!(
            (
                answer.tool_calls[0].id.as_str(),
                answer.tool_calls[0].name.as_str()
            ),
            ("call_1", "add")
        );
        assert_eq!(answer.tool_calls[0].arguments, json!({ "a": 1 }));
        assert_eq!(
            answer.tool_calls[1].arguments,
            json!({}),
            "no arguments: {{}}"
        );
        assert_eq!(
            answer.usage,
            Usage {
                prompt_tokens: 11,
                completion_tokens: 7,
                total_tokens: 18
            }
        );
    }

    #[test]
    fn an_anthropic_stream_gives_its_deltas_tool_use_and_usage() {
        let (deltas, answer) = read(Protocol::Anthropic, ANTHROPIC.as_bytes(), &[]);
        assert_eq!(deltas, ["Hel", "lo é"]);
        let answer = answer.unwrap();
        assert_eq!(
            (answer.content.as_str(), answer.model.as_str()),
            ("Hello é", "claude-x")
        );
        assert_eq!(answer.tool_calls[0].id, "toolu_1");
        assert_eq!(answer.tool_calls[0].arguments, json!({ "a": 1 }));
        assert_eq!(
            answer.usage,
            Usage {
                prompt_tokens: 9,
                completion_tokens: 6,
                total_tokens: 15
            }
        );
    }

    #[test]
    fn errors_and_cut_off_streams_are_errors() {
        let error = "event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\",\"message\":\"Overloaded\"}}\n\n";
        let (_, answer) = read(Protocol::Anthropic, error.as_bytes(), &[]);
        assert_eq!(answer.unwrap_err(), "Overloaded");
        let cut = &OPENAI[..OPENAI.find("data: {\"object\":\"chat.completion.chunk\",\"choices\":[{\"index\":0,\"delta\":{},").unwrap()];
        let (deltas, answer) = read(Protocol::OpenAi, cut.as_bytes(), &[]);
        assert_eq!(deltas.len(), 2);
        assert!(answer
            .unwrap_err()
            .contains("before the answer was complete"));
        let (_, answer) = read(Protocol::OpenAi, b"data: {nope\n\n", &[]);
        assert!(answer.unwrap_err().contains("not JSON"));
        // A broken argument string reaches the tool as a string (its schema refuses it).
        let broken = "data: {\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"id\":\"c\",\"function\":{\"name\":\"t\",\"arguments\":\"{oops\"}}]},\"finish_reason\":\"tool_calls\"}]}\n\ndata: [DONE]\n\n";
        let (_, answer) = read(Protocol::OpenAi, broken.as_bytes(), &[]);
        assert_eq!(answer.unwrap().tool_calls[0].arguments, json!("{oops"));
    }

    proptest! {
        /// Wherever the byte stream is cut (inside a UTF-8 character included), the deltas
        /// joined and the answer are the same.
        #[test]
        fn cutting_the_byte_stream_anywhere_gives_the_same_answer(
            cuts in proptest::collection::vec(0usize..4096, 0..12),
            anthropic in any::<bool>(),
        ) {
            let (protocol, text) = if anthropic {
                (Protocol::Anthropic, ANTHROPIC)
            } else {
                (Protocol::OpenAi, OPENAI)
            };
            let (whole_deltas, whole) = read(protocol, text.as_bytes(), &[]);
            let (deltas, answer) = read(protocol, text.as_bytes(), &cuts);
            prop_assert_eq!(deltas.concat(), whole_deltas.concat());
            prop_assert_eq!(answer.unwrap(), whole.unwrap());
        }
    }
}
