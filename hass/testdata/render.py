"""Renders Home Assistant MQTT templates with a real Jinja2, for the tests.

Reads a JSON list of jobs on stdin, each {"template": ..., "payload": ...}
for a value or attributes template (rendered against an incoming MQTT
payload) or {"template": ..., "value": ...} for a command template, and
writes a JSON list of {"result": ...} or {"error": ...} in the same order.

What it emulates of Home Assistant's template rendering:
  - the environment is Jinja2's immutable sandbox, as Home Assistant's is;
  - an incoming payload is `value` (the text) and, when it parses as JSON,
    `value_json`; a command template gets `value`;
  - the result has surrounding white space stripped.
Stricter than Home Assistant on purpose: an undefined variable or
attribute is an error (Home Assistant renders it empty with a warning),
and no Home Assistant-only filter or function exists here, so a template
that needs one fails.
"""

import json
import sys

from jinja2 import StrictUndefined
from jinja2.sandbox import ImmutableSandboxedEnvironment


def render(env, job):
    variables = {}
    if "payload" in job:
        variables["value"] = job["payload"]
        try:
            variables["value_json"] = json.loads(job["payload"])
        except ValueError:
            pass
    else:
        variables["value"] = job["value"]
    return env.from_string(job["template"]).render(**variables).strip()


def main():
    env = ImmutableSandboxedEnvironment(undefined=StrictUndefined)
    out = []
    for job in json.load(sys.stdin):
        try:
            out.append({"result": render(env, job)})
        except Exception as e:  # every failure is the test's to report
            out.append({"error": "%s: %s" % (type(e).__name__, e)})
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    main()
