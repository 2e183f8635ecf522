"""Realtime transcription sessions (OpenAI's Realtime protocol, ``intent=transcription``).

- :mod:`.events` — the client and server events (pydantic), parsed and rendered once;
- :mod:`.audio_in` — input formats (24 kHz PCM16, G.711 μ-law / A-law) to the model's rate;
- :mod:`.turns` — server VAD turn-taking on Silero VAD (:mod:`kubescribe_runtime.silero`);
- :mod:`.partials` — the stable-partial policy: append-only deltas;
- :mod:`.session` — the pure session state machine: events in, events and decode requests out;
- :mod:`.decode` — decode requests through the shared dynamic batcher (live priority), a final
  one through the file path itself (:mod:`kubescribe_runtime.decoding`);
- :mod:`.edge` — the thin WebSocket edge at ``/v1/realtime``;
- :mod:`.metrics` — the sessions' Prometheus metrics.
"""
