from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class NodeInfo(_message.Message):
    __slots__ = ("hostname", "os", "os_version", "kernel", "arch", "cpu_count", "memory_bytes", "agent_version", "labels", "boot_time_s")
    class LabelsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    HOSTNAME_FIELD_NUMBER: _ClassVar[int]
    OS_FIELD_NUMBER: _ClassVar[int]
    OS_VERSION_FIELD_NUMBER: _ClassVar[int]
    KERNEL_FIELD_NUMBER: _ClassVar[int]
    ARCH_FIELD_NUMBER: _ClassVar[int]
    CPU_COUNT_FIELD_NUMBER: _ClassVar[int]
    MEMORY_BYTES_FIELD_NUMBER: _ClassVar[int]
    AGENT_VERSION_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    BOOT_TIME_S_FIELD_NUMBER: _ClassVar[int]
    hostname: str
    os: str
    os_version: str
    kernel: str
    arch: str
    cpu_count: int
    memory_bytes: int
    agent_version: str
    labels: _containers.ScalarMap[str, str]
    boot_time_s: float
    def __init__(self, hostname: _Optional[str] = ..., os: _Optional[str] = ..., os_version: _Optional[str] = ..., kernel: _Optional[str] = ..., arch: _Optional[str] = ..., cpu_count: _Optional[int] = ..., memory_bytes: _Optional[int] = ..., agent_version: _Optional[str] = ..., labels: _Optional[_Mapping[str, str]] = ..., boot_time_s: _Optional[float] = ...) -> None: ...

class RegisterRequest(_message.Message):
    __slots__ = ("agent_id", "node")
    AGENT_ID_FIELD_NUMBER: _ClassVar[int]
    NODE_FIELD_NUMBER: _ClassVar[int]
    agent_id: str
    node: NodeInfo
    def __init__(self, agent_id: _Optional[str] = ..., node: _Optional[_Union[NodeInfo, _Mapping]] = ...) -> None: ...

class RegisterResponse(_message.Message):
    __slots__ = ("session_id", "suggested_interval_s", "last_batch_seq")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    SUGGESTED_INTERVAL_S_FIELD_NUMBER: _ClassVar[int]
    LAST_BATCH_SEQ_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    suggested_interval_s: float
    last_batch_seq: int
    def __init__(self, session_id: _Optional[str] = ..., suggested_interval_s: _Optional[float] = ..., last_batch_seq: _Optional[int] = ...) -> None: ...

class AgentStats(_message.Message):
    __slots__ = ("total_reports", "failed_reports", "success_rate_percent", "last_report_status", "current_interval_s", "adaptive", "spool_depth", "spool_bytes", "spool_dropped", "last_report_time_s")
    TOTAL_REPORTS_FIELD_NUMBER: _ClassVar[int]
    FAILED_REPORTS_FIELD_NUMBER: _ClassVar[int]
    SUCCESS_RATE_PERCENT_FIELD_NUMBER: _ClassVar[int]
    LAST_REPORT_STATUS_FIELD_NUMBER: _ClassVar[int]
    CURRENT_INTERVAL_S_FIELD_NUMBER: _ClassVar[int]
    ADAPTIVE_FIELD_NUMBER: _ClassVar[int]
    SPOOL_DEPTH_FIELD_NUMBER: _ClassVar[int]
    SPOOL_BYTES_FIELD_NUMBER: _ClassVar[int]
    SPOOL_DROPPED_FIELD_NUMBER: _ClassVar[int]
    LAST_REPORT_TIME_S_FIELD_NUMBER: _ClassVar[int]
    total_reports: int
    failed_reports: int
    success_rate_percent: float
    last_report_status: str
    current_interval_s: float
    adaptive: bool
    spool_depth: int
    spool_bytes: int
    spool_dropped: int
    last_report_time_s: float
    def __init__(self, total_reports: _Optional[int] = ..., failed_reports: _Optional[int] = ..., success_rate_percent: _Optional[float] = ..., last_report_status: _Optional[str] = ..., current_interval_s: _Optional[float] = ..., adaptive: _Optional[bool] = ..., spool_depth: _Optional[int] = ..., spool_bytes: _Optional[int] = ..., spool_dropped: _Optional[int] = ..., last_report_time_s: _Optional[float] = ...) -> None: ...

class HeartbeatRequest(_message.Message):
    __slots__ = ("agent_id", "session_id", "stats")
    AGENT_ID_FIELD_NUMBER: _ClassVar[int]
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    STATS_FIELD_NUMBER: _ClassVar[int]
    agent_id: str
    session_id: str
    stats: AgentStats
    def __init__(self, agent_id: _Optional[str] = ..., session_id: _Optional[str] = ..., stats: _Optional[_Union[AgentStats, _Mapping]] = ...) -> None: ...

class HeartbeatResponse(_message.Message):
    __slots__ = ("suggested_interval_s",)
    SUGGESTED_INTERVAL_S_FIELD_NUMBER: _ClassVar[int]
    suggested_interval_s: float
    def __init__(self, suggested_interval_s: _Optional[float] = ...) -> None: ...

class SeriesDef(_message.Message):
    __slots__ = ("id", "labels", "unit", "help", "type")
    ID_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    UNIT_FIELD_NUMBER: _ClassVar[int]
    HELP_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    id: int
    labels: _containers.RepeatedCompositeFieldContainer[Label]
    unit: str
    help: str
    type: str
    def __init__(self, id: _Optional[int] = ..., labels: _Optional[_Iterable[_Union[Label, _Mapping]]] = ..., unit: _Optional[str] = ..., help: _Optional[str] = ..., type: _Optional[str] = ...) -> None: ...

class Label(_message.Message):
    __slots__ = ("name", "value")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    name: str
    value: str
    def __init__(self, name: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...

class MetricsBatch(_message.Message):
    __slots__ = ("agent_id", "batch_seq", "session_id", "self_contained", "series", "series_ids", "timestamps_ms", "values")
    AGENT_ID_FIELD_NUMBER: _ClassVar[int]
    BATCH_SEQ_FIELD_NUMBER: _ClassVar[int]
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    SELF_CONTAINED_FIELD_NUMBER: _ClassVar[int]
    SERIES_FIELD_NUMBER: _ClassVar[int]
    SERIES_IDS_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMPS_MS_FIELD_NUMBER: _ClassVar[int]
    VALUES_FIELD_NUMBER: _ClassVar[int]
    agent_id: str
    batch_seq: int
    session_id: str
    self_contained: bool
    series: _containers.RepeatedCompositeFieldContainer[SeriesDef]
    series_ids: bytes
    timestamps_ms: bytes
    values: bytes
    def __init__(self, agent_id: _Optional[str] = ..., batch_seq: _Optional[int] = ..., session_id: _Optional[str] = ..., self_contained: _Optional[bool] = ..., series: _Optional[_Iterable[_Union[SeriesDef, _Mapping]]] = ..., series_ids: _Optional[bytes] = ..., timestamps_ms: _Optional[bytes] = ..., values: _Optional[bytes] = ...) -> None: ...

class SendMetricsResponse(_message.Message):
    __slots__ = ("accepted", "duplicate", "rejected", "suggested_interval_s")
    class RejectedEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    ACCEPTED_FIELD_NUMBER: _ClassVar[int]
    DUPLICATE_FIELD_NUMBER: _ClassVar[int]
    REJECTED_FIELD_NUMBER: _ClassVar[int]
    SUGGESTED_INTERVAL_S_FIELD_NUMBER: _ClassVar[int]
    accepted: int
    duplicate: bool
    rejected: _containers.ScalarMap[str, int]
    suggested_interval_s: float
    def __init__(self, accepted: _Optional[int] = ..., duplicate: _Optional[bool] = ..., rejected: _Optional[_Mapping[str, int]] = ..., suggested_interval_s: _Optional[float] = ...) -> None: ...

class LogRecord(_message.Message):
    __slots__ = ("timestamp_ms", "level", "logger", "source", "message", "attrs")
    class AttrsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    TIMESTAMP_MS_FIELD_NUMBER: _ClassVar[int]
    LEVEL_FIELD_NUMBER: _ClassVar[int]
    LOGGER_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    ATTRS_FIELD_NUMBER: _ClassVar[int]
    timestamp_ms: int
    level: str
    logger: str
    source: str
    message: str
    attrs: _containers.ScalarMap[str, str]
    def __init__(self, timestamp_ms: _Optional[int] = ..., level: _Optional[str] = ..., logger: _Optional[str] = ..., source: _Optional[str] = ..., message: _Optional[str] = ..., attrs: _Optional[_Mapping[str, str]] = ...) -> None: ...

class LogBatch(_message.Message):
    __slots__ = ("agent_id", "batch_seq", "records")
    AGENT_ID_FIELD_NUMBER: _ClassVar[int]
    BATCH_SEQ_FIELD_NUMBER: _ClassVar[int]
    RECORDS_FIELD_NUMBER: _ClassVar[int]
    agent_id: str
    batch_seq: int
    records: _containers.RepeatedCompositeFieldContainer[LogRecord]
    def __init__(self, agent_id: _Optional[str] = ..., batch_seq: _Optional[int] = ..., records: _Optional[_Iterable[_Union[LogRecord, _Mapping]]] = ...) -> None: ...

class SendLogsResponse(_message.Message):
    __slots__ = ("accepted", "duplicate")
    ACCEPTED_FIELD_NUMBER: _ClassVar[int]
    DUPLICATE_FIELD_NUMBER: _ClassVar[int]
    accepted: int
    duplicate: bool
    def __init__(self, accepted: _Optional[int] = ..., duplicate: _Optional[bool] = ...) -> None: ...

class StreamLogsResponse(_message.Message):
    __slots__ = ("accepted", "batches", "duplicates")
    ACCEPTED_FIELD_NUMBER: _ClassVar[int]
    BATCHES_FIELD_NUMBER: _ClassVar[int]
    DUPLICATES_FIELD_NUMBER: _ClassVar[int]
    accepted: int
    batches: int
    duplicates: int
    def __init__(self, accepted: _Optional[int] = ..., batches: _Optional[int] = ..., duplicates: _Optional[int] = ...) -> None: ...

class ControlSubscribe(_message.Message):
    __slots__ = ("agent_id", "session_id")
    AGENT_ID_FIELD_NUMBER: _ClassVar[int]
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    agent_id: str
    session_id: str
    def __init__(self, agent_id: _Optional[str] = ..., session_id: _Optional[str] = ...) -> None: ...

class ControlCommand(_message.Message):
    __slots__ = ("command_id", "kind", "args", "timeout_s")
    class ArgsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    COMMAND_ID_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    ARGS_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_S_FIELD_NUMBER: _ClassVar[int]
    command_id: str
    kind: str
    args: _containers.ScalarMap[str, str]
    timeout_s: float
    def __init__(self, command_id: _Optional[str] = ..., kind: _Optional[str] = ..., args: _Optional[_Mapping[str, str]] = ..., timeout_s: _Optional[float] = ...) -> None: ...

class CommandResult(_message.Message):
    __slots__ = ("agent_id", "command_id", "ok", "exit_status", "output", "error")
    AGENT_ID_FIELD_NUMBER: _ClassVar[int]
    COMMAND_ID_FIELD_NUMBER: _ClassVar[int]
    OK_FIELD_NUMBER: _ClassVar[int]
    EXIT_STATUS_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    agent_id: str
    command_id: str
    ok: bool
    exit_status: int
    output: str
    error: str
    def __init__(self, agent_id: _Optional[str] = ..., command_id: _Optional[str] = ..., ok: _Optional[bool] = ..., exit_status: _Optional[int] = ..., output: _Optional[str] = ..., error: _Optional[str] = ...) -> None: ...

class ReportResultResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class StateAlertRequest(_message.Message):
    __slots__ = ("source", "name", "severity", "state", "title", "message", "labels", "timestamp_ms")
    class LabelsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    SEVERITY_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    TITLE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMP_MS_FIELD_NUMBER: _ClassVar[int]
    source: str
    name: str
    severity: str
    state: str
    title: str
    message: str
    labels: _containers.ScalarMap[str, str]
    timestamp_ms: int
    def __init__(self, source: _Optional[str] = ..., name: _Optional[str] = ..., severity: _Optional[str] = ..., state: _Optional[str] = ..., title: _Optional[str] = ..., message: _Optional[str] = ..., labels: _Optional[_Mapping[str, str]] = ..., timestamp_ms: _Optional[int] = ...) -> None: ...

class StateAlertResponse(_message.Message):
    __slots__ = ("alert_id", "accepted")
    ALERT_ID_FIELD_NUMBER: _ClassVar[int]
    ACCEPTED_FIELD_NUMBER: _ClassVar[int]
    alert_id: str
    accepted: bool
    def __init__(self, alert_id: _Optional[str] = ..., accepted: _Optional[bool] = ...) -> None: ...

class StateSample(_message.Message):
    __slots__ = ("name", "labels", "value", "timestamp_ms")
    class LabelsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    NAME_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMP_MS_FIELD_NUMBER: _ClassVar[int]
    name: str
    labels: _containers.ScalarMap[str, str]
    value: float
    timestamp_ms: int
    def __init__(self, name: _Optional[str] = ..., labels: _Optional[_Mapping[str, str]] = ..., value: _Optional[float] = ..., timestamp_ms: _Optional[int] = ...) -> None: ...

class StateMetricsRequest(_message.Message):
    __slots__ = ("source", "samples")
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    SAMPLES_FIELD_NUMBER: _ClassVar[int]
    source: str
    samples: _containers.RepeatedCompositeFieldContainer[StateSample]
    def __init__(self, source: _Optional[str] = ..., samples: _Optional[_Iterable[_Union[StateSample, _Mapping]]] = ...) -> None: ...

class StateMetricsResponse(_message.Message):
    __slots__ = ("accepted",)
    ACCEPTED_FIELD_NUMBER: _ClassVar[int]
    accepted: int
    def __init__(self, accepted: _Optional[int] = ...) -> None: ...

class AlertConfigRequest(_message.Message):
    __slots__ = ("source",)
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    source: str
    def __init__(self, source: _Optional[str] = ...) -> None: ...

class AlertRuleConfig(_message.Message):
    __slots__ = ("name", "expr", "for_s", "severity", "labels", "annotations")
    class LabelsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    class AnnotationsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    NAME_FIELD_NUMBER: _ClassVar[int]
    EXPR_FIELD_NUMBER: _ClassVar[int]
    FOR_S_FIELD_NUMBER: _ClassVar[int]
    SEVERITY_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    ANNOTATIONS_FIELD_NUMBER: _ClassVar[int]
    name: str
    expr: str
    for_s: float
    severity: str
    labels: _containers.ScalarMap[str, str]
    annotations: _containers.ScalarMap[str, str]
    def __init__(self, name: _Optional[str] = ..., expr: _Optional[str] = ..., for_s: _Optional[float] = ..., severity: _Optional[str] = ..., labels: _Optional[_Mapping[str, str]] = ..., annotations: _Optional[_Mapping[str, str]] = ...) -> None: ...

class AlertConfigResponse(_message.Message):
    __slots__ = ("rules", "eval_interval_s")
    RULES_FIELD_NUMBER: _ClassVar[int]
    EVAL_INTERVAL_S_FIELD_NUMBER: _ClassVar[int]
    rules: _containers.RepeatedCompositeFieldContainer[AlertRuleConfig]
    eval_interval_s: float
    def __init__(self, rules: _Optional[_Iterable[_Union[AlertRuleConfig, _Mapping]]] = ..., eval_interval_s: _Optional[float] = ...) -> None: ...
