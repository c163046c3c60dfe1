"""The JT/T 808 gateway (DESIGN §9): a pure protocol layer (no I/O, no clock) and its adapters.

What a connection handler does with it, in order:

1. `frame.FrameReader().feed(chunk)` → checked frame contents, or `FrameError`s (answer a
   bad checksum with 0x8001 result 2 when `header.peek_header(err.content)` reads).
2. `header.decode_frame(content)` → `Frame(header, body)`; `header.device_id` is the
   terminal's pledgewatch id, the same in both editions.
3. `subpackage.Reassembler().add(frame)` → the whole message once its packages are in.
4. `messages.parse_message(frame)` → `Registration`, `Authentication`, `Heartbeat`,
   `LocationReport`, `LocationBatch`, ... or `Unsupported` / `MessageError`.
5. `mapping.map_location` / `mapping.map_batch` → (topic, payload) pairs for MQTT.
6. `replies.general_response` / `replies.registration_response` → bytes for the terminal.

The adapters around it do the I/O (`pledgewatch gateway jt808`, wired in
`engine/cli/gateway.py`): `gateway.py` (the asyncio TCP server, one connection handler per
terminal), `mqtt_sink.py` (QoS 1 publishes whose PUBACKs resolve futures) and
`auth_store.py` (auth codes that survive restarts). The six modules above import none of
them (an import-linter contract in `pyproject.toml`).
"""
