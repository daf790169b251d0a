"""Schemathesis hooks of the contract test (tests/it/contract.rs), loaded with
SCHEMATHESIS_HOOKS=tools/contract/hooks.py.

Targets the fuzzer creates or replaces keep every generated field but their endpoint's host:
a well-formed endpoint (per the schema's pattern) is pointed at the test's mock upstream on
loopback (SWITCHYARD_CONTRACT_UPSTREAM, `127.0.0.1:<port>`), so sessions and connection tests
never reach the network and finish quickly. The scheme is kept, so the connector-type checks
still see what was generated. Ill-formed endpoints are left alone: they are the negative cases
the gateway must refuse.

Webhooks the fuzzer creates are pointed at the same mock the same way (their URL's path too),
so their deliveries and test deliveries never leave loopback either.

Time limits the fuzzer writes (a target's `timeoutMs`, a plugin's `timeoutMs` in a target or a
session) are capped at TIME_CAP_MS: a generated limit of minutes is valid, and honoured, but a
session opened on such a target may then take longer than the run's 20 s request timeout to be
refused, which would read as a hang.
"""

import os
import re

import schemathesis

UPSTREAM = os.environ.get("SWITCHYARD_CONTRACT_UPSTREAM", "127.0.0.1:9")
TARGET_BODIES = {"POST /api/targets", "PUT /api/targets/{id}"}
WEBHOOK_BODIES = {"POST /api/webhooks"}
WELL_FORMED = re.compile(r"([a-z]+)://\S+")
SESSION_BODIES = {"POST /api/sessions"}
TIME_CAP_MS = 2000


def capped(body):
    """`body` with its `timeoutMs` and its plugins' `timeoutMs` at most TIME_CAP_MS."""
    def cap(entry):
        limit = entry.get("timeoutMs")
        if isinstance(limit, int) and not isinstance(limit, bool) and limit > TIME_CAP_MS:
            return {**entry, "timeoutMs": TIME_CAP_MS}
        return entry
    body = cap(body)
    plugins = body.get("plugins")
    if isinstance(plugins, list):
        body = {**body, "plugins": [cap(p) if isinstance(p, dict) else p for p in plugins]}
    return body


@schemathesis.hook
def map_body(context, body):
    operation = getattr(context, "operation", None)
    if operation is None or not isinstance(body, dict):
        return body
    if operation.label in WEBHOOK_BODIES:
        url = body.get("url")
        if isinstance(url, str):
            match = WELL_FORMED.fullmatch(url)
            if match and match.group(1) in ("http", "https"):
                return {**body, "url": f"http://{UPSTREAM}/chat"}
        return body
    if operation.label in SESSION_BODIES:
        return capped(body)
    if operation.label not in TARGET_BODIES:
        return body
    body = capped(body)
    endpoint = body.get("endpoint")
    if isinstance(endpoint, str):
        match = WELL_FORMED.fullmatch(endpoint)
        if match:
            return {**body, "endpoint": f"{match.group(1)}://{UPSTREAM}/chat"}
    return body
