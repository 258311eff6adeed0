from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Code(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    OK: _ClassVar[Code]
    CANCELLED: _ClassVar[Code]
    UNKNOWN: _ClassVar[Code]
    INVALID_ARGUMENT: _ClassVar[Code]
    DEADLINE_EXCEEDED: _ClassVar[Code]
    NOT_FOUND: _ClassVar[Code]
    ALREADY_EXISTS: _ClassVar[Code]
    PERMISSION_DENIED: _ClassVar[Code]
    RESOURCE_EXHAUSTED: _ClassVar[Code]
    FAILED_PRECONDITION: _ClassVar[Code]
    ABORTED: _ClassVar[Code]
    OUT_OF_RANGE: _ClassVar[Code]
    UNIMPLEMENTED: _ClassVar[Code]
    INTERNAL: _ClassVar[Code]
    UNAVAILABLE: _ClassVar[Code]
    DATA_LOSS: _ClassVar[Code]
    UNAUTHENTICATED: _ClassVar[Code]

class MetricKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    METRIC_KIND_UNSPECIFIED: _ClassVar[MetricKind]
    COUNTER: _ClassVar[MetricKind]
    GAUGE: _ClassVar[MetricKind]
    DELTA: _ClassVar[MetricKind]
OK: Code
CANCELLED: Code
UNKNOWN: Code
INVALID_ARGUMENT: Code
DEADLINE_EXCEEDED: Code
NOT_FOUND: Code
ALREADY_EXISTS: Code
PERMISSION_DENIED: Code
RESOURCE_EXHAUSTED: Code
FAILED_PRECONDITION: Code
ABORTED: Code
OUT_OF_RANGE: Code
UNIMPLEMENTED: Code
INTERNAL: Code
UNAVAILABLE: Code
DATA_LOSS: Code
UNAUTHENTICATED: Code
METRIC_KIND_UNSPECIFIED: MetricKind
COUNTER: MetricKind
GAUGE: MetricKind
DELTA: MetricKind

class Label(_message.Message):
    __slots__ = ("name", "value")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    name: str
    value: str
    def __init__(self, name: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...

class Site(_message.Message):
    __slots__ = ("site_id", "country", "region", "timezone")
    SITE_ID_FIELD_NUMBER: _ClassVar[int]
    COUNTRY_FIELD_NUMBER: _ClassVar[int]
    REGION_FIELD_NUMBER: _ClassVar[int]
    TIMEZONE_FIELD_NUMBER: _ClassVar[int]
    site_id: str
    country: str
    region: str
    timezone: str
    def __init__(self, site_id: _Optional[str] = ..., country: _Optional[str] = ..., region: _Optional[str] = ..., timezone: _Optional[str] = ...) -> None: ...

class Series(_message.Message):
    __slots__ = ("metric", "kind", "unit", "labels", "counter_bits", "start_time_unix_nano", "scale")
    METRIC_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    UNIT_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    COUNTER_BITS_FIELD_NUMBER: _ClassVar[int]
    START_TIME_UNIX_NANO_FIELD_NUMBER: _ClassVar[int]
    SCALE_FIELD_NUMBER: _ClassVar[int]
    metric: str
    kind: MetricKind
    unit: str
    labels: _containers.RepeatedCompositeFieldContainer[Label]
    counter_bits: int
    start_time_unix_nano: int
    scale: float
    def __init__(self, metric: _Optional[str] = ..., kind: _Optional[_Union[MetricKind, str]] = ..., unit: _Optional[str] = ..., labels: _Optional[_Iterable[_Union[Label, _Mapping]]] = ..., counter_bits: _Optional[int] = ..., start_time_unix_nano: _Optional[int] = ..., scale: _Optional[float] = ...) -> None: ...

class CounterColumns(_message.Message):
    __slots__ = ("series_index", "time_unix_nano", "value")
    SERIES_INDEX_FIELD_NUMBER: _ClassVar[int]
    TIME_UNIX_NANO_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    series_index: _containers.RepeatedScalarFieldContainer[int]
    time_unix_nano: _containers.RepeatedScalarFieldContainer[int]
    value: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, series_index: _Optional[_Iterable[int]] = ..., time_unix_nano: _Optional[_Iterable[int]] = ..., value: _Optional[_Iterable[int]] = ...) -> None: ...

class GaugeColumns(_message.Message):
    __slots__ = ("series_index", "time_unix_nano", "value")
    SERIES_INDEX_FIELD_NUMBER: _ClassVar[int]
    TIME_UNIX_NANO_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    series_index: _containers.RepeatedScalarFieldContainer[int]
    time_unix_nano: _containers.RepeatedScalarFieldContainer[int]
    value: _containers.RepeatedScalarFieldContainer[float]
    def __init__(self, series_index: _Optional[_Iterable[int]] = ..., time_unix_nano: _Optional[_Iterable[int]] = ..., value: _Optional[_Iterable[float]] = ...) -> None: ...

class DeltaColumns(_message.Message):
    __slots__ = ("series_index", "start_time_unix_nano", "time_unix_nano", "value")
    SERIES_INDEX_FIELD_NUMBER: _ClassVar[int]
    START_TIME_UNIX_NANO_FIELD_NUMBER: _ClassVar[int]
    TIME_UNIX_NANO_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    series_index: _containers.RepeatedScalarFieldContainer[int]
    start_time_unix_nano: _containers.RepeatedScalarFieldContainer[int]
    time_unix_nano: _containers.RepeatedScalarFieldContainer[int]
    value: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, series_index: _Optional[_Iterable[int]] = ..., start_time_unix_nano: _Optional[_Iterable[int]] = ..., time_unix_nano: _Optional[_Iterable[int]] = ..., value: _Optional[_Iterable[int]] = ...) -> None: ...

class PeriodGaugeColumns(_message.Message):
    __slots__ = ("series_index", "start_time_unix_nano", "time_unix_nano", "value")
    SERIES_INDEX_FIELD_NUMBER: _ClassVar[int]
    START_TIME_UNIX_NANO_FIELD_NUMBER: _ClassVar[int]
    TIME_UNIX_NANO_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    series_index: _containers.RepeatedScalarFieldContainer[int]
    start_time_unix_nano: _containers.RepeatedScalarFieldContainer[int]
    time_unix_nano: _containers.RepeatedScalarFieldContainer[int]
    value: _containers.RepeatedScalarFieldContainer[float]
    def __init__(self, series_index: _Optional[_Iterable[int]] = ..., start_time_unix_nano: _Optional[_Iterable[int]] = ..., time_unix_nano: _Optional[_Iterable[int]] = ..., value: _Optional[_Iterable[float]] = ...) -> None: ...

class Batch(_message.Message):
    __slots__ = ("agent_id", "seq", "site", "boot_id", "created_unix_nano", "series", "counters", "gauges", "deltas", "period_gauges", "unissued_seq_first", "unissued_seq_last")
    AGENT_ID_FIELD_NUMBER: _ClassVar[int]
    SEQ_FIELD_NUMBER: _ClassVar[int]
    SITE_FIELD_NUMBER: _ClassVar[int]
    BOOT_ID_FIELD_NUMBER: _ClassVar[int]
    CREATED_UNIX_NANO_FIELD_NUMBER: _ClassVar[int]
    SERIES_FIELD_NUMBER: _ClassVar[int]
    COUNTERS_FIELD_NUMBER: _ClassVar[int]
    GAUGES_FIELD_NUMBER: _ClassVar[int]
    DELTAS_FIELD_NUMBER: _ClassVar[int]
    PERIOD_GAUGES_FIELD_NUMBER: _ClassVar[int]
    UNISSUED_SEQ_FIRST_FIELD_NUMBER: _ClassVar[int]
    UNISSUED_SEQ_LAST_FIELD_NUMBER: _ClassVar[int]
    agent_id: str
    seq: int
    site: Site
    boot_id: str
    created_unix_nano: int
    series: _containers.RepeatedCompositeFieldContainer[Series]
    counters: CounterColumns
    gauges: GaugeColumns
    deltas: DeltaColumns
    period_gauges: PeriodGaugeColumns
    unissued_seq_first: int
    unissued_seq_last: int
    def __init__(self, agent_id: _Optional[str] = ..., seq: _Optional[int] = ..., site: _Optional[_Union[Site, _Mapping]] = ..., boot_id: _Optional[str] = ..., created_unix_nano: _Optional[int] = ..., series: _Optional[_Iterable[_Union[Series, _Mapping]]] = ..., counters: _Optional[_Union[CounterColumns, _Mapping]] = ..., gauges: _Optional[_Union[GaugeColumns, _Mapping]] = ..., deltas: _Optional[_Union[DeltaColumns, _Mapping]] = ..., period_gauges: _Optional[_Union[PeriodGaugeColumns, _Mapping]] = ..., unissued_seq_first: _Optional[int] = ..., unissued_seq_last: _Optional[int] = ...) -> None: ...

class Ack(_message.Message):
    __slots__ = ("seq", "seq_last", "code", "reason", "retry_after_ms")
    SEQ_FIELD_NUMBER: _ClassVar[int]
    SEQ_LAST_FIELD_NUMBER: _ClassVar[int]
    CODE_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    RETRY_AFTER_MS_FIELD_NUMBER: _ClassVar[int]
    seq: int
    seq_last: int
    code: Code
    reason: str
    retry_after_ms: int
    def __init__(self, seq: _Optional[int] = ..., seq_last: _Optional[int] = ..., code: _Optional[_Union[Code, str]] = ..., reason: _Optional[str] = ..., retry_after_ms: _Optional[int] = ...) -> None: ...
