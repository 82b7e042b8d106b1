# mypy: ignore-errors
# (line added by paysim.protogen: protoc stubs are not strict-clean)
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Optional as _Optional

DESCRIPTOR: _descriptor.FileDescriptor

class Money(_message.Message):
    __slots__ = ("amount", "currency")
    AMOUNT_FIELD_NUMBER: _ClassVar[int]
    CURRENCY_FIELD_NUMBER: _ClassVar[int]
    amount: int
    currency: str
    def __init__(self, amount: _Optional[int] = ..., currency: _Optional[str] = ...) -> None: ...

class Pagination(_message.Message):
    __slots__ = ("page", "page_size", "cursor")
    PAGE_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    CURSOR_FIELD_NUMBER: _ClassVar[int]
    page: int
    page_size: int
    cursor: str
    def __init__(self, page: _Optional[int] = ..., page_size: _Optional[int] = ..., cursor: _Optional[str] = ...) -> None: ...

class PageInfo(_message.Message):
    __slots__ = ("total_count", "has_next_page", "has_previous_page", "next_cursor", "previous_cursor")
    TOTAL_COUNT_FIELD_NUMBER: _ClassVar[int]
    HAS_NEXT_PAGE_FIELD_NUMBER: _ClassVar[int]
    HAS_PREVIOUS_PAGE_FIELD_NUMBER: _ClassVar[int]
    NEXT_CURSOR_FIELD_NUMBER: _ClassVar[int]
    PREVIOUS_CURSOR_FIELD_NUMBER: _ClassVar[int]
    total_count: int
    has_next_page: bool
    has_previous_page: bool
    next_cursor: str
    previous_cursor: str
    def __init__(self, total_count: _Optional[int] = ..., has_next_page: _Optional[bool] = ..., has_previous_page: _Optional[bool] = ..., next_cursor: _Optional[str] = ..., previous_cursor: _Optional[str] = ...) -> None: ...
