"""Names vulture (`make lint`) reports as unused that are used by something it cannot see,
grouped by who uses them. Anything else it reports is dead code: remove it, do not list it here."""

# ruff: noqa: B018 (bare attribute references are how a vulture whitelist marks names used)

from vulture.whitelist_utils import Whitelist

_ = Whitelist()

# werkzeug calls these overrides; their parameters are its signature
_._get_file_stream
_.total_content_length
_.filename
_.content_length
_.request_class

# io.RawIOBase's protocol: read() calls them
_.readable
_.readinto

# gunicorn calls or reads these overrides and attributes of its worker and arbiter
_.on_client_socket_readable
_.nr_conns
_.data_ready
_.sig
_.handle_int
_.load_config

# simple-websocket calls it during the handshake
_.choose_subprotocol

# pydantic reads these: model settings and post-init hooks
_.model_config
_.model_post_init
_.__context

# fields of documented formats the runtime validates and passes on without reading them:
# the artifact manifest, Realtime events, client secrets
_.mel_norm
_.test_set
_.utterances
_.schema_
_.model_type
_.noise_reduction
_.input_audio_noise_reduction
_.audio_end_ms
_.previous_item_id
_.content_index
_.anchor

# the error classes' exit status, read by the command line's error handler
_.exit_code

# attributes set on other libraries' objects: onnxruntime's SessionOptions, a logging record,
# an ONNX model (test fixtures), the OpenAI client
_.inter_op_num_threads
_.log_severity_level
_.msg
_.ir_version
_.api_key

# entry points named as strings in kubescribe/cli.py's command table
_.serve_main
_.transcribe_main

# pytest and http.server read these: module marks, an autouse fixture, the logging hook
_.pytestmark
_._restore_logging
_.log_message

# a route registered on a WebSocket blueprint (flask-sock's decorator)
_.echo
