"""The official OpenAI and Anthropic Python SDKs (and LangChain's ChatOpenAI) against a running
switchyard, unchanged but for the base URL. Run by tests/it/sdk.rs, which starts the service
and the mock provider and passes:

  SWITCHYARD_URL       the service (http://127.0.0.1:<port>)
  SWITCHYARD_KEY       a virtual key allowed every model
  SWITCHYARD_SLOW_KEY  a virtual key limited to 1 request per minute

Each check prints `ok <name>` (and the session it ran in, for the Rust side to read the
transcript and audit); the first failure raises, and the exit code is not 0.
"""

import json
import os
import sys

import anthropic
import openai

URL = os.environ["SWITCHYARD_URL"]
KEY = os.environ["SWITCHYARD_KEY"]
SLOW_KEY = os.environ["SWITCHYARD_SLOW_KEY"]

WEATHER_OPENAI = [{
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}]
WEATHER_ANTHROPIC = [{
    "name": "get_weather",
    "description": "The weather in a city",
    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}]


def ok(name, **facts):
    print("ok", name, json.dumps(facts), flush=True)


def expect(condition, what):
    if not condition:
        raise AssertionError(what)


def openai_checks():
    client = openai.OpenAI(base_url=f"{URL}/v1", api_key=KEY, max_retries=0)

    raw = client.chat.completions.with_raw_response.create(
        model="gpt-test",
        messages=[{"role": "system", "content": "be brief"}, {"role": "user", "content": "hello"}],
        extra_headers={"X-Session-ID": "sdk-openai"},
    )
    completion = raw.parse()
    text = completion.choices[0].message.content
    expect(text == "echo: hello [tagged] (checked)", f"openai chat: {text!r}")
    expect(completion.usage.total_tokens == 15, f"openai usage: {completion.usage}")
    expect(completion.choices[0].finish_reason == "stop", completion.choices[0].finish_reason)
    ok("openai.chat", session=raw.headers["x-switchyard-session"])

    stream = client.chat.completions.create(
        model="streamer",
        messages=[{"role": "user", "content": "one two three"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    pieces, usage = [], None
    for chunk in stream:
        if chunk.usage:
            usage = chunk.usage
        if chunk.choices and chunk.choices[0].delta.content:
            pieces.append(chunk.choices[0].delta.content)
    expect("".join(pieces) == "ONE TWO THREE [TAGGED] ", f"openai stream: {pieces!r}")
    expect(len(pieces) >= 3, f"openai stream came in one piece: {pieces!r}")
    expect(usage is not None and usage.completion_tokens == 4, f"openai stream usage: {usage}")
    ok("openai.stream", chunks=len(pieces))

    question = {"role": "user", "content": "weather in Oslo?"}
    first = client.chat.completions.create(model="gpt-test", messages=[question], tools=WEATHER_OPENAI)
    call = first.choices[0].message.tool_calls[0]
    expect(first.choices[0].finish_reason == "tool_calls", first.choices[0].finish_reason)
    expect(call.function.name == "get_weather" and json.loads(call.function.arguments) == {"city": "Oslo"}, call)
    second = client.chat.completions.create(
        model="gpt-test",
        tools=WEATHER_OPENAI,
        messages=[question, first.choices[0].message, {"role": "tool", "tool_call_id": call.id, "content": "3 degrees"}],
    )
    text = second.choices[0].message.content
    expect(text == "It is 3 degrees in Oslo. (checked)", f"openai tool result: {text!r}")
    ok("openai.tools", call=call.id)

    # Tools in a stream: the call arrives as deltas the SDK assembles.
    with client.chat.completions.stream(model="gpt-test", messages=[question], tools=WEATHER_OPENAI) as events:
        final = events.get_final_completion()
    streamed_call = final.choices[0].message.tool_calls[0]
    expect(streamed_call.function.name == "get_weather", streamed_call)
    expect(json.loads(streamed_call.function.arguments) == {"city": "Oslo"}, streamed_call)
    ok("openai.stream_tools")

    models = [m.id for m in client.models.list()]
    expect("gpt-test" in models and "claude-test" in models, models)
    ok("openai.models", models=models)

    try:
        openai.OpenAI(base_url=f"{URL}/v1", api_key="sk-sy-forged", max_retries=0).chat.completions.create(
            model="gpt-test", messages=[question])
        raise AssertionError("a forged key was accepted")
    except openai.AuthenticationError as error:
        expect(error.status_code == 401 and error.code == "invalid_api_key", f"{error!r} {error.body}")
        ok("openai.401")

    try:
        client.chat.completions.create(model="no-such-model", messages=[question])
        raise AssertionError("an unknown model was served")
    except openai.NotFoundError as error:
        expect(error.code == "model_not_found", error.body)
        ok("openai.404")

    slow = openai.OpenAI(base_url=f"{URL}/v1", api_key=SLOW_KEY, max_retries=0)
    slow.chat.completions.create(model="gpt-test", messages=[question])
    try:
        slow.chat.completions.create(model="gpt-test", messages=[question])
        raise AssertionError("the rate limit let a second request through")
    except openai.RateLimitError as error:
        expect(error.code == "rate_limited", error.body)
        expect(int(error.response.headers["retry-after"]) >= 1, error.response.headers)
        ok("openai.429")


def anthropic_checks():
    client = anthropic.Anthropic(base_url=URL, api_key=KEY, max_retries=0)

    raw = client.messages.with_raw_response.create(
        model="claude-test", max_tokens=100, system="be brief",
        messages=[{"role": "user", "content": "hello"}],
        extra_headers={"X-Session-ID": "sdk-anthropic"},
    )
    message = raw.parse()
    expect(message.content[0].text == "echo: hello [tagged] (checked)", message)
    expect(message.stop_reason == "end_turn" and message.usage.output_tokens == 4, message)
    ok("anthropic.messages", session=raw.headers["x-switchyard-session"])

    with client.messages.stream(model="streamer", max_tokens=100,
                                messages=[{"role": "user", "content": "four five"}]) as stream:
        pieces = list(stream.text_stream)
        final = stream.get_final_message()
    expect("".join(pieces) == "FOUR FIVE [TAGGED] ", f"anthropic stream: {pieces!r}")
    expect(len(pieces) >= 2, f"anthropic stream came in one piece: {pieces!r}")
    expect(final.stop_reason == "end_turn", final)
    ok("anthropic.stream", chunks=len(pieces))

    question = {"role": "user", "content": "weather in Oslo?"}
    first = client.messages.create(model="claude-test", max_tokens=100, tools=WEATHER_ANTHROPIC, messages=[question])
    use = next(b for b in first.content if b.type == "tool_use")
    expect(first.stop_reason == "tool_use" and use.name == "get_weather" and use.input == {"city": "Oslo"}, first)
    second = client.messages.create(
        model="claude-test", max_tokens=100, tools=WEATHER_ANTHROPIC,
        messages=[question, {"role": "assistant", "content": first.content},
                  {"role": "user", "content": [{"type": "tool_result", "tool_use_id": use.id, "content": "4 degrees"}]}],
    )
    expect(second.content[0].text == "It is 4 degrees in Oslo. (checked)", second)
    ok("anthropic.tools", call=use.id)

    with client.messages.stream(model="claude-test", max_tokens=100, tools=WEATHER_ANTHROPIC,
                                messages=[question]) as stream:
        final = stream.get_final_message()
    use = next(b for b in final.content if b.type == "tool_use")
    expect(use.input == {"city": "Oslo"} and final.stop_reason == "tool_use", final)
    ok("anthropic.stream_tools")

    try:
        anthropic.Anthropic(base_url=URL, api_key="sk-sy-forged", max_retries=0).messages.create(
            model="claude-test", max_tokens=10, messages=[question])
        raise AssertionError("a forged key was accepted")
    except anthropic.AuthenticationError as error:
        expect(error.status_code == 401 and error.body["error"]["type"] == "authentication_error", error.body)
        ok("anthropic.401")

    # The key allows one request a minute (the OpenAI checks may have spent it already).
    slow = anthropic.Anthropic(base_url=URL, api_key=SLOW_KEY, max_retries=0)
    for _ in range(2):
        try:
            slow.messages.create(model="claude-test", max_tokens=10, messages=[question])
        except anthropic.RateLimitError as error:
            expect(error.body["error"]["type"] == "rate_limit_error", error.body)
            ok("anthropic.429")
            break
    else:
        raise AssertionError("the rate limit let two requests through")


def langchain_check():
    from langchain_openai import ChatOpenAI

    chat = ChatOpenAI(base_url=f"{URL}/v1", api_key=KEY, model="gpt-test", max_retries=0)
    answer = chat.invoke("hi from langchain")
    expect(answer.content == "echo: hi from langchain [tagged] (checked)", answer)
    ok("langchain.invoke")


if __name__ == "__main__":
    checks = sys.argv[1:] or ["openai", "anthropic", "langchain"]
    for check in checks:
        {"openai": openai_checks, "anthropic": anthropic_checks, "langchain": langchain_check}[check]()
    print("all ok", flush=True)
