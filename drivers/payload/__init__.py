"""Transport-free payload decoding shared by the subscribing drivers (MQTT, WebSocket).

- `pointer`: JSON Pointer (RFC 6901) paths into a decoded JSON document;
- `timestamps`: a payload's source time as Unix seconds (epoch s, epoch ms, ISO 8601);
- `jsonmap`: one tag's mapping from a JSON document (value, source time, status through a table,
  selection by field values) and its config keys;
- `topics`: MQTT-style topic filters (`+`, `#`) matched against topic strings, with an index;
- `sparkplug`: a Sparkplug B payload (protobuf) decoded from the specification's field numbers.

Nothing here opens a socket or knows a device: pure functions and frozen objects, tested directly.
"""
