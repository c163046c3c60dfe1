"""The pure protocol layer of the JT/T 808 gateway (DESIGN §9): no I/O, no clock.

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
"""
