"""Contract 4: runtime settings from CLI flags and ``KUBESCRIBE_*`` environment variables.

Every field of :class:`ServeConfig` and :class:`FetchConfig` declares its flag and variable;
``docs/runtime-config.md`` is the same table in prose (a test keeps both in step). A flag wins
over the variable, the variable over the default. Values are validated by pydantic, so a bad
setting fails at start-up with a message naming the flag and the variable.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator

from kubescribe.errors import KubescribeError

# runtime/kubescribe_runtime/config.py -> the repository root of a source checkout.
SOURCE_ROOT = Path(__file__).resolve().parents[2]
DEMO_MODEL_DIR = SOURCE_ROOT / "examples" / "models" / "demo"


class ConfigError(KubescribeError):
    exit_code = 2


def split_names(value: str | Sequence[str] | None) -> tuple[str, ...]:
    """A list setting's values: a comma-separated string or a sequence; blanks and repeats
    dropped, order kept."""
    items = value.split(",") if isinstance(value, str) else list(value or ())
    names: list[str] = []
    for item in items:
        name = str(item).strip()
        if name and name not in names:
            names.append(name)
    return tuple(names)


def _setting(
    default: Any, flag: str, env: str, help_: str, *, positional: bool = False, **kw: Any
) -> Any:
    extra: dict[str, Any] = {"flag": flag, "env": env, "positional": positional}
    return Field(default, description=help_, json_schema_extra=extra, **kw)


class _Settings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ServeConfig(_Settings):
    """`kubescribe serve` / `kubescribe transcribe`."""

    model_dir: Path = _setting(
        DEMO_MODEL_DIR, "--model-dir", "KUBESCRIBE_MODEL_DIR", "artifact directory to serve"
    )
    model_file: str = _setting(
        "model.onnx", "--model-file", "KUBESCRIBE_MODEL_FILE", "ONNX file of the artifact"
    )
    host: str = _setting("127.0.0.1", "--host", "KUBESCRIBE_HOST", "listen address")
    port: int = _setting(8080, "--port", "KUBESCRIBE_PORT", "listen port", ge=0, le=65535)
    device: Literal["cpu", "gpu"] = _setting("cpu", "--device", "KUBESCRIBE_DEVICE", "cpu or gpu")
    gpu_id: int = _setting(0, "--gpu-id", "KUBESCRIBE_GPU_ID", "CUDA device index", ge=0)
    allow_cpu_fallback: bool = _setting(
        False,
        "--allow-cpu-fallback",
        "KUBESCRIBE_ALLOW_CPU_FALLBACK",
        "with device=gpu and no CUDA: serve on CPU instead of staying unready",
    )
    exit_on_load_failure: bool = _setting(
        False,
        "--exit-on-load-failure",
        "KUBESCRIBE_EXIT_ON_LOAD_FAILURE",
        "when the model cannot be loaded: exit (status 3, the reason as the last log line) "
        "instead of staying unready",
    )
    quality_gate: Literal["on", "off"] = _setting(
        "on",
        "--quality-gate",
        "KUBESCRIBE_QUALITY_GATE",
        "before turning ready, transcribe the artifact's reference clips and stay unready (or "
        "exit, with --exit-on-load-failure) when the WER exceeds the manifest's declared WER "
        "plus --quality-gate-wer-tolerance; an artifact without clips skips it (on or off)",
    )
    quality_gate_wer_tolerance: float = _setting(
        0.05,
        "--quality-gate-wer-tolerance",
        "KUBESCRIBE_QUALITY_GATE_WER_TOLERANCE",
        "WER the model may lose on its reference clips against the declared one (absolute)",
        ge=0,
        le=1,
    )
    threads: int = _setting(
        0,
        "--threads",
        "KUBESCRIBE_THREADS",
        "intra-op threads (0: the container's CPU quota, else its usable CPUs)",
        ge=0,
    )
    thread_spinning: bool = _setting(
        False,
        "--thread-spinning",
        "KUBESCRIBE_THREAD_SPINNING",
        "let idle intra-op threads spin (burns CPU quota between batches)",
    )
    cudnn_conv_algo_search: Literal["heuristic", "exhaustive", "default"] = _setting(
        "heuristic",
        "--cudnn-conv-algo-search",
        "KUBESCRIBE_CUDNN_CONV_ALGO_SEARCH",
        "how cuDNN picks convolution algorithms (exhaustive re-benchmarks every new shape)",
    )
    gpu_mem_limit_mb: int = _setting(
        0,
        "--gpu-mem-limit-mb",
        "KUBESCRIBE_GPU_MEM_LIMIT_MB",
        "cap of the CUDA memory arena (0: none)",
        ge=0,
    )
    io_binding: Literal["auto", "on", "off"] = _setting(
        "auto",
        "--io-binding",
        "KUBESCRIBE_IO_BINDING",
        "run batches through onnxruntime IO binding (auto: on CUDA only)",
    )
    http_threads: int = _setting(
        64,
        "--http-threads",
        "KUBESCRIBE_HTTP_THREADS",
        "server threads: requests being served (admitted or answered 429) and WebSocket "
        "sessions together; keep above --max-requests plus --max-sessions",
        ge=1,
    )
    max_batch_size: int = _setting(
        16, "--max-batch-size", "KUBESCRIBE_MAX_BATCH_SIZE", "largest batch", ge=1
    )
    max_delay_ms: float = _setting(
        10, "--max-delay-ms", "KUBESCRIBE_MAX_DELAY_MS", "longest wait for batch-mates", ge=0
    )
    batch_wait_full_delay: bool = _setting(
        False,
        "--batch-wait-full-delay",
        "KUBESCRIBE_BATCH_WAIT_FULL_DELAY",
        "wait the whole max delay for batch-mates even when no other request is preparing audio",
    )
    max_queue: int = _setting(
        64,
        "--max-queue",
        "KUBESCRIBE_MAX_QUEUE",
        "windows queued in the batcher; beyond it an admitted request's next window waits "
        "(never refused)",
        ge=1,
    )
    max_requests: int = _setting(
        32,
        "--max-requests",
        "KUBESCRIBE_MAX_REQUESTS",
        "transcription requests admitted at once (upload bodies held at once); beyond: 429",
        ge=1,
    )
    max_backlog_seconds: float = _setting(
        3600,
        "--max-backlog-seconds",
        "KUBESCRIBE_MAX_BACKLOG_SECONDS",
        "audio seconds admitted and not yet transcribed; a request beyond it: 429",
        gt=0,
    )
    request_timeout_s: float = _setting(
        120,
        "--request-timeout",
        "KUBESCRIBE_REQUEST_TIMEOUT_S",
        "seconds a request may wait with none of its windows decoded before 504",
        gt=0,
    )
    spool_threshold_mb: float = _setting(
        1,
        "--spool-threshold-mb",
        "KUBESCRIBE_SPOOL_THRESHOLD_MB",
        "uploads above this size are written to --scratch-dir instead of held in memory",
        ge=0,
    )
    scratch_dir: Path | None = _setting(
        None,
        "--scratch-dir",
        "KUBESCRIBE_SCRATCH_DIR",
        "directory for spooled uploads (default: the system's temporary directory)",
    )
    stall_timeout_s: float = _setting(
        120,
        "--stall-timeout",
        "KUBESCRIBE_STALL_TIMEOUT_S",
        "/healthz fails when windows have waited this long with no batch finishing",
        gt=0,
    )
    max_upload_mb: float = _setting(
        25, "--max-upload-mb", "KUBESCRIBE_MAX_UPLOAD_MB", "larger uploads get 413", gt=0
    )
    # The server's intake (server.py, intake.py): a request is read whole before a thread
    # serves it; these bound what a slow client may cost.
    header_timeout_s: float = _setting(
        10,
        "--header-timeout",
        "KUBESCRIBE_HEADER_TIMEOUT_S",
        "seconds a client has to send a request's head; later: 408 (also the body's grace)",
        gt=0,
    )
    body_min_rate_kb: float = _setting(
        16,
        "--body-min-rate-kb",
        "KUBESCRIBE_BODY_MIN_RATE_KB",
        "KiB/s an upload must average after the grace (--header-timeout); slower: 408",
        gt=0,
    )
    max_connections: int = _setting(
        1000,
        "--max-connections",
        "KUBESCRIBE_MAX_CONNECTIONS",
        "open client connections (slow ones included); beyond, new ones wait to be accepted",
        ge=1,
    )
    live_batch_seconds: float = _setting(
        12,
        "--live-batch-seconds",
        "KUBESCRIBE_LIVE_BATCH_SECONDS",
        "while realtime sessions are open, a batch holds at most this much audio, padding "
        "included (a running batch is never interrupted: small ones keep partials on time; "
        "0: no bound)",
        ge=0,
    )
    max_audio_seconds: float = _setting(
        7200, "--max-audio-seconds", "KUBESCRIBE_MAX_AUDIO_SECONDS", "longer audio gets 400", gt=0
    )
    max_audio_seconds_per_mb: float = _setting(
        3600,
        "--max-audio-seconds-per-mb",
        "KUBESCRIBE_MAX_AUDIO_SECONDS_PER_MB",
        "audio seconds an upload may decode to per megabyte (at least 30 s; 0: no bound)",
        ge=0,
    )
    window_seconds: float = _setting(
        20, "--window-seconds", "KUBESCRIBE_WINDOW_SECONDS", "long-audio window length", gt=1
    )
    window_overlap_seconds: float = _setting(
        2,
        "--window-overlap-seconds",
        "KUBESCRIBE_WINDOW_OVERLAP_SECONDS",
        "overlap between windows",
        ge=0,
    )
    vad: Literal["silero", "off"] = _setting(
        "silero",
        "--vad",
        "KUBESCRIBE_VAD",
        "voice activity detection: silero (Silero VAD's ONNX model, shipped in the package: "
        "windows without speech are not decoded, long non-speech is cut) or off",
    )
    max_sessions: int = _setting(
        8,
        "--max-sessions",
        "KUBESCRIBE_MAX_SESSIONS",
        "concurrent realtime (WebSocket) sessions; each holds one of the --http-threads",
        ge=0,
    )
    session_idle_timeout_s: float = _setting(
        60,
        "--session-idle-timeout",
        "KUBESCRIBE_SESSION_IDLE_TIMEOUT_S",
        "a realtime session with no client event for this long is closed",
        gt=0,
    )
    session_max_duration_s: float = _setting(
        3600,
        "--session-max-duration",
        "KUBESCRIBE_SESSION_MAX_DURATION_S",
        "longest realtime session",
        gt=0,
    )
    max_append_kb: float = _setting(
        512,
        "--max-append-kb",
        "KUBESCRIBE_MAX_APPEND_KB",
        "largest audio in one input_audio_buffer.append (decoded KiB)",
        gt=0,
    )
    partial_interval_ms: float = _setting(
        500,
        "--partial-interval-ms",
        "KUBESCRIBE_PARTIAL_INTERVAL_MS",
        "how often (in audio) an open turn is decoded for partial transcripts",
        ge=100,
    )
    max_turn_seconds: float = _setting(
        30,
        "--max-turn-seconds",
        "KUBESCRIBE_MAX_TURN_SECONDS",
        "a realtime turn longer than this is cut (committed) there",
        ge=1,
    )
    session_max_backlog_seconds: float = _setting(
        60,
        "--session-max-backlog-seconds",
        "KUBESCRIBE_SESSION_MAX_BACKLOG_SECONDS",
        "audio a realtime session may hold not yet transcribed; past it the client gets an "
        "error event, and is closed if it goes on to 1.5 times this",
        gt=0,
    )
    session_configure_timeout_s: float = _setting(
        10,
        "--session-configure-timeout",
        "KUBESCRIBE_SESSION_CONFIGURE_TIMEOUT_S",
        "a new realtime session that sends no session.update for this long is closed",
        gt=0,
    )
    drain_timeout_s: float = _setting(
        30, "--drain-timeout", "KUBESCRIBE_DRAIN_TIMEOUT_S", "on SIGTERM, longest drain", ge=0
    )
    log_level: Literal["debug", "info", "warning", "error"] = _setting(
        "info", "--log-level", "KUBESCRIBE_LOG_LEVEL", "log level"
    )
    log_format: Literal["text", "json"] = _setting(
        "text", "--log-format", "KUBESCRIBE_LOG_FORMAT", "text or json"
    )
    api_keys_file: Path | None = _setting(
        None,
        "--api-keys-file",
        "KUBESCRIBE_API_KEYS_FILE",
        "API keys, one a line, in a file or in every file of a directory (a mounted Secret); "
        "callers must send 'Authorization: Bearer <key>'",
    )
    api_keys: SecretStr | None = _setting(
        None,
        "--api-keys",
        "KUBESCRIBE_API_KEYS",
        "API keys, comma-separated (prefer the variable: a flag shows in the process list)",
    )
    served_model_names: tuple[str, ...] = _setting(
        (),
        "--served-model-names",
        "KUBESCRIBE_SERVED_MODEL_NAMES",
        "comma-separated names this server answers for in `model` (/v1/models lists the "
        "loaded model under each); a request naming another model gets 404 model_not_found; "
        "unset: any",
    )
    model_catalog: Path | None = _setting(
        None,
        "--model-catalog",
        "KUBESCRIBE_MODEL_CATALOG",
        "the other models behind the same endpoint, which /v1/models lists too: a JSON file "
        "or a directory of one JSON entry per model (the operator's catalogue, mounted)",
    )

    @field_validator("served_model_names", mode="before")
    @classmethod
    def _names(cls, value: Any) -> tuple[str, ...]:
        return split_names(value)

    def model_post_init(self, __context: Any) -> None:
        if self.window_overlap_seconds * 2 >= self.window_seconds:
            raise ValueError("window overlap must be less than half the window length")
        if self.session_max_backlog_seconds <= self.max_turn_seconds:
            raise ValueError("--session-max-backlog-seconds must exceed --max-turn-seconds")

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * 1024 * 1024)

    @property
    def spool_threshold_bytes(self) -> int:
        return int(self.spool_threshold_mb * 1024 * 1024)


class FetchConfig(_Settings):
    """`kubescribe fetch URI DEST` (the init container)."""

    uri: str = _setting(
        ..., "URI", "KUBESCRIBE_MODEL_URI", "artifact URI", positional=True, min_length=1
    )
    dest: Path = _setting(
        ..., "DEST", "KUBESCRIBE_MODEL_DIR", "destination directory", positional=True
    )
    sha256: str | None = _setting(
        None,
        "--sha256",
        "KUBESCRIBE_MODEL_SHA256",
        "expected sha256 of kubescribe.yaml",
        pattern=r"^[0-9a-f]{64}$",
    )
    cache_dir: Path | None = _setting(
        None, "--cache-dir", "KUBESCRIBE_CACHE_DIR", "digest-keyed cache directory"
    )
    pvc_root: Path = _setting(
        Path("/mnt/pvc"), "--pvc-root", "KUBESCRIBE_PVC_ROOT", "mount root of pvc:// URIs"
    )


S = TypeVar("S", bound=_Settings)


def settings_table(model: type[_Settings]) -> list[tuple[str, str, str]]:
    """(field, flag, variable) for every setting of ``model``."""
    rows = []
    for name, field in model.model_fields.items():
        extra = field.json_schema_extra
        assert isinstance(extra, dict)
        rows.append((name, str(extra["flag"]), str(extra["env"])))
    return rows


def build_parser(model: type[_Settings], prog: str, description: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description=description)
    for name, field in model.model_fields.items():
        extra = field.json_schema_extra
        assert isinstance(extra, dict)
        help_ = f"{field.description} (env {extra['env']})"
        if extra["positional"]:
            parser.add_argument(
                name, nargs="?", default=None, metavar=str(extra["flag"]), help=help_
            )
        elif field.annotation is bool:
            parser.add_argument(
                str(extra["flag"]), dest=name, action="store_true", default=None, help=help_
            )
        else:
            parser.add_argument(str(extra["flag"]), dest=name, default=None, help=help_)
    return parser


def resolve(
    model: type[S], flags: Mapping[str, Any], environ: Mapping[str, str] | None = None
) -> S:
    """Flag over variable over default, validated."""
    env = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    for name, _flag, variable in settings_table(model):
        if flags.get(name) is not None:
            values[name] = flags[name]
        elif env.get(variable, "") != "":
            values[name] = env[variable]
    try:
        return model.model_validate(values)
    except ValidationError as exc:
        table = {name: (flag, variable) for name, flag, variable in settings_table(model)}
        problems = []
        for err in exc.errors():
            loc = str(err["loc"][0]) if err["loc"] else ""
            where = "{} / {}".format(*table[loc]) if loc in table else "settings"
            problems.append(f"{where}: {err['msg']}")
        raise ConfigError("invalid configuration: " + "; ".join(problems)) from exc


def parse(
    model: type[S],
    argv: Sequence[str],
    prog: str,
    description: str,
    environ: Mapping[str, str] | None = None,
    parser: argparse.ArgumentParser | None = None,
) -> tuple[S, argparse.Namespace]:
    parser = parser or build_parser(model, prog, description)
    namespace = parser.parse_args(list(argv))
    return resolve(model, vars(namespace), environ), namespace
